"""The hub-managed services, each declared once, rendered for one machine and for Kubernetes.

A service is a :class:`ServiceSpec`: its name, its command, its environment, its
health check, the OAuth client settings the hub gives it and whether every
persona may use it. :data:`SERVICES` registers them. ``hubforge up`` (through
:func:`hubforge.hub.hubconfig.configure_services`), the launcher's health checks
and ports, ``hubforge k8s render`` (``hub.services``, the hub Service's ports and
network policy) and the personas' ``access:services`` scopes are all built from
that one list, so the two deployments cannot drift apart.

What differs between the deployments is a :class:`Placement`, and only that:
where the services listen, the host the hub reaches them at, the interpreter,
the data folder as the services see it and the environment every service gets.
A spec builds its command and environment from the placement alone.

Adding a service: its code in a folder of its own (like ``hub/governance/``), its
settings under ``services.<name>`` in the platform config (``port``, optionally
``enabled``), and one :class:`ServiceSpec` in :data:`SERVICES`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from hubforge.config import PlatformConfig
from hubforge.contract import (
    APPS_URL_ENV,
    AUDIT_CELL_SOURCE_ENV,
    AUDIT_URL_ENV,
    FEATURES_URL_ENV,
    GOVERNANCE_URL_ENV,
    MLFLOW_URL_ENV,
    SCHEDULER_RUN_SERVICES_ENV,
    SCHEDULER_URL_ENV,
    SERVICE_BIND_IP_ENV,
    SERVING_URL_ENV,
)
from hubforge.features.environment import feast_python
from hubforge.personas import CUSTOM_SCOPES, SERVICE_ROLE_SCOPES

__all__ = [
    "APPS",
    "FEATURES",
    "FEATURES_ROLE",
    "GOVERNANCE",
    "GOVERNANCE_ROLE",
    "MLFLOW",
    "SCHEDULER",
    "SCHEDULER_ROLE",
    "SERVICES",
    "SERVICE_ROLE",
    "SERVICE_START_TIMEOUT",
    "SERVING",
    "Placement",
    "ServiceSpec",
    "enabled_services",
    "features_role",
    "governance_role",
    "health_url",
    "hub_service",
    "hub_services",
    "persona_services",
    "scheduler_role",
    "server_audit_env",
    "server_service_env",
    "service_names",
    "service_role",
]

#: Seconds the hub waits for a service to answer after starting it (MLflow's first start
#: creates its database: tens of seconds on a slow disk).
SERVICE_START_TIMEOUT = 180
#: Seconds MLflow's server keeps an idle connection open (uvicorn's default is 5). Clients
#: keep connections for reuse: MLflow's Python client in kernels and services with no idle
#: limit, the proxy's pool. One that sends on a connection just as the server closes it gets
#: no answer ("Remote end closed connection"); at 5 s that happens to every client pausing as
#: long as a short wait. Well above any client's pause between calls, a client closes first.
MLFLOW_KEEP_ALIVE_S = 75
#: The role that lets the services read who a token belongs to, their groups and roles.
SERVICE_ROLE = "hubforge-services"
#: The governance service's own role: it reads every model version's card and metrics in MLflow.
GOVERNANCE_ROLE = "hubforge-governance"
#: The features service's own role: it checks people's data-access grants with the governance service.
FEATURES_ROLE = "hubforge-features"
#: The scheduler's own role: it makes a short-lived token of a job's owner for each run.
SCHEDULER_ROLE = "hubforge-scheduler"


@dataclass(frozen=True)
class Placement:
    """Where the services run: everything that differs between one machine and Kubernetes.

    ``cfg`` is the platform config as the services see it (its data folder where they
    run); ``ports`` each service's port; ``reached_as`` the ``host:port`` names the
    platform's own clients use for a service (``{port}`` stands for its port).
    """

    kind: str
    cfg: PlatformConfig
    ports: Mapping[str, int]
    bind_ip: str
    url_host: str
    python: str
    scripts: str
    env: Mapping[str, str]
    reached_as: tuple[str, ...]

    def script(self, name: str) -> str:
        """A console script of the platform's environment (found on ``PATH`` when no folder)."""
        return os.path.join(self.scripts, name) if self.scripts else name

    def hosts(self, port: int) -> list[str]:
        """The ``host:port`` names a service on ``port`` is reached at, public address first."""
        public = urlsplit(self.cfg.public_url).netloc
        return sorted({public, *(host.format(port=port) for host in self.reached_as)})


def _section(cfg: PlatformConfig, name: str) -> Any:
    return getattr(cfg.services, name)


