"""The platform config: one YAML file that configures every component.

Loading is a list of steps: read the user's file, merge it over the shipped
default, validate the result against ``platform.schema.json``, then run the
cross-checks a schema cannot express. Every failure is a :class:`ConfigError`
whose message is one line naming the file, the key and the problem.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

import jsonschema
import yaml

from hubforge.contract import CONFIG_ENV, DATA_ENV

from .catalog import catalog_from_data
from .errors import ConfigError
from .personas import persona_names

__all__ = [
    "CONFIG_ENV",
    "DATA_ENV",
    "AuthSection",
    "BackendsSection",
    "GovernanceService",
    "HubSection",
    "KubernetesSection",
    "LocalSpawnerSection",
    "MlflowService",
    "PlatformConfig",
    "ServicesSection",
    "SpawnerSection",
    "UserSpec",
    "default_config_text",
    "load_config",
    "merge",
    "schema",
    "validate",
]


_Section = TypeVar("_Section")

#: Keys whose value in the user's file replaces the default instead of merging.
REPLACED_KEYS = frozenset({"users", "tiers"})


@cache
def schema() -> dict[str, Any]:
    """The JSON schema of the platform config."""
    return json.loads(resources.files(__package__).joinpath("platform.schema.json").read_text())


def default_config_text() -> str:
    """The documented default platform.yaml shipped with the package."""
    return resources.files(__package__).joinpath("default-platform.yaml").read_text()


def merge(base: dict[str, Any], override: dict[str, Any], _top: bool = True) -> dict[str, Any]:
    """Merge ``override`` over ``base``: mappings key by key, anything else replaced."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        replaced = _top and key in REPLACED_KEYS
        if isinstance(value, dict) and isinstance(out.get(key), dict) and not replaced:
            out[key] = merge(out[key], value, _top=False)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _key_path(path: Any) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def _explain(error: jsonschema.ValidationError) -> tuple[list[Any], str]:
    """The key path and the problem of one schema error, as a person reads them."""
    path = list(error.absolute_path)
    if "propertyNames" in error.schema_path:
        # A bad mapping key is reported at its parent; name the key itself.
        path.append(error.instance)
        if error.validator != "enum":
            return path, f"invalid name {error.instance!r}"
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        return [*path, extra[0]], "unknown key"
    if error.validator == "enum" and error.validator_value == persona_names():
        return path, f"unknown persona {error.instance!r} (known: {', '.join(persona_names())})"
    return path, error.message


