"""``hubforge k8s render``: the platform as Kubernetes objects and helm values.

What is written (``render_k8s``):

- ``helm-values.yaml``: values for the Zero-to-JupyterHub chart. Its
  ``hub.extraConfig`` loads the platform config (mounted from a Secret) and
  configures auth, roles and :class:`~hubforge.spawner_profiles.kubernetes.spawner.HubforgeKubeSpawner`;
  ``singleuser.profileList`` is the static view of every tier; ``hub.services``
  runs every enabled service of :data:`~hubforge.hub.services.SERVICES` in the hub pod.
- ``hubforge-platform.yaml``: the user namespace and the Secret with the platform config;
  with the scheduler on, a Role letting the hub pod run scheduled runs as Jobs there;
  with serving on, the model namespaces (``services.serving.kserve.namespaces``) and a
  Role in each letting the hub pod deploy InferenceServices there.
- ``priority-classes.yaml``: a PriorityClass per class the tiers name.
- ``kueue-values.yaml``: values for Kueue's chart (``KUEUE_CHART_VERSION``): its manager
  configuration with fair sharing and the pod integration on.
- ``kueue.yaml`` (``kueue.x-k8s.io/v1beta2``): a ResourceFlavor per GPU model; the
  platform's Cohort and, in it, a Cohort per queued tier holding the tier's capacity
  with its fair-share weight; in each tier's cohort a ClusterQueue per group with a
  quota on the tier (borrowing at most that many GPUs) and one for everybody else,
  each with its LocalQueue in the user namespace.

The builders are pure functions returning plain dicts; only
:func:`render_k8s` writes files.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from hubforge.catalog import QUEUE_WAIT_S, Catalog, Tier, load_catalog
from hubforge.config import KubernetesSection, PlatformConfig
from hubforge.contract import CONFIG_ENV, DATA_ENV, ISOLATION_ENV, PROXY_PEERS_ENV
from hubforge.errors import ConfigError, HubforgeError
from hubforge.hardware import GPU_MODELS
from hubforge.hub.services import SCHEDULER, Placement, enabled_services, hub_services, server_service_env
from hubforge.hub.serving.kserve import API_GROUP as KSERVE_API_GROUP

from .spawner import group_label, kube_memory, kube_settings, profile_for, queue_name

__all__ = [
    "HUB_CONFIG_DIR",
    "HUB_DATA_DIR",
    "KUEUE_CHART_VERSION",
    "cluster_queue",
    "deploy_access",
    "helm_values",
    "kubernetes",
    "kueue_manifests",
    "kueue_values",
    "local_queue",
    "platform_cohort",
    "platform_manifests",
    "priority_classes",
    "render_k8s",
    "resource_flavor",
    "scheduler_access",
    "tier_cohort",
]

#: Where the hub pod mounts the platform config (from the Secret).
HUB_CONFIG_DIR = PurePosixPath("/etc/hubforge")
#: The platform's data folder in the hub pod: on z2jh's hub volume.
HUB_DATA_DIR = PurePosixPath("/srv/jupyterhub/hubforge")
SECRET_NAME = "hubforge-platform"
#: The hub pod's volume for the platform's data folder (HUB_DATA_DIR).
DATA_VOLUME = "hubforge-data"
#: z2jh's service account of the hub pod, where the governance service deploys from.
HUB_SERVICE_ACCOUNT = "hub"
#: The headless Service whose addresses are the proxy pods', and the labels z2jh gives them.
PROXY_PEERS_SERVICE = "hubforge-proxy"
PROXY_POD_LABELS = {"app": "jupyterhub", "component": "proxy"}
#: The labels z2jh gives the hub pod (its legacy match labels, without the release's name).
HUB_POD_LABELS = {"app": "jupyterhub", "component": "hub"}
#: The Role in each model namespace that lets the hub deploy there.
DEPLOY_ROLE = "hubforge-deploy"
#: The Role in the user namespace that lets the scheduler run Jobs there.
SCHEDULER_ROLE = "hubforge-scheduler"
KUEUE_API = "kueue.x-k8s.io/v1beta2"
#: The Kueue release the objects and the manager configuration are written for (v1beta2 is
#: its storage version; ``spec.cohort`` became ``cohortName`` there).
KUEUE_CHART_VERSION = "0.19.2"
LABELS = {"app.kubernetes.io/part-of": "hubforge", "app.kubernetes.io/managed-by": "hubforge"}
#: PriorityClass values: reserved (interactive) servers above queued ones.
PRIORITY_RESERVED, PRIORITY_QUEUED = 1000, 100

EXTRA_CONFIG = """\
# hubforge: every setting comes from the platform config mounted from a Secret.
from hubforge.config import load_config
from hubforge.hub.hubconfig import configure_audit, configure_auth, configure_landing, configure_rbac
from hubforge.hub.hubconfig import configure_service_role, configure_service_timeouts
from hubforge.spawner_profiles.kubernetes.spawner import configure_kubespawner