@dataclass(frozen=True)
class ServiceSpec:
    """One hub-managed service (see the module's docstring)."""

    name: str
    #: Its command, for a placement and the port it listens on.
    command: Callable[[Placement, int], list[str]]
    #: Its own environment, on top of the placement's.
    environment: Callable[[Placement], dict[str, str]] = lambda placement: {}
    #: Its health check, under its prefix (``/services/<name>/``); 200 when it is up.
    health_path: str = "api/health"
    #: Its port on Kubernetes when platform.yaml says 0 (one machine picks a free one).
    default_port: int = 0
    #: What its OAuth tokens may carry: the platform's custom scopes.
    oauth_client_allowed_scopes: tuple[str, ...] = field(default_factory=lambda: tuple(sorted(CUSTOM_SCOPES)))
    #: Whether every persona's role may use it (``access:services!service=<name>``).
    persona_access: bool = True
    #: Whether it runs in the hub pod on Kubernetes too (serving is KServe's there).
    on_kubernetes: bool = True
    #: Why it cannot run on this machine though platform.yaml has it on (None: it can).
    unavailable: Callable[[PlatformConfig], str | None] = lambda cfg: None

    def configured(self, cfg: PlatformConfig) -> bool:
        """``services.<name>.enabled`` (a service without that setting is always on)."""
        return bool(getattr(_section(cfg, self.name), "enabled", True))

    def enabled(self, cfg: PlatformConfig) -> bool:
        """On in platform.yaml, and able to run here: a service that cannot start would hold
        ``hubforge up`` until its health check gave up, and the hub would restart it forever."""
        return self.configured(cfg) and self.unavailable(cfg) is None

    def configured_port(self, cfg: PlatformConfig) -> int:
        """``services.<name>.port``: 0 lets the platform choose."""
        return int(_section(cfg, self.name).port)


def _governance_command(placement: Placement, port: int) -> list[str]:
    return [placement.python, "-m", "hubforge.hub.governance"]


def _governance_environment(placement: Placement) -> dict[str, str]:
    # The URL names where the hub reaches it; on Kubernetes that is the hub's Service,
    # which the pod cannot bind: it listens on the placement's address.
    env = {SERVICE_BIND_IP_ENV: placement.bind_ip}
    if "mlflow" in placement.ports and MLFLOW.enabled(placement.cfg):
        # Deploy policies read model cards and metrics from MLflow, as the governance
        # service's own hub identity (GOVERNANCE_ROLE), straight at the service's port.
        base = placement.cfg.hub.base_url
        env[MLFLOW_URL_ENV] = f"http://{placement.url_host}:{placement.ports['mlflow']}{base}services/mlflow"
    if "serving" in placement.ports and SERVING.enabled(placement.cfg) and placement.kind != "kubernetes":
        # Approved deployments go to the serving router's control API, as the governance service.
        base = placement.cfg.hub.base_url
        env[SERVING_URL_ENV] = f"http://{placement.url_host}:{placement.ports['serving']}{base}services/serving"
    return env


def _mlflow_command(placement: Placement, port: int) -> list[str]:
    cfg = placement.cfg
    artifacts = cfg.backends.object_store_url or str(cfg.data_dir / "mlartifacts")
    return [
        placement.script("mlflow"),
        "server",
        "--app-name",
        "hubforge",
        "--artifacts-destination",
        artifacts,
        "--host",
        placement.bind_ip,
        "--port",
        str(port),
        "--static-prefix",
        f"{cfg.hub.base_url}services/mlflow".replace("//", "/"),
        "--workers",
        "1",
        "--uvicorn-opts",
        f"--timeout-keep-alive {MLFLOW_KEEP_ALIVE_S}",
        # MLflow's own middleware checks Host and Origin; the proxy keeps the browser's.
        "--allowed-hosts",
        ",".join(placement.hosts(port)),
        "--cors-allowed-origins",
        _origin(cfg.public_url),
    ]


