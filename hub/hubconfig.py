"""Turn the platform config into JupyterHub configuration.

``jupyterhub_config.py`` (shipped beside this module) calls :func:`configure`
with the hub's ``c``. Each concern is one small function that sets a group of
traitlets, so the whole reads as a list of steps.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from hubforge.catalog import QUEUE_WAIT_S, load_catalog, personas_for_groups
from hubforge.config import PlatformConfig
from hubforge.contract import (
    CONFIG_ENV,
    DATA_ENV,
    DEMO_PASSWORD_ENV,
    INSTANCE_ENV,
    ISOLATION_ENV,
    RUNTIME_ENV,
)
from hubforge.events.spool import platform_spool_dir
from hubforge.personas import CUSTOM_SCOPES, SERVER_TOKEN_SCOPES, hub_roles

from .auth import audited, oauth_groups_key
from .compat import service_timeouts
from .requests_audit import audited_log_function
from .service_start import start_services_together
from .services import (
    APPS,
    FEATURES,
    GOVERNANCE,
    MLFLOW,
    SCHEDULER,
    SERVICE_START_TIMEOUT,
    SERVICES,
    Placement,
    enabled_services,
    features_role,
    governance_role,
    hub_services,
    persona_services,
    scheduler_role,
    server_service_env,
    service_role,
)

__all__ = [
    "RUNTIME_ENV",
    "Runtime",
    "configure",
    "configure_audit",
    "configure_landing",
    "configure_service_role",
    "configure_services",
    "one_machine",
]


@dataclass(frozen=True)
class Runtime:
    """What ``hubforge up`` decided at start: ports picked, programs found.

    Passed to the hub process as JSON in ``HUBFORGE_RUNTIME``.
    """

    hub_port: int
    proxy_api_port: int
    #: Each registered service's port (hubforge.hub.services.SERVICES).
    service_ports: dict[str, int]
    proxy_command: str
    instance: str
    #: users (an account per person), none (the platform's account), pods (Kubernetes).
    isolation: str = "none"
    #: Whether a stop of the hub leaves people's servers and the proxy running (an upgrade).
    keep_servers: bool = False

    def to_json(self) -> str:
        """Serialise for the environment."""
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Runtime:
        """Read what ``hubforge up`` put in the environment."""
        env = os.environ if environ is None else environ
        return cls(**json.loads(env[RUNTIME_ENV]))


def configure(c: Any, cfg: PlatformConfig, rt: Runtime) -> None:
    """Apply the platform config to a JupyterHub config object ``c``."""
    configure_network(c, cfg, rt)
    configure_state(c, cfg, rt)
    configure_auth(c, cfg)
    configure_audit(c, cfg)
    configure_rbac(c, cfg)
    configure_spawner(c, cfg, rt)
    configure_services(c, cfg, rt)


def configure_network(c: Any, cfg: PlatformConfig, rt: Runtime) -> None:
    """Public address, the hub's internal address and configurable-http-proxy."""
    hub = cfg.hub
    c.JupyterHub.ip = hub.ip
    c.JupyterHub.port = hub.port
    c.JupyterHub.base_url = hub.base_url
    c.JupyterHub.hub_ip = "127.0.0.1"
    c.JupyterHub.hub_port = rt.hub_port
    c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{rt.proxy_api_port}"
    # Route to the hub from the proxy's first moment: the hub answers (login,
    # health) while it is still waiting for its services to come up.
    c.ConfigurableHTTPProxy.command = [rt.proxy_command, f"--default-target=http://127.0.0.1:{rt.hub_port}"]
    c.JupyterHub.proxy_class = "hubforge.hub.proxy.KeptProxy"
    c.ConfigurableHTTPProxy.pid_file = str(cfg.data_dir / "proxy.pid")
    c.ConfigurableHTTPProxy.should_start = True
    # A hub that crashed left the proxy routing people to their servers: the next one takes it over.
    c.KeptProxy.instance = rt.instance


