"""The gate in front of MLflow: every request passes it, as a hub user.

:func:`~.app.create_app` wraps MLflow's FastAPI app (which mounts the Flask app) in
:class:`HubGate`, which every request passes except ``<prefix>health`` and
``<prefix>oauth_callback``. A request names its hub user with ``Authorization:
token|Bearer <hub token>`` or with the session cookie the OAuth callback sets;
:func:`decide_access` decides what that user may do, and Flask sees the name as
``g.hubforge_user``.

CSRF: a cookie-authenticated request other than GET/HEAD/OPTIONS needs an ``Origin``
(lacking one, a ``Referer``) naming the request's own host. The MLflow 3.17 UI sends
no CSRF header and its GraphQL client adds no custom header at all, so a token header
would break it; browsers send ``Origin`` on every ``fetch`` POST. OAuth state lives in
a signed cookie, not in ``HubOAuth``'s in-process dict, so a login started in one
uvicorn worker can finish in another.

The UI's page and the answers for features that are off come from :mod:`.ui`; what
the gate records in the audit trail (runs, models, aliases), from :mod:`.audit`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import logging
import re
import secrets
import threading
import time
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import quote, urlsplit

import anyio.to_thread
from itsdangerous import BadData, URLSafeTimedSerializer
from jupyterhub.services.auth import HubOAuth, check_scopes
from jupyterhub.utils import url_path_join
from starlette.requests import Request
from starlette.responses import (
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from tornado.httputil import url_concat
from tornado.web import HTTPError

from hubforge.errors import MLFLOW_CODES, Unavailable
from hubforge.events.spool import EventSpool
from hubforge.hub.compat import pkce_challenge
from hubforge.proxies import ProxyPeers

from .audit import Recorder, Watch
from .policy import (
    OWNER_TAG,
    USER_TAG,
    Invalid,
    Principal,
    Resolver,
    StoreResolver,
    canonical_name,
    placement_refusal,
    tag_pairs,
)
from .rules import authorize
from .search import install as filter_searches
from .store import store_decides
from .ui import feature_off, rewriting, unconditional, with_ui_defaults

__all__ = [
    "SERVICE_PREFIX",
    "HubGate",
    "HubUnavailable",
    "HubUser",
    "ambiguous",
    "claim_run",
    "current_principal",
    "decide_access",
    "install_flask_hook",
    "personas",
    "same_origin",
]

log = logging.getLogger(__name__)

Admission = Response | tuple["HubUser", Scope, Receive]

SESSION_COOKIE = "hubforge-mlflow-session"
STATE_COOKIE = "hubforge-mlflow-oauth-state"
SESSION_MAX_AGE = 14 * 24 * 3600
STATE_MAX_AGE = 600
TOKEN_CACHE_SECONDS = 60
#: People (tokens) whose identity the gate keeps at once: a bound, not a working set.
TOKEN_CACHE_SIZE = 10_000
API_PATHS = ("api/", "ajax-api/", "graphql", "gateway/", "v1/")
RUN_CREATE_PATHS = ("/mlflow/runs/create", "/mlflow/runs/create-promptlab-run")
OWNED_CREATE_PATHS = ("/mlflow/experiments/create", "/mlflow/registered-models/create")
# Bodies that are files, not JSON: the path says what they are.
RAW_BODY_PATHS = ("mlflow-artifacts/", "mlflow/upload-artifact", "v1/traces")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SERVICE_ENV = (
    "JUPYTERHUB_API_TOKEN",
    "JUPYTERHUB_CLIENT_ID",
    "JUPYTERHUB_SERVICE_PREFIX",
)
# Visible ASCII only: anything else is no hub token and must not reach a header.
_AUTH_HEADER = re.compile(r"\s*(?:token|bearer)\s+([!-~]+)\s*", re.IGNORECASE)

#: How a hub service's identity is named in MLflow: no hub user's name has a colon.
SERVICE_PREFIX = "service:"

_current_user: ContextVar[HubUser | None] = ContextVar("hubforge_user", default=None)


class HubUnavailable(Unavailable):
    """The hub could not say who a token belongs to (down, or refusing the service): the
    gate is a proxy whose upstream failed, 502."""

    status = 502


@dataclass(frozen=True)
class HubUser:
    """The owner of a hub token, as ``GET /hub/api/user`` describes it."""

    name: str
    scopes: frozenset[str]
    groups: frozenset[str]
    via_cookie: bool
    roles: frozenset[str] = frozenset()
    #: (server name, tier) of each server the hub runs for them, from the hub's user model.
    servers: frozenset[tuple[str, str]] = frozenset()

    @classmethod
    def from_model(cls, model: Any, *, via_cookie: bool) -> HubUser | None:
        """The user in a hub user model, or None when the model names nobody."""
        if not isinstance(model, dict) or not isinstance(model.get("name"), str):
            return None
        if model.get("kind") != "service" and model["name"].startswith(SERVICE_PREFIX):
            return None  # a person named like a service would pass for it
        scopes, groups = model.get("scopes") or (), model.get("groups") or ()
        roles = model.get("roles") or ()
        return cls(model["name"], frozenset(scopes), frozenset(groups), via_cookie, frozenset(roles))

    @property
    def principal(self) -> Principal:
        """The person as :mod:`.policy` decides on them."""
        return Principal(self.name, self.scopes, self.groups, self.roles, self.servers)


def personas(
    roles: Iterable[str], groups: Iterable[str], group_personas: Mapping[str, Iterable[str]]
) -> frozenset[str]:
    """A person's roles: their own, and the personas their hub groups grant."""
    granted = {persona for group in groups for persona in group_personas.get(group, ())}
    return frozenset(roles) | granted


