"""The governance REST API: HTTP at the edge, the store and policy behind it.

Every response is JSON, errors included (``{"status": N, "message": "..."}``).
Bodies must be ``application/json`` (else 415), strict JSON (see
:mod:`.jsonbody`; else 400 saying what is wrong) and match the operation's
schema (else 400 naming the field). A method a path lacks is a 405 whose
``Allow`` header lists the handler's ``operations``. :data:`ROUTES` lists
every route as an OpenAPI path template, relative to the service prefix.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import ClassVar

from jupyterhub.services.auth import HubOAuthCallbackHandler
from jupyterhub.utils import url_path_join
from tornado import web

from hubforge.errors import Refusal
from hubforge.events import event_schemas
from hubforge.events.record import EVENT_IDS
from hubforge.personas import persona_names
from hubforge.spawner_profiles.local.accounts import WORDS

from .api import APIHandler
from .approvals import ApprovalRequestHandler, ApprovalRequestsHandler, DecisionHandler, DeployPolicyHandler
from .audit import AuditLog, AuditQuery, query_events
from .auth import HubAuthHandler, needs_scope, public
from .decision_pages import RequestListPage, RequestPage
from .grants import GrantsHandler
from .ingest import INGEST_BODY, reported_records
from .openapi import Operation
from .pages import AuditPageHandler
from .policy import (
    AUDIT_SCOPE,
    TRAIL_SCOPE,
    has_scope,
)
from .schemas import (
    AUDIT_PAGE,
    HEALTH,
    INDEX,
    INGESTED,
    WHOAMI,
)

__all__ = [
    "ROUTES",
    "APIHandler",
    "ApprovalRequestHandler",
    "ApprovalRequestsHandler",
    "AuditEventsHandler",
    "DecisionHandler",
    "DeployPolicyHandler",
    "GrantsHandler",
    "HealthHandler",
    "IndexHandler",
    "NotFoundHandler",
    "NotificationsHandler",
    "OAuthCallbackHandler",
    "OpenAPIHandler",
    "WhoAmIHandler",
]


class IndexHandler(APIHandler):
    """The service's landing page (the hub's Services menu links here)."""

    operations: ClassVar[dict[str, Operation]] = {
        "get": Operation(
            "Who is logged in and where the API is described",
            {200: INDEX, 302: None},
            description="Browsers without a session are sent to the hub login (302).",
        )
    }

    @needs_scope()
    def get(self) -> None:
        """Answer the user's name and the API's links."""
        prefix = self.settings["service_prefix"]
        self.write_json(
            {
                "service": "hubforge governance",
                "user": self.user_name,
                "openapi": url_path_join(prefix, "api/openapi.json"),
                "whoami": url_path_join(prefix, "api/whoami"),
            }
        )


class HealthHandler(APIHandler):
    """Readiness: the process serves requests (no auth, no store access)."""

    operations: ClassVar[dict[str, Operation]] = {"get": Operation("Readiness check", {200: HEALTH})}

    @public
    def get(self) -> None:
        """Answer ``{"status": "ok"}``."""
        self.write_json({"status": "ok"})


class OpenAPIHandler(APIHandler):
    """The OpenAPI document of this service."""

    operations: ClassVar[dict[str, Operation]] = {
        "get": Operation("This API as an OpenAPI 3.1 document", {200: {"type": "object"}})
    }

    @public
    def get(self) -> None:
        """Answer the document built at start-up."""
        self.write_json(self.settings["openapi"])


class WhoAmIHandler(APIHandler):
    """Who the caller is, as the platform sees them."""

    operations: ClassVar[dict[str, Operation]] = {
        "get": Operation("The caller's name, groups, personas and custom scopes", {200: WHOAMI})
    }

    @needs_scope()
    def get(self) -> None:
        """Answer the caller's identity."""
        user = self.current_user
        groups = sorted(user.get("groups") or [])
        held = {p for group in groups for p in self.settings["group_personas"].get(group, [])}
        self.write_json(
            {
                "name": user["name"],
                "groups": groups,
                "personas": [p for p in persona_names() if p in held],
                "scopes": sorted(s for s in self.user_scopes if s.startswith("custom:")),
                "admin": bool(user.get("admin", False)),
                "isolation": {"mode": self.settings["isolation"], "words": WORDS[self.settings["isolation"]]},
            }
        )


