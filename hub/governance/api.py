"""The base of the governance service's JSON handlers: bodies, store calls, JSON replies."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from tornado import web

from hubforge.errors import NotFound, Refusal, Unavailable, http_answer
from hubforge.events.spool import EventNotDurable

from .auth import HubAuthHandler
from .jsonbody import BodyError, parse_json_body
from .openapi import Operation
from .policy import NOT_FOUND_MESSAGE
from .schemas import describe, first_error
from .store import GovernanceStore

__all__ = ["APIHandler"]

T = TypeVar("T")


class APIHandler(HubAuthHandler):
    """Base of the JSON handlers: bodies, store calls, JSON replies.

    Application settings used: ``store``, ``group_personas``, ``openapi``.
    """

    operations: ClassVar[dict[str, Operation]] = {}
    #: The largest request body this handler reads (413 beyond it).
    max_body: ClassVar[int] = 64 * 1024
    #: How an outage of the service's store is told, and every "not found" (the other
    #: services built on this base say theirs).
    store_words: ClassVar[str] = "the governance store"
    not_found_message: ClassVar[str] = NOT_FOUND_MESSAGE

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
            self.log.error("%s failed on %s %s: %s", self.store_words, self.request.method, self.request.path, refusal)
            return web.HTTPError(503, f"{self.store_words} is unavailable; try again later")
        if isinstance(refusal, NotFound):
            return web.HTTPError(404, self.not_found_message)
        status, message = http_answer(refusal)
        return web.HTTPError(status, "%s", message.removeprefix("governance store: "))
