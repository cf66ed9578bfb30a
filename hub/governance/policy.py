"""Who may see and decide which approval request: pure functions, no I/O.

Scopes are the ``scopes`` list of the hub's user model. They are compared
with JupyterHub's own :func:`~jupyterhub.services.auth.check_scopes`, so a
filtered scope such as ``custom:approve:production!group=ml`` does *not*
grant the unfiltered permission: a filter the service cannot resolve fails
closed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from jupyterhub.services.auth import check_scopes

from hubforge.errors import Forbidden

from .model import KINDS

__all__ = [
    "APPROVER_SCOPES",
    "AUDIT_SCOPE",
    "GRANTS_SCOPE",
    "NOT_FOUND_MESSAGE",
    "SUBMIT_SCOPE",
    "TRAIL_SCOPE",
    "PolicyDenied",
    "RequestLike",
    "Visibility",
    "approver_scope",
    "can_view",
    "check_decision",
    "grants_subject",
    "has_scope",
    "visibility",
]

SUBMIT_SCOPE = "custom:requests:submit"
AUDIT_SCOPE = "custom:audit:read"
#: Reads the audit trail: everyone's events, the audit page and reports (data stewards, platform admins).
TRAIL_SCOPE = "custom:audit-trail:read"
#: Checks anyone's active data-access grants (the features service, before serving restricted data).
GRANTS_SCOPE = "custom:grants:read"

#: The scope whose holders decide each kind of request.
APPROVER_SCOPES: dict[str, str] = {
    "deploy-staging": "custom:deploy:staging",
    "deploy-production": "custom:approve:production",
    "data-access": "custom:approve:data-access",
}

#: One message for "does not exist" and "may not see it", so a 404 reveals nothing.
NOT_FOUND_MESSAGE = "no such approval request"


class PolicyDenied(Forbidden):
    """A policy refuses an action; ``status`` is the HTTP status that says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message, status=status)
        self.message = message


class RequestLike(Protocol):
    """What policy needs to know of a request (an :class:`~.model.ApprovalRequest`)."""

    @property
    def kind(self) -> str: ...

    @property
    def requester(self) -> str: ...

    @property
    def status(self) -> str: ...


def approver_scope(kind: str) -> str:
    """The scope that approves requests of ``kind``; KeyError for an unknown kind."""
    return APPROVER_SCOPES[kind]


def has_scope(scopes: Iterable[str], required: str) -> bool:
    """Whether ``scopes`` grant ``required`` (filters resolved as JupyterHub does)."""
    scopes = set(scopes)
    try:
        return bool(check_scopes({required}, scopes))
    except ValueError:
        # One malformed scope makes check_scopes raise for the whole set; judge
        # each alone so it neither grants anything nor hides what the rest grant.
        return any(_grants(scope, required) for scope in scopes)


def _grants(scope: str, required: str) -> bool:
    try:
        return bool(check_scopes({required}, {scope}))
    except ValueError:
        return False


@dataclass(frozen=True)
class Visibility:
    """The requests one caller may see: their own, and every request of ``kinds``."""

    user: str
    kinds: frozenset[str]

    def allows(self, request: RequestLike) -> bool:
        """Whether ``request`` is visible."""
        return request.requester == self.user or request.kind in self.kinds


def visibility(user_name: str, scopes: Iterable[str]) -> Visibility:
    """What ``user_name`` holding ``scopes`` may see.

    Auditors see every kind; an approver sees every request of the kinds they
    decide (they cannot decide what they cannot find); everyone sees their own.
    """
    scopes = set(scopes)
    if has_scope(scopes, AUDIT_SCOPE):
        return Visibility(user_name, frozenset(KINDS))
    kinds = frozenset(kind for kind, scope in APPROVER_SCOPES.items() if has_scope(scopes, scope))
    return Visibility(user_name, kinds)


def can_view(user_name: str, scopes: Iterable[str], request: RequestLike) -> bool:
    """Whether ``user_name`` holding ``scopes`` may see ``request``."""
    return visibility(user_name, scopes).allows(request)


def check_decision(user_name: str, scopes: Iterable[str], request: RequestLike) -> None:
    """Raise :class:`PolicyDenied` unless ``user_name`` may decide ``request`` now.

    The order matters: a caller who may not see the request learns nothing
    (404, as for a missing one) before any other reason is given.
    """
    scopes = set(scopes)
    if not can_view(user_name, scopes, request):
        raise PolicyDenied(404, NOT_FOUND_MESSAGE)
    needed = approver_scope(request.kind)
    if not has_scope(scopes, needed):
        raise PolicyDenied(403, f"deciding a {request.kind} request needs the scope {needed}")
    if request.requester == user_name:
        raise PolicyDenied(403, "separation of duties: nobody may decide their own request")
    if request.status != "pending":
        raise PolicyDenied(409, f"the request was already decided (status: {request.status})")


def grants_subject(caller: str, caller_kind: str, scopes: Iterable[str], user: str | None) -> str | None:
    """Whose data-access grants ``caller`` (a hub ``user`` or a ``service``) holding ``scopes`` may
    read when asking for ``user``'s (None: their own); None when they have none to read.

    A person reads their own; anyone's needs :data:`GRANTS_SCOPE` or :data:`AUDIT_SCOPE`
    (else :class:`PolicyDenied`, 403). Grants are people's: a service asking for its own has
    none, and a service named like a person is not that person.
    """
    person = caller_kind == "user"
    if user is None or (person and user == caller):
        return caller if person else None
    scopes = set(scopes)
    if not (has_scope(scopes, GRANTS_SCOPE) or has_scope(scopes, AUDIT_SCOPE)):
        raise PolicyDenied(403, f"missing scope: reading another user's grants needs {GRANTS_SCOPE} or {AUDIT_SCOPE}")
    return user
