"""The audit page: the audit trail for people, at ``<service prefix>audit``.

Server-rendered HTML without script: a GET form of filters (user, type, action,
resource, since, until), the matching events newest first a page at a time (the "next
page" link carries :func:`~.audit.query_events`' cursor and the filters), and the
timeline of the compliance report (:mod:`.report`) over the matching events' span.
Only holders of ``custom:audit-trail:read``; a browser without a session is sent to the hub
login, as on the service's index (:meth:`~.auth.HubAuthHandler.require_user`). Every
value from an event is escaped, and the page's Content-Security-Policy forbids scripts.
Errors are the service's JSON errors.

:func:`parse_filters` and :func:`render_page` are pure; :class:`AuditPageHandler` is
the HTTP edge.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import astuple, dataclass, fields
from datetime import datetime
from typing import Any, ClassVar
from urllib.parse import urlencode

from tornado import web

from hubforge.errors import Invalid, Unavailable
from hubforge.events import event_schemas

from .audit import AuditQuery, query_events
from .auth import HubAuthHandler, needs_scope
from .openapi import Operation
from .policy import TRAIL_SCOPE
from .report import EVENT_IDS, event_type, parse_when, timeline, timeline_rows
from .report_html import CSP, esc, html_page, timeline_svg

__all__ = ["PAGE_QUERY", "PAGE_SIZE", "TIMELINE_CAP", "AuditPageHandler", "Filters", "parse_filters", "render_page"]

#: Events per page.
PAGE_SIZE = 100
#: The timeline counts at most this many of the newest matching events.
TIMELINE_CAP = 50_000
#: The event types offered (short: ``hub/server/v1``); the full ``$id`` is taken too.
EVENT_TYPES = sorted(event_type(schema) for schema in event_schemas())
_WHEN = {
    "anyOf": [
        {"type": "string", "format": "date-time"},
        {"type": "string", "format": "date"},
        {"type": "string", "maxLength": 0},
    ],
}
#: The page's query parameters, as documented; empty means "any" (what an empty form field sends).
PAGE_QUERY: dict[str, dict[str, Any]] = {
    "user": {"type": "string", "maxLength": 256, "description": "Only this person's events."},
    "type": {
        "type": "string",
        "enum": ["", *EVENT_TYPES, *(EVENT_IDS + t for t in EVENT_TYPES)],
        "description": "An event schema: ``hub/server/v1`` or its full $id.",
    },
    "action": {"type": "string", "maxLength": 64},
    "resource": {"type": "string", "maxLength": 1100, "description": "``<type>:<id>``, e.g. ``server:alice/``."},
    "since": {**_WHEN, "description": "From this date or time on (ISO 8601, UTC unless it names a zone)."},
    "until": {**_WHEN, "description": "Before this date or time."},
    "cursor": {"type": "string", "pattern": "^([1-9][0-9]{0,17})?$", "description": "The previous page's next."},
}
_CURSOR = re.compile(r"[1-9][0-9]{0,17}")
#: The fields every event has, shown in columns of their own rather than as details.
_ENVELOPE = ("user", "action", "outcome", "resource", "origin")


@dataclass(frozen=True)
class Filters:
    """The page's filters as they were sent (empty: any), to fill the form and the links."""

    user: str = ""
    type: str = ""
    action: str = ""
    resource: str = ""
    since: str = ""
    until: str = ""

    def link(self, cursor: int | None = None) -> str:
        """The query string of this filtering, at ``cursor`` (the first page without)."""
        params = {f.name: value for f, value in zip(fields(self), astuple(self), strict=True) if value}
        return "?" + urlencode({**params, **({"cursor": str(cursor)} if cursor else {})})


def _checked_text(args: Mapping[str, str], name: str) -> str:
    value = args.get(name, "")
    limit = PAGE_QUERY[name]["maxLength"]
    if len(value) > limit:
        raise Invalid(f"query parameter {name!r} must be at most {limit} characters")
    return value


def _when(args: Mapping[str, str], name: str) -> datetime | None:
    value = args.get(name, "")
    return parse_when(value, f"query parameter {name!r}") if value else None


def parse_filters(args: Mapping[str, str]) -> tuple[Filters, AuditQuery]:
    """The filters and the page's query from the query arguments; Invalid naming a bad one."""
    kind = args.get("type", "")
    if kind not in PAGE_QUERY["type"]["enum"]:
        raise Invalid("query parameter 'type' names no event schema")
    cursor = args.get("cursor", "")
    if cursor and not _CURSOR.fullmatch(cursor):
        raise Invalid("query parameter 'cursor' must be a whole number from 1 to 999999999999999999")
    text = {name: _checked_text(args, name) for name in ("user", "action", "resource")}
    filters = Filters(type=kind, since=args.get("since", ""), until=args.get("until", ""), **text)
    query = AuditQuery(
        user=text["user"] or None,
        schema=(kind if kind.startswith(EVENT_IDS) else EVENT_IDS + kind) if kind else None,
        action=text["action"] or None,
        resource=text["resource"] or None,
        since=_when(args, "since"),
        until=_when(args, "until"),
        before=int(cursor) if cursor else None,
        limit=PAGE_SIZE,
    )
    return filters, query


# --- the page ---------------------------------------------------------------------------------


