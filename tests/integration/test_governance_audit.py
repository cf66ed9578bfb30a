"""The governance service records requests, decisions and policy denials, and fails closed.

Against the real service (SQLite and PostgreSQL) behind the fake hub: who is always the
token's owner, never something in the body; a decision is on disk before it commits,
and one the trail cannot record is not taken (503, the request stays pending); a
decision the policy refuses is recorded as a denied policy decision with its reason.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from harness.governance import Running
from hubforge.events.spool import EventSpool, read_spool
from hubforge.hub.governance.audit import AuditLog, load_signing_key
from hubforge.hub.governance.events import DATA_ACCESS_SCHEMA, DEPLOYMENT_SCHEMA, POLICY_SCHEMA
from hubforge.hub.governance.store import GovernanceStore


def submit(running: Running, token: str, kind: str, target: str) -> dict[str, Any]:
    """A request; a deploy request's ``target`` is "<model> v<version>"."""
    body: dict[str, Any] = {"kind": kind, "target": target, "justification": "because"}
    if kind.startswith("deploy-"):
        model, _, version = body.pop("target").rpartition(" v")
        body |= {"model": model, "version": version}
    with running.client(token) as c:
        r = c.post("api/requests", json=body)
        assert r.status_code == 201, r.text
        return r.json()


def decide(running: Running, token: str, request_id: str, decision: str) -> Any:
    return running.decide(token, request_id, decision)


def recorded(running: Running, request_id: str) -> list[dict[str, Any]]:
    assert running.audit.flush(10)
    return [r for r in read_spool(running.audit.directory) if r["resource"]["id"] == request_id]


def test_a_deployment_request_and_its_approval_are_recorded_as_their_people(running: Running) -> None:
    created = submit(running, "alice-token", "deploy-production", "churn v7")
    assert decide(running, "carol-token", created["id"], "approve").status_code == 200
    requested, submit_check, approve_check, approved = recorded(running, created["id"])
    assert requested["__schema__"] == approved["__schema__"] == DEPLOYMENT_SCHEMA
    assert (requested["user"], requested["action"], requested["stage"]) == ("alice", "requested", "production")
    assert (approved["user"], approved["action"], approved["approver"]) == ("carol", "approved", "carol")
    assert approved["requester"] == "alice"
    assert (approved["model_name"], approved["version"]) == ("churn", "7")
    assert approved["origin"] == {"observer": "governance", "client_address": "127.0.0.1"}
    # the deploy policy's word, at submission (the requester's) and at approval (the approver's)
    assert submit_check["__schema__"] == approve_check["__schema__"] == POLICY_SCHEMA
    assert (submit_check["user"], submit_check["policy"]) == ("alice", "hubforge.deploy (submit)")
    assert (approve_check["user"], approve_check["decision"], approve_check["reasons"]) == ("carol", "allow", [])


def test_a_data_access_request_denied_is_recorded_as_denied(running: Running) -> None:
    created = submit(running, "alice-token", "data-access", "features/customer_pii")
    assert decide(running, "dan-token", created["id"], "reject").status_code == 200
    requested, denied = recorded(running, created["id"])
    assert requested["__schema__"] == denied["__schema__"] == DATA_ACCESS_SCHEMA
    assert (denied["user"], denied["action"], denied["dataset"]) == ("dan", "denied", "features/customer_pii")


def test_a_decision_the_policy_refuses_is_recorded_with_its_reason(running: Running) -> None:
    created = submit(running, "carol-token", "deploy-production", "ranker v2")
    assert decide(running, "carol-token", created["id"], "approve").status_code == 403  # her own request
    _requested, _submit_check, policy = recorded(running, created["id"])
    assert policy["__schema__"] == POLICY_SCHEMA
    assert (policy["user"], policy["decision"], policy["outcome"]) == ("carol", "deny", "denied")
    assert policy["reasons"] == ["separation of duties: nobody may decide their own request"]


