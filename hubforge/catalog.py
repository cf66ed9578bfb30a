"""The tier catalog: which compute tiers exist and who may use which choice.

Tiers are declared under ``tiers:`` in platform.yaml and validated there by
the JSON schema; :func:`load_catalog` turns them into frozen :class:`Tier`
objects and runs the cross-checks a schema cannot express. The spawners (on
Kubernetes and on one machine) ask the same two questions of the catalog:
which tiers a user sees (:func:`tiers_for`) and whether a requested choice
is allowed (:func:`check_choice`).

Pure: nothing here reads files or talks to a hub.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from .contract import TIER_ENV, TRACKING_ENV
from .errors import ConfigError, Invalid
from .hardware import GPU_MODELS, cpu_cores, memory_bytes
from .personas import persona_names

if TYPE_CHECKING:  # the config validates with the catalog, never the other way round
    from .config import PlatformConfig

__all__ = [
    "QUEUE_WAIT_S",
    "SERVER_STOP_GRACE",
    "Capacity",
    "Catalog",
    "ChoiceError",
    "GpuRange",
    "ImageChoice",
    "Resources",
    "Tier",
    "ValidatedChoice",
    "catalog_from_data",
    "check_choice",
    "culling_args",
    "fair_share_group",
    "interface_args",
    "known_groups",
    "load_catalog",
    "personas_for_groups",
    "tier_env",
    "tiers_for",
]

#: Seconds a user's server gets to stop before it is terminated (one machine) or its pod
#: killed (Kubernetes). Stopping, it shuts its kernels down, and each ends its MLflow run
#: and logs the fits still waiting (up to 20 s: see hubforge.server_extension.launch).
SERVER_STOP_GRACE = 30

#: How long a spawn may wait in a queued tier's queue (GPUs on one machine, Kueue on
#: Kubernetes) before the hub gives it up: the spawners' start timeout when a tier is queued.
QUEUE_WAIT_S = 24 * 3600

#: The options a spawn request may carry besides the tier itself.
OPTION_KEYS = ("image", "gpus")

#: The server environment variable whose ``off`` switches tracking off for every
#: kernel of the server (hubforge.server_extension reads it as each kernel starts).


class ChoiceError(Invalid):
    """A user asked for a tier or an option they may not use.

    ``status`` is the HTTP status a hub answers with: 403 when the tier is
    not open to the user, 400 (the default) when the request names something invalid.
    """


@dataclass(frozen=True)
class GpuRange:
    """How many GPUs (or MIG slices) a server on the tier may ask for."""

    min: int
    max: int
    default: int


@dataclass(frozen=True)
class Resources:
    """What one server on the tier gets."""

    cpu_guarantee: float
    cpu_limit: float
    #: Memory as JupyterHub reads it ('8G' is 8 GiB).
    mem_guarantee: str
    mem_limit: str
    gpus: GpuRange
    model: str | None = None
    mig_profile: str | None = None

    @property
    def gpu_resource(self) -> str | None:
        """The extended resource a GPU request names, or None for a CPU-only tier."""
        if not self.model:
            return None
        return f"nvidia.com/mig-{self.mig_profile}" if self.mig_profile else "nvidia.com/gpu"

    def describe_gpus(self, count: int) -> str:
        """A person's name for ``count`` GPUs of this tier ('2 x NVIDIA H100 80GB')."""
        if count == 0 or not self.model:
            return "no GPU"
        model = GPU_MODELS[self.model].display_name
        if self.mig_profile:
            return f"{count} x MIG {self.mig_profile} slice of {model}"
        return f"{count} x {model}"


@dataclass(frozen=True)
class ImageChoice:
    """One image a user may pick on a tier."""

    key: str
    display_name: str
    image: str


@dataclass(frozen=True)
class Capacity:
    """A queued tier's Kueue nominal quota."""

    gpus: int
    cpu: float
    memory: str


