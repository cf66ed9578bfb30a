"""The governance data model as plain values: what the store returns and the API sends.

Nothing here touches a database or a request; the store maps its rows onto
:class:`ApprovalRequest` so that handlers and policy never hold ORM objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

__all__ = [
    "DATA_ACCESS",
    "DECISIONS",
    "DEFAULT_GRANT_DAYS",
    "DEPLOY_STAGES",
    "DEPLOY_STATUSES",
    "KINDS",
    "MAX_COMMENT",
    "MAX_GRANT_DAYS",
    "MAX_JUSTIFICATION",
    "MAX_MODEL",
    "MAX_TARGET",
    "STATUSES",
    "ApprovalRequest",
    "access_expires",
    "format_time",
    "stage_of",
]

#: What may be requested.
KINDS: tuple[str, ...] = ("deploy-staging", "deploy-production", "data-access")

#: The life of a request: pending until someone decides it, once.
STATUSES: tuple[str, ...] = ("pending", "approved", "rejected")

#: How an approved deployment went: being deployed, serving, failed, or rolled back since.
DEPLOY_STATUSES: tuple[str, ...] = ("deploying", "deployed", "failed", "rolled_back")

#: A decision as sent by an approver -> the status it leads to.
DECISIONS: dict[str, str] = {"approve": "approved", "reject": "rejected"}

#: The request kinds that are deployments -> the stage each deploys to.
DEPLOY_STAGES: dict[str, str] = {"deploy-staging": "staging", "deploy-production": "production"}

#: The kind whose approval grants its requester access to its target for a while.
DATA_ACCESS = "data-access"
#: How many days an approved data-access request lasts when it did not say (and for requests
#: made before requests said).
DEFAULT_GRANT_DAYS = 30
#: The longest a data-access request may ask for: access is asked for again, not held forever.
MAX_GRANT_DAYS = 90

MAX_TARGET = 200
#: MLflow's own limit on a registered model's name.
MAX_MODEL = 256
MAX_JUSTIFICATION = 2000
MAX_COMMENT = 2000


def format_time(value: datetime | None) -> str | None:
    """An aware UTC datetime as ISO 8601 with a ``Z`` suffix, as JupyterHub's API writes it."""
    if value is None:
        return None
    return value.isoformat().replace("+00:00", "Z")


def access_expires(granted: datetime, duration_days: int | None) -> datetime:
    """When access approved at ``granted`` for ``duration_days`` ends (None: the default)."""
    return granted + timedelta(days=DEFAULT_GRANT_DAYS if duration_days is None else duration_days)


def stage_of(kind: str) -> str | None:
    """The stage a request of ``kind`` deploys to; None for kinds that deploy nothing."""
    return DEPLOY_STAGES.get(kind)


@dataclass(frozen=True)
class ApprovalRequest:
    """One approval request, detached from any database session."""

    id: str
    kind: str
    target: str
    justification: str
    requester: str
    status: str
    created: datetime
    decided: datetime | None = None
    decided_by: str | None = None
    comment: str | None = None
    #: Deploy requests: the registered model and version, the canary's share of traffic.
    model: str | None = None
    version: str | None = None
    canary_percent: int | None = None
    #: The digest of the model version's files when it was approved (what may be served).
    digest: str | None = None
    #: The policy's last word on the request (:meth:`~.rego.PolicyResult.to_json`).
    policy: dict[str, Any] | None = None
    #: The deployment of an approved deploy request: its status, then the endpoint that
    #: serves it (deployed) or what went wrong (failed), and when that was recorded.
    deploy_status: str | None = None
    deploy_detail: str | None = None
    deploy_changed: datetime | None = None
    #: Data-access requests: the days access lasts once approved (None: the default, for
    #: requests made before they said), and when an approved one's access ends.
    duration_days: int | None = None
    expires: datetime | None = None

    @property
    def pending(self) -> bool:
        """Whether the request still awaits a decision."""
        return self.status == "pending"

    @property
    def stage(self) -> str | None:
        """The stage a deploy request deploys to; None for other kinds."""
        return stage_of(self.kind)

    def to_json(self) -> dict[str, Any]:
        """The API representation (see the ``ApprovalRequest`` schema)."""
        return {
            "id": self.id,
            "kind": self.kind,
            "target": self.target,
            "justification": self.justification,
            "requester": self.requester,
            "status": self.status,
            "created": format_time(self.created),
            "decided": format_time(self.decided),
            "decided_by": self.decided_by,
            "comment": self.comment,
            "model": self.model,
            "version": self.version,
            "canary_percent": self.canary_percent,
            "digest": self.digest,
            "policy": self.policy,
            "deployment": self.deployment_json(),
            "duration_days": self.duration_days,
            "expires": format_time(self.expires),
        }

    def grant_json(self) -> dict[str, Any]:
        """An approved data-access request as the grant it is (see the ``Grant`` schema)."""
        return {
            "request_id": self.id,
            "user": self.requester,
            "target": self.target,
            "granted": format_time(self.decided),
            "expires": format_time(self.expires),
            "approved_by": self.decided_by,
        }

    def deployment_json(self) -> dict[str, Any] | None:
        """``{status, endpoint, error, changed}`` of the deployment, None before there is one."""
        if self.deploy_status is None:
            return None
        return {
            "status": self.deploy_status,
            "endpoint": self.deploy_detail if self.deploy_status == "deployed" else None,
            "error": self.deploy_detail if self.deploy_status == "failed" else None,
            "changed": format_time(self.deploy_changed),
        }
