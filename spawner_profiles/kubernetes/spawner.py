"""KubeSpawner configured from the tier catalog.

Each tier becomes one KubeSpawner profile (``profile_list``) with two
``profile_options``, ``image`` and ``gpus``; a user sees only the tiers their
personas or groups allow. :class:`HubforgeKubeSpawner` checks every request
against the catalog before KubeSpawner applies it, so options forged through
the REST API get a 4xx and nothing is created in the cluster.

:func:`render_pod` returns the pod KubeSpawner itself would create for a
user's choice, without a cluster or a kubeconfig (see :func:`_offline`).
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import re
import tempfile
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubespawner.spawner as kubespawner_module
import yaml
from kubernetes_asyncio import client
from kubespawner import KubeSpawner
from tornado import web
from traitlets import default
from traitlets.config import Config

from hubforge.catalog import (
    SERVER_STOP_GRACE,
    Catalog,
    ChoiceError,
    Tier,
    ValidatedChoice,
    check_choice,
    fair_share_group,
    load_catalog,
    personas_for_groups,
    tier_env,
    tiers_for,
)
from hubforge.config import KubernetesSection, PlatformConfig
from hubforge.contract import CONFIG_ENV, DATA_ENV
from hubforge.hardware import memory_bytes

from ..tiers import TierSpawnerMixin

__all__ = [
    "QUEUE_LABEL",
    "TIER_LABEL",
    "HubforgeKubeSpawner",
    "TierProfileList",
    "configure_kubespawner",
    "group_label",
    "kube_memory",
    "kube_settings",
    "offline_spawner",
    "profile_for",
    "queue_for",
    "queue_name",
    "render_pod",
    "render_pod_async",
    "user_groups",
]

#: The pod label Kueue's pod integration reads to queue a pod.
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
#: The pod label naming the tier a server runs on.
TIER_LABEL = "hubforge.dev/tier"

#: Traitlets a tier's overrides set; reset before each spawn, because
#: KubeSpawner merges dict overrides into the live values of a reused spawner.
TIER_TRAITS = (
    "image",
    "cpu_guarantee",
    "cpu_limit",
    "mem_guarantee",
    "mem_limit",
    "node_selector",
    "tolerations",
    "priority_class_name",
    "extra_labels",
    "extra_pod_config",
    "extra_resource_limits",
    "extra_resource_guarantees",
    "environment",
)


def kube_settings(cfg: PlatformConfig) -> KubernetesSection:
    """The Kubernetes settings (``spawner.kubernetes``)."""
    return cfg.spawner.kubernetes


def kube_memory(spec: str) -> str:
    """A JupyterHub memory spec as a Kubernetes quantity ('8G' is 8 GiB: '8Gi')."""
    number, unit = spec[:-1], spec[-1]
    return f"{number}{unit}i" if number.isdigit() else str(memory_bytes(spec))


def group_label(group: str) -> str:
    """A hub group's name as a DNS label fit for Kueue object names (lowercase, ``-`` for
    anything else, with a digest of the name when that changed it, so two never collide)."""
    label = re.sub(r"[^a-z0-9-]+", "-", group.lower()).strip("-")[:40] or "group"
    if label != group:
        label = f"{label}-{hashlib.sha256(group.encode()).hexdigest()[:6]}"
    return label


def queue_name(tier: Tier, group: str | None) -> str:
    """The LocalQueue of ``group``'s pods on a queued tier (None: groups without a quota on it)."""
    assert tier.queue is not None
    return tier.queue + (f"-{group_label(group)}" if group else "")


def queue_for(tier: Tier, user_groups: list[str], user: str) -> str:
    """The LocalQueue a person's pod on a queued tier names: their fair-share group's (the
    group their request counts against on one machine), if it has a quota on the tier."""
    group = fair_share_group(user_groups, tier, user)
    return queue_name(tier, group if group in tier.quota else None)


def _gpu_override(tier: Tier, count: int) -> dict[str, Any]:
    resource = tier.resources.gpu_resource
    if resource is None:
        return {}
    # None removes the key when KubeSpawner merges the override (no GPU request).
    value = str(count) if count else None
    return {"extra_resource_limits": {resource: value}, "extra_resource_guarantees": {resource: value}}