class AuditEventsHandler(APIHandler):
    """The audit trail's events."""

    operations: ClassVar[dict[str, Operation]] = {
        "get": Operation(
            "The audit trail's events, newest first",
            {200: AUDIT_PAGE},
            description=(
                "Everyone's events with custom:audit-trail:read, one's own otherwise. Filters combine; "
                "``next`` is the cursor of the following page."
            ),
            query={
                "user": {"type": "string", "maxLength": 256},
                "type": {
                    "type": "string",
                    "enum": sorted([*event_schemas(), *(i.removeprefix(EVENT_IDS) for i in event_schemas())]),
                    "description": "An event schema: ``hub/server/v1`` or its full $id.",
                },
                "action": {"type": "string", "maxLength": 64},
                "resource": {
                    "type": "string",
                    "maxLength": 1100,
                    "description": "``<type>:<id>``, e.g. ``server:alice/``.",
                },
                "since": {"type": "string", "format": "date-time"},
                "until": {"type": "string", "format": "date-time"},
                "cursor": {"type": "string", "pattern": "^[1-9][0-9]{0,17}$"},
                "limit": {"type": "integer", "minimum": 1, "maximum": 1000},
            },
            errors=(400, 503),
        ),
        "post": Operation(
            "Record what one of the caller's servers reports",
            {200: INGESTED},
            request=INGEST_BODY,
            description=(
                "A person's server forwards its spools here, at least once; each record is kept once "
                "(its emitter and ``__seq__``). Records are kept as reported by the caller's server: "
                "one naming another user is refused (403), as is any not valid against its schema (400); "
                "a refused request stores nothing. Hub users only: services record through their spools."
            ),
            errors=(400, 403, 413, 503),
        ),
    }
    max_body = 4 * 1024 * 1024

    @needs_scope()
    async def post(self) -> None:
        """Keep what one of the caller's servers reports."""
        if self.current_user.get("kind", "user") != "user":
            raise web.HTTPError(403, "only a person's server reports events; services record them in their spool")
        body = self.json_body()
        try:
            records = reported_records(body, self.user_name)
        except Refusal as exc:
            raise self.refused(exc) from None
        trail: AuditLog | None = self.settings.get("trail")
        if trail is None:
            raise web.HTTPError(503, "this service keeps no audit trail")
        if not records:
            self.write_json({"stored": 0, "duplicates": 0, "acknowledged": 0})
            return
        done = await self.call_store(trail.ingest, records)
        acknowledged = max((int(r["__seq__"]) for r in records), default=0)
        self.write_json({"stored": done.stored, "duplicates": done.duplicates, "acknowledged": acknowledged})

    @needs_scope()
    async def get(self) -> None:
        """A page of the events the caller may see."""
        arg = self._text
        kind = arg("type", None)
        if kind is not None:
            kind = kind if kind.startswith(EVENT_IDS) else EVENT_IDS + kind
            if kind not in event_schemas():
                raise web.HTTPError(400, "query parameter 'type' names no event schema")
        query = AuditQuery(
            only_user=None if has_scope(self.user_scopes, TRAIL_SCOPE) else self.user_name,
            user=arg("user", None),
            schema=kind,
            action=arg("action", None),
            resource=arg("resource", None),
            since=self._time("since"),
            until=self._time("until"),
            before=self._number("cursor", 1, 10**18),
            limit=self._number("limit", 1, 1000) or 100,
        )
        page, following = await self.call_store(query_events, self.store, query)
        self.write_json({"events": page, "next": None if following is None else str(following)})

    #: The longest value of each text filter (what the trail's columns hold).
    TEXT_LIMITS: ClassVar[dict[str, int]] = {"user": 256, "type": 300, "action": 64, "resource": 1100}

    def _text(self, name: str, default: None = None) -> str | None:
        value = self.get_query_argument(name, default)
        if value is None:
            return None
        if "\x00" in value or len(value) > self.TEXT_LIMITS[name]:
            raise web.HTTPError(
                400, f"query parameter {name!r} must be at most {self.TEXT_LIMITS[name]} characters, without NUL"
            )
        return value

    def _time(self, name: str) -> datetime | None:
        value = self.get_query_argument(name, None)
        if value is None:
            return None
        text = value.upper().replace("Z", "+00:00")
        text = text[:17] + "59" + text[19:] if text[17:19] == "60" else text  # a leap second: RFC 3339 allows it
        try:
            parsed = datetime.fromisoformat(text)
            return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)
        except ValueError:
            raise web.HTTPError(400, f"query parameter {name!r} must be an ISO 8601 time") from None
        except OverflowError:  # e.g. 0001-01-01T00:00+01:00: before the first UTC time there is
            raise web.HTTPError(400, f"query parameter {name!r} is out of range") from None

    def _number(self, name: str, low: int, high: int) -> int | None:
        value = self.get_query_argument(name, None)
        if value is None:
            return None
        if not (value.isascii() and value.isdigit() and len(value) <= 18 and low <= int(value) <= high):
            raise web.HTTPError(400, f"query parameter {name!r} must be a whole number from {low} to {high}")
        return int(value)


