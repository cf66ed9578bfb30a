"""The grants API: whose approved data-access requests are active now.

An approved data-access request is a grant of its target (free text; feature views are
``feature_view:<project>/<view>``) to its requester, until its ``expires``. Services that
serve restricted data (the features service) ask here before serving it, as themselves:
their hub role holds ``custom:grants:read``. A person reads their own grants.
"""

from __future__ import annotations

from typing import ClassVar

from tornado import web

from .api import APIHandler
from .auth import needs_scope
from .model import MAX_TARGET
from .openapi import Operation
from .policy import AUDIT_SCOPE, GRANTS_SCOPE, PolicyDenied, grants_subject
from .schemas import GRANT

__all__ = ["MAX_USER", "GrantsHandler"]

#: The longest user name the store keeps (the requester column).
MAX_USER = 255


class GrantsHandler(APIHandler):
    """The active data-access grants of one user."""

    operations: ClassVar[dict[str, Operation]] = {
        "get": Operation(
            "The active data-access grants of the caller, or of `user`, the newest first",
            {200: {"type": "array", "items": GRANT}},
            description=(
                "Approved data-access requests whose access has not ended, of `target` only when given. "
                f"One's own grants, any hub user; another user's need {GRANTS_SCOPE} or {AUDIT_SCOPE} "
                "(403 otherwise). A service has no grants of its own."
            ),
            query={
                "user": {"type": "string", "maxLength": MAX_USER},
                "target": {"type": "string", "maxLength": MAX_TARGET},
            },
            errors=(400, 503),
        )
    }

    def _text(self, name: str, longest: int) -> str | None:
        # Unstripped: the store is asked for exactly what the permission was checked on (tornado
        # has made each control character a space, so no NUL reaches the store).
        value = self.get_query_argument(name, None, strip=False)
        if value is not None and len(value) > longest:
            raise web.HTTPError(400, f"query parameter {name!r} must be at most {longest} characters")
        return value

    @needs_scope()
    async def get(self) -> None:
        """Answer the grants the caller asked for and may read."""
        user, target = self._text("user", MAX_USER), self._text("target", MAX_TARGET)
        kind = str(self.current_user.get("kind", "user"))
        try:
            subject = grants_subject(self.user_name, kind, self.user_scopes, user)
        except PolicyDenied as denied:
            raise self.refused(denied) from None
        found = [] if subject is None else await self.call_store(self.store.active_grants, subject, target)
        self.write_json([grant.grant_json() for grant in found])
