"""The governance data model as plain values: what the store returns and the API sends.

Nothing here touches a database or a request; the store maps its rows onto
:class:`ApprovalRequest` so that handlers and policy never hold ORM objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = [
    "DECISIONS",
    "KINDS",
    "MAX_COMMENT",
    "MAX_JUSTIFICATION",
    "MAX_TARGET",
    "STATUSES",
    "ApprovalRequest",
    "format_time",
]

#: What may be requested.
KINDS: tuple[str, ...] = ("deploy-staging", "deploy-production", "data-access")

#: The life of a request: pending until someone decides it, once.
STATUSES: tuple[str, ...] = ("pending", "approved", "rejected")

#: A decision as sent by an approver -> the status it leads to.
DECISIONS: dict[str, str] = {"approve": "approved", "reject": "rejected"}

MAX_TARGET = 200
MAX_JUSTIFICATION = 2000
MAX_COMMENT = 2000


def format_time(value: datetime | None) -> str | None:
    """An aware UTC datetime as ISO 8601 with a ``Z`` suffix, as JupyterHub's API writes it."""
    if value is None:
        return None
    return value.isoformat().replace("+00:00", "Z")


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

    @property
    def pending(self) -> bool:
        """Whether the request still awaits a decision."""
        return self.status == "pending"

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
        }
