"""Data-access requests become time-limited grants that services check: ``GET api/grants``.

The service runs for real (``running``: SQLite and PostgreSQL) behind the tests' fake hub.
A person asks for access to a target for some days, a data steward approves it in a browser
session (:meth:`harness.governance.Running.decide`), and the access lasts that many days
from the decision. People read their own grants; the features service (``features-token``,
whose role holds ``custom:grants:read``) reads anyone's. Each test asks for targets of its
own, so the tests of the module, which share one service, do not see each other's grants.
Last, the migration that brought durations gives the approvals made before it the default.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import jsonschema
import pytest
import sqlalchemy as sa
from alembic import command

from harness.governance import Running, cookie_client
from harness.platform import pg_databases
from hubforge.errors import StoreError
from hubforge.events.spool import read_spool
from hubforge.hub.governance import schemas
from hubforge.hub.governance.events import DATA_ACCESS_SCHEMA
from hubforge.hub.governance.store import ApprovalRequestRow, GovernanceStore, alembic_config

GRANTS = {"type": "array", "items": schemas.GRANT}
DEPLOY = {"kind": "deploy-staging", "model": "churn", "version": "3", "justification": "AUC +4"}


def new_target() -> str:
    """A feature view of this test's own."""
    return f"feature_view:payments/card_risk_{uuid.uuid4().hex[:8]}"


def ask(running: Running, target: str, token: str = "alice-token", **fields: Any) -> dict[str, Any]:
    """A data-access request for ``target``, submitted."""
    body = {"kind": "data-access", "target": target, "justification": "fraud model", **fields}
    with running.client(token) as c:
        r = c.post("api/requests", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def approve(running: Running, request_id: str, decision: str = "approve") -> dict[str, Any]:
    """Dan, the data steward, decides the request in his browser session."""
    r = running.decide("dan-token", request_id, decision)
    assert r.status_code == 200, r.text
    return r.json()


def grants(running: Running, token: str = "alice-token", **params: str) -> list[dict[str, Any]]:
    with running.client(token) as c:
        r = c.get("api/grants", params=params)
    assert r.status_code == 200, r.text
    jsonschema.validate(r.json(), GRANTS)
    return r.json()


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_an_approved_request_is_a_grant_for_the_days_it_asked(running):
    target = new_target()
    before = datetime.now(UTC)
    created = ask(running, target, duration_days=7)
    assert (created["duration_days"], created["expires"]) == (7, None)
    assert grants(running, target=target) == [], "pending: no access yet"
    decided = approve(running, created["id"])
    after = datetime.now(UTC)
    jsonschema.validate(decided, schemas.APPROVAL_REQUEST)
    assert at(decided["expires"]) == at(decided["decided"]) + timedelta(days=7)
    (grant,) = grants(running, target=target)
    assert grant == {
        "request_id": created["id"],
        "user": "alice",
        "target": target,
        "granted": decided["decided"],
        "expires": decided["expires"],
        "approved_by": "dan",
    }
    assert before + timedelta(days=7) <= at(grant["expires"]) <= after + timedelta(days=7)
    assert created["id"] in [g["request_id"] for g in grants(running)], "without target: every grant of hers"


def test_a_request_that_does_not_say_lasts_thirty_days(running):
    target = new_target()
    created = ask(running, target)
    assert created["duration_days"] == 30
    decided = approve(running, created["id"])
    assert at(decided["expires"]) - at(decided["decided"]) == timedelta(days=30)


def test_a_person_reads_only_their_own_grants_a_service_with_the_scope_anyones(running):
    target = new_target()
    approve(running, ask(running, target)["id"])
    with running.client("bob-token") as c:
        r = c.get("api/grants", params={"user": "alice"})
    assert r.status_code == 403
    assert r.json()["message"] == (
        "missing scope: reading another user's grants needs custom:grants:read or custom:audit:read"
    )
    assert grants(running, "bob-token", target=target) == [], "his own: none"
    assert [g["user"] for g in grants(running, "alice-token", user="alice", target=target)] == ["alice"]
    assert [g["user"] for g in grants(running, "features-token", user="alice", target=target)] == ["alice"]
    # an auditor may too (dan holds custom:audit:read)
    assert [g["user"] for g in grants(running, "dan-token", user="alice", target=target)] == ["alice"]
    # a service has none of its own, and is not the person named like it
    assert grants(running, "features-token", target=target) == []
    with running.client("robot-token") as c:
        assert c.get("api/grants", params={"user": "robot"}).status_code == 403


def test_rejected_pending_and_expired_requests_grant_nothing(running):
    store: GovernanceStore = running.app.settings["store"]
    target = new_target()
    rejected = approve(running, ask(running, target)["id"], decision="reject")
    assert (rejected["status"], rejected["expires"]) == ("rejected", None)
    ask(running, target)  # pending
    expired = approve(running, ask(running, target, duration_days=1)["id"])
    active = approve(running, ask(running, target, duration_days=2)["id"])
    assert [g["request_id"] for g in grants(running, target=target)] == [active["id"], expired["id"]]
    with store.engine.begin() as connection:
        ends = datetime.now(UTC) - timedelta(seconds=1)
        connection.execute(sa.update(ApprovalRequestRow).where(ApprovalRequestRow.id == expired["id"]).values(
            expires=ends))  # fmt: skip
    assert [g["request_id"] for g in grants(running, target=target)] == [active["id"]]
    for token in ("alice-token", "features-token"):
        assert [g["request_id"] for g in grants(running, token, user="alice", target=target)] == [active["id"]]
    # and at the moment access ends, it has ended
    ending = at(active["expires"])
    assert [g.id for g in store.active_grants("alice", target, now=ending - timedelta(microseconds=1))] == [
        active["id"]
    ]
    assert store.active_grants("alice", target, now=ending) == []


def test_target_filters_and_the_newest_grant_comes_first(running):
    first, second = new_target(), new_target()
    older = approve(running, ask(running, first)["id"])
    newer = approve(running, ask(running, second)["id"])
    again = approve(running, ask(running, first, duration_days=3)["id"])
    assert [g["request_id"] for g in grants(running, target=first)] == [again["id"], older["id"]]
    assert [g["request_id"] for g in grants(running, target=second)] == [newer["id"]]
    mine = [g["request_id"] for g in grants(running)]
    assert mine.index(again["id"]) < mine.index(newer["id"]) < mine.index(older["id"])
    assert grants(running, target=first + "x") == []
    assert grants(running, target="") == []


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"target": "x" * 201}, "query parameter 'target' must be at most 200 characters"),
        ({"user": "u" * 256}, "query parameter 'user' must be at most 255 characters"),
    ],
)
def test_a_bad_query_parameter_is_400_naming_it(running, params, needle):
    with running.client("features-token") as c:
        r = c.get("api/grants", params=params)
    assert (r.status_code, r.json()["message"]) == (400, needle)


