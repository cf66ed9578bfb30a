"""What every hubforge hub service shares: its hub auth, its address, its logs, its life.

JupyterHub starts each service (``python -m hubforge.hub.<name>``) with the usual
``JUPYTERHUB_*`` environment. :func:`hub_auth_settings` reads it once for all of them:
the service's token, its prefix and the scopes that give access, which default to
``access:services!service=<name>`` because with no access scope at all JupyterHub's
HubAuth lets every hub user in. :class:`HubServiceApp` is the traitlets application
each service subclasses: the prefix, URL and bind address from that environment, the
hub's log format, one line and exit status 1 for a configuration problem, and a serve
loop that ends on SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import urlsplit

from jupyterhub.services.auth import HubAuth, HubOAuth
from jupyterhub.utils import url_path_join
from tornado import web
from traitlets import Unicode, default
from traitlets.config import Application

from hubforge.contract import SERVICE_BIND_IP_ENV
from hubforge.errors import ConfigError, HubforgeError

__all__ = ["HubServiceApp", "JSONErrorHandler", "hub_auth_settings", "make_hub_auth", "make_hub_oauth"]

#: Hub-service environment variables -> the HubAuth traits they set.
_HUB_ENV = {
    "JUPYTERHUB_API_URL": "api_url",
    "JUPYTERHUB_HOST": "hub_host",
    "JUPYTERHUB_OAUTH_CALLBACK_URL": "oauth_redirect_uri",
}


def hub_auth_settings(
    name: str, prefix: str, environ: Mapping[str, str] | None = None, *, oauth: bool = False
) -> dict[str, Any]:
    """HubAuth's settings for the service ``name`` under ``prefix``, from ``environ`` (the
    process's by default, read here rather than left to HubAuth's os.environ defaults, so
    one process can run services of several hubs, as the tests do). ``oauth``: browser
    logins too, which need the OAuth client id. ConfigError without what the hub gives."""
    env = os.environ if environ is None else environ
    required = ("JUPYTERHUB_API_TOKEN", "JUPYTERHUB_CLIENT_ID") if oauth else ("JUPYTERHUB_API_TOKEN",)
    missing = [variable for variable in required if not env.get(variable)]
    if missing:
        raise ConfigError(f"{', '.join(missing)} not set: the {name} service runs as a JupyterHub-managed service")
    service = env.get("JUPYTERHUB_SERVICE_NAME") or name
    scopes_env = env.get("JUPYTERHUB_OAUTH_ACCESS_SCOPES")
    try:
        access = set(json.loads(scopes_env)) if scopes_env else set()
    except ValueError as exc:
        raise ConfigError(f"JUPYTERHUB_OAUTH_ACCESS_SCOPES is not a JSON list: {exc}") from exc
    settings: dict[str, Any] = {
        "api_token": env["JUPYTERHUB_API_TOKEN"],
        "base_url": prefix,
        "access_scopes": access or {f"access:services!service={service}"},
    }
    if oauth:
        settings["oauth_client_id"] = env["JUPYTERHUB_CLIENT_ID"]
        for variable, trait in _HUB_ENV.items():
            if env.get(variable):
                settings[trait] = env[variable]
        if env.get("JUPYTERHUB_BASE_URL"):
            settings["hub_prefix"] = url_path_join(env["JUPYTERHUB_BASE_URL"], "hub") + "/"
    elif env.get("JUPYTERHUB_API_URL"):
        settings["api_url"] = env["JUPYTERHUB_API_URL"]
    return settings


def make_hub_auth(name: str, prefix: str, environ: Mapping[str, str] | None = None, **traits: Any) -> HubAuth:
    """Token-only hub auth for the service ``name`` (an API nobody opens in a browser)."""
    return HubAuth(**hub_auth_settings(name, prefix, environ), **traits)


def make_hub_oauth(name: str, prefix: str, environ: Mapping[str, str] | None = None, **traits: Any) -> HubOAuth:
    """Hub auth with browser logins (OAuth) for the service ``name``."""
    return HubOAuth(**hub_auth_settings(name, prefix, environ, oauth=True), **traits)


#: A 401's challenge: a hub token.
CHALLENGE = ("WWW-Authenticate", 'token realm="jupyterhub"')
#: An error body's type.
JSON_TYPE = "application/json; charset=utf-8"


class JSONErrorHandler(web.RequestHandler):
    """A handler base whose every error is ``{"status": N, "message": "..."}``, never a traceback.

    The message is the ``HTTPError``'s, else the status's reason; a 5xx without one says
    ``internal_error``; a 401 names how to authenticate (a hub token).
    """

    internal_error: ClassVar[str] = "internal error; the service log has the details"

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = self._reason
        if isinstance(exc, web.HTTPError) and exc.log_message:
            message = exc.log_message % exc.args if exc.args else exc.log_message
        elif status_code >= 500:
            message = self.internal_error
        self.set_header("Content-Type", JSON_TYPE)
        if status_code == 401:
            self.set_header(*CHALLENGE)
        self.finish(json.dumps({"status": status_code, "message": message}).encode())


class HubServiceApp(Application):
    """The application a hub service subclasses; ``service_name`` names it."""

    #: The service's name: its default prefix, its access scope, its messages.
    service_name: ClassVar[str] = ""
    #: Loggers that write where the application's log goes, at its level.
    library_loggers: ClassVar[tuple[str, ...]] = ("hubforge", "tornado")

    service_prefix = Unicode(help="URL prefix served (JUPYTERHUB_SERVICE_PREFIX).").tag(config=True)
    service_url = Unicode(help="Address to bind, as a URL (JUPYTERHUB_SERVICE_URL).").tag(config=True)
    bind_ip = Unicode(
        help="Address to listen on, when it differs from JUPYTERHUB_SERVICE_URL's host (HUBFORGE_BIND_IP): "
        "on Kubernetes the URL names the hub's Service, which the pod cannot bind; listen on 0.0.0.0 there.",
    ).tag(config=True)

    ip: str
    port: int

    @default("bind_ip")
    def _default_bind_ip(self) -> str:
        return os.environ.get(SERVICE_BIND_IP_ENV, "")

    @default("service_prefix")
    def _default_prefix(self) -> str:
        return os.environ.get("JUPYTERHUB_SERVICE_PREFIX") or f"/services/{self.service_name}/"

    @default("service_url")
    def _default_service_url(self) -> str:
        return os.environ.get("JUPYTERHUB_SERVICE_URL", "")

    @default("log_level")
    def _default_log_level(self) -> int:
        # A service's start, stop and requests belong in the hub's log.
        return logging.INFO

    @default("log_format")
    def _default_log_format(self) -> str:
        return "[%(levelname)1.1s %(asctime)s %(name)s] %(message)s"

    def init_logging(self) -> None:
        """Send the libraries' logs where ours go, at the application's level."""
        level = self.log_level
        number = level if isinstance(level, int) else int(logging.getLevelName(str(level)))
        for name in self.library_loggers:
            logger = logging.getLogger(name)
            logger.handlers = list(self.log.handlers)
            # The level itself, not the application logger's (traitlets keeps that at DEBUG
            # and filters in its handler): no debug record is made for nothing.
            logger.setLevel(number)
            logger.propagate = False

    def init_address(self) -> None:
        """``ip`` and ``port`` to listen on, from the service URL (and ``bind_ip``)."""
        url = urlsplit(self.service_url)
        if not (url.hostname and url.port):
            raise ConfigError(
                f"JUPYTERHUB_SERVICE_URL {self.service_url!r} names no host and port: "
                f"the {self.service_name} service runs as a JupyterHub-managed service"
            )
        self.ip, self.port = self.bind_ip or url.hostname, url.port

    @staticmethod
    async def until_signalled() -> None:
        """Return on the first SIGTERM or SIGINT."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()

    @classmethod
    def main(cls, argv: list[str] | None = None) -> None:
        """Initialize and run the service; a configuration problem exits 1 with one line."""
        service = cls()
        try:
            service.initialize(argv)
        except HubforgeError as exc:
            service.log.critical("%s", exc)
            sys.exit(1)
        service.start()