@dataclass(frozen=True)
class Tier:
    """One compute tier of the catalog (compare and look up by ``slug``)."""

    slug: str
    display_name: str
    description: str
    resources: Resources
    images: tuple[ImageChoice, ...]
    default_image: str
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: tuple[dict[str, Any], ...] = ()
    priority_class: str | None = None
    #: Seconds without activity before the server stops itself; 0: never.
    idle_timeout: int = 0
    #: Seconds a server may run at most; 0: no limit.
    max_lifetime: int = 0
    personas: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    #: The Kueue LocalQueue of a queued tier; None for a reserved tier.
    queue: str | None = None
    #: Hub group -> the most GPUs its members may hold on this tier at once.
    quota: dict[str, int] = field(default_factory=dict)
    capacity: Capacity | None = None
    fair_share_weight: float = 1.0
    #: Whether notebook runs on the tier are tracked to MLflow: the tier's own
    #: ``tracking`` if it has one, else the platform's ``tracking.enabled``.
    tracking: bool = True
    #: What a server of the tier offers: ``lab`` (JupyterLab, terminals, files) or ``apps``
    #: (Voila only: published apps, no JupyterLab, no terminals, no writes to its files).
    interface: str = "lab"

    def image(self, key: str) -> ImageChoice | None:
        """The image choice named ``key``, if the tier offers it."""
        return next((choice for choice in self.images if choice.key == key), None)

    def default_choice(self) -> ImageChoice:
        """The image a server of this tier gets when none is asked for."""
        choice = self.image(self.default_image)
        if choice is None:  # the catalog's validation refuses such a tier
            raise ConfigError(f"tiers.{self.slug}.images.default: {self.default_image!r} is not among the choices")
        return choice

    def visible_to(self, groups: Iterable[str], personas: Iterable[str]) -> bool:
        """Whether a user with ``groups`` and ``personas`` may use this tier."""
        return bool(self.groups.intersection(groups) or self.personas.intersection(personas))


@dataclass(frozen=True)
class Catalog:
    """Every tier, in the order platform.yaml declares them."""

    tiers: tuple[Tier, ...]
    #: How many servers one user may run at once (``spawner.max_servers_per_user``).
    max_servers_per_user: int = 1

    def __iter__(self) -> Iterator[Tier]:
        return iter(self.tiers)

    def __len__(self) -> int:
        return len(self.tiers)

    def get(self, slug: str) -> Tier | None:
        """The tier named ``slug``, or None."""
        return next((tier for tier in self.tiers if tier.slug == slug), None)

    @property
    def slugs(self) -> list[str]:
        """The tier names, in catalog order."""
        return [tier.slug for tier in self.tiers]


@dataclass(frozen=True)
class ValidatedChoice:
    """A spawn request that passed :func:`check_choice`."""

    tier: Tier
    image_key: str
    image: str
    gpus: int


# --- loading ---------------------------------------------------------------


def _resources(spec: dict[str, Any]) -> Resources:
    gpus = spec.get("gpus", {"min": 0, "max": 0})
    return Resources(
        cpu_guarantee=cpu_cores(spec["cpu"]["guarantee"]),
        cpu_limit=cpu_cores(spec["cpu"]["limit"]),
        mem_guarantee=spec["memory"]["guarantee"],
        mem_limit=spec["memory"]["limit"],
        gpus=GpuRange(gpus["min"], gpus["max"], gpus.get("default", gpus["min"])),
        model=spec.get("model"),
        mig_profile=spec.get("mig_profile"),
    )


