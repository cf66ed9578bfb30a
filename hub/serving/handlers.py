"""The serving service's HTTP edge: scoring requests, and the routes' control API.

Every caller is authenticated by the hub (``Authorization: token ...``, looked up with
:class:`~jupyterhub.services.auth.HubAuth` and cached by it) and must hold the service's
access scope (``access:services!service=serving``). Each handler declares, per method,
who may call it (:attr:`ServingHandler.access`); a method it does not declare is refused
(fail closed):

- ``user``: any caller with access: scoring, and reading the routes;
- ``controller``: changing the routes, only for the hub services named in the
  ``controllers`` setting (``governance``), identified by their token (``kind``
  ``service`` and its name), never by anything in the request;
- ``public``: the health check.

Errors are JSON (``{"status": N, "message": "..."}``); a refusal of the router is
answered with its status and its one line (:func:`hubforge.errors.http_answer`).

The service's front (:mod:`.front`) answers most scoring requests without these
handlers, with the same pieces: :func:`header_token` and the :class:`AccessCache` for
the caller, :func:`refusal` and :func:`error_body` for errors, :func:`scoring_headers`
for the answer. A scoring request whose token the cache does not hold comes here.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import time
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

from jupyterhub.services.auth import HubAuth, HubAuthenticated, UserNotAllowed
from tornado import web

from hubforge.errors import Invalid, LaunchError, Refusal, http_answer
from hubforge.hub.service_app import CHALLENGE, JSON_TYPE, JSONErrorHandler

from .model import TARGETS, Release, parse_deploy
from .router import Router
from .upstream import Answer

__all__ = [
    "CACHE_CONTROL",
    "CHALLENGE",
    "INTERNAL_ERROR",
    "JSON_TYPE",
    "RELEASE_HEADER",
    "ROUTES",
    "VERSION_HEADER",
    "AccessCache",
    "ActionHandler",
    "EndpointHandler",
    "EndpointsHandler",
    "HealthHandler",
    "InvocationsHandler",
    "NotFoundHandler",
    "ServingHandler",
    "answering",
    "error_body",
    "header_token",
    "refusal",
    "scoring_headers",
]

#: Response headers of a scoring request: the version that answered, and its role.
VERSION_HEADER = "X-Hubforge-Model-Version"
RELEASE_HEADER = "X-Hubforge-Release"
#: The largest control body read.
MAX_CONTROL_BODY = 64 * 1024
#: Every answer's: it depends on who asks and on the routes of the moment.
CACHE_CONTROL = ("Cache-Control", "no-store")
#: The message of a 500: the details go to the log, not to the caller.
INTERNAL_ERROR = JSONErrorHandler.internal_error

_TOKEN = re.compile(r"(?:token|bearer)\s+(\S+)", re.IGNORECASE)


def header_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization`` header (``token ...`` or ``Bearer ...``), if any."""
    match = _TOKEN.fullmatch(authorization or "")
    return match.group(1) if match else None


def error_body(status: int, message: str) -> bytes:
    """An error's JSON body: ``{"status": N, "message": "..."}``."""
    return json.dumps({"status": status, "message": message}).encode()


def refusal(exc: Refusal | LaunchError) -> tuple[int, str]:
    """The status and line a refusal of the router is answered with; a scoring process that
    did not start is 502."""
    return http_answer(exc) if isinstance(exc, Refusal) else (502, str(exc))


def scoring_headers(answer: Answer, release: Release, role: str) -> list[tuple[str, str]]:
    """A scoring answer's headers besides its framing: the scoring server's content type,
    the version that answered and its role."""
    content_type = answer.headers.get("content-type", "application/json")
    return [("Content-Type", content_type), (VERSION_HEADER, release.version), (RELEASE_HEADER, role)]


class AccessCache:
    """Each token's authentication outcome, kept ``max_age`` seconds (at most ``size`` tokens).

    Keyed by the token's sha256, as HubAuth keys its own cache: the tokens themselves are
    not kept.
    """

    def __init__(self, max_age: float, size: int = 10_000) -> None:
        self.max_age = max_age
        self.size = size
        self._entries: dict[str, tuple[float, tuple[int, Any]]] = {}

    def get(self, token: str) -> tuple[int, Any] | None:
        """The outcome kept for ``token``, None when there is none or it is too old."""
        entry = self._entries.get(_key(token))
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, token: str, outcome: tuple[int, Any]) -> None:
        """Keep ``outcome`` for ``token``; the oldest entries go when the cache is full."""
        if len(self._entries) >= self.size:
            now = time.monotonic()
            self._entries = {k: v for k, v in self._entries.items() if v[0] >= now}
            while len(self._entries) >= self.size:
                del self._entries[next(iter(self._entries))]
        self._entries[_key(token)] = (time.monotonic() + self.max_age, outcome)


