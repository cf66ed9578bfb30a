"""KubeSpawner from the tier catalog: per-user profiles, refused forgeries, valid pod manifests.

No cluster: pods are rendered with KubeSpawner's own ``get_pod_manifest``
(``render_pod``), in process. Rendering in a fresh interpreter without a kubeconfig,
and the REST API of a real hub whose Kubernetes client records every call instead of
reaching a cluster, are in tests/integration/test_tiers_kube.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import kubernetes_validate
import pytest
import yaml
from tornado import web
from traitlets.config import Config

from hubforge.catalog import ChoiceError, load_catalog
from hubforge.config import PlatformConfig, default_config_text, merge, validate
from hubforge.spawner_profiles.kubernetes.spawner import (
    QUEUE_LABEL,
    TIER_LABEL,
    HubforgeKubeSpawner,
    TierProfileList,
    configure_kubespawner,
    kube_memory,
    offline_spawner,
    profile_for,
    queue_for,
    render_pod,
)

#: A Kubernetes version kubernetes-validate ships schemas for.
K8S_VERSION = "1.35.0"
DEFAULT = yaml.safe_load(default_config_text())


def config(overrides: dict[str, Any] | None = None) -> PlatformConfig:
    data = merge(DEFAULT, overrides or {})
    validate(data, "platform.yaml")
    return PlatformConfig(data=data, source="platform.yaml", data_dir=Path("/nonexistent"))


def spawner_for(*groups: str) -> Any:
    """What TierProfileList reads of a spawner: its user's groups."""
    return SimpleNamespace(user=SimpleNamespace(groups=[SimpleNamespace(name=g) for g in groups]))


# --- profiles ------------------------------------------------------------------------


def test_profile_list_shows_each_user_only_their_tiers() -> None:
    cfg = config()
    profiles = TierProfileList(load_catalog(cfg), cfg.group_personas())
    assert [p["slug"] for p in profiles(spawner_for("data-scientist"))] == ["interactive", "training", "hpo"]
    assert [p["slug"] for p in profiles(spawner_for("ml-engineer"))] == ["interactive", "training", "hpo", "finetune"]
    assert [p["slug"] for p in profiles(spawner_for("data-steward"))] == ["interactive"]
    assert profiles(spawner_for("strangers")) == []


