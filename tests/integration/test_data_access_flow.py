"""Restricted feature data for alice, dan and erin, on the real services (SQLite and PostgreSQL).

The demo repository applied as ``make up`` applies it; the features service (Feast's own
environment) checking grants with the governance service as its own hub identity. alice,
a data scientist, is refused ``customer_profile`` (confidential) with how to ask; she asks
from the feature browser's access panel (purpose, 7 days); a pending request is no access;
dan, a data steward, approves on his decision page; her next read is served, directly and
through the feature service that uses the view, and nobody else's is, not even erin's, the
platform admin's (administrators read restricted data only under a grant of their own).
erin reads the whole story in the audit trail: the request, the decision and every read,
served or refused, with the grant that allowed it. A grant that expires stops the reads,
and a governance service that cannot be reached refuses them (503), never serves them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from harness.features import ACCESS as FEATURES_ACCESS
from harness.features import FeaturesProcess, apply_demo
from harness.governance import PREFIX, Running
from harness.platform import free_port
from hubforge.events.spool import read_spool
from hubforge.hub.governance.collect import SpoolCollector
from hubforge.hub.governance.store import GovernanceStore
from hubforge.widgets.client import GovernanceClient
from hubforge.widgets.feature_access import AccessPanel

PROFILE = {"features": ["customer_profile:plan", "customer_profile:tenure_months"],
           "entity_rows": [{"customer_id": 1001}, {"customer_id": 1002}]}  # fmt: skip
CHURN = {"feature_service": "churn_model_v1", "entity_rows": [{"customer_id": 1001}]}
PROJECT = "hubforge_demo"
TARGET = f"feature_view:{PROJECT}/customer_profile"
PEOPLE = ("alice-token", "bob-token", "dan-token", "erin-token", "robot-token")


@pytest.fixture(scope="module")
def applied(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The platform's data folder with the demo repository applied and materialized."""
    return apply_demo(tmp_path_factory.mktemp("restricted"))


@pytest.fixture(scope="module")
def features(running: Running, applied: Path) -> Iterator[FeaturesProcess]:
    """The features service behind the governance tests' hub, checking grants there."""
    kept = {token: running.hub.tokens[token] for token in PEOPLE}
    for token, model in kept.items():  # the hub lets these people use the features service
        running.hub.tokens[token] = {**model, "scopes": [*model["scopes"], FEATURES_ACCESS]}
    service = FeaturesProcess(running.hub, applied, token="features-token", governance=running.url + PREFIX)
    try:
        yield service
    finally:
        service.stop()
        running.hub.tokens.update(kept)


def read(service: FeaturesProcess, body: Any, token: str) -> httpx.Response:
    # The first read allowed opens the store, importing Feast: over a minute on a busy machine.
    return service.client.post("api/online", json=body, headers={"Authorization": f"token {token}"}, timeout=180)


def read_within(service: FeaturesProcess, body: Any, token: str, seconds: float) -> httpx.Response:
    """The first answer other than 403 within ``seconds`` (the last 403 after them)."""
    deadline = time.monotonic() + seconds
    while (answer := read(service, body, token)).status_code == 403 and time.monotonic() < deadline:
        time.sleep(0.25)
    return answer


def pending_ids(running: Running) -> list[str]:
    with running.client("alice-token") as c:
        listed = c.get("api/requests", params={"kind": "data-access", "status": "pending"}).json()
    return [r["id"] for r in listed if r["target"] == TARGET and r["requester"] == "alice"]


def erin_sees(running: Running, kind: str) -> list[dict[str, Any]]:
    with running.client("erin-token") as c:
        answer = c.get("api/audit/events", params={"type": kind, "limit": 1000})
    assert answer.status_code == 200, answer.text
    return list(answer.json()["events"])


def set_expiry(store: GovernanceStore, request_id: str, when: datetime) -> None:
    with store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE gov_approval_requests SET expires = :when WHERE id = :id"),
                     {"when": when, "id": request_id})  # fmt: skip