def _key(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


class ServingHandler(HubAuthenticated, JSONErrorHandler):
    """Base of the service's handlers: hub authentication, declared access, JSON errors.

    Application settings used: ``hub_auth``, ``access_cache``, ``router``, ``service_prefix``,
    ``controllers``.
    """

    #: method -> who may call it: ``user``, ``controller`` or ``public`` (see the module).
    access: ClassVar[Mapping[str, str]] = {}

    @property
    def hub_auth(self) -> HubAuth:
        """The application's HubAuth (not the process-wide singleton: tests run several)."""
        return self.settings["hub_auth"]

    @property
    def router(self) -> Router:
        """The router."""
        return self.settings["router"]

    def get_current_user(self) -> Any:
        """Set by :meth:`prepare`; never a blocking call to the hub."""
        return None

    def set_default_headers(self) -> None:
        """Never cached: answers depend on who asks and on the routes of the moment."""
        self.set_header(*CACHE_CONTROL)

    async def prepare(self) -> None:
        """Authenticate and authorize as :attr:`access` declares for the method."""
        method = str(self.request.method).lower()
        who = self.access.get(method)
        if who is None:
            if getattr(type(self), method, None) is getattr(web.RequestHandler, method, None):
                return  # not implemented: tornado answers 405
            raise web.HTTPError(403, "this operation declares no permission and is refused")
        if who == "public":
            return
        user = await self._authenticate()
        if who == "controller" and not (user.get("kind") == "service" and user["name"] in self.settings["controllers"]):
            allowed = ", ".join(self.settings["controllers"])
            raise web.HTTPError(403, f"only the {allowed} service may change the serving routes")

    async def _authenticate(self) -> dict[str, Any]:
        """The caller's hub model if they may use the service; 401/403 otherwise.

        The outcome for a header token is kept in the ``access_cache`` (as long as HubAuth
        keeps the hub's answer), so a scoring request costs a dictionary lookup.
        """
        cache: AccessCache = self.settings["access_cache"]
        token = header_token(self.request.headers.get("Authorization"))
        outcome = cache.get(token) if token else None
        if outcome is None:
            outcome = await self._ask_hub()
            if token:
                cache.put(token, outcome)
        status, found = outcome
        if status != 200:
            raise web.HTTPError(status, "%s", found)
        self.current_user = found
        return found

    async def _ask_hub(self) -> tuple[int, Any]:
        """HubAuth's own lookup and check: ``(200, model)``, or ``(401|403, message)``."""
        try:
            model = await self.hub_auth.get_user(self, sync=False)
        except web.HTTPError as exc:
            if exc.status_code < 500:
                raise
            raise web.HTTPError(502, "cannot check authentication with the hub; try again later") from exc
        if not model:
            return 401, "authentication required: send 'Authorization: token ...' with a hub token"
        try:
            return 200, self.check_hub_user(model)
        except UserNotAllowed:
            needed = ", ".join(sorted(self.hub_scopes or ()))
            return 403, f"{model.get('kind', 'user')} {model.get('name')!r} may not use this service (needs {needed})"

    def target_argument(self) -> str:
        """The ``target`` query parameter (``production`` when absent)."""
        target = self.get_query_argument("target", "production")
        if target not in TARGETS:
            raise web.HTTPError(400, f"query parameter 'target' must be one of {', '.join(TARGETS)}")
        return target

    def write_json(self, data: Any, status: int = 200) -> None:
        """Finish with ``data`` as JSON."""
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps(data))

    def decode_argument(self, value: bytes, name: str | None = None) -> str:
        """A path argument as text; not UTF-8 is a 400 (not echoing it)."""
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise web.HTTPError(400, "a URL parameter is not valid UTF-8") from None


class InvocationsHandler(ServingHandler):
    """``POST endpoints/<name>[/staging]/invocations``: a scoring request, forwarded.

    Behind :class:`~.front.ServingFront`, only the requests the front hands over come here:
    a token's first (its outcome is then cached), one without a token, one whose name is not
    UTF-8, and every other method (405).
    """

    access: ClassVar[Mapping[str, str]] = {"post": "user"}

    def initialize(self, target: str) -> None:
        """``target``: which namespace the route serves."""
        self.target = target

    async def post(self, name: str) -> None:
        """Forward the body and its content type; answer the scoring server's answer."""
        body, content_type = self.request.body, self.request.headers.get("Content-Type")
        with answering():
            answer, release, role = await self.router.invoke(name, self.target, body, content_type)
        self.set_status(answer.status)
        for header, value in scoring_headers(answer, release, role):
            self.set_header(header, value)
        self.finish(answer.body)


