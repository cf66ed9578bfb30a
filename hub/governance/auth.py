"""Hub authentication for the governance handlers, and the ``needs_scope`` decorator.

Browsers log in through the hub's OAuth (a cookie set by
``<prefix>oauth_callback``); API clients send ``Authorization: token ...``.
Both are :class:`~jupyterhub.services.auth.HubOAuthenticated`; the user
model is fetched asynchronously, so the event loop never waits on the hub.

Every handler method declares who may call it, ``@needs_scope(...)`` or
``@public``; an undeclared method is refused (fail closed). A method the
handler lacks is a 405 whose ``Allow`` header lists its ``operations``.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar, TypeVar

from jupyterhub.services.auth import HubOAuth, HubOAuthenticated, UserNotAllowed
from tornado import web
from tornado.log import app_log

from hubforge.proxies import client_address

from .policy import has_scope

__all__ = [
    "HubAuthHandler",
    "declared_scopes",
    "is_public",
    "needs_scope",
    "public",
]

F = TypeVar("F", bound=Callable[..., Any])

_SCOPES_ATTR = "__hubforge_scopes__"
_PUBLIC_ATTR = "__hubforge_public__"


def needs_scope(
    *scopes: str,
) -> Callable[[Callable[..., Any]], Callable[..., Awaitable[Any]]]:
    """Allow a handler method to a logged-in hub user holding any one of ``scopes``.

    With no scopes, any hub user allowed to use the service may call it.
    No user: 401 on API paths (unless a browser with a hub session opens
    one), a redirect to the hub login elsewhere.
    A user without the scope: 403 naming the scope needed.
    """

    def decorator(method: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
        @functools.wraps(method)
        async def wrapper(self: HubAuthHandler, *args: Any, **kwargs: Any) -> Any:
            if await self.require_user() is None:
                return None  # redirected to the login page
            if scopes and not any(has_scope(self.user_scopes, scope) for scope in scopes):
                needed = scopes[0] if len(scopes) == 1 else "one of " + ", ".join(scopes)
                raise web.HTTPError(403, f"missing scope: this needs {needed}")
            result = method(self, *args, **kwargs)
            return await result if inspect.isawaitable(result) else result

        setattr(wrapper, _SCOPES_ATTR, tuple(scopes))
        return wrapper

    return decorator


def public(method: F) -> F:
    """Declare a handler method open to anyone, without authentication."""
    setattr(method, _PUBLIC_ATTR, True)
    return method


def declared_scopes(method: Any) -> tuple[str, ...] | None:
    """The scopes ``method`` needs (any one of; empty: any user), or None if undeclared."""
    return getattr(method, _SCOPES_ATTR, None)


def is_public(method: Any) -> bool:
    """Whether ``method`` was declared ``@public``."""
    return bool(getattr(method, _PUBLIC_ATTR, False))


class HubAuthHandler(HubOAuthenticated, web.RequestHandler):
    """Base of every governance handler: hub auth, fail-closed methods, JSON errors.

    Application settings used: ``hub_auth`` (a :class:`HubOAuth`), ``service_prefix``
    and ``proxy_peers`` (a :class:`~hubforge.proxies.ProxyPeers`, or None).
    """

    #: method -> its :class:`~.openapi.Operation`: what the OpenAPI document
    #: lists, and what a 405's ``Allow`` names (the document's builder checks
    #: that they are exactly the methods implemented).
    operations: ClassVar[Mapping[str, Any]] = {}

    # Annotation only: set on the instance, its presence means "already asked the hub".
    _hub_auth_user_cache: dict[str, Any] | None
    _refused_user: dict[str, Any] | None = None
    _xsrf_refusal: str | None = None

    def __init__(self, application: web.Application, request: Any, **kwargs: Any) -> None:
        super().__init__(application, request, **kwargs)
        peers = self.settings.get("proxy_peers")
        if peers is not None and peers.trusts(request.remote_ip):
            # Served without tornado's xheaders, which believe any peer: the proxy's word only.
            request.remote_ip = client_address(request.remote_ip, request.headers.get("X-Forwarded-For"))
            proto = request.headers.get("X-Forwarded-Proto", "").split(",")[-1].strip().lower()
            if proto in ("http", "https"):
                request.protocol = proto

    @property
    def hub_auth(self) -> HubOAuth:
        """The application's HubOAuth (not the process-wide singleton: tests run several)."""
        return self.settings["hub_auth"]

    @property
    def log(self) -> logging.Logger:
        """The application's logger (``log`` setting), else tornado's."""
        return self.settings.get("log") or app_log

    @property
    def is_api_request(self) -> bool:
        """Whether the request is for the JSON API (no login redirects there)."""
        return self.request.path.startswith(self.settings["service_prefix"] + "api/")

    @property
    def user_name(self) -> str:
        """The authenticated user's name."""
        return str(self.current_user["name"])

    @property
    def user_scopes(self) -> frozenset[str]:
        """The scopes of the authenticated user (of their token, as the hub reports them)."""
        user = self.current_user or {}
        return frozenset(user.get("scopes") or ())

    def get_current_user(self) -> dict[str, Any] | None:
        """The user found by :meth:`resolve_user`; never a blocking hub call."""
        return getattr(self, "_hub_auth_user_cache", None)

    async def prepare(self) -> None:
        """Refuse methods that declare no permission (fail closed)."""
        name = self.request.method.lower() if self.request.method else ""
        method = getattr(self, name, None)
        if getattr(type(self), name, None) is getattr(web.RequestHandler, name, None):
            return  # not implemented: tornado answers 405 itself
        if declared_scopes(method) is None and not is_public(method):
            self.log.error("%s.%s declares no permission; refusing", type(self).__name__, name)
            raise web.HTTPError(403, "this operation declares no permission and is refused")

    async def resolve_user(self) -> dict[str, Any] | None:
        """Ask the hub who is calling (once per request); None when nobody allowed is."""
        if hasattr(self, "_hub_auth_user_cache"):
            return self._hub_auth_user_cache
        self._hub_auth_user_cache = None
        try:
            model = await self.hub_auth.get_user(self, sync=False)
        except web.HTTPError as exc:
            if exc.status_code < 500:
                raise
            # The hub is down or refused our own token: not the caller's fault.
            raise web.HTTPError(502, "cannot check authentication with the hub; try again later") from exc
        if model:
            try:
                self._hub_auth_user_cache = self.check_hub_user(model)
            except UserNotAllowed:
                self._refused_user = model
        elif self.get_secure_cookie(self.hub_auth.cookie_name):
            self._xsrf_refusal = self._check_xsrf()
        return self._hub_auth_user_cache

    def _check_xsrf(self) -> str | None:
        """Why a cookie was ignored for want of an XSRF token, or None if it was not that."""
        # HubOAuth drops a cookie whose write lacks a valid XSRF token without
        # saying so; repeat the check to tell the caller instead of asking them to log in.
        try:
            self.check_xsrf_cookie()
        except web.HTTPError as exc:
            what = "missing" if "missing" in (exc.log_message or "") else "invalid"
            return (
                f"XSRF token {what} on a cookie-authenticated {self.request.method}: send the _xsrf "
                "cookie's value in the X-XSRFToken header, or use 'Authorization: token ...'"
            )
        return None

    async def require_user(self) -> dict[str, Any] | None:
        """The calling user; raise 401/403, or redirect to login and return None."""
        user = await self.resolve_user()
        if user is not None:
            self._offer_xsrf_cookie()
            return user
        if self._refused_user is not None:
            kind, name = (
                self._refused_user.get("kind", "user"),
                self._refused_user.get("name", "?"),
            )
            scopes = ", ".join(sorted(self.hub_scopes or ()))
            raise web.HTTPError(403, f"{kind} {name!r} may not use this service (needs {scopes})")
        if self._xsrf_refusal:
            raise web.HTTPError(403, self._xsrf_refusal)
        if not self._wants_login_redirect():
            raise web.HTTPError(
                401,
                "authentication required: log in to the hub or send 'Authorization: token ...'",
            )
        self.redirect(self.get_login_url())
        return None

    def _wants_login_redirect(self) -> bool:
        """Whether to send an anonymous caller to the hub login rather than answer 401."""
        if self.request.method not in ("GET", "HEAD"):
            return False
        if not self.is_api_request:
            return True
        # An API URL opened in a browser that is logged in to the hub (whose
        # session-id cookie reaches every path) gets the OAuth hop; scripts,
        # fetch() calls and browsers without a hub session get 401.
        mode = self.request.headers.get("Sec-Fetch-Mode", "navigate")
        return mode == "navigate" and bool(self.hub_auth.get_session_id(self))

    def _offer_xsrf_cookie(self) -> None:
        # Browser sessions need the _xsrf cookie before their first write;
        # reading xsrf_token sets it on page navigations (JupyterHub's rule).
        if not getattr(self, "_token_authenticated", False) and self.request.method == "GET":
            _ = self.xsrf_token

    @classmethod
    def allowed_methods(cls) -> list[str]:
        """The methods this handler answers, from its ``operations`` (for ``Allow``)."""
        return sorted(method.upper() for method in cls.operations)

    def decode_argument(self, value: bytes, name: str | None = None) -> str:
        """A path or query argument as text; not UTF-8 is a 400 naming it (not echoing it)."""
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            what = f"parameter {name!r}" if name else "a URL parameter"
            raise web.HTTPError(400, "%s is not valid UTF-8", what) from None

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Every error as ``{"status": N, "message": "..."}``; never a traceback."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = self._reason
        allowed = ", ".join(self.allowed_methods())
        if isinstance(exc, web.HTTPError) and exc.log_message:
            message = exc.log_message % exc.args if exc.args else exc.log_message
        elif status_code == 405:
            message = f"method not allowed here; this path allows {allowed}"
        elif status_code >= 500:
            message = "internal error; the service log has the details"
        self.set_header("Content-Type", "application/json; charset=utf-8")
        if status_code == 401:
            self.set_header("WWW-Authenticate", 'token realm="jupyterhub"')
        if status_code == 405:
            # RFC 9110: a 405 lists what the path does support.
            self.set_header("Allow", allowed)
        self.finish(json.dumps({"status": status_code, "message": message}))
