"""What `hubforge k8s render` writes, as the Zero to JupyterHub chart runs it.

The chart is vendored at one release (``spawner_profiles/kubernetes/vendor/z2jh``): our values are merged over
its own as helm merges them, checked against its values schema, and handed to its own
``jupyterhub_config.py`` (with our ``hub.extraConfig``), as the hub pod runs it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.config import OAUTH, kubernetes_platform
from hubforge.config import load_config
from hubforge.spawner_profiles.kubernetes.chart import chart_hub_config, chart_values, helm_merge, values_errors
from hubforge.spawner_profiles.kubernetes.render import render_k8s


@pytest.fixture(scope="module")
def deploy(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The rendered files (name -> YAML documents) and our values merged over the chart's."""
    tmp = tmp_path_factory.mktemp("chart")
    files = render_k8s(load_config(kubernetes_platform(tmp), environ={}), tmp / "out")
    rendered = {f.name: list(yaml.safe_load_all(f.read_text())) for f in files}
    (ours,) = rendered["helm-values.yaml"]
    (secret,) = [d for d in rendered["hubforge-platform.yaml"] if d["kind"] == "Secret"]
    mounted = tmp / "etc-hubforge"
    mounted.mkdir()
    (mounted / "platform.yaml").write_text(secret["stringData"]["platform.yaml"])
    return {"values": helm_merge(chart_values(), ours), "ours": ours, "config": mounted / "platform.yaml"}


@pytest.fixture
def hub_config(deploy: dict[str, Any], tmp_path: Path) -> Any:
    """The hub's configuration as the chart builds it from the merged values."""
    env = {"POD_NAMESPACE": "hubforge", "HUBFORGE_CONFIG": str(deploy["config"]), "HUBFORGE_DATA": str(tmp_path)}
    with chart_hub_config(deploy["values"], env, tmp_path) as c:
        yield c


def test_the_values_pass_the_charts_schema(deploy: dict[str, Any]) -> None:
    assert values_errors(deploy["values"]) == []


def test_roles_are_added_to_the_charts_and_the_culler_keeps_its_own(hub_config: Any) -> None:
    roles = {role["name"]: role for role in hub_config.JupyterHub.load_roles}
    culler = roles["jupyterhub-idle-culler"]
    assert culler["services"] == ["jupyterhub-idle-culler"]
    assert {"list:users", "read:users:activity", "read:servers", "delete:servers"} <= set(culler["scopes"])
    assert {"data-scientist", "ml-engineer", "ml-lead", "data-steward", "platform-admin"} <= set(roles)
    services = [s["name"] for s in hub_config.JupyterHub.services]
    assert "jupyterhub-idle-culler" in services and {"governance", "mlflow"} <= set(services)


def _service(hub_config: Any, name: str) -> dict[str, Any]:
    (found,) = [s for s in hub_config.JupyterHub.services if s["name"] == name]
    return dict(found)


def _ports_in(url: str) -> int:
    from urllib.parse import urlsplit

    port = urlsplit(url).port
    assert port is not None, url
    return port


def test_peoples_pods_may_reach_every_service_they_are_pointed_at(deploy: dict[str, Any], hub_config: Any) -> None:
    """The chart's singleuser NetworkPolicy lets pods reach the hub's port 8081 only; the
    services' URLs people's pods get (MLflow, governance, ...) are on the hub pod too."""
    singleuser = deploy["values"]["singleuser"]
    urls = [v for k, v in singleuser["extraEnv"].items() if k.endswith("_URL") and v.startswith("http://hub:")]
    assert any(k == "HUBFORGE_MLFLOW_URL" for k in singleuser["extraEnv"]), singleuser["extraEnv"]
    wanted = {_ports_in(url) for url in urls}
    hub_pod = {"app": "jupyterhub", "component": "hub", "release": "hubforge", "app.kubernetes.io/component": "hub"}
    allowed = {
        port["port"]
        for rule in singleuser["networkPolicy"]["egress"]
        if any(set(to["podSelector"]["matchLabels"].items()) <= set(hub_pod.items()) for to in rule["to"])
        for port in rule["ports"]
    }
    assert wanted and wanted <= allowed, (wanted, allowed)
    # The services listen there: the hub pod's own services, on those ports.
    listening = {_ports_in(_service(hub_config, n)["url"]) for n in ("mlflow", "governance")}
    assert listening <= allowed


def test_mlflow_takes_browsers_at_the_public_address(hub_config: Any) -> None:
    command = _service(hub_config, "mlflow")["command"]
    hosts = command[command.index("--allowed-hosts") + 1].split(",")
    assert "hub.example.org" in hosts
    assert command[command.index("--cors-allowed-origins") + 1] == "https://hub.example.org"