def _tier(slug: str, spec: dict[str, Any], tracking: bool) -> Tier:
    capacity = spec.get("capacity")
    return Tier(
        slug=slug,
        display_name=spec["display_name"],
        description=spec.get("description", ""),
        resources=_resources(spec["resources"]),
        images=tuple(
            ImageChoice(key, choice["display_name"], choice["image"])
            for key, choice in spec["images"]["choices"].items()
        ),
        default_image=spec["images"]["default"],
        node_selector=dict(spec.get("node_selector", {})),
        tolerations=tuple(dict(t) for t in spec.get("tolerations", [])),
        priority_class=spec.get("priority_class"),
        idle_timeout=spec.get("idle_timeout", 0),
        max_lifetime=spec.get("max_lifetime", 0),
        personas=frozenset(spec.get("personas", [])),
        groups=frozenset(spec.get("groups", [])),
        queue=spec.get("queue"),
        quota=dict(spec.get("quota", {})),
        capacity=Capacity(capacity["gpus"], cpu_cores(capacity["cpu"]), capacity["memory"]) if capacity else None,
        fair_share_weight=float(spec.get("fair_share_weight", 1)),
        tracking=spec.get("tracking", tracking),
        interface=spec.get("interface", "lab"),
    )


def known_groups(data: Mapping[str, Any]) -> set[str]:
    """Every hub group a config's data names: persona mappings, users and admin groups."""
    groups = {group for spec in data.get("personas", {}).values() for group in spec.get("groups", [])}
    groups.update(group for user in data.get("users", {}).values() for group in user.get("groups", []))
    groups.update(data.get("auth", {}).get("admin_groups", []))
    return groups


def catalog_from_data(data: Mapping[str, Any], source: str = "platform.yaml") -> Catalog:
    """Build the catalog from schema-valid config data; ConfigError (one line) on a bad tier.

    For callers that hold the merged mapping rather than a PlatformConfig
    (``hubforge.config.validate``'s cross-checks).
    """
    tracking = data.get("tracking", {}).get("enabled", True)
    tiers = tuple(_tier(slug, spec, tracking) for slug, spec in data.get("tiers", {}).items())
    if not data.get("services", {}).get("mlflow", {}).get("enabled", True):
        # No MLflow on the platform: nothing to track to, whatever the tiers say.
        tiers = tuple(replace(tier, tracking=False) for tier in tiers)
    groups = known_groups(data)
    queues: dict[str, str] = {}
    for tier in tiers:
        for key, problem in _problems(tier, groups, queues):
            raise ConfigError(f"{source}: tiers.{tier.slug}.{key}: {problem}")
        if tier.queue:
            queues[tier.queue] = tier.slug
    limit = data.get("spawner", {}).get("max_servers_per_user", 1)
    return Catalog(tiers=tiers, max_servers_per_user=limit)


def load_catalog(cfg: PlatformConfig) -> Catalog:
    """Build the catalog of a validated config; ConfigError (one line) on a bad tier."""
    return catalog_from_data(cfg.data, cfg.source)


def _problems(tier: Tier, groups: set[str], queues: dict[str, str]) -> Iterator[tuple[str, str]]:
    """(key, problem) for each cross-check the tier fails, most basic first."""
    yield from _check_images(tier)
    yield from _check_resources(tier.resources)
    yield from _check_gpus(tier)
    yield from _check_access(tier, groups)
    yield from _check_queue(tier, queues)


def _check_images(tier: Tier) -> Iterator[tuple[str, str]]:
    if tier.image(tier.default_image) is None:
        keys = ", ".join(choice.key for choice in tier.images)
        yield "images.default", f"{tier.default_image!r} is not among the image choices ({keys})"


def _check_resources(res: Resources) -> Iterator[tuple[str, str]]:
    if res.cpu_guarantee > res.cpu_limit:
        yield "resources.cpu.guarantee", f"{res.cpu_guarantee:g} is above the limit {res.cpu_limit:g}"
    if memory_bytes(res.mem_guarantee) > memory_bytes(res.mem_limit):
        yield "resources.memory.guarantee", f"{res.mem_guarantee} is above the limit {res.mem_limit}"