def _mlflow_environment(placement: Placement) -> dict[str, str]:
    cfg = placement.cfg
    return {
        # In the environment, not the command line: any account can read a process's
        # arguments (and a pod's spec its command), and a database URL may carry a password.
        "MLFLOW_BACKEND_STORE_URI": cfg.db_url("mlflow"),
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": str(cfg.services.mlflow.job_execution).lower(),
        # A company's tracking server reports nothing to MLflow's authors.
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


GOVERNANCE = ServiceSpec(
    name="governance",
    command=_governance_command,
    environment=_governance_environment,
    health_path="api/health",
    default_port=10101,
)
MLFLOW = ServiceSpec(
    name="mlflow",
    command=_mlflow_command,
    environment=_mlflow_environment,
    health_path="health",
    default_port=10102,
)


def _python_module(module: str) -> Callable[[Placement, int], list[str]]:
    """The command of a service that is a module of the platform's Python (``python -m``)."""
    return lambda placement, port: [placement.python, "-m", module]


def _bind_where_placed(placement: Placement) -> dict[str, str]:
    """A tornado service's environment: the address it listens on (the hub's Service on
    Kubernetes is no address a pod can bind)."""
    return {SERVICE_BIND_IP_ENV: placement.bind_ip}


SERVING = ServiceSpec(
    name="serving",
    command=_python_module("hubforge.hub.serving"),
    environment=_bind_where_placed,
    health_path="api/health",
    default_port=10103,
    on_kubernetes=False,
)


def _features_command(placement: Placement, port: int) -> list[str]:
    # Feast's own environment (hubforge.features.environment), where the catalog's reads
    # of Feast will run too; the hub image on Kubernetes has none yet.
    return [str(feast_python(placement.cfg)), "-m", "hubforge.hub.features"]


def _features_environment(placement: Placement) -> dict[str, str]:
    env = {SERVICE_BIND_IP_ENV: placement.bind_ip}
    if "governance" in placement.ports and GOVERNANCE.enabled(placement.cfg):
        # Restricted views are read only under a data-access grant, which the service asks the
        # governance service about as its own hub identity (features_role), at its port.
        base = placement.cfg.hub.base_url
        env[GOVERNANCE_URL_ENV] = (
            f"http://{placement.url_host}:{placement.ports['governance']}{base}services/governance"
        )
    return env


def _features_unavailable(cfg: PlatformConfig) -> str | None:
    python = feast_python(cfg)
    if os.access(python, os.X_OK):
        return None
    return f"no Feast environment at {python.parent.parent} (`make install` builds it; services.features.environment)"


FEATURES = ServiceSpec(
    name="features",
    command=_features_command,
    environment=_features_environment,
    health_path="api/health",
    default_port=10104,
    on_kubernetes=False,
    unavailable=_features_unavailable,
)


def _scheduler_environment(placement: Placement) -> dict[str, str]:
    # Each run gets the services' addresses people's servers get (RUN_SERVICES_ENV, as JSON).
    run_services = json.dumps(server_service_env(placement.cfg, placement))
    return {SERVICE_BIND_IP_ENV: placement.bind_ip, SCHEDULER_RUN_SERVICES_ENV: run_services}


SCHEDULER = ServiceSpec(
    name="scheduler",
    command=_python_module("hubforge.hub.scheduler"),
    environment=_scheduler_environment,
    health_path="api/health",
    default_port=10106,
    # On Kubernetes each run is a Job on its tier (hubforge.hub.scheduler.kube).
)
APPS = ServiceSpec(
    name="apps",
    command=_python_module("hubforge.hub.apps"),
    environment=_bind_where_placed,
    health_path="api/health",
    default_port=10105,
    # Its store on the hub's volume (or its database); apps open in the viewer's own pod.
)
#: Every hub-managed service, in start order.
SERVICES: tuple[ServiceSpec, ...] = (GOVERNANCE, MLFLOW, SERVING, FEATURES, APPS, SCHEDULER)


def server_audit_env(cfg: PlatformConfig, governance: str) -> dict[str, str]:
    """What a person's server needs to report its audit events to the governance service at
    ``governance`` (its URL as the servers reach it), and its widgets to submit and follow
    requests there, under its own hub token."""
    env = {AUDIT_URL_ENV: f"{governance}/api/audit/events", GOVERNANCE_URL_ENV: governance}
    if cfg.services.governance.audit_cell_source:
        env[AUDIT_CELL_SOURCE_ENV] = "on"
    return env


def server_service_env(cfg: PlatformConfig, placement: Placement | None = None) -> dict[str, str]:
    """Where a person's server (and a scheduled run, which is one's work too) finds the
    platform's services, under its own token: on one machine through the proxy; with a
    Kubernetes ``placement``, on the hub's Service (each service on its port), and only the
    services that run there."""
    if placement is not None and placement.kind == "kubernetes":
        running = {spec.name for spec in enabled_services(cfg, "kubernetes")}
        ports = placement.ports

        def url(name: str) -> str:
            return f"http://{placement.url_host}:{ports[name]}{cfg.hub.base_url}services/{name}"

    else:
        running = {spec.name for spec in enabled_services(cfg, "one machine")}

        def url(name: str) -> str:
            return f"{cfg.local_url}services/{name}"

    env = server_audit_env(cfg, url("governance"))
    for spec, variable in ((MLFLOW, MLFLOW_URL_ENV), (FEATURES, FEATURES_URL_ENV), (APPS, APPS_URL_ENV),
                           (SCHEDULER, SCHEDULER_URL_ENV)):  # fmt: skip
        # MLflow: runs logged as the person's own hub identity; features: the feature browser's
        # catalog and reads; apps: `hubforge apps` and apps opened in the server; `hubforge schedule`.
        if spec.name in running:
            env[variable] = url(spec.name)
    return env


def service_names() -> list[str]:
    """Every registered service's name."""
    return [spec.name for spec in SERVICES]


def persona_services() -> list[str]:
    """The services every persona's role may use (``access:services``)."""
    return [spec.name for spec in SERVICES if spec.persona_access]


def enabled_services(cfg: PlatformConfig, kind: str | None = None) -> list[ServiceSpec]:
    """The services platform.yaml has on, of those that run on ``kind`` (a :class:`Placement`'s;
    default: where platform.yaml's spawner runs)."""
    kind = kind or ("kubernetes" if cfg.spawner.on_kubernetes else "one machine")
    return [spec for spec in SERVICES if spec.enabled(cfg) and (kind != "kubernetes" or spec.on_kubernetes)]


def hub_service(spec: ServiceSpec, placement: Placement) -> dict[str, Any]:
    """``spec`` as a ``c.JupyterHub.services`` entry (z2jh ``hub.services`` adds the key as name)."""
    port = placement.ports[spec.name]
    command = spec.command(placement, port)
    if placement.kind != "kubernetes":
        # Restarted with backoff, and nothing it starts outlives it (a pod ends whole on Kubernetes).
        command = [placement.python, "-m", "hubforge.hub.supervised", "--port", str(port), "--", *command]
    return {
        "name": spec.name,
        "url": f"http://{placement.url_host}:{port}",
        "command": command,
        "environment": {**placement.env, **spec.environment(placement)},
        "oauth_no_confirm": True,
        "oauth_client_allowed_scopes": list(spec.oauth_client_allowed_scopes),
        # No "timeout": the chart's JupyterHub may predate the field; each hub adds it
        # (hubconfig.configure_service_timeouts), knowing its own version.
    }


def hub_services(placement: Placement) -> list[dict[str, Any]]:
    """Every enabled service as a ``c.JupyterHub.services`` entry."""
    return [hub_service(spec, placement) for spec in enabled_services(placement.cfg, placement.kind)]


def service_role(names: Iterable[str]) -> dict[str, Any]:
    """The ``load_roles`` entry that lets the services ``names`` identify people."""
    return {"name": SERVICE_ROLE, "scopes": list(SERVICE_ROLE_SCOPES), "services": list(names)}


def governance_role(names: Iterable[str]) -> dict[str, Any]:
    """The ``load_roles`` entry that lets the governance service read MLflow's registry (read-only)
    and drive the serving router, of the services ``names`` that run."""
    names = set(names)
    scopes = [f"access:services!service={name}" for name in (MLFLOW.name, SERVING.name) if name in names]
    return {"name": GOVERNANCE_ROLE, "scopes": [*scopes, "custom:audit:read"], "services": [GOVERNANCE.name]}


def features_role(names: Iterable[str]) -> dict[str, Any]:
    """The ``load_roles`` entry that lets the features service check anyone's active data-access
    grants with the governance service, when it is among the services ``names`` that run."""
    grants = [f"access:services!service={GOVERNANCE.name}", "custom:grants:read"]
    scopes = grants if GOVERNANCE.name in set(names) else []
    return {"name": FEATURES_ROLE, "scopes": scopes, "services": [FEATURES.name]}


def scheduler_role(persona_groups: Mapping[str, Iterable[str]]) -> dict[str, Any]:
    """The ``load_roles`` entry that lets the scheduler make short-lived tokens for the people
    who may schedule (the groups granting the ``scheduler`` persona), and for nobody else."""
    groups = sorted(set(persona_groups.get("scheduler", ())))
    return {
        "name": SCHEDULER_ROLE,
        "scopes": [f"tokens!group={group}" for group in groups],
        "services": [SCHEDULER.name],
    }


def health_url(spec: ServiceSpec, services_url: str) -> str:
    """``spec``'s health check under ``services_url`` (the proxy's ``.../services``)."""
    return f"{services_url.rstrip('/')}/{spec.name}/{spec.health_path}"