def test_alice_reads_restricted_data_only_after_dan_approves_and_erin_sees_it_all(
    running: Running, features: FeaturesProcess, backend_store: GovernanceStore
) -> None:
    refused = read(features, PROFILE, "alice-token")
    assert refused.status_code == 403, refused.text
    assert refused.json()["message"].startswith(f"customer_profile is restricted: reading its data needs an "
                                                f"approved data-access request (target {TARGET})")  # fmt: skip
    assert "Request access" in refused.json()["message"]

    # She asks from the browser's access panel, as her server's widgets do.
    gov = GovernanceClient(running.url + PREFIX, "alice-token")
    panel = AccessPanel(lambda: gov)
    panel.show(PROJECT, ["customer_profile"])
    assert panel.wait(30) and panel.state is not None
    assert panel.state.missing == ["customer_profile"], panel.message.value
    panel.purpose.value = "Retrain the churn model on plans and tenure for the Q1 review."
    panel.duration.value = 7
    panel.request()
    assert panel.wait(30) and "Sent: request" in panel.message.value, panel.message.value
    (request_id,) = pending_ids(running)
    assert "awaits a data steward" in panel.status.value

    assert read(features, PROFILE, "alice-token").status_code == 403, "a pending request is no access"
    assert running.decide("alice-token", request_id).status_code == 403, "nobody decides their own"

    decided = running.decide("dan-token", request_id, comment="Q1 churn review: fine for a week")
    assert decided.status_code == 200, decided.text
    served = read_within(features, PROFILE, "alice-token", 5)  # a refusal asks governance again within a second
    assert served.status_code == 200, served.text
    values = served.json()["features"]
    assert values["customer_id"] == [1001, 1002] and len(values["plan"]) == 2
    assert all(isinstance(plan, str) for plan in values["plan"])
    assert read(features, CHURN, "alice-token").status_code == 200, "the service that uses the view, too"

    panel.check()
    assert panel.wait(30) and panel.state is not None and "customer_profile" in panel.state.grants
    expires = datetime.fromisoformat(panel.state.grants["customer_profile"]["expires"].replace("Z", "+00:00"))
    assert timedelta(days=6, hours=23) < expires - datetime.now(UTC) <= timedelta(days=7)

    for other in ("bob-token", "dan-token", "erin-token"):
        assert read(features, PROFILE, other).status_code == 403, f"{other}: a grant is its requester's alone"
    # A hub service's token is no person's, whatever its name: it holds no grant.
    running.hub.tokens["robot-token"] = {**running.hub.tokens["robot-token"], "name": "alice"}
    robot = read(features, PROFILE, "robot-token")
    assert robot.status_code == 403 and "never by a service" in robot.json()["message"]
    running.hub.tokens["robot-token"] = {**running.hub.tokens["robot-token"], "name": "robot"}

    # erin reads the story in the audit trail: the request, the decision, and every read.
    assert running.audit.flush(10)
    running.trail.ingest(read_spool(running.audit.directory))  # type: ignore[union-attr]
    SpoolCollector(features.catalog_path.parent.parent, running.trail).collect()  # type: ignore[arg-type]
    with running.client("erin-token") as c:
        reads = c.get("api/audit/events", params={"type": "features/read/v1", "user": "alice", "limit": 1000})
        asked = c.get("api/audit/events", params={"type": "governance/data_access/v1", "limit": 1000})
    assert reads.status_code == 200, reads.text
    mine = [e for e in reversed(reads.json()["events"]) if e["event"]["resource"]["id"] == TARGET]
    assert "service:alice" in {e["user"] for e in erin_sees(running, "features/read/v1")}, "the robot, as a service"
    outcomes = [(e["outcome"], e["event"].get("request_id")) for e in mine]
    assert outcomes[-4:] == [("denied", None), ("denied", None), ("success", request_id), ("success", request_id)]
    assert mine[-1]["event"]["mode"] == "online" and mine[-2]["event"]["rows"] == 2
    story = [(e["event"]["action"], e["user"]) for e in reversed(asked.json()["events"])
             if e["event"].get("request_id") == request_id]  # fmt: skip
    assert story == [("requested", "alice"), ("approved", "dan")]


def test_an_expired_grant_stops_the_reads(running: Running, features: FeaturesProcess,
                                          backend_store: GovernanceStore) -> None:  # fmt: skip
    with running.client("bob-token") as c:
        created = c.post("api/requests", json={"kind": "data-access", "target": TARGET, "duration_days": 1,
                                               "justification": "Fraud features for a one-day check."})  # fmt: skip
    assert created.status_code == 201, created.text
    assert running.decide("dan-token", created.json()["id"]).status_code == 200
    assert read_within(features, PROFILE, "bob-token", 5).status_code == 200
    set_expiry(backend_store, created.json()["id"], datetime.now(UTC) - timedelta(seconds=1))
    deadline = time.monotonic() + 30  # the service keeps a person's grants a few seconds
    while (status := read(features, PROFILE, "bob-token").status_code) == 200 and time.monotonic() < deadline:
        time.sleep(1)
    assert status == 403


def test_a_governance_service_that_cannot_be_reached_refuses_every_restricted_read(
    running: Running, applied: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    (data / "features").mkdir(parents=True)
    for path in (applied / "features").iterdir():  # the same catalog and stores, another service
        (data / "features" / path.name).symlink_to(path)
    nowhere = f"http://127.0.0.1:{free_port()}{PREFIX}"
    kept = running.hub.tokens["alice-token"]
    running.hub.tokens["alice-token"] = {**kept, "scopes": [*kept["scopes"], FEATURES_ACCESS]}
    service = FeaturesProcess(running.hub, data, token="features-token", governance=nowhere)
    try:
        refused = read(service, PROFILE, "alice-token")
        assert refused.status_code == 503, refused.text
        assert refused.json()["message"] == "the governance service cannot be reached to check data-access grants"
        assert read(service, {"features": ["merchant_risk:category"], "entity_rows": [{"merchant_id": 501}]},
                    "alice-token").status_code == 200, "what is not restricted reads on"  # fmt: skip
    finally:
        service.stop()
        running.hub.tokens["alice-token"] = kept