def _check_gpus(tier: Tier) -> Iterator[tuple[str, str]]:
    res, gpus = tier.resources, tier.resources.gpus
    if gpus.min > gpus.max:
        yield "resources.gpus.min", f"{gpus.min} is above max {gpus.max}"
    if not gpus.min <= gpus.default <= gpus.max:
        yield "resources.gpus.default", f"{gpus.default} is outside min..max ({gpus.min}..{gpus.max})"
    if res.model is None:
        if res.mig_profile:
            yield "resources.mig_profile", "a MIG profile needs resources.model"
        if gpus.max > 0:
            yield "resources.gpus.max", f"{gpus.max} GPUs on a tier without resources.model"
        return
    model = GPU_MODELS[res.model]
    if res.mig_profile and res.mig_profile not in model.mig_profiles:
        valid = ", ".join(model.mig_profiles) or "none: it has no MIG"
        yield "resources.mig_profile", f"{res.mig_profile!r} is not a MIG profile of {res.model} ({valid})"
        return
    most = model.max_per_node(res.mig_profile)
    if gpus.max > most:
        unit = f"{res.mig_profile} slices" if res.mig_profile else "GPUs"
        yield "resources.gpus.max", f"{gpus.max} is more than one {res.model} node offers ({most} {unit})"
    product = tier.node_selector.get("nvidia.com/gpu.product")
    if product is not None and product != model.product:
        yield (
            "node_selector.nvidia.com/gpu.product",
            f"{product!r} does not match resources.model {res.model} ({model.product})",
        )


def _check_access(tier: Tier, groups: set[str]) -> Iterator[tuple[str, str]]:
    known_personas = persona_names()
    for persona in sorted(tier.personas - set(known_personas)):
        yield "personas", f"unknown persona {persona!r} (known: {', '.join(known_personas)})"
    unknown = "no persona mapping or user in the config knows group {!r}"
    for group in sorted(tier.groups - groups):
        yield "groups", unknown.format(group)
    for group in sorted(set(tier.quota) - groups):
        yield f"quota.{group}", unknown.format(group)


def _check_queue(tier: Tier, queues: dict[str, str]) -> Iterator[tuple[str, str]]:
    if tier.queue is None:
        if tier.capacity is not None:
            yield "capacity", "only a queued tier (with a queue) has a Kueue capacity"
        return
    if tier.queue in queues:
        yield "queue", f"{tier.queue!r} is already the queue of tier {queues[tier.queue]!r}"
    if tier.capacity is None:
        yield "capacity", "a queued tier needs its Kueue nominal quota (gpus, cpu, memory)"
    elif tier.capacity.gpus < tier.resources.gpus.max:
        yield "capacity.gpus", f"{tier.capacity.gpus} is below resources.gpus.max {tier.resources.gpus.max}"


# --- who may use what --------------------------------------------------------


def culling_args(tier: Tier) -> list[str]:
    """jupyter-server options that make a server on ``tier`` cull idle kernels and stop when idle."""
    idle = tier.idle_timeout
    if not idle:
        return []
    return [
        f"--ServerApp.shutdown_no_activity_timeout={idle}",
        f"--MappingKernelManager.cull_idle_timeout={idle}",
        f"--TerminalManager.cull_inactive_timeout={idle}",
    ]


#: jupyter-server options of a server on an ``interface: apps`` tier: Voila's page of apps
#: first, no JupyterLab (nor its language server), no terminals, files read-only.
APPS_INTERFACE_ARGS = (
    "--ServerApp.default_url=/voila/",
    "--ServerApp.terminals_enabled=False",
    "--ServerApp.jpserver_extensions=jupyterlab=False",
    "--ServerApp.jpserver_extensions=jupyter_lsp=False",
    "--ServerApp.jpserver_extensions=notebook=False",
    "--ServerApp.jpserver_extensions=jupyter_server_terminals=False",
    "--ServerApp.contents_manager_class=hubforge.server_extension.readonly.ReadOnlyContentsManager",
)


def interface_args(tier: Tier) -> list[str]:
    """jupyter-server options of the tier's interface (none for JupyterLab, the default)."""
    return list(APPS_INTERFACE_ARGS) if tier.interface == "apps" else []


