"""The governance service records requests, decisions and policy denials, and fails closed.

Against the real service (SQLite and PostgreSQL) behind the fake hub: who is always the
token's owner, never something in the body; a decision is on disk before it commits,
and one the trail cannot record is not taken (503, the request stays pending); a
decision the policy refuses is recorded as a denied policy decision with its reason.
"""

from __future__ import annotations

import os
from typing import Any

from harness.governance import Running
from hubforge.events.spool import read_spool
from hubforge.hub.governance.events import DATA_ACCESS_SCHEMA, DEPLOYMENT_SCHEMA, POLICY_SCHEMA


def submit(running: Running, token: str, kind: str, target: str) -> dict[str, Any]:
    with running.client(token) as c:
        r = c.post("api/requests", json={"kind": kind, "target": target, "justification": "because"})
        assert r.status_code == 201, r.text
        return r.json()


def decide(running: Running, token: str, request_id: str, decision: str) -> Any:
    with running.client(token) as c:
        return c.post(f"api/requests/{request_id}/decision", json={"decision": decision})


def recorded(running: Running, request_id: str) -> list[dict[str, Any]]:
    assert running.audit.flush(10)
    return [r for r in read_spool(running.audit.directory) if r["resource"]["id"] == request_id]


def test_a_deployment_request_and_its_approval_are_recorded_as_their_people(running: Running) -> None:
    created = submit(running, "alice-token", "deploy-production", "churn v7")
    assert decide(running, "carol-token", created["id"], "approve").status_code == 200
    requested, approved = recorded(running, created["id"])
    assert requested["__schema__"] == approved["__schema__"] == DEPLOYMENT_SCHEMA
    assert (requested["user"], requested["action"], requested["stage"]) == ("alice", "requested", "production")
    assert (approved["user"], approved["action"], approved["approver"]) == ("carol", "approved", "carol")
    assert approved["requester"] == "alice" and approved["model_name"] == "churn v7"
    assert approved["origin"] == {"observer": "governance", "client_address": "127.0.0.1"}


def test_a_data_access_request_denied_is_recorded_as_denied(running: Running) -> None:
    created = submit(running, "alice-token", "data-access", "features/customer_pii")
    assert decide(running, "dan-token", created["id"], "reject").status_code == 200
    requested, denied = recorded(running, created["id"])
    assert requested["__schema__"] == denied["__schema__"] == DATA_ACCESS_SCHEMA
    assert (denied["user"], denied["action"], denied["dataset"]) == ("dan", "denied", "features/customer_pii")


def test_a_decision_the_policy_refuses_is_recorded_with_its_reason(running: Running) -> None:
    created = submit(running, "carol-token", "deploy-production", "ranker v2")
    assert decide(running, "carol-token", created["id"], "approve").status_code == 403  # her own request
    _requested, policy = recorded(running, created["id"])
    assert policy["__schema__"] == POLICY_SCHEMA
    assert (policy["user"], policy["decision"], policy["outcome"]) == ("carol", "deny", "denied")
    assert policy["reasons"] == ["separation of duties: nobody may decide their own request"]


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
