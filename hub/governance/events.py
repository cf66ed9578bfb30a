"""What the governance service records in the audit trail: requests, decisions, policy denials.

The service is an emitter like the hub: its spool is ``<data folder>/events/governance/``,
which it collects itself with the others. A request submitted is recorded as it is
made; a decision is made durable *inside* the transaction that records it, so that a
decision the trail cannot hold is not taken (the caller gets 503 and the request stays
pending); a decision the policy refuses is recorded as a policy decision with its
reason.
"""

from __future__ import annotations

from typing import Any

from hubforge.events.spool import EventSpool

from .model import DEPLOY_STAGES, ApprovalRequest
from .rego import PolicyResult

__all__ = [
    "DATA_ACCESS_SCHEMA",
    "DEPLOYMENT_SCHEMA",
    "POLICY_SCHEMA",
    "decided",
    "denied",
    "deployment_changed",
    "evaluated",
    "submitted",
]

DEPLOYMENT_SCHEMA = "https://events.hubforge.dev/governance/deployment/v1"
DATA_ACCESS_SCHEMA = "https://events.hubforge.dev/governance/data_access/v1"
POLICY_SCHEMA = "https://events.hubforge.dev/governance/policy_decision/v1"


def _event(request: ApprovalRequest, user: str, action: str, client: str) -> tuple[str, dict[str, Any]]:
    base: dict[str, Any] = {
        "user": user,
        "action": action,
        "resource": {"type": "request", "id": request.id},
        "outcome": "success",
        "origin": {"observer": "governance", "client_address": client},
        "request_id": request.id,
        "requester": request.requester,
    }
    if request.decided_by:
        base["approver"] = request.decided_by
    if request.kind in DEPLOY_STAGES:
        deployment = {**base, "model_name": request.model or request.target, "stage": DEPLOY_STAGES[request.kind]}
        if request.version:
            deployment["version"] = request.version
        if request.canary_percent:
            deployment["canary_percent"] = request.canary_percent
        if request.digest:
            deployment["digest"] = request.digest
        return DEPLOYMENT_SCHEMA, deployment
    return DATA_ACCESS_SCHEMA, {**base, "dataset": request.target}


def submitted(spool: EventSpool | None, request: ApprovalRequest, client: str) -> None:
    """Record a request as submitted by its requester."""
    if spool is not None:
        spool.emit(*_event(request, request.requester, "requested", client))


def decided(spool: EventSpool | None, request: ApprovalRequest, client: str, timeout: float = 5.0) -> None:
    """Record a decision, on disk before returning; EventNotDurable (503) when it cannot be."""
    if spool is None:
        return
    approved = request.status == "approved"
    action = "approved" if approved else ("rejected" if request.kind in DEPLOY_STAGES else "denied")
    spool.emit_durable(*_event(request, str(request.decided_by), action, client), timeout=timeout)


def denied(spool: EventSpool | None, user: str, request: ApprovalRequest, reason: str, client: str) -> None:
    """Record that the approval policy refused ``user``'s decision of ``request``."""
    if spool is None:
        return
    spool.emit(
        POLICY_SCHEMA,
        {
            "user": user,
            "action": "evaluate",
            "resource": {"type": "request", "id": request.id},
            "outcome": "denied",
            "origin": {"observer": "governance", "client_address": client},
            "policy": f"approve {request.kind}",
            "decision": "deny",
            "reasons": [reason],
        },
    )


def evaluated(
    spool: EventSpool | None, user: str, request: ApprovalRequest, result: PolicyResult, action: str, client: str
) -> None:
    """Record the deploy policy's result for ``user``'s ``action`` (submit, approve) of ``request``."""
    if spool is None:
        return
    spool.emit(
        POLICY_SCHEMA,
        {
            "user": user,
            "action": "evaluate",
            "resource": {"type": "request", "id": request.id},
            "outcome": "success" if result.allow else "denied",
            "origin": {"observer": "governance", "client_address": client},
            "policy": f"{result.policy} ({action})",
            "decision": "allow" if result.allow else "deny",
            "reasons": list(result.reasons)[:32],
        },
    )


def deployment_changed(
    spool: EventSpool | None,
    request: ApprovalRequest,
    user: str,
    action: str,
    outcome: str,
    client: str,
    detail: str = "",
) -> None:
    """Record a deployment ``executed`` (or failing to be) or ``rolled_back``, as ``user``'s doing."""
    if spool is None:
        return
    _schema, event = _event(request, user, action, client)
    event["outcome"] = outcome
    if not client:
        event["origin"] = {"observer": "governance"}
    if detail and outcome != "success":
        event["error"] = detail[:1024]
    spool.emit(DEPLOYMENT_SCHEMA, event)