def test_a_nul_in_a_query_parameter_reaches_no_backend(running):
    # tornado makes each control character a space: asked for, and checked on, "ds " (PostgreSQL
    # would refuse a NUL even in a lookup)
    target = new_target()
    approve(running, ask(running, target)["id"])
    assert grants(running, "features-token", user="alice", target=target + "\x00") == []
    with running.client("bob-token") as c:
        assert c.get("api/grants", params={"user": "bob\x00"}).status_code == 403, "not bob: someone else"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"duration_days": 0}, "field 'duration_days' must be at least 1"),
        ({"duration_days": 91}, "field 'duration_days' must be at most 90"),
        ({"duration_days": "x"}, "field 'duration_days' must be of type integer"),
        ({**DEPLOY, "duration_days": 7}, "field 'duration_days' belongs to data-access requests, not deploy requests"),
        ({**DEPLOY, "kind": "deploy-production", "duration_days": 30},
         "field 'duration_days' belongs to data-access requests, not deploy requests"),
    ],
)  # fmt: skip
def test_a_duration_out_of_range_or_on_a_deploy_request_is_400_naming_the_field(running, body, message):
    base = {"kind": "data-access", "target": new_target(), "justification": "why"}
    request = {**base, **body}
    if "model" in body:
        del request["target"]
    with running.client("alice-token") as c:
        r = c.post("api/requests", json=request)
    assert (r.status_code, r.json()["message"]) == (400, message)
    with running.client("alice-token") as c:
        r = c.post("api/policy/deploy", json={**DEPLOY, "duration_days": 7})
    assert (r.status_code, r.json()["message"]) == (400, "unknown field 'duration_days'")


def test_the_request_and_the_approval_are_in_the_audit_trail(running):
    target = new_target()
    created = ask(running, target, duration_days=5)
    approve(running, created["id"])
    assert running.audit.flush(10)
    requested, approved = [r for r in read_spool(running.audit.directory) if r["resource"]["id"] == created["id"]]
    assert requested["__schema__"] == approved["__schema__"] == DATA_ACCESS_SCHEMA
    assert (requested["user"], requested["action"], requested["dataset"]) == ("alice", "requested", target)
    assert (approved["user"], approved["action"], approved["requester"]) == ("dan", "approved", "alice")