def _tier_override(tier: Tier) -> dict[str, Any]:
    res = tier.resources
    labels = {TIER_LABEL: tier.slug}
    if tier.queue:
        labels[QUEUE_LABEL] = tier.queue
    override: dict[str, Any] = {
        "image": tier.default_choice().image,
        "cpu_guarantee": res.cpu_guarantee,
        "cpu_limit": res.cpu_limit,
        "mem_guarantee": res.mem_guarantee,
        "mem_limit": res.mem_limit,
        "node_selector": dict(tier.node_selector),
        "tolerations": [dict(t) for t in tier.tolerations],
        "extra_labels": labels,
        # Merged into the configured environment; HUBFORGE_TRACKING=off stops the kernels' tracking.
        "environment": tier_env(tier),
    }
    if tier.priority_class:
        override["priority_class_name"] = tier.priority_class
    if tier.max_lifetime:
        # Kubernetes ends the pod itself once its maximum lifetime has passed.
        override["extra_pod_config"] = {"activeDeadlineSeconds": tier.max_lifetime}
    return override


def profile_for(tier: Tier) -> dict[str, Any]:
    """The KubeSpawner profile of one tier (plain data: fit for helm values too)."""
    gpus = tier.resources.gpus
    return {
        "slug": tier.slug,
        "display_name": tier.display_name,
        "description": tier.description,
        "kubespawner_override": _tier_override(tier),
        "profile_options": {
            "image": {
                "display_name": "Image",
                "choices": {
                    choice.key: {
                        "display_name": choice.display_name,
                        "default": choice.key == tier.default_image,
                        "kubespawner_override": {"image": choice.image},
                    }
                    for choice in tier.images
                },
            },
            "gpus": {
                "display_name": "GPUs",
                "choices": {
                    str(n): {
                        "display_name": tier.resources.describe_gpus(n),
                        "default": n == gpus.default,
                        "kubespawner_override": _gpu_override(tier, n),
                    }
                    for n in range(gpus.min, gpus.max + 1)
                },
            },
        },
    }


@dataclass
class TierProfileList:
    """``KubeSpawner.profile_list`` as a callable: the profiles of the tiers a user may use."""

    catalog: Catalog
    #: Hub group -> the personas it grants (``cfg.group_personas()``).
    group_personas: dict[str, list[str]] = field(default_factory=dict)

    def __call__(self, spawner: Any) -> list[dict[str, Any]]:
        """The profiles ``spawner.user`` may choose from, in catalog order."""
        groups = [group.name for group in getattr(spawner.user, "groups", [])]
        personas = personas_for_groups(self.group_personas, groups)
        return [profile_for(tier) for tier in tiers_for(self.catalog, groups, personas)]


