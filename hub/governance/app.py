"""The governance service application: :func:`make_app` and the process entry point.

JupyterHub starts it as a managed service (``python -m hubforge.hub.governance``)
with the usual ``JUPYTERHUB_*`` environment; start-up is a list of steps:
:meth:`GovernanceService.init_logging`, :meth:`~GovernanceService.init_config`,
:meth:`~GovernanceService.init_store`
(which migrates the store), :meth:`~GovernanceService.init_handlers`, then
:meth:`~GovernanceService.start`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from jupyterhub.services.auth import HubOAuth
from jupyterhub.utils import url_path_join
from tornado import web
from tornado.httpserver import HTTPServer
from traitlets import Unicode
from traitlets.config import catch_config_error

from hubforge import __version__, proxies
from hubforge.config import PlatformConfig, load_config
from hubforge.contract import ISOLATION_ENV, MLFLOW_URL_ENV, SERVING_URL_ENV
from hubforge.errors import ConfigError
from hubforge.events.spool import EventSpool, platform_spool_dir
from hubforge.hub.service_app import HubServiceApp, make_hub_oauth

from .audit import KEY_FILE, AuditLog, load_signing_key
from .collect import SpoolCollector
from .deployments import Deployer, DeployTarget, MlflowAliases, ServingClient
from .evidence import EvidenceSource, NoEvidence
from .handlers import ROUTES, NotFoundHandler
from .notify import Webhook, load_webhook_secret
from .openapi import build_spec, path_pattern
from .rego import PolicyEngine, default_policy_files
from .snapshots import NoSnapshots, SnapshotSource
from .store import GovernanceStore

__all__ = [
    "GovernanceService",
    "load_cookie_secret",
    "main",
    "make_app",
    "make_hub_auth",
]

#: The largest body read at all: a batch of audit records a server forwards (each handler
#: reads at most its own ``max_body``, 64 KiB for the rest of the API).
MAX_BODY_SIZE = 4 * 1024 * 1024 + 1024
#: The service's name: its prefix, its access scope.
SERVICE = "governance"
#: Seconds between two collections of the platform's audit spools.
COLLECT_EVERY_S = 1.0


def make_hub_auth(prefix: str, environ: Mapping[str, str] | None = None) -> HubOAuth:
    """The service's HubOAuth (API tokens and browser logins), from the ``JUPYTERHUB_*``
    environment (:func:`~hubforge.hub.service_app.hub_auth_settings`)."""
    return make_hub_oauth(SERVICE, prefix, environ)


def make_app(
    store: GovernanceStore,
    prefix: str,
    *,
    hub_auth: HubOAuth | None = None,
    group_personas: dict[str, list[str]] | None = None,
    cookie_secret: bytes | None = None,
    isolation: str | None = None,
    audit: EventSpool | None = None,
    trail: AuditLog | None = None,
    policies: PolicyEngine | None = None,
    evidence: EvidenceSource | None = None,
    snapshots: SnapshotSource | None = None,
    deployer: Deployer | None = None,
    webhook: Webhook | None = None,
    **settings: Any,
) -> web.Application:
    """The tornado application serving the governance API under ``prefix``.

    ``hub_auth`` defaults to :func:`make_hub_auth` (from the environment),
    ``group_personas`` to the platform config's, ``cookie_secret`` to a random
    one (browser sessions then end with the process), ``isolation`` to what
    ``hubforge up`` decided (``HUBFORGE_ISOLATION``). ``audit``: the service's audit
    spool (requests and decisions are recorded there; without one they are not). ``trail``:
    the audit trail that people's servers report to (without one, reports get 503).
    ``policies``: the compiled Rego policies (default: the shipped ones, no thresholds);
    ``evidence``: where deploy policies read model cards and metrics (default: nowhere, so
    production deployments are refused for want of evidence); ``snapshots``: where the
    approved copies of model versions are taken (default: nowhere, so no deployment is
    approved); ``deployer``: what serves approved deployments (default: none, so an approval
    stays approved, undeployed); ``webhook``: where requests, decisions and deployments are
    told (default: nowhere).
    """
    prefix = url_path_join("/", prefix, "/")
    hub_auth = hub_auth if hub_auth is not None else make_hub_auth(prefix)
    if group_personas is None:
        group_personas = load_config().group_personas()
    handlers = [(url_path_join(prefix, path_pattern(template)), handler) for template, handler in ROUTES]
    return web.Application(
        handlers,
        default_handler_class=NotFoundHandler,
        store=store,
        hub_auth=hub_auth,
        service_prefix=prefix,
        group_personas=group_personas,
        audit=audit,
        trail=trail,
        policies=policies if policies is not None else PolicyEngine(default_policy_files()),
        evidence=evidence if evidence is not None else NoEvidence(),
        snapshots=snapshots if snapshots is not None else NoSnapshots(),
        deployer=deployer,
        webhook=webhook,
        isolation=isolation or os.environ.get(ISOLATION_ENV) or "none",
        openapi=build_spec(ROUTES, prefix, cookie_name=hub_auth.cookie_name, version=__version__),
        cookie_secret=cookie_secret or secrets.token_bytes(32),
        # No tornado-level xsrf_cookies: it runs before authentication and would
        # refuse token-authenticated API calls. HubOAuth checks XSRF on cookie writes.
        xsrf_cookies=False,
        **settings,
    )


def load_cookie_secret(path: Path) -> bytes:
    """The cookie secret kept in ``path``, created (mode 0600) on first use."""
    try:
        secret = bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: unreadable cookie secret: {exc}") from exc
    else:
        if len(secret) < 16:
            raise ConfigError(f"{path}: cookie secret too short (delete it to make a new one)")
        return secret
    secret = secrets.token_bytes(32)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return load_cookie_secret(path)  # another process made it first
    except OSError as exc:
        raise ConfigError(f"{path}: cannot create cookie secret: {exc.strerror}") from exc
    with os.fdopen(fd, "w") as f:
        f.write(secret.hex())
    return secret


class GovernanceService(HubServiceApp):
    """The governance service process."""

    name = "hubforge-governance"
    description = "The hubforge governance service: approval requests behind JupyterHub auth."
    version = __version__
    service_name = SERVICE
    library_loggers = ("hubforge", "alembic", "tornado")
    aliases: ClassVar[dict[str, Any]] = {  # type: ignore[misc]
        "db-url": "GovernanceService.db_url",
        "log-level": "Application.log_level",
    }

    #: Whose X-Forwarded-For is believed (Kubernetes); None: tornado's xheaders.
    proxy_peers: proxies.ProxyPeers | None = None

    db_url = Unicode(
        "",
        help="SQLAlchemy URL of the store. Default: the platform config's backends.governance_db_url, "
        "else SQLite in data_dir.",
    ).tag(config=True)

    cookie_secret_file = Unicode(
        "",
        help="File holding the browser-session cookie secret. Default: governance_cookie_secret in data_dir.",
    ).tag(config=True)

    platform: PlatformConfig
    hub_auth: HubOAuth
    store: GovernanceStore
    trail: AuditLog
    policies: PolicyEngine
    evidence: EvidenceSource
    snapshots: SnapshotSource
    deployer: Deployer | None
    webhook: Webhook | None
    collector: SpoolCollector
    audit: EventSpool
    web_app: web.Application

    @catch_config_error
    def initialize(self, argv: list[str] | None = None) -> None:
        """Parse the command line, then run the init steps in order."""
        super().initialize(argv)
        self.init_logging()
        self.init_config()
        self.init_policies()
        self.init_evidence()
        self.init_store()
        self.init_audit()
        self.init_webhook()
        self.init_deployer()
        self.init_handlers()

    def init_config(self) -> None:
        """Load the platform config and the hub environment; settle URLs and address."""
        self.platform = load_config()
        self.hub_auth = make_hub_auth(self.service_prefix)
        if not self.db_url:
            self.db_url = self.platform.db_url("governance")
        self.init_address()

    def init_policies(self) -> None:
        """Compile the governance policies; a broken one stops the start, naming its file."""
        governance = self.platform.services.governance
        base = Path(self.platform.source).parent if Path(self.platform.source).is_file() else Path.cwd()
        files = [base / Path(name).expanduser() for name in governance.policies] or default_policy_files()
        self.policies = PolicyEngine(files, {"thresholds": dict(governance.thresholds)})
        self.log.info("Governance policies: %s", ", ".join(str(f) for f in files))

    def init_evidence(self) -> None:
        """Where deploy policies read model cards and metrics: MLflow, when the platform runs it."""
        url = os.environ.get(MLFLOW_URL_ENV, "")
        if not url:
            self.evidence, self.snapshots = NoEvidence(), NoSnapshots()
            self.log.warning("MLflow is not enabled: no deployment can be approved (no model to copy)")
            return
        # Imported here: MLflow's client is heavy, and a platform without MLflow never needs it.
        from .mlflow_evidence import MlflowEvidence, configure_mlflow_client
        from .snapshots import ModelSnapshots

        configure_mlflow_client(self.hub_auth.api_token)
        self.evidence = MlflowEvidence(url)
        self.snapshots = ModelSnapshots(self.platform.data_dir / "deployments", url)
        self.log.info("Deploy policies read model cards and metrics from %s", url)

    def init_store(self) -> None:
        """Open the store and migrate it to the newest revision."""
        self.store = GovernanceStore(self.db_url)
        self.store.upgrade()

    def init_audit(self) -> None:
        """The audit trail in the store, signed with the platform's key (made on first start),
        and the collector of the platform's own spools."""
        key = load_signing_key(self.platform.data_dir / KEY_FILE, create=True)
        self.trail = AuditLog(self.store, key)
        self.collector = SpoolCollector(self.platform.data_dir, self.trail)
        self.audit = EventSpool(platform_spool_dir(self.platform.data_dir, "governance"), "governance")

    def init_webhook(self) -> None:
        """The outgoing webhook, when platform.yaml names one."""
        governance = self.platform.services.governance
        if not governance.webhook_url:
            self.webhook = None
            return
        secret_file = Path(governance.webhook_secret_file or self.platform.data_dir / "governance_webhook_secret")
        self.webhook = Webhook(governance.webhook_url, load_webhook_secret(secret_file))
        self.log.info("Requests, decisions and deployments go to the webhook %s", governance.webhook_url)

    def init_deployer(self) -> None:
        """Approved deployments go to the serving router on one machine, to KServe on
        Kubernetes, when the platform serves models."""
        self.deployer = None
        target, where = self._deploy_target()
        mlflow = os.environ.get(MLFLOW_URL_ENV, "")
        if target is None or not mlflow:
            self.log.info("Approved deployments are recorded, not served: %s", where if mlflow else "no MLflow")
            return
        self.deployer = Deployer(
            self.store,
            target,
            self.snapshots,
            public_url=self.platform.public_url,
            aliases=MlflowAliases(mlflow),
            audit=self.audit,
            webhook=self.webhook,
        )
        self.log.info("Approved deployments are served by %s", where)

    def _deploy_target(self) -> tuple[DeployTarget | None, str]:
        """Where approved copies are served, and its description (or why there is none)."""
        platform = self.platform
        if not platform.services.serving.enabled:
            return None, "services.serving.enabled is false"
        if not platform.spawner.on_kubernetes:
            serving = os.environ.get(SERVING_URL_ENV, "")
            if not serving:
                return None, "the serving router is not running"
            return ServingClient(serving, self.hub_auth.api_token), serving
        store = platform.backends.object_store_url
        if not store:
            return None, "KServe downloads models from backends.object_store_url, which is empty"
        # Imported here: the Kubernetes client is heavy, and one machine never needs it.
        from .kserve_deploy import KServeDeploy

        kserve = platform.services.serving.kserve
        namespaces = ", ".join(f"{target} in {ns}" for target, ns in kserve.namespaces.items())
        return KServeDeploy.from_settings(store, kserve), f"KServe ({namespaces}; copies under {store})"

    def init_handlers(self) -> None:
        """Build the web application."""
        # On Kubernetes only the proxy pods' X-Forwarded-For is believed (HubAuthHandler);
        # on one machine the proxy is on loopback and tornado's xheaders are enough.
        self.proxy_peers = proxies.from_env()
        secret_file = Path(self.cookie_secret_file or self.platform.data_dir / "governance_cookie_secret")
        self.web_app = make_app(
            self.store,
            self.service_prefix,
            hub_auth=self.hub_auth,
            group_personas=self.platform.group_personas(),
            cookie_secret=load_cookie_secret(secret_file),
            audit=self.audit,
            trail=self.trail,
            policies=self.policies,
            evidence=self.evidence,
            snapshots=self.snapshots,
            deployer=self.deployer,
            webhook=self.webhook,
            log_function=self._log_request,
            log=self.log,
            proxy_peers=self.proxy_peers,
        )

    def _log_request(self, handler: web.RequestHandler) -> None:
        # Health checks arrive every few seconds; keep them out of the info log.
        status = handler.get_status()
        level = self.log.debug if handler.request.path.endswith("/api/health") and status == 200 else self.log.info
        if status >= 500:
            level = self.log.error
        request = handler.request
        level(
            "%d %s %s %.1fms",
            status,
            request.method,
            request.path,
            1000 * request.request_time(),
        )

    def start(self) -> None:
        """Serve until SIGTERM or SIGINT."""
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        server = HTTPServer(self.web_app, xheaders=self.proxy_peers is None, max_body_size=MAX_BODY_SIZE)
        server.listen(self.port, self.ip)
        self.log.info(
            "Governance service listening on http://%s:%d%s",
            self.ip,
            self.port,
            self.service_prefix,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        collecting = asyncio.create_task(self._collect_until(stop))
        if self.deployer is not None:
            await self.deployer.resume()
        await stop.wait()
        self.log.info("Governance service stopping")
        await collecting
        server.stop()
        if self.deployer is not None:
            await self.deployer.close()
        if self.webhook is not None:
            await self.webhook.close()
        await server.close_all_connections()
        self.audit.close()
        await loop.run_in_executor(None, self.collector.collect)  # what the last requests recorded
        self.store.dispose()

    async def _collect_until(self, stop: asyncio.Event) -> None:
        """Collect the platform's spools into the audit trail every second until ``stop``."""
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            try:
                await loop.run_in_executor(None, self.collector.collect)
            except Exception:  # the loop outlives any one pass: what it missed stays in the spools
                self.log.exception("Collecting the platform's audit spools failed; trying again")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), COLLECT_EVERY_S)


def main(argv: list[str] | None = None) -> None:
    """Run the governance service; a configuration problem exits 1 with one line."""
    GovernanceService.main(argv)