_platform = load_config()
configure_auth(c, _platform)
configure_audit(c, _platform)
configure_rbac(c, _platform, "kubernetes")
configure_service_role(c, _platform)
configure_landing(c, _platform)
configure_kubespawner(c, _platform)
configure_service_timeouts(c)
"""


def _metadata(name: str, namespace: str | None = None, **labels: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": {**LABELS, **labels}}
    if namespace:
        meta["namespace"] = namespace
    return meta


def _in_cluster(cfg: PlatformConfig) -> PlatformConfig:
    """The config as the hub pod sees it: its data folder on the hub volume."""
    return dataclasses.replace(cfg, data_dir=Path(str(HUB_DATA_DIR)))


def _ports(cfg: PlatformConfig) -> dict[str, int]:
    """Each enabled service's port in the hub pod: platform.yaml's, or the service's default."""
    return {spec.name: spec.configured_port(cfg) or spec.default_port for spec in enabled_services(cfg, "kubernetes")}


def kubernetes(cfg: PlatformConfig) -> Placement:
    """Where the services run on Kubernetes: processes of the hub pod, reached on the hub's Service."""
    return Placement(
        kind="kubernetes",
        cfg=_in_cluster(cfg),
        ports=_ports(cfg),
        bind_ip="0.0.0.0",  # the pod cannot bind the Service's address
        url_host="hub",
        python="python3",
        scripts="",
        # The services believe X-Forwarded-For from the proxy pods only (hubforge.proxies).
        env={**_hub_env(), ISOLATION_ENV: "pods", PROXY_PEERS_ENV: PROXY_PEERS_SERVICE},
        reached_as=("hub:{port}",),
    )


def _hub_env() -> dict[str, str]:
    return {
        CONFIG_ENV: str(HUB_CONFIG_DIR / "platform.yaml"),
        DATA_ENV: str(HUB_DATA_DIR),
        "PYTHONUNBUFFERED": "1",
    }


def _services(cfg: PlatformConfig) -> dict[str, dict[str, Any]]:
    """z2jh ``hub.services`` (keyed by name): every enabled service in the hub pod; the chart
    makes their tokens."""
    entries = hub_services(kubernetes(cfg))
    return {entry["name"]: {key: value for key, value in entry.items() if key != "name"} for entry in entries}


def _hub_values(cfg: PlatformConfig, settings: KubernetesSection) -> dict[str, Any]:
    ports = _ports(cfg)
    hub: dict[str, Any] = {
        "extraEnv": _hub_env(),
        "extraVolumes": [
            {"name": SECRET_NAME, "secret": {"secretName": SECRET_NAME}},
            {"name": DATA_VOLUME, "persistentVolumeClaim": {"claimName": DATA_VOLUME}},
        ],
        "extraVolumeMounts": [
            {"name": SECRET_NAME, "mountPath": str(HUB_CONFIG_DIR), "readOnly": True},
            # The platform's data on a volume of its own, not on the chart's 1Gi hub database volume.
            {"name": DATA_VOLUME, "mountPath": str(HUB_DATA_DIR)},
        ],
        "extraConfig": {"hubforge": EXTRA_CONFIG},
        "services": _services(cfg),
        # The proxy reaches the services on the hub's Service, beside the hub API.
        "service": {"extraPorts": [{"name": n, "port": p, "targetPort": p} for n, p in ports.items()]},
        "networkPolicy": {
            "ingress": [
                {
                    "from": [{"podSelector": {"matchLabels": {"hub.jupyter.org/network-access-hub": "true"}}}],
                    "ports": [{"port": p, "protocol": "TCP"} for p in ports.values()],
                }
            ]
        },
    }
    if settings.hub_image:
        name, _, tag = settings.hub_image.rpartition(":")
        hub["image"] = {"name": name, "tag": tag} if name and "/" not in tag else {"name": settings.hub_image}
    if cfg.backends.hub_db_url:
        hub["db"] = {"type": "other", "url": cfg.db_url("hub")}
    return hub