def configure_state(c: Any, cfg: PlatformConfig, rt: Runtime) -> None:
    """Everything the hub keeps goes under the data folder (or the configured database).

    A hub that stops stops people's servers and the proxy, unless ``hubforge up --keep-servers``
    runs it (an upgrade: the next hub takes them over). A hub that crashes stops nothing either
    way: its successor finds the servers in its database and polls them (the spawner's state).
    """
    data = cfg.data_dir
    c.JupyterHub.db_url = cfg.db_url("hub")
    c.JupyterHub.cookie_secret_file = str(data / "jupyterhub_cookie_secret")
    c.JupyterHub.pid_file = str(data / "jupyterhub.pid")
    c.JupyterHub.cleanup_servers = not rt.keep_servers
    c.JupyterHub.cleanup_proxy = not rt.keep_servers


def configure_audit(c: Any, cfg: PlatformConfig) -> None:
    """What the hub observes goes to its audit spool, which the governance service collects:
    logins and failed logins (whatever the authenticator), servers spawned, refused and stopped,
    logouts, and group and admin changes (after each request, :mod:`.requests_audit`)."""
    spool = str(platform_spool_dir(cfg.data_dir, "hub"))
    c.Authenticator.audit_spool_dir = spool
    c.Spawner.audit_spool_dir = spool
    settings = c.JupyterHub.tornado_settings if "tornado_settings" in c.JupyterHub else {}
    c.JupyterHub.tornado_settings = {**settings, "log_function": audited_log_function(spool)}


def configure_auth(c: Any, cfg: PlatformConfig) -> None:
    """The authenticator named by ``auth.type``."""
    auth = cfg.auth
    admins = set(auth.admin_groups)
    c.Authenticator.admin_groups = admins
    if auth.type == "demo":
        c.JupyterHub.authenticator_class = "hubforge.hub.auth.DemoAuthenticator"
        c.DemoAuthenticator.password = os.environ.get(DEMO_PASSWORD_ENV, "")
        c.DemoAuthenticator.allowed_users = set(cfg.users)
        # admin_groups is OAuthenticator's and LDAPAuthenticator's: the demo users in an
        # admin group are hub admins by name.
        c.DemoAuthenticator.admin_users = {user for user, spec in cfg.users.items() if admins & set(spec.groups)}
    elif auth.type == "oauth" and auth.oauth is not None:
        _configure_oauth(c, cfg, auth.oauth)
    elif auth.ldap is not None:
        _configure_ldap(c, auth.ldap)


def _configure_oauth(c: Any, cfg: PlatformConfig, oauth: Mapping[str, Any]) -> None:
    from oauthenticator.generic import GenericOAuthenticator

    c.JupyterHub.authenticator_class = audited(GenericOAuthenticator)
    g = c.GenericOAuthenticator
    g.client_id = oauth["client_id"]
    g.client_secret = oauth.get("client_secret") or os.environ.get("OAUTH_CLIENT_SECRET", "")
    for key in ("authorize_url", "token_url", "userdata_url", "oauth_callback_url"):
        if key in oauth:
            setattr(g, key, oauth[key])
    g.username_claim = oauth.get("username_claim", "preferred_username")
    g.scope = list(oauth.get("scope", ["openid", "profile"]))
    if "persona_claim" in oauth:
        # Groups follow the identity provider on every login.
        g.manage_groups = True
        g.auth_state_groups_key = oauth_groups_key(
            oauth["persona_claim"], dict(oauth.get("persona_map", {})), cfg.persona_groups()
        )
    if oauth.get("allow_all"):
        g.allow_all = True
    else:
        g.allowed_groups = {grp for groups in cfg.persona_groups().values() for grp in groups}