def validate(data: Any, source: str = "platform.yaml") -> None:
    """Validate merged config data; raise ConfigError with one line on the first problem."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the config must be a mapping of keys, not {type(data).__name__}")
    validator = jsonschema.Draft202012Validator(schema())
    # Report the shallowest problem first: it is usually the cause of deeper ones.
    errors = sorted(
        validator.iter_errors(data), key=lambda e: (len(e.absolute_path), [str(p) for p in e.absolute_path])
    )
    if errors:
        path, problem = _explain(errors[0])
        raise ConfigError(f"{source}: {_key_path(path)}: {problem}")
    _cross_check(data, source)
    # The tier catalog's checks (default image among the choices, GPU ranges,
    # known groups) are part of the config's validity.
    catalog_from_data(data, source)


def _cross_check(data: dict[str, Any], source: str) -> None:
    auth = data["auth"]
    if auth.get("type", "demo") == "demo":
        if not auth.get("demo"):
            raise ConfigError(f"{source}: auth.type: the demo authenticator needs auth.demo: true")
        if not _is_loopback(data["hub"].get("ip", "127.0.0.1")):
            raise ConfigError(
                f"{source}: hub.ip: the demo authenticator only binds to loopback, not {data['hub']['ip']!r}"
            )
    for kind in ("oauth", "ldap"):
        if auth.get("type") == kind and kind not in auth:
            raise ConfigError(f"{source}: auth.{kind}: required when auth.type is {kind!r}")
    _check_kserve(data, source)
    port = data["hub"]["port"]
    for key, value in (
        ("hub.hub_port", data["hub"].get("hub_port")),
        ("hub.proxy_api_port", data["hub"].get("proxy_api_port")),
    ):
        if value and value == port:
            raise ConfigError(f"{source}: {key}: {value} is already hub.port")


#: Object stores both MLflow's artifact repositories write and KServe's storage initializer reads.
KSERVE_STORES = ("s3://", "gs://")


def _check_kserve(data: dict[str, Any], source: str) -> None:
    """On Kubernetes, approved copies go to the object store KServe downloads from."""
    serving = data["services"]["serving"]
    if data["spawner"]["type"] != "kubernetes" or not serving["enabled"]:
        return
    store = data["backends"]["object_store_url"]
    if store and not store.startswith(KSERVE_STORES):
        raise ConfigError(
            f"{source}: backends.object_store_url: KServe serves approved models from "
            f"{' or '.join(KSERVE_STORES)} URLs, not {store!r}"
        )
    namespaces = serving["kserve"]["namespaces"]
    if namespaces["production"] == namespaces["staging"]:
        raise ConfigError(f"{source}: services.serving.kserve.namespaces: production and staging need one each")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}: invalid YAML{at}: {problem}") from exc
    return {} if data is None else data


# -- typed sections: built once from the merged, validated data -----------------------------------
#
# The shipped default (``default-platform.yaml``) names every key of these sections and a
# user's file can only override them, so the sections read each key without a fallback:
# a default lives in that file and nowhere else. Optional blocks (``auth.oauth``,
# ``auth.ldap``) are None when absent; free-form mappings are read-only views.


def _frozen(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(copy.deepcopy(dict(mapping)))


def _flat(cls: type[_Section], data: Mapping[str, Any]) -> _Section:
    """A section whose fields are plain values, each read from the key of its name."""
    return cls(**{name: data[name] for name in cls.__dataclass_fields__})  # type: ignore[attr-defined]


@dataclass(frozen=True)
class HubSection:
    """``hub``: where people reach the platform and how long a server may take to start."""

    ip: str
    port: int
    public_url: str
    base_url: str
    hub_port: int
    proxy_api_port: int
    proxy_command: str
    start_timeout: int


@dataclass(frozen=True)
class AuthSection:
    """``auth``: the authenticator and who administers the hub."""

    type: str
    demo: bool
    admin_groups: tuple[str, ...]
    oauth: Mapping[str, Any] | None
    ldap: Mapping[str, Any] | None

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> AuthSection:
        oauth, ldap = data.get("oauth"), data.get("ldap")
        return cls(
            type=data["type"],
            demo=data["demo"],
            admin_groups=tuple(data["admin_groups"]),
            oauth=_frozen(oauth) if oauth is not None else None,
            ldap=_frozen(ldap) if ldap is not None else None,
        )


@dataclass(frozen=True)
class UserSpec:
    """One entry of ``users``: the demo's and the hub's own account list."""

    groups: tuple[str, ...] = ()
    admin: bool = False

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> UserSpec:
        return cls(groups=tuple(data.get("groups", ())), admin=bool(data.get("admin", False)))


@dataclass(frozen=True)
class LocalSpawnerSection:
    """``spawner.local``: servers as processes on this machine."""

    gpus: tuple[Mapping[str, Any], ...]
    fair_share_window_hours: float
    poll_interval: int
    isolation: str
    account_prefix: str
    home_root: str
    environments: Mapping[str, str]

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> LocalSpawnerSection:
        return cls(
            gpus=tuple(_frozen(gpu) for gpu in data["gpus"]),
            fair_share_window_hours=float(data["fair_share_window_hours"]),
            poll_interval=data["poll_interval"],
            isolation=data["isolation"],
            account_prefix=data["account_prefix"],
            home_root=data["home_root"],
            environments=_frozen(data["environments"]),
        )


@dataclass(frozen=True)
class KubernetesSection:
    """``spawner.kubernetes``: servers as pods."""

    #: Where users' pods and the tiers' Kueue LocalQueues live.
    namespace: str
    #: The Kueue cohort the queued tiers share and borrow within.
    cohort: str
    #: The hub image (must have hubforge installed); empty: the chart's default.
    hub_image: str
    #: Size of the hub pod's volume for the platform's data folder (a Kubernetes quantity).
    data_volume_size: str


@dataclass(frozen=True)
class SpawnerSection:
    """``spawner``: which spawner, and each one's settings."""

    type: str
    default_url: str
    max_servers_per_user: int
    local: LocalSpawnerSection
    kubernetes: KubernetesSection

    @property
    def on_kubernetes(self) -> bool:
        return self.type == "kubernetes"

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> SpawnerSection:
        return cls(
            type=data["type"],
            default_url=data["default_url"],
            max_servers_per_user=data["max_servers_per_user"],
            local=LocalSpawnerSection.from_data(data["local"]),
            kubernetes=_flat(KubernetesSection, data["kubernetes"]),
        )