def test_kubernetes_needs_the_public_address(tmp_path: Path) -> None:
    from hubforge.errors import ConfigError

    path = tmp_path / "platform.yaml"
    path.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "data"), "auth": OAUTH}))
    with pytest.raises(ConfigError, match=r"hub.public_url: required on Kubernetes"):
        render_k8s(load_config(path, environ={}), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_queued_spawn_waits_as_long_as_the_queue(hub_config: Any) -> None:
    from hubforge.catalog import QUEUE_WAIT_S

    assert hub_config.KubeSpawner.start_timeout == QUEUE_WAIT_S


def test_the_image_pullers_are_off(deploy: dict[str, Any]) -> None:
    puller = deploy["values"]["prePuller"]
    assert (puller["hook"]["enabled"], puller["continuous"]["enabled"], puller["pullProfileListImages"]) == (
        False,
        False,
        False,
    )


def test_a_tier_adds_its_placement_to_the_charts(deploy: dict[str, Any], hub_config: Any) -> None:
    """The chart makes people's pods tolerate its user-node taint; a GPU tier adds its own
    toleration and node selector to the chart's, not in their place."""
    import asyncio

    from hubforge.spawner_profiles.kubernetes.spawner import offline_spawner

    cfg = load_config(deploy["config"], environ={})
    chart_tolerations = list(hub_config.KubeSpawner.tolerations)
    assert chart_tolerations, "the chart's user-pod tolerations"

    async def pod() -> tuple[list[dict[str, Any]], dict[str, Any]]:
        async with offline_spawner(cfg, "alice", config=hub_config) as spawner:
            spawner.user_options = {"profile": "training", "gpus": "1"}
            await spawner.load_user_options()
            return list(spawner.tolerations), dict(spawner.node_selector)

    tolerations, selector = asyncio.run(pod())
    assert tolerations[: len(chart_tolerations)] == chart_tolerations
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in tolerations
    assert selector["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"


def test_the_platforms_data_has_a_volume_of_its_own(deploy: dict[str, Any], tmp_path: Path) -> None:
    """Not the chart's 1Gi hub database volume: a claim of its own, mounted at the data folder."""
    from hubforge.spawner_profiles.kubernetes.render import HUB_DATA_DIR

    hub = deploy["values"]["hub"]
    (mount,) = [m for m in hub["extraVolumeMounts"] if m["mountPath"] == str(HUB_DATA_DIR)]
    (volume,) = [v for v in hub["extraVolumes"] if v["name"] == mount["name"]]
    claim = volume["persistentVolumeClaim"]["claimName"]
    assert claim != "hub-db-dir"
    assert hub["db"]["pvc"]["storage"] == "1Gi", "the chart's own volume stays as it is"
    assert values_errors(deploy["values"]) == []


def test_profiles_render_shows_the_pod_the_chart_makes() -> None:
    """`hubforge profiles render` builds the pod as the hub pod would: the chart's configuration
    (labels, user scheduler, security context, home volume, metadata-blocking init container,
    the services' addresses) with the tier's on top, and it is a valid Pod."""
    import kubernetes_validate

    from hubforge.spawner_profiles.kubernetes.spawner import QUEUE_LABEL, render_pod

    pod = render_pod(load_config(environ={}), "alice", "training", {"gpus": "1"})
    kubernetes_validate.validate(pod, "1.35.0", strict=True)
    labels = pod["metadata"]["labels"]
    assert labels["component"] == labels["app.kubernetes.io/component"] == "singleuser-server"
    assert labels["app"] == "jupyterhub" and labels["release"] == "hubforge"
    assert labels["hub.jupyter.org/network-access-hub"] == "true"
    assert labels["hubforge.dev/tier"] == "training" and labels[QUEUE_LABEL] == "training-data-scientist"
    spec = pod["spec"]
    assert spec["schedulerName"] == "user-scheduler"
    assert spec["securityContext"] == {"fsGroup": 100}
    assert [v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"]] == ["claim-alice"]
    assert [c["name"] for c in spec["initContainers"]] == ["block-cloud-metadata"]
    (container,) = spec["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["HUBFORGE_MLFLOW_URL"].startswith("http://hub:") and env["HUBFORGE_TIER"] == "training"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_services_get_a_start_timeout_only_from_a_jupyterhub_that_has_the_field(hub_config: Any) -> None:
    """The chart's hub runs JupyterHub 5.5, which refuses a service's ``timeout`` (6.0 added
    it): the values leave it out and the hub adds it where its own JupyterHub knows it."""
    from hubforge.hub.compat import service_timeouts
    from hubforge.hub.services import SERVICE_START_TIMEOUT

    services = {s["name"]: s for s in hub_config.JupyterHub.services}
    expected = SERVICE_START_TIMEOUT if service_timeouts() else None
    assert services["mlflow"].get("timeout") == expected
    assert "timeout" not in services["jupyterhub-idle-culler"]


def test_the_hub_runs_the_hubforge_hub_image(deploy: dict[str, Any], tmp_path: Path) -> None:
    """The chart's own hub image has no hubforge: the values name ours, and a render without
    one is refused in one line."""
    from harness.config import HUB_IMAGE
    from hubforge.errors import ConfigError

    image = deploy["values"]["hub"]["image"]
    assert (image["name"], image["tag"]) == tuple(HUB_IMAGE.rsplit(":", 1))
    path = tmp_path / "platform.yaml"
    data = {"data_dir": str(tmp_path / "data"), "hub": {"public_url": "https://hub.example.org"}, "auth": OAUTH}
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"spawner.kubernetes.hub_image: required on Kubernetes") as info:
        render_k8s(load_config(path, environ={}), tmp_path / "out")
    assert "\n" not in str(info.value)


def test_every_service_command_resolves_in_the_hub_image(hub_config: Any) -> None:
    """The hub pod starts each service by its command: a module of hubforge (``python3 -m``),
    or a console script of a package the hub image installs with hubforge (MLflow's)."""
    import importlib.util
    from importlib.metadata import distribution, entry_points

    requires = {r.split(";")[0].split("[")[0].split("=")[0].split(">")[0].split("<")[0].strip().lower()
                for r in distribution("hubforge").requires or []}  # fmt: skip
    scripts = {ep.name: ep for ep in entry_points(group="console_scripts")}
    ours = [s for s in hub_config.JupyterHub.services if s["name"] != "jupyterhub-idle-culler"]
    assert {s["name"] for s in ours} >= {"governance", "mlflow"}
    for service in ours:
        command = service["command"]
        if command[:2] == ["python3", "-m"]:
            assert importlib.util.find_spec(command[2]) is not None, command
        else:
            script = scripts.get(command[0])
            assert script is not None and script.dist is not None, command
            assert script.dist.metadata["Name"].lower() in requires, f"{command[0]} comes with hubforge's requirements"