def _configure_ldap(c: Any, ldap: Mapping[str, Any]) -> None:
    try:
        from ldapauthenticator import LDAPAuthenticator
    except ImportError:  # not installed: JupyterHub says so when it loads the name
        c.JupyterHub.authenticator_class = "ldapauthenticator.LDAPAuthenticator"
    else:
        c.JupyterHub.authenticator_class = audited(LDAPAuthenticator)
    for key, value in ldap.items():
        if key != "persona_map":
            setattr(c.LDAPAuthenticator, key, value)


def configure_rbac(c: Any, cfg: PlatformConfig, kind: str | None = None) -> None:
    """Personas become roles with custom scopes; configured users join their groups.
    ``kind``: where the hub runs (a :class:`~.services.Placement`'s; default: platform.yaml's spawner)."""
    c.JupyterHub.custom_scopes = {name: {"description": text} for name, text in CUSTOM_SCOPES.items()}
    # Added to the roles configured before (z2jh's idle culler, its ``hub.loadRoles``), not
    # in their place: a service that lost its role gets 403 on every call.
    ours = hub_roles(cfg.persona_groups(), persona_services())
    names = {role["name"] for role in ours}
    earlier = list(c.JupyterHub.load_roles) if "load_roles" in c.JupyterHub else []
    c.JupyterHub.load_roles = [role for role in earlier if role.get("name") not in names] + ours
    groups: dict[str, dict[str, list[str]]] = {
        group: {"users": []} for groups in cfg.persona_groups().values() for group in groups
    }
    for user, spec in cfg.users.items():
        for group in spec.groups:
            groups.setdefault(group, {"users": []})["users"].append(user)
    c.JupyterHub.load_groups = groups
    # A server's token may log runs to MLflow and report its audit events on the person's
    # behalf, nothing more; it names the custom scopes above and the services, so it is
    # set beside them.
    # Only services that run here: the hub refuses a token scope naming one it does not know.
    running = {spec.name for spec in enabled_services(cfg, kind)}
    c.Spawner.server_token_scopes = [
        s for s in SERVER_TOKEN_SCOPES if not s.startswith("access:services!service=") or s.split("=", 1)[1] in running
    ]


def configure_spawner(c: Any, cfg: PlatformConfig, rt: Runtime) -> None:
    """KubeSpawner on Kubernetes, the local spawner on one machine; both from the tier catalog."""
    if cfg.spawner.on_kubernetes:
        from hubforge.spawner_profiles.kubernetes.spawner import configure_kubespawner

        configure_kubespawner(c, cfg)
        return
    c.JupyterHub.spawner_class = "hubforge.spawner_profiles.local.spawner.LocalTierSpawner"
    c.Spawner.default_url = cfg.spawner.default_url
    c.Spawner.start_timeout = cfg.hub.start_timeout
    c.Spawner.http_timeout = cfg.hub.start_timeout
    c.Spawner.environment = {INSTANCE_ENV: rt.instance, **server_service_env(cfg)}
    local = cfg.spawner.local
    s = c.LocalTierSpawner
    s.home_dir_template = str(cfg.data_dir / "users" / "{username}")
    s.isolation = rt.isolation
    s.account_prefix = local.account_prefix
    s.home_root = local.home_root
    s.environments = dict(local.environments)
    s.instance_marker = rt.instance
    s.tier_catalog = load_catalog(cfg)
    s.group_personas = cfg.group_personas()
    s.gpu_db = str(cfg.data_dir / "gpus.sqlite")
    s.declared_gpus = [dict(gpu) for gpu in local.gpus]
    s.fair_share_window = local.fair_share_window_hours * 3600
    s.poll_interval = local.poll_interval
    # A queued spawn may wait for GPUs far longer than a server takes to start.
    c.Spawner.start_timeout = max(cfg.hub.start_timeout, QUEUE_WAIT_S)