def helm_values(cfg: PlatformConfig, catalog: Catalog) -> dict[str, Any]:
    """Values for the Zero-to-JupyterHub chart, installed in the user namespace."""
    settings = kube_settings(cfg)
    # Servers reach the services on the hub's Service (the hub's NetworkPolicy above lets user
    # pods in), as the person's own hub identity: audit events, MLflow, `hubforge schedule`.
    singleuser: dict[str, Any] = {"extraEnv": server_service_env(cfg, kubernetes(cfg))}
    queued = any(tier.queue for tier in catalog)
    return {
        "hub": _hub_values(cfg, settings),
        "singleuser": {
            **singleuser,
            "cmd": "jupyterhub-singleuser",
            "defaultUrl": cfg.spawner.default_url,
            # A pod Kueue holds is a spawn still starting: it may wait as long as a queue does.
            "startTimeout": max(cfg.hub.start_timeout, QUEUE_WAIT_S) if queued else cfg.hub.start_timeout,
            # The chart lets people's pods reach the hub's API port only; they reach the
            # services (MLflow, governance, ...) on the hub's Service too.
            "networkPolicy": {
                "egress": [
                    {
                        "to": [{"podSelector": {"matchLabels": dict(HUB_POD_LABELS)}}],
                        "ports": [{"port": port, "protocol": "TCP"} for port in _ports(cfg).values()],
                    }
                ]
            },
            # The static view; the hub replaces it with the per-user tiers (extraConfig).
            "profileList": [profile_for(tier) for tier in catalog],
        },
        # The chart's image pullers would pull every tier's images onto every user node at
        # install (its hook waits at most 5 minutes) and not onto the GPU nodes, which
        # carry taints they do not tolerate: each tier's nodes pull their images on first use.
        "prePuller": {"hook": {"enabled": False}, "continuous": {"enabled": False}, "pullProfileListImages": False},
    }


def _secret_config(cfg: PlatformConfig) -> str:
    data = {**cfg.data, "data_dir": str(HUB_DATA_DIR)}
    return yaml.safe_dump(data, sort_keys=False)


def platform_manifests(cfg: PlatformConfig) -> list[dict[str, Any]]:
    """The user namespace, the Secret holding the platform config for the hub pod and, when
    models are served, the model namespaces with the hub's right to deploy there."""
    ns = kube_settings(cfg).namespace
    manifests = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": _metadata(ns)},
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": _metadata(SECRET_NAME, ns),
            "type": "Opaque",
            # A Secret, not a ConfigMap: backend URLs and OAuth settings may carry credentials.
            "stringData": {"platform.yaml": _secret_config(cfg)},
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": _metadata(DATA_VOLUME, ns),
            "spec": {
                "accessModes": ["ReadWriteOnce"],  # the hub pod alone (the chart recreates it, never two)
                "resources": {"requests": {"storage": kube_settings(cfg).data_volume_size}},
            },
        },
    ]
    manifests.append(proxy_peers(ns))
    if SCHEDULER.enabled(cfg):
        manifests.extend(scheduler_access(ns))
    if cfg.services.serving.enabled:
        for target_ns in cfg.services.serving.kserve.namespaces.values():
            manifests.extend(deploy_access(target_ns, ns))
    return manifests