def _form(path: str, filters: Filters) -> str:
    def field(name: str, label: str, hint: str = "") -> str:
        value = esc(getattr(filters, name))
        return f'<label>{label} <input name="{name}" value="{value}" placeholder="{esc(hint)}"></label>'

    chosen = filters.type.removeprefix(EVENT_IDS)
    options = "".join(
        f'<option value="{esc(t)}"{" selected" if t == chosen else ""}>{esc(t or "any")}</option>'
        for t in ["", *EVENT_TYPES]
    )
    return (
        f'<form method="get" action="{esc(path)}">\n'
        + field("user", "User")
        + f'<label>Type <select name="type">{options}</select></label>'
        + field("action", "Action", "login_failed")
        + field("resource", "Resource", "server:alice/")
        + field("since", "Since", "2026-05-01 or 2026-05-01T12:00Z")
        + field("until", "Until", "(not included)")
        + f'\n<button type="submit">Filter</button> <a href="{esc(path)}">clear</a>\n</form>'
    )


def _details(event: Mapping[str, Any]) -> str:
    """An event's own fields and where it came from, one ``name: value`` line each, cut short."""
    items = [(k, v) for k, v in event.items() if k not in _ENVELOPE]
    items += [(f"origin.{k}", v) for k, v in (event.get("origin") or {}).items()]
    lines = []
    for name, value in items:
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        text = text if len(text) <= 200 else text[:200] + "…"
        lines.append(f"<code>{esc(name)}</code>: {esc(text)}")
    return "<br>".join(lines)


def _rows(events: Sequence[Mapping[str, Any]]) -> str:
    head = "".join(f"<th>{h}</th>" for h in ("#", "Time", "User", "Type", "Action", "Outcome", "Resource",
                                              "Seen by", "Details"))  # fmt: skip
    lines = []
    for e in events:
        resource = e["resource"] if isinstance(e["resource"], Mapping) else {}
        cells = (e["time"], e["user"], event_type(e["schema"]), e["action"], e["outcome"],
                 f"{resource.get('type', '')}:{resource.get('id', '')}", e["observed"])  # fmt: skip
        tds = "".join(f"<td>{esc(c)}</td>" for c in cells)
        lines.append(f'<tr><td class="n">{int(e["position"])}</td>{tds}<td>{_details(e["event"])}</td></tr>')
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(lines) + "\n</tbody>\n</table>"


def _timeline(moments: Sequence[tuple[datetime, str]], capped: bool) -> str:
    if not moments:
        return ""
    times = [moment for moment, _ in moments]
    counted = f"the newest {len(moments):,} matching events" if capped else f"all {len(moments):,} matching events"
    chart = timeline_svg(timeline(moments, min(times), max(times)).to_json())
    return f'<h2>Timeline</h2>\n<p class="meta">Of {counted}, from the first to the last.</p>\n{chart}'


def render_page(
    path: str,
    filters: Filters,
    events: Sequence[Mapping[str, Any]],
    following: int | None,
    moments: Sequence[tuple[datetime, str]],
    capped: bool,
) -> str:
    """The audit page: the form, the timeline of ``moments``, a page of ``events`` and its links."""
    parts = ["<h1>Audit trail</h1>", _form(path, filters), _timeline(moments, capped), "<h2>Events, newest first</h2>"]
    parts.append(_rows(events) if events else '<p class="none">No events match.</p>')
    links = []
    if following is not None:
        links.append(f'<a rel="next" href="{esc(path + filters.link(following))}">Next page (older events)</a>')
    if filters != Filters() or links:
        links.append(f'<a href="{esc(path + filters.link())}">First page</a>')
    parts.append(f"<p>{' · '.join(links)}</p>")
    return html_page("Audit trail", "\n".join(p for p in parts if p))


class AuditPageHandler(HubAuthHandler):
    """The audit page (HTML) for holders of ``custom:audit-trail:read``."""

    operations: ClassVar[dict[str, Operation]] = {
        "get": Operation(
            "The audit trail as a page for people: filters, events newest first, their timeline",
            {200: {"type": "string"}, 302: None},
            description=(
                "An HTML page without script. Filters combine; an empty one means any. Browsers "
                "without a session are sent to the hub login (302). Errors are JSON."
            ),
            query=PAGE_QUERY,
            errors=(400, 503),
            media_type="text/html",
        )
    }

    def set_default_headers(self) -> None:
        """HTML, never cached (answers depend on who asks), and no script may run."""
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.set_header("Content-Security-Policy", CSP)
        self.set_header("X-Content-Type-Options", "nosniff")

    @needs_scope(TRAIL_SCOPE)
    async def get(self) -> None:
        """Render a page of the events matching the filters, with their timeline."""
        args = {name: self.get_query_argument(name, "", strip=False) for name in PAGE_QUERY}
        try:
            filters, query = parse_filters(args)
        except Invalid as exc:
            raise web.HTTPError(400, "%s", exc) from None
        store = self.settings["store"]
        try:
            events, following = await asyncio.to_thread(query_events, store, query)
            moments, capped = await asyncio.to_thread(timeline_rows, store, query, TIMELINE_CAP)
        except Unavailable as exc:
            self.log.error("Governance store failed on the audit page: %s", exc)
            raise web.HTTPError(503, "the governance store is unavailable; try again later") from exc
        path = self.settings["service_prefix"] + "audit"
        self.finish(render_page(path, filters, events, following, moments, capped))