def test_a_profile_carries_the_tier() -> None:
    training = load_catalog(config()).get("training")
    assert training is not None
    profile = profile_for(training)
    override = profile["kubespawner_override"]
    assert override["cpu_guarantee"] == 4.0 and override["cpu_limit"] == 16.0
    assert (override["mem_guarantee"], override["mem_limit"]) == ("32G", "128G")
    assert override["node_selector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert override["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert override["priority_class_name"] == "hubforge-batch"
    assert override["extra_labels"] == {TIER_LABEL: "training", QUEUE_LABEL: "training"}
    assert override["extra_pod_config"] == {"activeDeadlineSeconds": 172800}
    options = profile["profile_options"]
    assert set(options) == {"image", "gpus"}
    assert list(options["image"]["choices"]) == ["pytorch", "tensorflow"]
    assert options["image"]["choices"]["pytorch"]["default"] is True
    gpus = options["gpus"]["choices"]
    assert list(gpus) == ["1", "2", "3", "4"]
    assert gpus["1"]["default"] is True
    assert gpus["3"]["kubespawner_override"]["extra_resource_limits"] == {"nvidia.com/gpu": "3"}
    assert gpus["3"]["display_name"] == "3 x NVIDIA H100 80GB"
    # Plain data: the same profile goes into helm values.
    assert yaml.safe_load(yaml.safe_dump(profile)) == profile


def test_a_reserved_tier_has_no_queue_label_and_zero_gpus_removes_the_request() -> None:
    interactive = load_catalog(config()).get("interactive")
    assert interactive is not None
    profile = profile_for(interactive)
    assert QUEUE_LABEL not in profile["kubespawner_override"]["extra_labels"]
    gpus = profile["profile_options"]["gpus"]["choices"]
    assert gpus["0"]["kubespawner_override"]["extra_resource_limits"] == {"nvidia.com/mig-1g.10gb": None}
    assert gpus["1"]["display_name"] == "1 x MIG 1g.10gb slice of NVIDIA A100 80GB"


def test_kube_memory() -> None:
    assert kube_memory("8G") == "8Gi"
    assert kube_memory("512M") == "512Mi"
    assert kube_memory("1.5G") == str(3 * 512 * 1024**2)


def test_configure_kubespawner() -> None:
    c = Config()
    configure_kubespawner(c, config())
    assert c.JupyterHub.spawner_class is HubforgeKubeSpawner
    assert c.KubeSpawner.namespace == "hubforge"
    assert c.KubeSpawner.cmd == ["jupyterhub-singleuser"]
    assert isinstance(c.HubforgeKubeSpawner.profile_list, TierProfileList)
    assert c.HubforgeKubeSpawner.group_personas["ml-lead"] == ["ml-lead"]
    # spawner.kubernetes (proposed key; not yet in the schema) moves the user namespace.
    data = merge(DEFAULT, {"spawner": {"kubernetes": {"namespace": "ml-users"}}})
    c = Config()
    configure_kubespawner(c, PlatformConfig(data=data, source="platform.yaml", data_dir=Path("/nonexistent")))
    assert c.KubeSpawner.namespace == "ml-users"


def test_the_spawn_form_offers_only_the_users_tiers() -> None:
    async def form(user: str) -> str:
        async with offline_spawner(config(), user) as spawner:
            return str(await spawner.get_options_form())

    alice, bob = asyncio.run(form("alice")), asyncio.run(form("bob"))
    assert "Training" in alice and "HPO sweeps" in alice
    assert "LLM fine-tuning" not in alice and 'value="finetune"' not in alice
    assert "LLM fine-tuning" in bob and 'value="finetune"' in bob
    assert "profile-option-training--gpus" in alice


# --- rendered pods ----------------------------------------------------------------------

ALL_CHOICES = [
    ("alice", "interactive", {}),
    ("alice", "interactive", {"gpus": "1", "image": "pytorch"}),
    ("alice", "training", {}),
    ("alice", "training", {"gpus": "4", "image": "tensorflow"}),
    ("alice", "hpo", {"gpus": "8"}),
    ("bob", "finetune", {"gpus": "2"}),
]


@pytest.mark.parametrize(("user", "tier", "options"), ALL_CHOICES)
def test_every_tier_renders_a_valid_pod(user: str, tier: str, options: dict[str, str]) -> None:
    cfg = config()
    pod = render_pod(cfg, user, tier, options)
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
    spec = load_catalog(cfg).get(tier)
    assert spec is not None
    (container,) = pod["spec"]["containers"]
    labels = pod["metadata"]["labels"]
    assert labels[TIER_LABEL] == tier
    # Queued: the LocalQueue of the person's group on the tier (its quota, its fair share).
    assert labels.get(QUEUE_LABEL) == (queue_for(spec, cfg.user_groups(user), user) if spec.queue else None)
    if spec.queue:
        assert labels[QUEUE_LABEL] == f"{spec.queue}-{cfg.user_groups(user)[0]}"
    assert pod["metadata"]["namespace"] == "hubforge"
    assert pod["spec"]["nodeSelector"] == spec.node_selector
    # The chart's (people's pods tolerate its user-node taint), then the tier's.
    chart = [t for t in pod["spec"]["tolerations"] if t["key"].startswith("hub.jupyter.org")]
    assert chart and pod["spec"]["tolerations"] == chart + list(spec.tolerations)
    assert pod["spec"]["priorityClassName"] == spec.priority_class
    assert pod["spec"]["activeDeadlineSeconds"] == spec.max_lifetime
    assert f"--ServerApp.shutdown_no_activity_timeout={spec.idle_timeout}" in container["args"]
    image_key = options.get("image", spec.default_image)
    assert container["image"] == spec.image(image_key).image
    gpus = int(options.get("gpus", spec.resources.gpus.default))
    resource = spec.resources.gpu_resource
    limits, requests = container["resources"]["limits"], container["resources"]["requests"]
    if gpus:
        assert limits[resource] == requests[resource] == str(gpus)
    else:
        assert resource not in limits and resource not in requests
    assert limits["memory"] == 1024**3 * int(spec.resources.mem_limit[:-1])
    assert limits["cpu"] == spec.resources.cpu_limit


def test_render_refuses_what_the_user_may_not_use() -> None:
    cfg = config()
    with pytest.raises(ChoiceError, match="tier 'finetune' is not open to you") as info:
        render_pod(cfg, "alice", "finetune", {})
    assert info.value.status == 403
    with pytest.raises(ChoiceError, match="no user 'mallory'"):
        render_pod(cfg, "mallory", "interactive", {})


def test_render_passes_on_kubespawners_own_refusal_with_its_status(monkeypatch: pytest.MonkeyPatch) -> None:
    # An option the catalog lets through but KubeSpawner's profile handling refuses:
    # the render ends in the one-line refusal with KubeSpawner's status, not a TypeError.
    async def refuse(self: HubforgeKubeSpawner) -> None:
        raise web.HTTPError(400, "No such profile option")

    monkeypatch.setattr(HubforgeKubeSpawner, "load_user_options", refuse)
    with pytest.raises(ChoiceError, match="No such profile option") as info:
        render_pod(config(), "alice", "interactive", {})
    assert info.value.status == 400


# --- server-side enforcement --------------------------------------------------------------


class RecordingApi:
    """A Kubernetes API that records every call and fails it."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        async def call(*args: Any, **kwargs: Any) -> None:
            self.calls.append(name)
            raise ConnectionError("no cluster in this test")

        return call


async def _start(cfg: PlatformConfig, user: str, options: dict[str, Any]) -> tuple[Any, RecordingApi]:
    async with offline_spawner(cfg, user) as spawner:
        api = RecordingApi()
        spawner.api = api
        spawner.user_options = options
        try:
            await spawner.start()
        except web.HTTPError as exc:
            return exc, api
        raise AssertionError("the spawn was not refused")


@pytest.mark.parametrize(
    ("options", "status", "message"),
    [
        ({"profile": "finetune"}, 403, "tier 'finetune' is not open to you"),
        ({"profile": "training", "image": "evil/miner"}, 400, "image 'evil/miner' is not among the choices"),
        ({"profile": "training", "gpus": 64}, 400, "tier 'training' allows 1 to 4 GPUs, not 64"),
        ({"profile": "training", "image--unlisted-choice": "evil/miner"}, 400, "unknown option"),
    ],
)
def test_spawner_refuses_forged_options_before_touching_the_cluster(
    options: dict[str, Any], status: int, message: str
) -> None:
    exc, api = asyncio.run(_start(config(), "alice", options))
    assert exc.status_code == status
    assert message in exc.get_message()
    assert api.calls == []


def test_a_refused_start_polls_as_stopped_without_the_cluster() -> None:
    async def scenario() -> tuple[int | None, list[str], dict[str, Any]]:
        async with offline_spawner(config(), "alice") as spawner:
            spawner.api = api = RecordingApi()
            spawner.user_options = {"profile": "training"}
            await spawner.load_user_options()
            spawner.user_options = {"profile": "finetune"}
            with pytest.raises(web.HTTPError):
                await spawner.load_user_options()
            return await spawner.poll(), api.calls, dict(spawner.user_options)

    status, calls, options = asyncio.run(scenario())
    assert (status, calls) == (0, [])
    assert options == {"profile": "training"}, "the refused request leaves the last accepted options"


def test_a_reused_spawner_forgets_the_previous_tier() -> None:
    async def scenario() -> dict[str, Any]:
        async with offline_spawner(config(), "bob") as spawner:
            spawner.user_options = {"profile": "finetune", "gpus": "8"}
            await spawner.load_user_options()
            spawner.user_options = {"profile": "interactive"}
            await spawner.load_user_options()
            return {
                "labels": dict(spawner.extra_labels),
                "limits": dict(spawner.extra_resource_limits),
                "pod": dict(spawner.extra_pod_config),
                "args": spawner.get_args(),
            }

    state = asyncio.run(scenario())
    assert state["labels"] == {TIER_LABEL: "interactive"}  # no queue label left from finetune
    assert state["limits"] == {}  # no GPUs left from finetune
    assert state["pod"] == {"activeDeadlineSeconds": 43200}
    assert "--ServerApp.shutdown_no_activity_timeout=3600" in state["args"]