def tier_env(tier: Tier) -> dict[str, str]:
    """What a server on ``tier`` finds in its environment: the tier's name and its tracking switch.

    Both spawners put it there; the server extension hands it on to every kernel.
    """
    return {TIER_ENV: tier.slug, TRACKING_ENV: "on" if tier.tracking else "off"}


def personas_for_groups(group_personas: Mapping[str, Iterable[str]], groups: Iterable[str]) -> set[str]:
    """The personas a user in ``groups`` holds (``group_personas``: ``cfg.group_personas()``)."""
    return {persona for group in groups for persona in group_personas.get(group, ())}


def tiers_for(catalog: Catalog, groups: Iterable[str], personas: Iterable[str]) -> list[Tier]:
    """The tiers a user sees: those where any of their personas or groups is listed."""
    groups, personas = set(groups), set(personas)
    return [tier for tier in catalog if tier.visible_to(groups, personas)]


def check_choice(
    catalog: Catalog,
    user_groups: Iterable[str],
    user_personas: Iterable[str],
    tier_slug: str | None,
    options: Mapping[str, Any],
) -> ValidatedChoice:
    """Validate a spawn request; ChoiceError with a one-line reason if it is not allowed.

    ``tier_slug`` None picks the first tier the user sees. ``options`` may
    hold ``image`` (a choice key) and ``gpus`` (an int or a string of digits);
    anything missing takes the tier's default, anything else is refused.
    """
    visible = tiers_for(catalog, user_groups, user_personas)
    tier = _chosen_tier(catalog, visible, tier_slug)
    unknown = sorted(set(options) - set(OPTION_KEYS))
    if unknown:
        raise ChoiceError(f"unknown option {unknown[0]!r} for tier {tier.slug!r} (known: {', '.join(OPTION_KEYS)})")
    image = _chosen_image(tier, options.get("image"))
    gpus = _chosen_gpus(tier, options.get("gpus"))
    return ValidatedChoice(tier=tier, image_key=image.key, image=image.image, gpus=gpus)


def _chosen_tier(catalog: Catalog, visible: list[Tier], slug: str | None) -> Tier:
    if not visible:
        raise ChoiceError("no compute tier is open to your groups; ask a platform admin", status=403)
    if not slug:
        return visible[0]
    tier = catalog.get(slug)
    if tier is None:
        raise ChoiceError(f"no such tier {slug!r} (yours: {', '.join(t.slug for t in visible)})")
    if tier not in visible:
        who = ", ".join(sorted(tier.personas | tier.groups)) or "nobody"
        raise ChoiceError(f"tier {slug!r} is not open to you (it is for: {who})", status=403)
    return tier


def _chosen_image(tier: Tier, key: Any) -> ImageChoice:
    if key is None or key == "":
        return tier.default_choice()
    choice = tier.image(key) if isinstance(key, str) else None
    if choice is None:
        keys = ", ".join(c.key for c in tier.images)
        raise ChoiceError(f"image {key!r} is not among the choices of tier {tier.slug!r} ({keys})")
    return choice


def _chosen_gpus(tier: Tier, value: Any) -> int:
    gpus = tier.resources.gpus
    if value is None or value == "":
        return gpus.default
    whole = isinstance(value, int) and not isinstance(value, bool)
    digits = isinstance(value, str) and value.isascii() and value.isdigit()
    if not (whole or digits):
        raise ChoiceError(f"gpus must be a whole number, not {value!r}")
    count = int(value)
    if not gpus.min <= count <= gpus.max:
        raise ChoiceError(f"tier {tier.slug!r} allows {gpus.min} to {gpus.max} GPUs, not {count}")
    return count


def fair_share_group(user_groups: list[str], tier: Tier, fallback: str) -> str:
    """The group a person's request on ``tier`` is counted against: one the tier has a quota
    for (the first by name), else their first group, else ``fallback`` (their name).

    The one-machine queue and Kueue's per-group ClusterQueues both count by it."""
    for group in sorted(user_groups):
        if group in tier.quota:
            return group
    return sorted(user_groups)[0] if user_groups else fallback
