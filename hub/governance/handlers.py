"""The governance REST API: HTTP at the edge, the store and policy behind it.

Every response is JSON, errors included (``{"status": N, "message": "..."}``).
Bodies must be ``application/json`` (else 415), strict JSON (see
:mod:`.jsonbody`; else 400 saying what is wrong) and match the operation's
schema (else 400 naming the field). A method a path lacks is a 405 whose
``Allow`` header lists the handler's ``operations``. :data:`ROUTES` lists
every route as an OpenAPI path template, relative to the service prefix.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

from jupyterhub.services.auth import HubOAuthCallbackHandler
from jupyterhub.utils import url_path_join
from tornado import web

from hubforge.errors import NotFound, Refusal, Unavailable, http_answer
from hubforge.events import event_schemas
from hubforge.events.spool import EventNotDurable
from hubforge.personas import persona_names
from hubforge.spawner_profiles.local.accounts import WORDS

from . import events
from .audit import AuditLog, AuditQuery, query_events
from .auth import HubAuthHandler, needs_scope, public
from .ingest import INGEST_BODY, reported_records
from .jsonbody import BodyError, parse_json_body
from .model import KINDS, STATUSES
from .openapi import Operation
from .pages import AuditPageHandler
from .policy import (
    APPROVER_SCOPES,
    NOT_FOUND_MESSAGE,
    SUBMIT_SCOPE,
    TRAIL_SCOPE,
    PolicyDenied,
    can_view,
    check_decision,
    has_scope,
    visibility,
)
from .schemas import (
    APPROVAL_REQUEST,
    AUDIT_PAGE,
    DECISION_BODY,
    HEALTH,
    INDEX,
    INGESTED,
    NEW_REQUEST_BODY,
    WHOAMI,
    describe,
    first_error,
)
from .store import GovernanceStore

__all__ = [
    "ROUTES",
    "APIHandler",
    "ApprovalRequestHandler",
    "ApprovalRequestsHandler",
    "AuditEventsHandler",
    "DecisionHandler",
    "HealthHandler",
    "IndexHandler",
    "NotFoundHandler",
    "OAuthCallbackHandler",
    "OpenAPIHandler",
    "WhoAmIHandler",
]

T = TypeVar("T")


class APIHandler(HubAuthHandler):
    """Base of the JSON handlers: bodies, store calls, JSON replies.

    Application settings used: ``store``, ``group_personas``, ``openapi``.
    """

    operations: ClassVar[dict[str, Operation]] = {}
    #: The largest request body this handler reads (413 beyond it).
    max_body: ClassVar[int] = 64 * 1024

    def set_default_headers(self) -> None:
        """JSON, and never cached: answers depend on who asks."""
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")

    @property
    def store(self) -> GovernanceStore:
        """The governance store."""
        return self.settings["store"]

    def write_json(self, data: Any, status: int = 200) -> None:
        """Finish with ``data`` as JSON."""
        self.set_status(status)
        self.finish(json.dumps(data))

    def json_body(self) -> dict[str, Any]:
        """The request body, checked against this operation's schema (415/400 otherwise)."""
        schema = self.operations[str(self.request.method).lower()].request
        if schema is None:
            raise TypeError(f"{type(self).__name__} documents no request body")
        if len(self.request.body) > self.max_body:
            raise web.HTTPError(413, f"the body is over {self.max_body} bytes")
        media = self.request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if media != "application/json":
            # "%s": the message carries caller input, which must not act as a format.
            raise web.HTTPError(
                415,
                "the body must be application/json, not %s",
                media[:80] or "untyped",
            )
        try:
            data = parse_json_body(self.request.body)
        except BodyError as exc:
            raise web.HTTPError(400, "%s", exc) from None
        error = first_error(schema, data)
        if error is not None:
            raise web.HTTPError(400, "%s", describe(error))
        return data

    def query_choice(self, name: str, choices: tuple[str, ...]) -> str | None:
        """An optional query argument restricted to ``choices`` (400 naming it otherwise)."""
        value = self.get_query_argument(name, None)
        if value is not None and value not in choices:
            raise web.HTTPError(400, f"query parameter {name!r} must be one of {', '.join(choices)}")
        return value

    async def call_store(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a store method in a worker thread; its refusals answered by :meth:`refused`."""
        try:
            return await asyncio.to_thread(func, *args, **kwargs)
        except Refusal as exc:
            raise self.refused(exc) from (exc if isinstance(exc, Unavailable) else None)

    def refused(self, refusal: Refusal) -> web.HTTPError:
        """The service's one translation of a refusal: its status and its line, except that
        an outage is logged and told plainly, and every "not found" reads alike (one answer
        for "does not exist" and "may not see it")."""
        if isinstance(refusal, EventNotDurable):  # fail closed: what the trail cannot record is not done
            self.log.error("Not done, the audit trail cannot record it: %s %s: %s", self.request.method,
                           self.request.path, refusal)  # fmt: skip
            return web.HTTPError(503, "the audit trail cannot record this now, so it was not done; try again later")
        if isinstance(refusal, Unavailable):
            self.log.error("Governance store failed on %s %s: %s", self.request.method, self.request.path, refusal)
            return web.HTTPError(503, "the governance store is unavailable; try again later")
        if isinstance(refusal, NotFound):
            return web.HTTPError(404, NOT_FOUND_MESSAGE)
        status, message = http_answer(refusal)
        return web.HTTPError(status, "%s", message.removeprefix("governance store: "))


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


_LIST = {"type": "array", "items": APPROVAL_REQUEST}


class ApprovalRequestsHandler(APIHandler):
    """The approval requests collection."""

    operations: ClassVar[dict[str, Operation]] = {
        "get": Operation(
            "List the approval requests the caller may see, newest first",
            {200: _LIST},
            description="One's own requests; every request of the kinds one approves; all with custom:audit:read.",
            query={
                "status": {"type": "string", "enum": list(STATUSES)},
                "kind": {"type": "string", "enum": list(KINDS)},
            },
            errors=(400, 503),
        ),
        "post": Operation(
            "Submit an approval request",
            {201: APPROVAL_REQUEST},
            request=NEW_REQUEST_BODY,
            errors=(503,),
        ),
    }

    @needs_scope()
    async def get(self) -> None:
        """List the visible requests."""
        status = self.query_choice("status", STATUSES)
        kind = self.query_choice("kind", KINDS)
        visible = visibility(self.user_name, self.user_scopes)
        found = await self.call_store(self.store.list_requests, visible, status=status, kind=kind)
        self.write_json([r.to_json() for r in found])

    @needs_scope(SUBMIT_SCOPE)
    async def post(self) -> None:
        """Create a pending request by the caller."""
        body = self.json_body()
        created = await self.call_store(self.store.create_request, requester=self.user_name, **body)
        events.submitted(self.settings.get("audit"), created, self.request.remote_ip or "")
        self.log.info(
            "%s submitted %s request %s for %r",
            self.user_name,
            created.kind,
            created.id,
            created.target,
        )
        self.set_header(
            "Location",
            url_path_join(self.settings["service_prefix"], "api/requests", created.id),
        )
        self.write_json(created.to_json(), status=201)


class ApprovalRequestHandler(APIHandler):
    """One approval request."""

    operations: ClassVar[dict[str, Operation]] = {
        "get": Operation(
            "One approval request",
            {200: APPROVAL_REQUEST},
            description="A request the caller may not see answers 404, exactly as a missing one.",
            errors=(404, 503),
        )
    }

    @needs_scope()
    async def get(self, request_id: str) -> None:
        """Answer the request if the caller may see it, else 404."""
        found = await self.call_store(self.store.get_request, request_id)
        if found is None or not can_view(self.user_name, self.user_scopes, found):
            raise web.HTTPError(404, NOT_FOUND_MESSAGE)
        self.write_json(found.to_json())


class DecisionHandler(APIHandler):
    """Approve or reject a request."""

    operations: ClassVar[dict[str, Operation]] = {
        "post": Operation(
            "Approve or reject a pending request",
            {200: APPROVAL_REQUEST},
            request=DECISION_BODY,
            description=(
                "Needs the approver scope of the request's kind ("
                + "; ".join(f"{kind}: {scope}" for kind, scope in APPROVER_SCOPES.items())
                + "). Nobody decides their own request (403); a decided request cannot be decided again (409)."
            ),
            errors=(404, 409, 503),
        )
    }

    @needs_scope(*APPROVER_SCOPES.values())
    async def post(self, request_id: str) -> None:
        """Record the caller's decision."""
        body = self.json_body()
        found = await self.call_store(self.store.get_request, request_id)
        if found is None:
            raise web.HTTPError(404, NOT_FOUND_MESSAGE)
        audit, client = self.settings.get("audit"), self.request.remote_ip or ""
        try:
            check_decision(self.user_name, self.user_scopes, found)
            decided = await self.call_store(
                self.store.decide,
                request_id,
                self.user_name,
                body["decision"],
                body.get("comment", ""),
                record=lambda request: events.decided(audit, request, client),
            )
        except PolicyDenied as denied:  # the store's refusals came through call_store
            if denied.status != 404:  # one who may not see the request learns nothing, and it is no decision
                events.denied(audit, self.user_name, found, denied.message, client)
            raise self.refused(denied) from None
        self.log.info(
            "%s %s request %s (%s)",
            self.user_name,
            decided.status,
            decided.id,
            decided.kind,
        )
        self.write_json(decided.to_json())


#: The prefix of the platform's event schema ids; ``type=hub/server/v1`` means the full id.
EVENT_IDS = "https://events.hubforge.dev/"


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
    ("api/audit/events", AuditEventsHandler),
    ("audit", AuditPageHandler),
    ("oauth_callback", OAuthCallbackHandler),
]