class HealthHandler(ServingHandler):
    """``GET api/health``: the process serves requests (no auth)."""

    access: ClassVar[Mapping[str, str]] = {"get": "public"}

    def get(self) -> None:
        """Answer ``{"status": "ok"}``."""
        self.write_json({"status": "ok"})


class EndpointsHandler(ServingHandler):
    """``GET api/endpoints``: every endpoint and its state."""

    access: ClassVar[Mapping[str, str]] = {"get": "user"}

    def get(self) -> None:
        """Answer the endpoints, by name then target."""
        router, prefix = self.router, self.settings["service_prefix"]
        self.write_json([router.status(router.endpoints[key], prefix) for key in sorted(router.endpoints)])


class EndpointHandler(ServingHandler):
    """``api/endpoints/<name>``: one endpoint's state; deploy to it; delete it."""

    access: ClassVar[Mapping[str, str]] = {"get": "user", "put": "controller", "delete": "controller"}

    async def get(self, name: str) -> None:
        """Answer the endpoint on ``?target=`` (production by default)."""
        with answering():
            endpoint = self.router.endpoint(name, self.target_argument())
        self.write_json(self.router.status(endpoint, self.settings["service_prefix"]))

    async def put(self, name: str) -> None:
        """Deploy the body's release; answer once its scoring server is ready (201 if new)."""
        with answering():
            request = parse_deploy(name, self._json_body())
            endpoint, created = await self.router.deploy(request)
        self.write_json(self.router.status(endpoint, self.settings["service_prefix"]), 201 if created else 200)

    async def delete(self, name: str) -> None:
        """Remove the endpoint on ``?target=``; 204."""
        with answering():
            await self.router.delete(name, self.target_argument())
        self.set_status(204)
        self.finish()

    def _json_body(self) -> Any:
        if len(self.request.body) > MAX_CONTROL_BODY:
            raise web.HTTPError(413, f"the body is over {MAX_CONTROL_BODY} bytes")
        media = self.request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if media != "application/json":
            raise web.HTTPError(415, "the body must be application/json, not %s", media[:80] or "untyped")
        try:
            return json.loads(self.request.body, object_pairs_hook=_unique, parse_constant=_no_constant)
        except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise Invalid(f"malformed JSON body: {str(exc)[:200]}") from None


class ActionHandler(ServingHandler):
    """``POST api/endpoints/<name>/promote`` and ``.../rollback``."""

    access: ClassVar[Mapping[str, str]] = {"post": "controller"}

    def initialize(self, action: str) -> None:
        """``action``: ``promote`` or ``rollback``."""
        self.action = action

    async def post(self, name: str) -> None:
        """Run the action on ``?target=``; answer the endpoint after it."""
        with answering():
            endpoint = await self.router.change(name, self.target_argument(), self.action)
        self.write_json(self.router.status(endpoint, self.settings["service_prefix"]))


class NotFoundHandler(ServingHandler):
    """Any other path: a JSON 404."""

    access: ClassVar[Mapping[str, str]] = {m: "public" for m in ("get", "post", "put", "delete", "patch", "head")}

    async def prepare(self) -> None:
        """Answer 404 for every method."""
        raise web.HTTPError(404, "no such path in the serving service")


@contextlib.contextmanager
def answering() -> Iterator[None]:
    """Answer a refusal raised in the block with its status and line; a scoring process
    that did not start with 502."""
    try:
        yield
    except (Refusal, LaunchError) as exc:
        status, message = refusal(exc)
        raise web.HTTPError(status, "%s", message) from None


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for key, value in pairs:
        if key in data:
            raise ValueError(f"field {key!r} is repeated")
        data[key] = value
    return data


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _routes() -> list[tuple[str, type[ServingHandler], dict[str, Any]]]:
    name = "([^/]+)"
    return [
        (f"endpoints/{name}/invocations", InvocationsHandler, {"target": "production"}),
        (f"endpoints/{name}/staging/invocations", InvocationsHandler, {"target": "staging"}),
        ("api/health", HealthHandler, {}),
        ("api/endpoints", EndpointsHandler, {}),
        (f"api/endpoints/{name}", EndpointHandler, {}),
        (f"api/endpoints/{name}/promote", ActionHandler, {"action": "promote"}),
        (f"api/endpoints/{name}/rollback", ActionHandler, {"action": "rollback"}),
    ]


#: Every route: a pattern relative to the service prefix, its handler and its arguments.
ROUTES = _routes()