class HubforgeKubeSpawner(TierSpawnerMixin, KubeSpawner):
    """KubeSpawner that refuses any tier or option the catalog does not allow the user."""

    @default("profile_list")
    def _default_profile_list(self) -> Any:
        if self.tier_catalog is None:
            return []
        return TierProfileList(self.tier_catalog, dict(self.group_personas))

    @default("delete_grace_period")
    def _default_delete_grace_period(self) -> int:
        # KubeSpawner's 1 s would kill the server before its kernels end their MLflow runs.
        return SERVER_STOP_GRACE

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._configured = {name: copy.deepcopy(getattr(self, name)) for name in TIER_TRAITS}
        #: Whether the last start was refused before anything reached the cluster.
        self._refused = False

    def check_user_options(self) -> ValidatedChoice:
        """The user's request checked against the catalog; HTTPError 400/403 if not allowed."""
        self._refused = True  # until the check passes
        choice = super().check_user_options()
        self._refused = False
        return choice

    async def load_user_options(self) -> None:
        """Check the request (apply_user_options checked it once already), then let
        KubeSpawner apply the tier's profile and options."""
        choice = self.check_user_options()
        for name, value in self._configured.items():
            setattr(self, name, copy.deepcopy(value))
        # Canonical keys and string values: KubeSpawner looks choices up by string key.
        self.user_options = {"profile": choice.tier.slug, "image": choice.image_key, "gpus": str(choice.gpus)}
        await super().load_user_options()
        # KubeSpawner merges a profile's dicts (node selector, labels) into the configured ones
        # but replaces lists: the chart's tolerations (its user-node taint) go with the tier's.
        configured: list[dict[str, Any]] = self._configured["tolerations"]
        self.tolerations = configured + [t for t in map(dict, choice.tier.tolerations) if t not in configured]
        if choice.tier.queue:
            # Kueue counts the pod against the person's group on the tier (its own ClusterQueue).
            queue = queue_for(choice.tier, self.user_groups(), self.user.name)
            labels: dict[str, str] = dict(self.extra_labels)  # type: ignore[has-type]
            self.extra_labels = {**labels, QUEUE_LABEL: queue}

    async def start(self) -> Any:
        """KubeSpawner's start, recorded in the audit trail as done or failed."""
        try:
            url = await super().start()
        except BaseException:
            self.audit_server("spawn", "failure")
            raise
        self.audit_server("spawn", "success")
        return url

    async def stop(self, now: bool = False) -> None:
        """KubeSpawner's stop, recorded in the audit trail."""
        await super().stop(now=now)
        if not self._refused:
            self.audit_server("stop", "success")

    async def poll(self) -> int | None:
        """KubeSpawner's poll, except after a refused start: no pod exists, nothing to ask.

        JupyterHub polls a server whose start failed before cleaning up; a
        refusal then answers at once, without starting the pod watch.
        """
        if self._refused:
            return 0
        status: int | None = await super().poll()
        return status


def configure_kubespawner(c: Any, cfg: PlatformConfig, catalog: Catalog | None = None) -> None:
    """Make JupyterHub spawn with :class:`HubforgeKubeSpawner` and the platform's tiers."""
    catalog = catalog if catalog is not None else load_catalog(cfg)
    group_personas = cfg.group_personas()
    c.JupyterHub.spawner_class = HubforgeKubeSpawner
    c.HubforgeKubeSpawner.tier_catalog = catalog
    c.HubforgeKubeSpawner.group_personas = group_personas
    # Set on our class: it wins over a static c.KubeSpawner.profile_list (z2jh's profileList).
    c.HubforgeKubeSpawner.profile_list = TierProfileList(catalog, group_personas)
    c.KubeSpawner.namespace = kube_settings(cfg).namespace
    # An explicit command: KubeSpawner drops arguments (the idle timeout) without one.
    c.KubeSpawner.cmd = ["jupyterhub-singleuser"]
    c.Spawner.default_url = cfg.spawner.default_url


# --- rendering without a cluster ----------------------------------------------

#: Where the offline client points: a name that never resolves (RFC 2606).
OFFLINE_HOST = "https://kubernetes.invalid"


@contextmanager
def _offline(api_client: client.ApiClient) -> Iterator[None]:
    """Construct KubeSpawners that load no kubeconfig and reach no cluster.

    KubeSpawner's ``__init__`` calls ``load_config()`` (in-cluster config,
    else ``~/.kube/config``) and ``shared_client()``. Both are swapped, for
    the construction only, for a no-op and a client on ``api_client``, which
    points at :data:`OFFLINE_HOST`: anything that did try to call the API
    would fail to connect instead of touching a real cluster. Swapping the
    two names at KubeSpawner's import boundary beats a throwaway kubeconfig:
    kubernetes_asyncio reads ``$KUBECONFIG`` once at import and
    ``load_config`` is cached for the process.
    """
    saved = kubespawner_module.load_config, kubespawner_module.shared_client
    kubespawner_module.load_config = lambda **_: None
    kubespawner_module.shared_client = lambda kind, *a, **k: getattr(client, kind)(api_client)
    try:
        yield
    finally:
        kubespawner_module.load_config, kubespawner_module.shared_client = saved


@dataclass(frozen=True)
class _Group:
    name: str


@dataclass(frozen=True)
class _RenderUser:
    """What KubeSpawner reads of a hub user."""

    name: str
    url: str
    groups: tuple[_Group, ...]
    id: int = 0


