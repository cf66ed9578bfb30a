"""The serving service application: :func:`make_app` and the process entry point.

JupyterHub starts it as a managed service (``python -m hubforge.hub.serving``) with the
usual ``JUPYTERHUB_*`` environment. Start-up is a list of steps:
:meth:`ServingService.init_logging`, :meth:`~ServingService.init_config`,
:meth:`~ServingService.init_router` (reads the saved routes),
:meth:`~ServingService.init_handlers`, then :meth:`~ServingService.start`, which listens
first and then restarts the saved routes' scoring processes (a scoring request that
arrives meanwhile waits for its release's process). It listens with
:class:`~.front.ServingFront`, which answers most scoring requests itself and hands the
rest to the tornado application :func:`make_app` builds (which serves on its own too, in
any tornado ``HTTPServer``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, ClassVar

from jupyterhub.services.auth import HubAuth
from jupyterhub.utils import url_path_join
from tornado import web
from traitlets import Float, Integer, List, Unicode
from traitlets.config import catch_config_error

from hubforge import __version__
from hubforge.config import load_config
from hubforge.hub.service_app import HubServiceApp
from hubforge.hub.service_app import make_hub_auth as service_hub_auth

from .front import RequestLog, ServingFront
from .handlers import ROUTES, AccessCache, NotFoundHandler
from .router import Router
from .scoring import ScoringPool, ScoringSettings
from .state import ServingState
from .upstream import UpstreamPool

__all__ = ["ServingService", "main", "make_app", "make_hub_auth"]

#: The service's name: its prefix, its access scope.
SERVICE = "serving"


def make_hub_auth(prefix: str, environ: Mapping[str, str] | None = None, cache_max_age: int = 60) -> HubAuth:
    """The service's HubAuth (tokens only: no browser login), from the ``JUPYTERHUB_*``
    environment (:func:`~hubforge.hub.service_app.hub_auth_settings`). Token lookups are
    cached ``cache_max_age`` seconds (a revoked token works that long at most)."""
    return service_hub_auth(SERVICE, prefix, environ, cache_max_age=cache_max_age)


def make_app(
    router: Router,
    prefix: str,
    *,
    hub_auth: HubAuth,
    controllers: tuple[str, ...] = ("governance",),
    **settings: Any,
) -> web.Application:
    """The tornado application serving scoring and the control API under ``prefix``.

    ``controllers``: the hub services that may change the routes.
    """
    prefix = url_path_join("/", prefix, "/")
    handlers = [(url_path_join(prefix, pattern), handler, kwargs) for pattern, handler, kwargs in ROUTES]
    return web.Application(
        handlers,
        default_handler_class=NotFoundHandler,
        router=router,
        hub_auth=hub_auth,
        access_cache=AccessCache(hub_auth.cache_max_age),
        service_prefix=prefix,
        controllers=tuple(controllers),
        xsrf_cookies=False,  # token-authenticated API only: no cookies are read
        **settings,
    )


class ServingService(HubServiceApp):
    """The serving service process."""

    name = "hubforge-serving"
    description = "The hubforge serving router: approved model versions behind JupyterHub auth."
    version = __version__
    service_name = SERVICE
    aliases: ClassVar[dict[str, Any]] = {  # type: ignore[misc]
        "state-dir": "ServingService.state_dir",
        "log-level": "Application.log_level",
    }

    state_dir = Unicode("", help="The service's state folder. Default: serving/ in the platform's data_dir.").tag(
        config=True
    )
    controllers = List(
        Unicode(), ["governance"], help="Hub services that may change the routes (deploy, promote, rollback, delete)."
    ).tag(config=True)
    start_timeout = Float(120.0, help="Seconds a scoring process has to answer /ping after it starts.").tag(config=True)
    request_timeout = Float(60.0, help="Seconds a scoring server has to answer one forwarded request.").tag(config=True)
    max_body_size = Integer(
        32 * 1024 * 1024, help="The largest request body, in bytes (a scoring request's; a larger one is a 413)."
    ).tag(config=True)
    scoring_workers = Integer(1, help="uvicorn workers per scoring process.").tag(config=True)

    request_log: RequestLog
    hub_auth: HubAuth
    router: Router
    web_app: web.Application

    @catch_config_error
    def initialize(self, argv: list[str] | None = None) -> None:
        """Parse the command line, then run the init steps in order."""
        super().initialize(argv)
        self.init_logging()
        self.init_config()
        self.init_router()
        self.init_handlers()

    def init_logging(self) -> None:
        """Send the libraries' logs (tornado, hub auth) where ours go; the line per request."""
        super().init_logging()
        level = self.log_level
        number = level if isinstance(level, int) else int(logging.getLevelName(str(level)))
        self.request_log = RequestLog(self.log, debug=number <= logging.DEBUG)

    def init_config(self) -> None:
        """The hub environment, the state folder and the address to listen on."""
        self.hub_auth = make_hub_auth(self.service_prefix)
        if not self.state_dir:
            self.state_dir = str(load_config().data_dir / SERVICE)
        self.init_address()

    def init_router(self) -> None:
        """The state folder, the scoring pool and the router, with the saved routes read."""
        state = ServingState(self.state_dir)
        upstream = UpstreamPool(timeout=self.request_timeout)
        settings = ScoringSettings(
            home=state.home,
            logs=state.logs,
            sockets=state.sockets,
            start_timeout=self.start_timeout,
            workers=self.scoring_workers,
        )
        self.router = Router(state, ScoringPool(settings, upstream, state.verify), log=self.log)
        self.router.load()

    def init_handlers(self) -> None:
        """Build the web application."""
        self.web_app = make_app(
            self.router,
            self.service_prefix,
            hub_auth=self.hub_auth,
            controllers=tuple(self.controllers),
            log_function=self.request_log.handler,
        )

    def start(self) -> None:
        """Serve until SIGTERM or SIGINT."""
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        front = ServingFront(self.web_app, max_body_size=self.max_body_size, log=self.request_log)
        await front.listen(self.port, self.ip)
        self.log.info("Serving router listening on http://%s:%d%s", self.ip, self.port, self.service_prefix)
        restoring = asyncio.create_task(self.router.restore())
        await self.until_signalled()
        self.log.info("Serving router stopping")
        restoring.cancel()
        await front.close()
        await self.router.close()


def main(argv: list[str] | None = None) -> None:
    """Run the serving service; a configuration problem exits 1 with one line."""
    ServingService.main(argv)