def one_machine(cfg: PlatformConfig, rt: Runtime) -> Placement:
    """Where the services run under ``hubforge up``: processes of the hub, on loopback."""
    env = {
        INSTANCE_ENV: rt.instance,
        DATA_ENV: str(cfg.data_dir),
        ISOLATION_ENV: rt.isolation,
        "PYTHONUNBUFFERED": "1",
    }
    if os.environ.get(CONFIG_ENV):
        env[CONFIG_ENV] = os.environ[CONFIG_ENV]
    return Placement(
        kind="one machine",
        cfg=cfg,
        ports=dict(rt.service_ports),
        bind_ip="127.0.0.1",
        url_host="127.0.0.1",
        python=sys.executable,
        scripts=os.path.dirname(sys.executable),
        env=env,
        # Kernels and the hub reach a service on loopback, by either name, or at the hub's address.
        reached_as=("127.0.0.1:*", "localhost:*", f"{cfg.hub.ip}:{cfg.hub.port}"),
    )


def configure_services(c: Any, cfg: PlatformConfig, rt: Runtime) -> None:
    """Every enabled service of :data:`~hubforge.hub.services.SERVICES`, behind hub auth."""
    if MLFLOW.enabled(cfg):
        (cfg.data_dir / "mlartifacts").mkdir(parents=True, exist_ok=True)
    c.JupyterHub.services = hub_services(one_machine(cfg, rt))
    configure_service_timeouts(c)
    configure_service_role(c, cfg)
    configure_landing(c, cfg)


def _running_services(c: Any, cfg: PlatformConfig) -> list[str]:
    """The services the hub runs: ours on one machine; the chart's hub.services on Kubernetes,
    which z2jh has set before the extraConfig runs."""
    configured = c.JupyterHub.services if "services" in c.JupyterHub else []
    return [s["name"] for s in configured] or [s.name for s in enabled_services(cfg)]


def configure_landing(c: Any, cfg: PlatformConfig) -> None:
    """Where people land after login: analysts on the apps gallery, when the hub runs it."""
    if APPS.name in _running_services(c, cfg):
        c.JupyterHub.default_url = analysts_land_on(cfg.group_personas(), f"{cfg.hub.base_url}services/apps/")


def analysts_land_on(group_personas: Mapping[str, Iterable[str]], gallery: str) -> Callable[[Any], str]:
    """``JupyterHub.default_url`` that sends people who are analysts and nothing else to the
    apps ``gallery`` after login; everybody else goes where the hub sends them (their server)."""

    def default_url(handler: Any) -> str:
        user = getattr(handler, "current_user", None)
        groups = [group.name for group in getattr(user, "groups", None) or ()]
        return gallery if personas_for_groups(group_personas, groups) == {"analyst"} else ""

    return default_url


def configure_service_role(c: Any, cfg: PlatformConfig) -> None:
    """Services read who a token belongs to, their groups and roles; nothing more."""
    names = _running_services(c, cfg)
    roles = [service_role(names)]
    if MLFLOW.name in names or "serving" in names:
        roles.append(governance_role(names))
    if FEATURES.name in names and GOVERNANCE.name in names:
        roles.append(features_role(names))
    if SCHEDULER.name in names:
        roles.append(scheduler_role(cfg.persona_groups()))
    c.JupyterHub.load_roles = [*c.JupyterHub.load_roles, *roles]


def configure_service_timeouts(c: Any) -> None:
    """Start the hub's services together, each given its start timeout: the field where
    this JupyterHub knows it (6.0 and later; the Zero to JupyterHub chart's hub runs 5.5),
    :data:`SERVICE_START_TIMEOUT` for any service without one."""
    start_services_together(SERVICE_START_TIMEOUT)
    if not service_timeouts() or "services" not in c.JupyterHub:
        return
    ours = {spec.name for spec in SERVICES}
    c.JupyterHub.services = [
        {**service, "timeout": service.get("timeout", SERVICE_START_TIMEOUT)}
        if service.get("name") in ours
        else service
        for service in c.JupyterHub.services
    ]