def test_the_decision_page_says_for_how_long_and_until_when(running):
    created = ask(running, new_target(), duration_days=7)
    with cookie_client(running, "dan-token") as dan:
        page = dan.get(f"requests/{created['id']}", headers={"Sec-Fetch-Mode": "navigate"}).text
        assert "<th>Access for</th><td>7 days</td>" in page and "Access until" not in page
        decided = approve(running, created["id"])
        page = dan.get(f"requests/{created['id']}", headers={"Sec-Fetch-Mode": "navigate"}).text
    until = at(decided["expires"]).strftime("%Y-%m-%d %H:%M UTC")
    assert f"<th>Access until</th><td>{until}</td>" in page


def test_the_grants_operation_is_documented_with_its_query_and_schema(running):
    with running.client() as c:
        spec = c.get("api/openapi.json").json()
    operation = spec["paths"]["/api/grants"]["get"]
    assert operation["x-hubforge-scopes"] == []  # any hub user; another user's grants need a scope, said here:
    assert "custom:grants:read" in operation["description"]
    assert {p["name"]: p["schema"]["maxLength"] for p in operation["parameters"]} == {"user": 255, "target": 200}
    items = operation["responses"]["200"]["content"]["application/json"]["schema"]["items"]
    assert items == {"$ref": "#/components/schemas/Grant"}
    body = spec["components"]["schemas"]["NewRequest"]["properties"]["duration_days"]
    assert (body["minimum"], body["maximum"]) == (1, 90)


# --- the migration -----------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """An empty database on each backend."""
    with contextlib.ExitStack() as stack:
        if request.param == "sqlite":
            yield f"sqlite:///{tmp_path / 'governance.sqlite'}"
        else:
            yield stack.enter_context(pg_databases("grants"))["grants"]


INSERT = sa.text(
    "INSERT INTO gov_approval_requests (id, kind, target, justification, requester, status, created, decided, "
    "decided_by) VALUES (:id, 'data-access', :target, 'why', 'alice', :status, :created, :decided, :by)"
)


def test_the_migration_gives_earlier_approvals_the_default_thirty_days(empty_url):
    store = GovernanceStore(empty_url)
    now = datetime.now(UTC)
    rows = {
        "recent": ("approved", now - timedelta(days=3), "dan"),
        "long-ago": ("approved", now - timedelta(days=40), "dan"),
        "rejected": ("rejected", now - timedelta(days=1), "dan"),
        "pending": ("pending", None, None),
    }
    with store.engine.begin() as connection:
        command.upgrade(alembic_config(connection), "0004")
        for name, (status, decided, by) in rows.items():
            values = {"id": f"before-{name}", "target": f"ds-{name}", "status": status, "by": by}
            connection.execute(INSERT, {**values, "created": now - timedelta(days=50), "decided": decided})
    store.upgrade()
    recent = store.get_request("before-recent")
    assert recent is not None and recent.duration_days is None
    assert recent.expires == recent.decided + timedelta(days=30)
    assert [g.id for g in store.active_grants("alice")] == ["before-recent"], "long ago: ended; rejected: none"
    assert store.get_request("before-rejected").expires is None
    # a request pending across the migration lasts the default once approved
    pending = store.decide("before-pending", "dan", "approve")
    assert pending.expires == pending.decided + timedelta(days=30)
    # the new check holds on both backends, the old ones still do
    with pytest.raises(sa.exc.IntegrityError), store.engine.begin() as connection:
        connection.execute(sa.text("UPDATE gov_approval_requests SET duration_days = 91 WHERE id = 'before-recent'"))
    with pytest.raises(sa.exc.IntegrityError), store.engine.begin() as connection:
        connection.execute(sa.text("UPDATE gov_approval_requests SET status = 'maybe' WHERE id = 'before-recent'"))
    # and it can be undone, keeping the requests
    with store.engine.begin() as connection:
        command.downgrade(alembic_config(connection), "0004")
    assert "expires" not in {c["name"] for c in sa.inspect(store.engine).get_columns("gov_approval_requests")}
    store.upgrade()
    assert store.get_request("before-recent").expires == recent.expires, "the backfill ran again, the same"
    store.dispose()


def test_an_unknown_duration_is_refused_by_the_store_too(running):
    store: GovernanceStore = running.app.settings["store"]
    for kind, days in (("data-access", 0), ("data-access", 91), ("deploy-staging", 7)):
        with pytest.raises(StoreError, match="data-access only"):
            store.create_request(kind=kind, target="t", justification="j", requester="alice", duration_days=days)