@dataclass(frozen=True)
class BackendsSection:
    """``backends``: the scale-out stores; empty strings mean the one-machine default."""

    hub_db_url: str
    governance_db_url: str
    mlflow_db_url: str
    apps_db_url: str
    scheduler_db_url: str
    redis_url: str
    object_store_url: str


@dataclass(frozen=True)
class MlflowService:
    """``services.mlflow``."""

    enabled: bool
    port: int
    job_execution: bool


@dataclass(frozen=True)
class GovernanceService:
    """``services.governance``."""

    port: int
    audit_cell_source: bool
    policies: Sequence[str]
    thresholds: Mapping[str, Mapping[str, float]]
    webhook_url: str
    webhook_secret_file: str


@dataclass(frozen=True)
class KServeSettings:
    """``services.serving.kserve``: the Kubernetes deploy target."""

    namespaces: Mapping[str, str]
    service_account: str
    runtime: str
    ready_timeout: int


@dataclass(frozen=True)
class ServingService:
    """``services.serving``."""

    enabled: bool
    port: int
    kserve: KServeSettings

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> ServingService:
        kserve = data["kserve"]
        return cls(
            enabled=data["enabled"],
            port=data["port"],
            kserve=KServeSettings(
                namespaces=MappingProxyType(dict(kserve["namespaces"])),
                service_account=kserve["service_account"],
                runtime=kserve["runtime"],
                ready_timeout=kserve["ready_timeout"],
            ),
        )


@dataclass(frozen=True)
class SchedulerService:
    """``services.scheduler``: scheduled notebook runs."""

    enabled: bool
    port: int


@dataclass(frozen=True)
class AppsService:
    """``services.apps``: published Voila apps and their gallery."""

    enabled: bool
    port: int


@dataclass(frozen=True)
class FeaturesService:
    """``services.features``: the feature store (Feast)."""

    enabled: bool
    port: int
    #: The Python environment with Feast (:func:`hubforge.features.environment.feast_python`).
    environment: str


@dataclass(frozen=True)
class ServicesSection:
    """``services``: the hub-managed services."""

    mlflow: MlflowService
    governance: GovernanceService
    serving: ServingService
    features: FeaturesService
    apps: AppsService
    scheduler: SchedulerService

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> ServicesSection:
        return cls(
            mlflow=_flat(MlflowService, data["mlflow"]),
            governance=_flat(GovernanceService, data["governance"]),
            serving=ServingService.from_data(data["serving"]),
            features=_flat(FeaturesService, data["features"]),
            apps=_flat(AppsService, data["apps"]),
            scheduler=_flat(SchedulerService, data["scheduler"]),
        )


