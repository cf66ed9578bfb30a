"""KubeSpawner from the tier catalog: per-user profiles, refused forgeries, valid pod manifests.

No cluster: pods are rendered with KubeSpawner's own ``get_pod_manifest``
(``render_pod``), and the REST API test runs a real hub whose Kubernetes
client records every call instead of reaching a cluster.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import kubernetes_validate
import pytest
import yaml
from tornado import web
from traitlets.config import Config

from _platform import free_port, wait_for
from hubforge.config import PlatformConfig, default_config_text, merge, validate
from hubforge.spawner_profiles.catalog import ChoiceError, load_catalog
from hubforge.spawner_profiles.kube import (
    QUEUE_LABEL,
    TIER_LABEL,
    HubforgeKubeSpawner,
    TierProfileList,
    configure_kubespawner,
    kube_memory,
    offline_spawner,
    profile_for,
    render_pod,
)

#: A Kubernetes version kubernetes-validate ships schemas for.
K8S_VERSION = "1.35.0"
ROOT = Path(__file__).resolve().parents[1]
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
    assert labels.get(QUEUE_LABEL) == spec.queue
    assert pod["metadata"]["namespace"] == "hubforge"
    assert pod["spec"]["nodeSelector"] == spec.node_selector
    assert pod["spec"]["tolerations"] == list(spec.tolerations)
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


def test_render_needs_no_kubeconfig(tmp_path: Path) -> None:
    # A fresh interpreter with HOME and KUBECONFIG pointing at nothing.
    script = (
        "from hubforge.config import load_config\n"
        "from hubforge.spawner_profiles.kube import render_pod\n"
        "print(render_pod(load_config(), 'bob', 'training', {'gpus': '2'})['metadata']['name'])\n"
    )
    env = {"HOME": str(tmp_path), "KUBECONFIG": str(tmp_path / "missing"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "jupyter-bob"


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


# --- the REST API of a real hub -----------------------------------------------------------

HUB_CONFIG = """\
import kubespawner.reflector
import kubespawner.spawner

from hubforge.config import load_config
from hubforge.spawner_profiles.kube import configure_kubespawner


class RecordingApi:
    # Every Kubernetes API call is written down and fails: there is no cluster.
    def __getattr__(self, name):
        async def call(*args, **kwargs):
            with open({calls!r}, "a") as f:
                f.write(name + "\\n")
            raise ConnectionError("no cluster in this test")
        return call


kubespawner.spawner.load_config = lambda **kwargs: None
kubespawner.spawner.shared_client = kubespawner.reflector.shared_client = lambda *a, **k: RecordingApi()

c = get_config()
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {port}
c.JupyterHub.hub_port = {hub_port}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_port}"
c.ConfigurableHTTPProxy.command = [{chp!r}]
c.JupyterHub.db_url = "sqlite:///{data}/hub.sqlite"
c.JupyterHub.cookie_secret_file = "{data}/cookie_secret"
c.JupyterHub.pid_file = "{data}/hub.pid"
c.JupyterHub.authenticator_class = "hubforge.hub.auth.DemoAuthenticator"
c.JupyterHub.load_groups = {{
    "data-scientist": {{"users": ["alice"]}},
    "ml-engineer": {{"users": ["bob"]}},
    "ml-lead": {{"users": ["carol"]}},
}}
c.JupyterHub.services = [{{"name": "forger", "api_token": {token!r}}}]
c.JupyterHub.load_roles = [{{"name": "forger", "scopes": ["servers", "read:users"], "services": ["forger"]}}]
configure_kubespawner(c, load_config({platform!r}))
"""


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """A real JupyterHub (and proxy) with HubforgeKubeSpawner and a recording Kubernetes client."""
    chp = ROOT / "node_modules" / ".bin" / "configurable-http-proxy"
    if not chp.exists():
        pytest.skip("configurable-http-proxy is not installed (npm ci)")
    data = tmp_path_factory.mktemp("kubehub")
    platform = data / "platform.yaml"
    platform.write_text(yaml.safe_dump({"data_dir": str(data)}))
    token = "forger-" + "0123456789abcdef" * 2
    hub_port = free_port()
    (data / "jupyterhub_config.py").write_text(
        HUB_CONFIG.format(
            calls=str(data / "k8s-calls"),
            port=free_port(),
            hub_port=hub_port,
            proxy_port=free_port(),
            chp=str(chp),
            data=data,
            token=token,
            platform=str(platform),
        )
    )
    log = open(data / "hub.log", "wb")  # noqa: SIM115  # closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterhub", "-f", str(data / "jupyterhub_config.py")],
        cwd=data,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    api = httpx.Client(
        base_url=f"http://127.0.0.1:{hub_port}/hub/api", headers={"Authorization": f"token {token}"}, timeout=30
    )

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError((data / "hub.log").read_text())
        try:
            return api.get("/users/alice").status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, 60, "the hub to answer")
        yield SimpleNamespace(api=api, calls=data / "k8s-calls", log=data / "hub.log")
    finally:
        api.close()
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.mark.parametrize(
    ("user", "options", "status", "message"),
    [
        ("alice", {"profile": "finetune"}, 403, "tier 'finetune' is not open to you"),
        ("alice", {"profile": "training", "image": "evil/miner:latest"}, 400, "image 'evil/miner:latest' is not"),
        ("alice", {"profile": "training", "gpus": 64}, 400, "tier 'training' allows 1 to 4 GPUs, not 64"),
        ("bob", {"profile": "gpu-party"}, 400, "no such tier 'gpu-party'"),
    ],
)
def test_rest_api_refuses_forged_options_with_a_4xx(
    hub: SimpleNamespace, user: str, options: dict[str, Any], status: int, message: str
) -> None:
    resp = hub.api.post(f"/users/{user}/server", json=options)
    assert resp.status_code == status, resp.text
    assert message in resp.json()["message"]
    # Nothing runs, nothing is pending, and the hub never called the Kubernetes API.
    model = hub.api.get(f"/users/{user}").json()
    assert model["servers"] == {}
    assert not hub.calls.exists(), hub.calls.read_text()


def test_rest_api_passes_an_allowed_choice_on_to_the_cluster(hub: SimpleNamespace) -> None:
    # The contrast to the refusals above: an allowed choice does reach Kubernetes.
    resp = hub.api.post("/users/carol/server", json={"profile": "finetune", "gpus": "2"})
    assert resp.status_code not in (400, 403), resp.text
    wait_for(lambda: hub.calls.exists() and "list_namespaced_pod" in hub.calls.read_text(), 30, "a Kubernetes call")