# What tornado's get_argument strips from a query argument: control characters,
# then str.strip()'s whitespace.
_STRIPPED = r"\x00-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"


class OAuthCallbackHandler(HubAuthHandler, HubOAuthCallbackHandler):
    """Finishes the hub OAuth login of a browser and sets the service cookie."""

    operations: ClassVar[dict[str, Operation]] = {
        "get": Operation(
            "Finish the hub OAuth login (browsers; the hub redirects here)",
            {302: None},
            description="The hub sends the code and state; without them (or with the hub's ``error``) it is a 400.",
            # A code of only what tornado strips arrives empty (400); any state is
            # looked up (a stale one: a redirect for a logged-in user, else 403).
            query={"code": {"type": "string", "pattern": f"[^{_STRIPPED}]"}, "state": {"type": "string"}},
            required_query=("code", "state"),
            errors=(400, 403),
        )
    }

    @public
    async def get(self) -> None:
        """Exchange the OAuth code for a token and redirect to where the login started."""
        # The parent asks for current_user on a stale login; look the user up first.
        await self.resolve_user()
        await HubOAuthCallbackHandler.get(self)


class _EveryMethod(tuple[str, ...]):
    """A ``SUPPORTED_METHODS`` holding every method name, even those tornado would refuse first."""

    def __contains__(self, method: object) -> bool:
        return True


_NOTIFICATIONS = {
    "type": "object",
    "additionalProperties": False,
    "required": ["webhook", "deliveries"],
    "properties": {
        "webhook": {"type": ["string", "null"], "description": "Where events go (null: no webhook)."},
        "deliveries": {
            "type": "array",
            "description": "The latest deliveries, newest first.",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["id", "event", "created", "status", "attempts", "error"],
                "properties": {
                    "id": {"type": "string"},
                    "event": {"type": "string"},
                    "created": {"type": "string", "format": "date-time"},
                    "status": {"enum": ["pending", "delivered", "failed"]},
                    "attempts": {"type": "integer"},
                    "error": {"type": ["string", "null"]},
                },
            },
        },
    },
}


class NotificationsHandler(APIHandler):
    """The outgoing webhook's latest deliveries: failures visible to who oversees the platform."""

    operations: ClassVar[dict[str, Operation]] = {
        "get": Operation(
            "The webhook's latest deliveries (requests, decisions, deployments) and how they went",
            {200: _NOTIFICATIONS},
            description="For holders of custom:audit-trail:read or custom:audit:read.",
        )
    }

    @needs_scope(TRAIL_SCOPE, AUDIT_SCOPE)
    def get(self) -> None:
        """Answer the deliveries."""
        webhook = self.settings.get("webhook")
        self.write_json(
            {"webhook": webhook.url if webhook else None, "deliveries": webhook.recent() if webhook else []}
        )


class NotFoundHandler(APIHandler):
    """Any path no route matches: a JSON 404, whatever the method (never a 405: no path, no methods)."""

    SUPPORTED_METHODS = _EveryMethod()

    async def prepare(self) -> None:
        """Answer 404 whatever the method."""
        raise web.HTTPError(404, "no such endpoint")


#: (OpenAPI path template relative to the service prefix, handler)
ROUTES: list[tuple[str, type[web.RequestHandler]]] = [
    ("", IndexHandler),
    ("api/health", HealthHandler),
    ("api/openapi.json", OpenAPIHandler),
    ("api/whoami", WhoAmIHandler),
    ("api/requests", ApprovalRequestsHandler),
    ("api/requests/{request_id}", ApprovalRequestHandler),
    ("api/requests/{request_id}/decision", DecisionHandler),
    ("api/policy/deploy", DeployPolicyHandler),
    ("api/grants", GrantsHandler),
    ("api/notifications", NotificationsHandler),
    ("api/audit/events", AuditEventsHandler),
    ("audit", AuditPageHandler),
    ("requests", RequestListPage),
    ("requests/{request_id}", RequestPage),
    ("oauth_callback", OAuthCallbackHandler),
]