def proxy_peers(namespace: str) -> dict[str, Any]:
    """A headless Service over z2jh's proxy pods: its DNS answer is their current addresses,
    the only peers whose ``X-Forwarded-For`` the services believe (``HUBFORGE_PROXY_PEERS``)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(PROXY_PEERS_SERVICE, namespace),
        "spec": {
            "clusterIP": "None",
            "selector": PROXY_POD_LABELS,
            "ports": [{"name": "http", "port": 8000, "targetPort": "http"}],
        },
    }


def deploy_access(namespace: str, hub_namespace: str) -> list[dict[str, Any]]:
    """A model namespace, and a Role there letting the hub pod (where the governance service
    runs, as z2jh's ``hub`` service account) read, create and change InferenceServices: the
    least the Kubernetes deploy target (:mod:`hubforge.hub.serving.kserve_client`) needs."""
    rule = {"apiGroups": [KSERVE_API_GROUP], "resources": ["inferenceservices"], "verbs": ["get", "create", "patch"]}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": _metadata(namespace)},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _metadata(DEPLOY_ROLE, namespace),
            "rules": [rule],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _metadata(DEPLOY_ROLE, namespace),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": DEPLOY_ROLE},
            "subjects": [{"kind": "ServiceAccount", "name": HUB_SERVICE_ACCOUNT, "namespace": hub_namespace}],
        },
    ]


def scheduler_access(namespace: str) -> list[dict[str, Any]]:
    """A Role in the user namespace letting the hub pod (where the scheduler runs, as z2jh's
    ``hub`` service account) run scheduled runs as Jobs: make, follow and delete a run's
    Job, make its token's Secret, read its pod's log. The least
    :class:`hubforge.hub.scheduler.kube.KubeRuns` needs."""
    rules = [
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "get", "delete"]},
        {"apiGroups": ["batch"], "resources": ["jobs/status"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
        {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
    ]
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _metadata(SCHEDULER_ROLE, namespace),
            "rules": rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _metadata(SCHEDULER_ROLE, namespace),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": SCHEDULER_ROLE},
            "subjects": [{"kind": "ServiceAccount", "name": HUB_SERVICE_ACCOUNT, "namespace": namespace}],
        },
    ]


def priority_classes(catalog: Catalog) -> list[dict[str, Any]]:
    """A PriorityClass per class the tiers name; a reserved tier's class outranks a queued one's."""
    values: dict[str, int] = {}
    users: dict[str, list[str]] = {}
    for tier in catalog:
        if tier.priority_class:
            value = PRIORITY_QUEUED if tier.queue else PRIORITY_RESERVED
            values[tier.priority_class] = max(value, values.get(tier.priority_class, 0))
            users.setdefault(tier.priority_class, []).append(tier.slug)
    return [
        {
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass",
            "metadata": _metadata(name),
            "value": value,
            "globalDefault": False,
            # Queued servers wait for Kueue; they never push a running server out.
            "preemptionPolicy": "Never" if value == PRIORITY_QUEUED else "PreemptLowerPriority",
            "description": f"hubforge tiers: {', '.join(users[name])}",
        }
        for name, value in values.items()
    ]


def _flavor_name(tier: Tier) -> str:
    return tier.resources.model or "cpu"


def resource_flavor(name: str) -> dict[str, Any]:
    """The ResourceFlavor of a GPU model (its nodes by GPU feature discovery's label), or 'cpu'."""
    spec: dict[str, Any] = {}
    if name in GPU_MODELS:
        spec["nodeLabels"] = {"nvidia.com/gpu.product": GPU_MODELS[name].product}
    return {"apiVersion": KUEUE_API, "kind": "ResourceFlavor", "metadata": _metadata(name), "spec": spec}


def _cpu_quantity(cores: float) -> int | str:
    return int(cores) if cores == int(cores) else f"{round(cores * 1000)}m"


def _weight(weight: float) -> int | str:
    return int(weight) if weight == int(weight) else f"{weight:g}"


def _covered(tier: Tier) -> list[str]:
    return ["cpu", "memory", *([tier.resources.gpu_resource] if tier.resources.gpu_resource else [])]


def tier_cohort(tier: Tier, settings: KubernetesSection) -> dict[str, Any]:
    """The Cohort of a queued tier: the tier's capacity (its nominal quota), shared by the
    ClusterQueues of its groups, with the tier's fair-share weight in the platform's cohort."""
    assert tier.capacity is not None, "load_catalog requires a capacity on queued tiers"
    quotas: list[dict[str, Any]] = [
        {"name": "cpu", "nominalQuota": _cpu_quantity(tier.capacity.cpu)},
        {"name": "memory", "nominalQuota": kube_memory(tier.capacity.memory)},
    ]
    if tier.resources.gpu_resource:
        quotas.append({"name": tier.resources.gpu_resource, "nominalQuota": tier.capacity.gpus})
    return {
        "apiVersion": KUEUE_API,
        "kind": "Cohort",
        "metadata": _metadata(tier_cohort_name(tier), **{"hubforge.dev/tier": tier.slug}),
        "spec": {
            "parentName": settings.cohort,
            "fairSharing": {"weight": _weight(tier.fair_share_weight)},
            "resourceGroups": [
                {"coveredResources": _covered(tier), "flavors": [{"name": _flavor_name(tier), "resources": quotas}]}
            ],
        },
    }


def platform_cohort(settings: KubernetesSection) -> dict[str, Any]:
    """The root Cohort the tiers' cohorts share (and lend unused capacity within)."""
    return {"apiVersion": KUEUE_API, "kind": "Cohort", "metadata": _metadata(settings.cohort), "spec": {}}


def tier_cohort_name(tier: Tier) -> str:
    return f"hubforge-{tier.slug}"


def cluster_queue(tier: Tier, settings: KubernetesSection, group: str | None = None) -> dict[str, Any]:
    """The ClusterQueue of one group on a queued tier (``group`` None: everybody whose groups
    have no quota on it). It owns no quota: it borrows the tier cohort's, a group at most its
    GPU quota. Fair sharing orders the groups; nobody's running server is preempted."""
    resources: list[dict[str, Any]] = [{"name": name, "nominalQuota": 0} for name in _covered(tier)]
    if group is not None and tier.resources.gpu_resource:
        resources[-1]["borrowingLimit"] = tier.quota[group]
    labels = {"hubforge.dev/tier": tier.slug, **({"hubforge.dev/group": group_label(group)} if group else {})}
    return {
        "apiVersion": KUEUE_API,
        "kind": "ClusterQueue",
        "metadata": _metadata(cluster_queue_name(tier, group), **labels),
        "spec": {
            "cohortName": tier_cohort_name(tier),
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": settings.namespace}},
            "queueingStrategy": "BestEffortFIFO",
            "fairSharing": {"weight": 1},
            # A person's server is never ended to make room for another's (as on one machine).
            "preemption": {"reclaimWithinCohort": "Never", "withinClusterQueue": "Never"},
            "resourceGroups": [
                {"coveredResources": _covered(tier), "flavors": [{"name": _flavor_name(tier), "resources": resources}]}
            ],
        },
    }


def cluster_queue_name(tier: Tier, group: str | None) -> str:
    return f"hubforge-{tier.slug}" + (f"-{group_label(group)}" if group else "")


def local_queue(tier: Tier, settings: KubernetesSection, group: str | None = None) -> dict[str, Any]:
    """The LocalQueue a group's pods on a tier name (``kueue.x-k8s.io/queue-name``), in the
    user namespace; the spawner picks it with :func:`~.spawner.queue_for`."""
    assert tier.queue is not None
    return {
        "apiVersion": KUEUE_API,
        "kind": "LocalQueue",
        "metadata": _metadata(queue_name(tier, group), settings.namespace, **{"hubforge.dev/tier": tier.slug}),
        "spec": {"clusterQueue": cluster_queue_name(tier, group)},
    }


def kueue_manifests(catalog: Catalog, settings: KubernetesSection) -> list[dict[str, Any]]:
    """ResourceFlavors, Cohorts, ClusterQueues, then LocalQueues (the order to apply them).

    Per queued tier: a Cohort holding the tier's capacity, in the platform's cohort; a
    ClusterQueue and a LocalQueue per group with a quota on the tier, and one for everybody else.
    """
    queued = [tier for tier in catalog if tier.queue]
    flavors = dict.fromkeys(_flavor_name(tier) for tier in catalog if tier.queue or tier.resources.model)
    queues = [(tier, group) for tier in queued for group in (*sorted(tier.quota), None)]
    return [
        *(resource_flavor(name) for name in flavors),
        *([platform_cohort(settings)] if queued else []),
        *(tier_cohort(tier, settings) for tier in queued),
        *(cluster_queue(tier, settings, group) for tier, group in queues),
        *(local_queue(tier, settings, group) for tier, group in queues),
    ]


#: Kueue's manager configuration as its chart ships it (see vendor/kueue/).
MANAGER_CONFIG = Path(__file__).parent / "vendor" / "kueue" / "manager-config.yaml"


def manager_config() -> dict[str, Any]:
    """Kueue's manager configuration (``config.kueue.x-k8s.io/v1beta2``) as its chart ships it."""
    config: dict[str, Any] = yaml.safe_load(MANAGER_CONFIG.read_text())
    return config


def kueue_values() -> dict[str, Any]:
    """Values for Kueue's own chart (``KUEUE_CHART_VERSION``): its manager configuration, as the
    chart ships it, with fair sharing on and the pod integration (people's servers are pods)."""
    config = manager_config()
    config["fairSharing"] = {"preemptionStrategies": ["LessThanOrEqualToFinalShare", "LessThanInitialShare"]}
    frameworks = config.setdefault("integrations", {}).setdefault("frameworks", [])
    if "pod" not in frameworks:
        frameworks.append("pod")
    body = yaml.dump(config, Dumper=_Dumper, sort_keys=False, default_flow_style=False)
    return {"managerConfig": {"controllerManagerConfigYaml": body}}


class _Dumper(yaml.SafeDumper):
    """YAML with multi-line strings (the extraConfig snippet) as literal blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def _write(path: Path, docs: list[dict[str, Any]], header: str) -> Path:
    body = yaml.dump_all(docs, Dumper=_Dumper, sort_keys=False, default_flow_style=False)
    try:
        path.write_text(f"# {header}\n# Rendered by `hubforge k8s render`; edit platform.yaml, not this file.\n{body}")
    except OSError as exc:
        raise HubforgeError(f"{path}: cannot write: {exc.strerror}") from exc
    return path


def render_k8s(cfg: PlatformConfig, out_dir: str | Path) -> list[Path]:
    """Write the helm values and the manifests under ``out_dir``; return the files written."""
    if cfg.auth.type == "demo":
        raise ConfigError(
            f"{cfg.source}: auth.type: the demo authenticator is for one machine; use oauth or ldap on Kubernetes"
        )
    if not cfg.hub.public_url:
        raise ConfigError(
            f"{cfg.source}: hub.public_url: required on Kubernetes (the address people open, e.g. "
            "https://hub.example.org): MLflow accepts browsers' requests for that host and origin only"
        )
    settings = kube_settings(cfg)
    if not settings.hub_image:
        raise ConfigError(
            f"{cfg.source}: spawner.kubernetes.hub_image: required on Kubernetes (the chart's own hub image "
            "has no hubforge): build images/hub/Dockerfile and name the image here"
        )
    catalog = load_catalog(cfg)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HubforgeError(f"{out}: cannot create the output folder: {exc.strerror}") from exc
    ns = settings.namespace
    return [
        _write(
            out / "helm-values.yaml",
            [helm_values(cfg, catalog)],
            f"Zero-to-JupyterHub values: helm upgrade --install hubforge jupyterhub/jupyterhub "
            f"--namespace {ns} --values helm-values.yaml",
        ),
        _write(
            out / "hubforge-platform.yaml",
            platform_manifests(cfg),
            "The user namespace and the platform config: kubectl apply -f hubforge-platform.yaml (before the chart)",
        ),
        _write(out / "priority-classes.yaml", priority_classes(catalog), "kubectl apply -f priority-classes.yaml"),
        _write(
            out / "kueue-values.yaml",
            [kueue_values()],
            f"Kueue's chart, with fair sharing and the pod integration on: helm upgrade --install kueue "
            f"oci://registry.k8s.io/kueue/charts/kueue --version {KUEUE_CHART_VERSION} --namespace kueue-system "
            "--create-namespace --values kueue-values.yaml",
        ),
        _write(
            out / "kueue.yaml",
            kueue_manifests(catalog, settings),
            f"Kueue {KUEUE_CHART_VERSION} objects (after kueue-values.yaml is installed): kubectl apply -f kueue.yaml",
        ),
    ]