@dataclass(frozen=True)
class PlatformConfig:
    """A validated platform config with paths resolved.

    ``data`` is the merged, validated mapping, kept for what reads the whole of
    it (the tier catalog, ``config show``, the Kubernetes values); the typed
    sections, built from it once, answer what components ask.
    """

    data: dict[str, Any]
    source: str
    data_dir: Path
    hub: HubSection = field(init=False)
    auth: AuthSection = field(init=False)
    users: Mapping[str, UserSpec] = field(init=False)
    spawner: SpawnerSection = field(init=False)
    backends: BackendsSection = field(init=False)
    services: ServicesSection = field(init=False)

    def __post_init__(self) -> None:
        data = self.data
        sections = {
            "hub": _flat(HubSection, data["hub"]),
            "auth": AuthSection.from_data(data["auth"]),
            "users": MappingProxyType({name: UserSpec.from_data(spec) for name, spec in data["users"].items()}),
            "spawner": SpawnerSection.from_data(data["spawner"]),
            "backends": _flat(BackendsSection, data["backends"]),
            "services": ServicesSection.from_data(data["services"]),
        }
        for name, value in sections.items():
            object.__setattr__(self, name, value)

    @property
    def public_url(self) -> str:
        """The address people open, ending in the base URL."""
        hub = self.hub
        origin = hub.public_url.rstrip("/") or f"http://{hub.ip}:{hub.port}"
        return origin + hub.base_url

    @property
    def local_url(self) -> str:
        """The proxy's address on this machine (what `hubforge up` polls)."""
        host = "127.0.0.1" if self.hub.ip in ("0.0.0.0", "", "::") else self.hub.ip
        return f"http://{host}:{self.hub.port}{self.hub.base_url}"

    def user_groups(self, name: str) -> list[str]:
        """The hub groups ``users`` gives ``name`` (none for a person it does not list)."""
        spec = self.users.get(name)
        return list(spec.groups) if spec else []

    def db_url(self, component: str) -> str:
        """The SQLAlchemy URL of ``component`` (hub, governance, mlflow, apps, scheduler)."""
        url = getattr(self.backends, f"{component}_db_url")
        if url.startswith("postgresql://"):
            # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; we ship psycopg2.
            url = "postgresql+psycopg2://" + url.removeprefix("postgresql://")
        return url or f"sqlite:///{self.data_dir / (component + '.sqlite')}"

    def persona_groups(self) -> dict[str, list[str]]:
        """Persona name -> the hub groups that grant it."""
        return {name: list(spec.get("groups", [])) for name, spec in self.data["personas"].items()}

    def group_personas(self) -> dict[str, list[str]]:
        """Hub group -> the personas it grants."""
        out: dict[str, list[str]] = {}
        for persona, groups in self.persona_groups().items():
            for group in groups:
                out.setdefault(group, []).append(persona)
        return out

    def dump(self) -> str:
        """The effective config as YAML (for ``hubforge config show``)."""
        return yaml.safe_dump({**self.data, "data_dir": str(self.data_dir)}, sort_keys=False)


def load_config(path: str | os.PathLike[str] | None = None, environ: dict[str, str] | None = None) -> PlatformConfig:
    """Load, merge and validate the platform config.

    ``path`` wins over ``HUBFORGE_CONFIG``; with neither, the shipped default
    is used alone. ``HUBFORGE_DATA`` overrides ``data_dir``.
    """
    env = os.environ if environ is None else environ
    default = yaml.safe_load(default_config_text())
    chosen = path or env.get(CONFIG_ENV) or None
    source = str(chosen) if chosen else "default platform.yaml"
    user = _read_yaml(Path(chosen)) if chosen else {}
    if not isinstance(user, dict):
        raise ConfigError(f"{source}: the config must be a mapping of keys, not {type(user).__name__}")
    data = merge(default, user)
    validate(data, source)
    # A relative data_dir is relative to the working folder, as documented.
    data_dir = Path(env.get(DATA_ENV) or data["data_dir"]).expanduser().resolve()
    return PlatformConfig(data=data, source=source, data_dir=data_dir)
