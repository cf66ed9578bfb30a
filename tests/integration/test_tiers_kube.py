"""KubeSpawner from the tier catalog, for real: a fresh interpreter, and the REST API of a real hub.

No cluster: the hub's Kubernetes client records every call instead of reaching one.
Profiles, refused forgeries and pod manifests, in process, are in tests/unit/test_tiers_kube.py.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import yaml

from harness.platform import free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]


def test_render_needs_no_kubeconfig(tmp_path: Path) -> None:
    # A fresh interpreter with HOME and KUBECONFIG pointing at nothing.
    script = (
        "from hubforge.config import load_config\n"
        "from hubforge.spawner_profiles.kubernetes.spawner import render_pod\n"
        "print(render_pod(load_config(), 'bob', 'training', {'gpus': '2'})['metadata']['name'])\n"
    )
    env = {"HOME": str(tmp_path), "KUBECONFIG": str(tmp_path / "missing"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "jupyter-bob"


# --- the REST API of a real hub -----------------------------------------------------------

HUB_CONFIG = """\
import kubespawner.reflector
import kubespawner.spawner

from hubforge.config import load_config
from hubforge.spawner_profiles.kubernetes.spawner import configure_kubespawner


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