@dataclass(frozen=True)
class _RenderHub:
    """What KubeSpawner reads of the hub: z2jh's hub service address."""

    base_url: str
    url: str
    api_url: str
    public_host: str = ""


def user_groups(cfg: PlatformConfig, name: str) -> list[str]:
    """The groups of a user declared in the config's ``users:`` section."""
    if name not in cfg.users:
        raise ChoiceError(f"no user {name!r} in the users of {cfg.source}", status=404)
    return cfg.user_groups(name)


@asynccontextmanager
async def offline_spawner(
    cfg: PlatformConfig,
    user: str,
    catalog: Catalog | None = None,
    groups: list[str] | None = None,
    config: Config | None = None,
) -> AsyncIterator[HubforgeKubeSpawner]:
    """A HubforgeKubeSpawner for a user, configured as the hub would, with no cluster.

    The user's groups are ``groups`` (as the hub has them), else the config's ``users:``
    section's; the hub is z2jh's (``http://hub:8081``). ``config``: the hub's whole
    configuration (the chart's ``jupyterhub_config.py`` run with the values), else only what
    hubforge configures. The spawner's API client points at :data:`OFFLINE_HOST` and is
    closed on exit.
    """
    catalog = catalog if catalog is not None else load_catalog(cfg)
    c = config
    if c is None:
        c = Config()
        configure_kubespawner(c, cfg, catalog)
    prefix = cfg.hub.base_url
    hub = _RenderHub(f"{prefix}hub/", f"http://hub:8081{prefix}hub/", f"http://hub:8081{prefix}hub/api")
    named = groups if groups is not None else user_groups(cfg, user)
    account = _RenderUser(user, f"{prefix}user/{user}/", tuple(_Group(g) for g in named))
    async with client.ApiClient(client.Configuration(host=OFFLINE_HOST)) as api_client:
        with _offline(api_client):
            spawner = HubforgeKubeSpawner(config=c, user=account, hub=hub)
        yield spawner


async def render_pod_async(
    cfg: PlatformConfig, user: str, tier: str, options: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The pod manifest (a dict) KubeSpawner would create for ``user``'s choice.

    ChoiceError when the user may not use that tier or option.
    """
    options = dict(options or {})
    catalog = load_catalog(cfg)
    groups = user_groups(cfg, user)
    check_choice(catalog, groups, personas_for_groups(cfg.group_personas(), groups), tier, options)
    with chart_config(cfg, catalog) as c:
        async with offline_spawner(cfg, user, catalog, config=c) as spawner:
            spawner.user_options = {"profile": tier, **options}
            try:
                await spawner.load_user_options()
            except web.HTTPError as exc:
                raise ChoiceError(exc.get_message() or str(exc), status=exc.status_code) from exc
            pod = spawner.api.api_client.sanitize_for_serialization(await spawner.get_pod_manifest())
    pod["metadata"]["namespace"] = spawner.namespace
    return pod


@contextmanager
def chart_config(cfg: PlatformConfig, catalog: Catalog) -> Iterator[Config]:
    """The hub's configuration as the chart (:mod:`.chart`) builds it from ``hubforge k8s
    render``'s values: its spawner settings (labels, user scheduler, security context, home
    volume, metadata-blocking init container, environment) with ours (extraConfig) on top."""
    from .chart import chart_hub_config, chart_values, helm_merge
    from .render import helm_values

    values = helm_merge(chart_values(), helm_values(cfg, catalog))
    with tempfile.TemporaryDirectory(prefix="hubforge-render-") as scratch:
        # The hub pod's platform.yaml (the Secret's), with a data folder that exists here.
        mounted = Path(scratch) / "platform.yaml"
        mounted.write_text(yaml.safe_dump({**cfg.data, "data_dir": scratch}, sort_keys=False))
        env = {"POD_NAMESPACE": kube_settings(cfg).namespace, CONFIG_ENV: str(mounted), DATA_ENV: scratch}
        with chart_hub_config(values, env, Path(scratch)) as c:
            yield c


def render_pod(cfg: PlatformConfig, user: str, tier: str, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """:func:`render_pod_async` for callers without an event loop (the command line, tests)."""
    return asyncio.run(render_pod_async(cfg, user, tier, options))
