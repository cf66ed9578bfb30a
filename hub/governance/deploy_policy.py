"""Deploy requests before the policy: what a submission must name, and the policy's input.

Pure functions: :func:`submission` makes the request a schema-valid body asks for (the
target of a deploy request is its model version), :func:`policy_input` builds ``input`` for the Rego package
:data:`~.rego.DEPLOY_PACKAGE` from a request, the person acting and the evidence.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from hubforge.personas import CUSTOM_SCOPES

from .evidence import Evidence
from .model import DEFAULT_GRANT_DAYS, DEPLOY_STAGES, stage_of
from .policy import has_scope

__all__ = ["Submission", "grants", "policy_input", "submission"]


@dataclass(frozen=True)
class Submission:
    """A new request as checked: deploy requests name a model version, others a target (and
    data-access requests how many days access lasts)."""

    kind: str
    target: str
    justification: str
    model: str | None = None
    version: str | None = None
    canary_percent: int | None = None
    duration_days: int | None = None

    @property
    def stage(self) -> str | None:
        """The stage a deploy request deploys to; None for other kinds."""
        return stage_of(self.kind)

    def store_fields(self) -> dict[str, Any]:
        """The keyword arguments of :meth:`~.store.GovernanceStore.create_request`."""
        return {
            "kind": self.kind,
            "target": self.target,
            "justification": self.justification,
            "model": self.model,
            "version": self.version,
            "canary_percent": self.canary_percent,
            "duration_days": self.duration_days,
        }


def submission(body: Mapping[str, Any]) -> Submission:
    """The request a body valid against :data:`~.schemas.NEW_REQUEST_BODY` asks for: the
    schema's per-kind rules have already refused what a kind may not carry or lacks."""
    kind = str(body["kind"])
    if kind not in DEPLOY_STAGES:
        days = int(body.get("duration_days", DEFAULT_GRANT_DAYS))
        return Submission(kind, str(body["target"]), str(body["justification"]), duration_days=days)
    model, version = str(body["model"]), str(body["version"])
    return Submission(
        kind,
        f"models:/{model}/{version}",
        str(body["justification"]),
        model=model,
        version=version,
        canary_percent=int(body.get("canary_percent", 0)),
    )


def grants(scopes: Iterable[str]) -> list[str]:
    """The platform's custom scopes that ``scopes`` grant in full (filters resolved)."""
    scopes = set(scopes)
    return [scope for scope in CUSTOM_SCOPES if has_scope(scopes, scope)]


def policy_input(
    action: str,
    request: Mapping[str, Any],
    actor: Mapping[str, Any],
    scopes: Iterable[str],
    evidence: Evidence,
) -> dict[str, Any]:
    """``input`` of the deploy policy.

    ``action`` is ``submit`` or ``approve``; ``request`` has the fields of a request
    (``id`` may be empty before it exists); ``actor`` is the hub's user model of whoever acts.
    """
    kind = str(request["kind"])
    return {
        "action": action,
        "request": {
            "id": str(request.get("id") or ""),
            "kind": kind,
            "stage": stage_of(kind),
            "model": request.get("model"),
            "version": request.get("version"),
            "canary_percent": request.get("canary_percent") or 0,
            "requester": str(request["requester"]),
        },
        "actor": {
            "name": str(actor.get("name", "")),
            "groups": sorted(str(g) for g in actor.get("groups") or ()),
            "grants": grants(scopes),
        },
        "evidence": evidence.to_input(),
    }