def decide_access(user: HubUser, method: str, path: str, payload: Any, required: set[str]) -> str | None:
    """Why ``user`` may not make this request, or None when they may.

    ``required`` is the service's access scope set (``HubAuth.access_scopes``);
    ``payload`` is the JSON body of a create-run request, None for other requests.
    Per-experiment permissions belong here, deciding on ``method`` and ``path``.
    """
    try:
        granted = check_scopes(required, set(user.scopes))
    except ValueError:  # a scope the hub should never send: fail closed
        granted = set()
    if not granted:
        return f"{user.name}'s token lacks {' or '.join(sorted(required))}"
    claimed = {tag.get("value", "") for tag in _user_tags(payload)} - {user.name}
    if claimed:
        return Invalid(
            f"a run may not name {', '.join(map(repr, sorted(claimed)))} in its "
            f"{USER_TAG} tag: leave the tag out or set it to {user.name!r}"
        )
    return placement_refusal(user.principal, tag_pairs(payload)) if payload is not None else None


def servers_of(profile: Mapping[str, Any]) -> frozenset[tuple[str, str]]:
    """(name, tier) of each server in a hub user model (its ``servers``, with ``read:servers``)."""
    servers = profile.get("servers")
    if not isinstance(servers, dict):
        return frozenset()
    running = set()
    for name, server in servers.items():
        options = server.get("user_options") if isinstance(server, dict) else None
        tier = options.get("profile") if isinstance(options, dict) else None
        if isinstance(name, str) and isinstance(tier, str):
            running.add((name, tier))
    return frozenset(running)


def claim_owned(payload: Mapping[str, Any], user: str) -> dict[str, Any]:
    """A create-experiment or create-model body owned by ``user`` (the owner tag set)."""
    tags = [tag for tag in payload.get("tags") or [] if tag.get("key") != OWNER_TAG]
    return {**payload, "tags": [*tags, {"key": OWNER_TAG, "value": user}]}


def claim_run(payload: Mapping[str, Any], user: str) -> dict[str, Any]:
    """A create-run body owned by ``user``: ``user_id`` set, ``mlflow.user`` if absent."""
    tags = list(payload.get("tags") or [])
    if not _user_tags(payload):
        tags.append({"key": USER_TAG, "value": user})
    return {**payload, "user_id": user, "tags": tags}