def trail_of(store: GovernanceStore, tmp_path: Path) -> AuditLog:
    """Events of three people in the trail: logins, a server, a refusal."""
    log = AuditLog(store, load_signing_key(tmp_path / "key.pem", create=True))
    spool = EventSpool(tmp_path / "spool", f"hub-{uuid.uuid4().hex[:6]}")
    login = "https://events.hubforge.dev/hub/authentication/v1"
    server = "https://events.hubforge.dev/hub/server/v1"
    for user in ("alice", "bob", "dan", "alice", "bob"):
        spool.emit(login, {"user": user, "action": "login", "resource": {"type": "user", "id": user},
                           "outcome": "success", "origin": {"observer": "hub"}})  # fmt: skip
    spool.emit(server, {"user": "bob", "action": "spawn", "resource": {"type": "server", "id": "bob/"},
                        "outcome": "denied", "origin": {"observer": "hub"}, "tier": "finetune"})  # fmt: skip
    spool.close()
    log.ingest(read_spool(tmp_path / "spool"))
    return log


def listed(running: Running, token: str, **params: Any) -> Any:
    with running.client(token) as c:
        return c.get("api/audit/events", params=params)


def test_the_audit_api_shows_people_their_own_events_and_auditors_all(
    running: Running, backend_store: GovernanceStore, tmp_path: Path
) -> None:
    trail_of(backend_store, tmp_path)
    mine = listed(running, "alice-token", limit=1000)
    assert mine.status_code == 200, mine.text
    assert mine.json()["events"] and {e["user"] for e in mine.json()["events"]} == {"alice"}
    lead = listed(running, "carol-token", limit=1000).json()["events"]  # an ML lead oversees runs, not the trail
    assert {e["user"] for e in lead} <= {"carol"}
    everyone = listed(running, "dan-token", limit=1000).json()["events"]  # a data steward reads the trail
    assert {"alice", "bob", "dan"} <= {e["user"] for e in everyone}
    positions = [e["position"] for e in everyone]
    assert positions == sorted(positions, reverse=True), "newest first"
    refused = listed(running, "dan-token", type="hub/server/v1", user="bob", action="spawn", resource="server:bob/")
    (event,) = refused.json()["events"]
    assert (event["outcome"], event["event"]["tier"], event["observed"]) == ("denied", "finetune", "platform")


def test_the_audit_api_pages_through_everything_once(
    running: Running, backend_store: GovernanceStore, tmp_path: Path
) -> None:
    trail_of(backend_store, tmp_path)
    everything = [e["position"] for e in listed(running, "erin-token", limit=1000).json()["events"]]
    seen: list[int] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = listed(running, "erin-token", **params).json()
        seen += [e["position"] for e in page["events"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == everything


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"type": "hub/nothing/v1"}, "query parameter 'type' names no event schema"),
        ({"since": "yesterday"}, "query parameter 'since' must be an ISO 8601 time"),
        ({"since": "0001-01-01T00:00:00+01:00"}, "query parameter 'since' is out of range"),
        ({"until": "9999-12-31T23:59:59-01:00"}, "query parameter 'until' is out of range"),
        ({"limit": "0"}, "query parameter 'limit' must be a whole number from 1 to 1000"),
        ({"cursor": "-1"}, "query parameter 'cursor' must be a whole number from 1 to 1000000000000000000"),
        ({"limit": "٣"}, "query parameter 'limit' must be a whole number from 1 to 1000"),
    ],
)
def test_the_audit_api_refuses_bad_filters_naming_them(running: Running, params: dict[str, str], message: str) -> None:
    answer = listed(running, "dan-token", **params)
    assert (answer.status_code, answer.json()["message"]) == (400, message)


def test_a_decision_the_trail_cannot_record_is_not_taken(running: Running) -> None:
    # Last in the module: a spool that failed a write acknowledges nothing more (the
    # service must be restarted once its disk is back), and the module shares one service.
    created = submit(running, "alice-token", "deploy-staging", "churn v8")
    assert running.audit.flush(10)
    spool_fd = running.audit._fd
    saved = os.dup(spool_fd)
    full = os.open("/dev/full", os.O_WRONLY)
    os.dup2(full, spool_fd)  # the audit disk is full from now on
    try:
        refused = decide(running, "bob-token", created["id"], "approve")
    finally:
        os.dup2(saved, spool_fd)
        os.close(saved)
        os.close(full)
    assert refused.status_code == 503
    assert "audit trail cannot record this" in refused.json()["message"]
    with running.client("alice-token") as c:
        assert c.get(f"api/requests/{created['id']}").json()["status"] == "pending", "nothing was decided"