class _Refusal(JSONResponse):
    """The hub's policy refusing a request (recorded as ``denied``)."""


def _refused(refusal: str) -> JSONResponse:
    """A refusal as MLflow answers errors: 400 for what may never be written, else 403."""
    status = 400 if isinstance(refusal, Invalid) else 403
    return _Refusal({"error_code": MLFLOW_CODES[status], "message": refusal}, status_code=status)


def same_origin(headers: Mapping[str, str]) -> bool:
    """Whether ``Origin`` (lacking one, ``Referer``) names the host that was addressed."""
    source = headers.get("origin") or headers.get("referer")
    if not source or source == "null":
        return False
    forwarded = headers.get("x-forwarded-host", "").split(",")[0].strip()
    return urlsplit(source).netloc in {headers.get("host", ""), forwarded} - {""}


def _user_tags(payload: Any) -> list[dict[str, Any]]:
    tags = payload.get("tags") or [] if isinstance(payload, dict) else []
    return [tag for tag in tags if tag.get("key") == USER_TAG]


def _parse_body(body: bytes, *, strict: bool = False) -> dict[str, Any]:
    """A JSON body as MLflow reads it: empty is ``{}``, a JSON string is decoded.

    Not JSON at all is ``{}`` (MLflow refuses it itself) unless ``strict``.
    """
    try:
        payload: Any = json.loads(body) if body.strip() else {}
        if isinstance(payload, str):
            payload = json.loads(payload)
    except ValueError:
        if strict:
            raise
        return {}
    if not isinstance(payload, dict):
        if strict:
            raise TypeError("a JSON object")
        return {}
    tags = payload.get("tags") or []
    if not isinstance(tags, list) or not all(_is_tag(tag) for tag in tags):
        raise TypeError("a JSON object whose tags are a list of {key, value} strings")
    return payload


def _has_body(request: Request) -> bool:
    headers = request.headers
    return headers.get("content-length", "0").strip() not in ("", "0") or "transfer-encoding" in headers


def _raw_body(relative: str) -> bool:
    """Whether a path under the prefix carries a file, not JSON."""
    _, _, rest = relative.partition(".0/") if relative.startswith(("api/", "ajax-api/")) else ("", "", relative)
    return rest.startswith(RAW_BODY_PATHS)


def _params(request: Request, payload: Mapping[str, Any] | None) -> dict[str, Any]:
    """Query arguments (repeated ones as lists) under the JSON body's fields."""
    query = request.query_params
    params = {key: values[0] if len(values := query.getlist(key)) == 1 else values for key in query}
    return {**params, **(payload or {})}


#: Names MLflow's handlers take for one parameter (beyond snake_case and camelCase).
def _as_text(value: Any) -> Any:
    return [str(v) for v in value] if isinstance(value, list) else str(value)


def ambiguous(query: Mapping[str, Any], payload: Mapping[str, Any] | None) -> str | None:
    """Why a request names one parameter twice with different values, or None.

    MLflow reads ``run_uuid`` where ``run_id`` is missing, camelCase where snake_case
    is, the body of a POST and the query of a GET; the gate would have to guess
    which copy MLflow reads. The same value twice (MLflow's own client sends both
    ``run_id`` and ``run_uuid``) is not ambiguous.
    """
    seen: dict[str, tuple[str, Any]] = {}
    given = [(name, value, "query") for name, value in query.items()]
    given += [(name, value, "body") for name, value in (payload or {}).items()]
    for name, value, where in given:
        key = canonical_name(name)
        if key in seen and seen[key][1] != _as_text(value):
            return f"ambiguous request: {seen[key][0]} and {name} ({where}) give different values"
        seen.setdefault(key, (f"{name} ({where})", _as_text(value)))
    return None


def _is_tag(tag: Any) -> bool:
    fields = (tag.get("key", ""), tag.get("value", "")) if isinstance(tag, dict) else [0]
    return all(isinstance(field, str) for field in fields)


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error_code": code, "message": message}, status_code=status)


class HubGate:
    """ASGI middleware: a request reaches MLflow only for a hub user with access."""

    def __init__(
        self,
        app: ASGIApp,
        hub_auth: HubOAuth,
        group_personas: Mapping[str, Iterable[str]] | None = None,
        audit: EventSpool | None = None,
        proxy_peers: ProxyPeers | None = None,
    ):
        self.app = app
        self.hub_auth = hub_auth
        # Hub group -> the personas it grants (platform.yaml): the hub lists a person's
        # own roles only, and personas come through groups.
        self.group_personas = dict(group_personas or {})
        self.prefix = hub_auth.base_url
        self.required = set(hub_auth.access_scopes)
        self.exempt = {self.prefix + "health"}
        self.callback = self.prefix + "oauth_callback"
        # Keyed on the service's hub token: every worker has it, nobody else does.
        self.sessions = URLSafeTimedSerializer(hub_auth.api_token, salt=SESSION_COOKIE)
        self.states = URLSafeTimedSerializer(hub_auth.api_token, salt=STATE_COOKIE)
        # Runs, models and aliases go to the audit trail (``audit``: this worker's spool).
        # Where each came from: behind the proxy pods (Kubernetes), ``proxy_peers``'s word.
        self.audit = Recorder(audit, self.prefix, proxy_peers) if audit is not None else None
        self.users = _Identities(hub_auth.cache_max_age)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer the callback and refusals here; pass the rest on as the hub user."""
        if scope["type"] == "lifespan" or scope.get("path") in self.exempt:
            return await self.app(scope, receive, send)
        if scope["type"] != "http":
            return await send({"type": "websocket.close", "code": 1008})
        request = Request(scope, receive)
        watch = self.audit.watch(scope) if self.audit is not None else None
        try:
            if scope["path"] == self.callback:
                admitted: Admission = await self._oauth_callback(request)
            else:
                admitted = await self._admit(request, watch)
        except HubUnavailable as exc:
            log.warning("hub unavailable: %s", exc)
            admitted = _error(exc.status, MLFLOW_CODES[Unavailable.status], f"no hub answer: {exc}")
        if isinstance(admitted, Response):
            if watch is not None:
                watch.answered(admitted.status_code, refused=isinstance(admitted, _Refusal))
            return await admitted(scope, receive, send)
        user, scope, receive = admitted
        if scope["method"] == "GET" and scope["path"] == self.prefix:
            scope, send = unconditional(scope), rewriting(send, with_ui_defaults)
        token = _current_user.set(user)
        try:
            await self.app(scope, receive, send if watch is None else watch.sending(send))
        finally:
            _current_user.reset(token)
            if watch is not None:
                watch.emit()

    async def _admit(self, request: Request, watch: Watch | None = None) -> Admission:
        """The refusal for this request, or (user, scope, receive) to pass on; ``watch`` (an
        audited request's) learns who asks and the parameters as they are parsed here."""
        user = await self._identify(request)
        if user is None:
            return self._unauthenticated(request)
        method, path = request.method, request.scope["path"]
        if not path.startswith(self.prefix):
            return _error(404, "ENDPOINT_NOT_FOUND", f"MLflow is served under {self.prefix}")
        relative = path[len(self.prefix) :]
        query = _params(request, None)
        if watch is not None:
            watch.seen(user.name, user.scopes, query)
        forgeable = user.via_cookie and method not in SAFE_METHODS
        if forgeable and not same_origin(request.headers):
            return _error(403, "PERMISSION_DENIED", "cross-origin request refused")
        payload, raw = None, None
        if method in ("GET", "HEAD") and _has_body(request):
            # MLflow reads a GET's JSON body when there is no query string.
            return _error(400, "INVALID_PARAMETER_VALUE", f"a {method} request carries no body: use the query string")
        if method not in SAFE_METHODS and not _raw_body(relative):
            raw = await request.body()
            try:
                payload = _parse_body(raw, strict=path.endswith(RUN_CREATE_PATHS))
            except (ValueError, TypeError, RecursionError) as exc:
                return _error(400, "INVALID_PARAMETER_VALUE", f"the request body must be {exc}")
            if watch is not None:
                watch.seen(user.name, user.scopes, {**query, **payload})
        run_create = path.endswith(RUN_CREATE_PATHS) and method == "POST"
        user = await self._with_servers_now(user, payload)
        if refusal := decide_access(user, method, path, payload if run_create else None, self.required):
            return _refused(refusal)
        if why := ambiguous(query, payload):
            return _error(400, "INVALID_PARAMETER_VALUE", why)
        params = {**query, **(payload or {})}
        if relative.startswith("v1/traces"):
            params["x-mlflow-experiment-id"] = request.headers.get("x-mlflow-experiment-id", "")
        if store_decides(method, relative):
            refusal = None  # the guarded store checks the arguments MLflow parses
        else:
            decide = partial(authorize, user.principal, method, relative, params, self.resolver())
            refusal = await anyio.to_thread.run_sync(decide)
        if (off := feature_off(method, relative, refused=bool(refusal))) is not None:
            return JSONResponse(off)
        if refusal:
            return _refused(refusal)
        if run_create:
            body = claim_run(payload or {}, user.name)
        elif method == "POST" and path.endswith(OWNED_CREATE_PATHS):
            body = claim_owned(payload or {}, user.name)
        elif raw is not None:  # read here, so handed on from here
            return (user, *_replay(request.scope, request.receive, raw))
        else:
            return user, request.scope, request.receive
        return (user, *_replay(request.scope, request.receive, json.dumps(body).encode()))

    def resolver(self) -> Resolver:
        """MLflow's stores, as this process's MLflow server opens them (when first asked)."""
        return StoreResolver()

    async def _identify(self, request: Request) -> HubUser | None:
        """The hub user behind the Authorization header, else behind the cookie."""
        header = request.headers.get("authorization", "")
        if match := _AUTH_HEADER.fullmatch(header):
            return await self._user_for_token(match.group(1), via_cookie=False)
        cookie = request.cookies.get(SESSION_COOKIE)
        token = _load(self.sessions, cookie, SESSION_MAX_AGE)
        if not isinstance(token, str):
            return None
        return await self._user_for_token(token, via_cookie=True)

    async def _user_for_token(self, token: str, *, via_cookie: bool) -> HubUser | None:
        """The token's owner with the token's scopes, and the person's groups and roles.

        The token's own model lacks groups and roles unless it may read them (a
        server's token may not), so they are asked with the service's token. The
        person as both answers make them is kept for HubAuth's cache age (every request
        of a logging client names the same token); HubAuth's own caches would make the
        same answer again on every request.
        """
        key = hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()
        if (known := self.users.get(key)) is not None:
            return dataclasses.replace(known, via_cookie=via_cookie) if known.via_cookie != via_cookie else known
        try:
            model = await self.hub_auth.user_for_token(token, use_cache=False, sync=False)
            user = HubUser.from_model(model, via_cookie=via_cookie)
            if user is None:
                return None
            if model.get("kind") == "service":
                # A hub service (governance reading model cards) is no person: no user's
                # groups or roles, not even a person's of the same name; its token's scopes.
                user = dataclasses.replace(user, name=SERVICE_PREFIX + user.name)
            else:
                user = self._with_profile(user, await self._profile(user.name))
        except HTTPError as exc:
            raise HubUnavailable(exc.log_message or str(exc)) from exc
        self.users.put(key, user)
        return user

    def _with_profile(self, user: HubUser, profile: Any) -> HubUser:
        profile = profile if isinstance(profile, dict) else {}
        groups = frozenset(profile.get("groups") or ())
        roles = personas(profile.get("roles") or (), groups, self.group_personas)
        return dataclasses.replace(user, groups=groups, roles=roles, servers=servers_of(profile))

    async def _with_servers_now(self, user: HubUser, payload: Any) -> HubUser:
        """``user`` with the hub's servers asked again (not cached) when the tags ``payload``
        sets name a server or tier the cached answer does not know: one just started."""
        if payload is None or not placement_refusal(user.principal, tag_pairs(payload)):
            return user
        try:
            profile = await self._profile(user.name)
        except HTTPError as exc:
            raise HubUnavailable(exc.log_message or str(exc)) from exc
        fresh = self._with_profile(user, profile)
        self.users.refresh(fresh)
        return fresh

    async def _profile(self, name: str) -> Any:
        """``GET /hub/api/users/<name>`` with the service's token (kept by the caller)."""
        auth = self.hub_auth
        url = url_path_join(auth.api_url, "users", quote(name, safe=""))
        return await auth._check_hub_authorization(url=url, api_token=auth.api_token, use_cache=False)

    def _unauthenticated(self, request: Request) -> Response:
        """401 for API clients; browsers asking for a page go to the hub's login."""
        path, method = request.scope["path"], request.method
        page = path.startswith(self.prefix) and method in {"GET", "HEAD"}
        if page and not path[len(self.prefix) :].startswith(API_PATHS):
            return self._login_redirect(request)
        scopes = " or ".join(sorted(self.required))
        message = f"send 'Authorization: token <JupyterHub token>' with {scopes}"
        response = _error(401, "UNAUTHENTICATED", message)
        response.headers["WWW-Authenticate"] = "Bearer"
        return response

    def _login_redirect(self, request: Request) -> Response:
        """Send the browser to the hub's authorize URL; remember where it was going."""
        verifier, pkce = pkce_challenge(self.hub_auth)
        state = secrets.token_urlsafe(16)
        target = request.scope.get("raw_path") or request.scope["path"].encode()
        if query := request.scope.get("query_string"):
            target += b"?" + query
        saved = {"state": state, "next": target.decode("latin-1"), "verifier": verifier}
        url = url_concat(self.hub_auth.login_url, {"state": state, **pkce})
        response = RedirectResponse(url, status_code=302)
        self._set_cookie(response, request, STATE_COOKIE, self.states.dumps(saved))
        response.delete_cookie(SESSION_COOKIE, path=self.prefix)
        return response

    async def _oauth_callback(self, request: Request) -> Response:
        """Trade the hub's code for a token, keep it in the session cookie, go back."""
        params = request.query_params
        saved = _load(self.states, request.cookies.get(STATE_COOKIE), STATE_MAX_AGE)
        if "error" in params:  # not echoed: it is the caller's text
            return PlainTextResponse("The hub refused the login.", 403)
        if not isinstance(saved, dict) or not _same(params.get("state"), saved):
            again = f"OAuth state missing, expired or wrong: open {self.prefix} again."
            return PlainTextResponse(again, 400)
        code, verifier = params.get("code", ""), saved.get("verifier")
        pkce = {"code_verifier": verifier} if verifier else {}  # no PKCE on JupyterHub 5
        exchange = partial(self.hub_auth.token_for_code, code, **pkce)
        try:
            token = await anyio.to_thread.run_sync(exchange)
        except (HTTPError, KeyError, TypeError) as exc:
            log.warning("OAuth code exchange failed: %s", exc)
            again = f"The hub did not accept the login: open {self.prefix} again."
            return PlainTextResponse(again, 400)
        user = await self._user_for_token(token, via_cookie=True)
        if user is None:
            return PlainTextResponse("The hub named nobody for that login.", 400)
        if refusal := decide_access(user, "GET", self.prefix, None, self.required):
            return PlainTextResponse(f"MLflow refused: {refusal}", 403)
        response = RedirectResponse(_local(saved.get("next"), self.prefix), 302)
        self._set_cookie(response, request, SESSION_COOKIE, self.sessions.dumps(token))
        response.delete_cookie(STATE_COOKIE, path=self.prefix)
        return response

    def _set_cookie(self, response: Response, request: Request, name: str, value: str):
        """An HttpOnly, SameSite=Lax cookie on the prefix; Secure behind https."""
        scheme = request.headers.get("x-forwarded-proto", request.url.scheme)
        secure = scheme.split(",")[0].strip() == "https"
        max_age = STATE_MAX_AGE if name == STATE_COOKIE else None
        flags = {"path": self.prefix, "httponly": True, "samesite": "lax"}
        response.set_cookie(name, value, max_age, secure=secure, **flags)


class _Identities:
    """Who each token (by its sha256) belongs to, for ``max_age`` seconds after the hub said.

    Bounded: past :data:`TOKEN_CACHE_SIZE` the oldest answer goes. Only answers that name
    somebody are kept; a token the hub does not know is asked about again.
    """

    def __init__(self, max_age: float) -> None:
        self.max_age = max_age
        self._users: dict[str, tuple[float, HubUser]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> HubUser | None:
        entry = self._users.get(key)
        if entry is None:
            return None
        if time.monotonic() - entry[0] >= self.max_age:
            with self._lock:
                if self._users.get(key) is entry:
                    del self._users[key]
            return None
        return entry[1]

    def put(self, key: str, user: HubUser) -> None:
        with self._lock:
            self._users.pop(key, None)
            self._users[key] = (time.monotonic(), user)
            while len(self._users) > TOKEN_CACHE_SIZE:
                del self._users[next(iter(self._users))]

    def refresh(self, user: HubUser) -> None:
        """What the hub said again of ``user``'s person (groups, roles, servers), for every
        token of theirs; each keeps its own age (a token's scopes were not asked again)."""
        with self._lock:
            for key, (when, known) in list(self._users.items()):
                if known.name == user.name:
                    renewed = dataclasses.replace(known, groups=user.groups, roles=user.roles, servers=user.servers)
                    self._users[key] = (when, renewed)


def _load(serializer: URLSafeTimedSerializer, value: str | None, max_age: int) -> Any:
    """What a signed cookie holds, or None when it is missing, forged or expired."""
    try:
        return serializer.loads(value, max_age=max_age) if value else None
    except BadData:
        return None


def _same(given: str | None, saved: dict[str, Any]) -> bool:
    """Whether the callback's ``state`` is the one saved in the state cookie."""
    expected = saved.get("state")
    if not given or not isinstance(expected, str):
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def _local(target: Any, prefix: str) -> str:
    """``target`` when it is a path under ``prefix``, else the prefix: no open redirect."""
    if isinstance(target, str) and target.startswith(prefix) and "\\" not in target:
        return target
    return prefix


def _replay(scope: Scope, receive: Receive, body: bytes) -> tuple[Scope, Receive]:
    """A scope and receive that hand ``body`` downstream in place of the one read."""
    headers = [(k, v) for k, v in scope["headers"] if k != b"content-length"]
    headers.append((b"content-length", str(len(body)).encode()))
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> Message:
        # After the body, wait for the client to go, as the real receive does.
        return pending.pop() if pending else await receive()

    return {**scope, "headers": headers}, replayed


def install_flask_hook(flask_app: Any, exempt: set[str]) -> None:
    """Expose ``g.hubforge_user`` to MLflow's Flask app; refuse what skipped the gate."""
    from flask import g, jsonify, request

    def expose_hub_user() -> Any:
        user = _current_user.get()
        g.hubforge_user = user.name if user else None
        if g.hubforge_user is None and request.path not in exempt:
            return jsonify(error_code="UNAUTHENTICATED", message="no hub user"), 401
        return None

    if not getattr(flask_app, "_hubforge_gate", False):
        flask_app.before_request(expose_hub_user)
        filter_searches(flask_app, current_principal)
        flask_app._hubforge_gate = True


def current_principal() -> Principal | None:
    """The person behind the request being served, as the stores' checks see them."""
    user = _current_user.get()
    return user.principal if user else None
