"""platform.yaml switches notebook tracking off, globally or per tier, and the kernels obey.

``tracking.enabled`` is the platform's switch, a tier's ``tracking`` overrides
it for servers on that tier. Both spawners put ``HUBFORGE_TRACKING=on|off``
into a server's environment; the server extension hands it to every kernel.
The last test runs the whole chain for real: a jupyter-server with a tier's
environment, a kernel executing cells over the websocket, a real MLflow server.
"""

from __future__ import annotations

import asyncio
import copy
import json
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import websocket
import yaml
from test_kernel_queue import MlflowServer
from test_server_extension import Server

from _platform import wait_for
from hubforge.config import PlatformConfig, default_config_text, load_config, merge, validate
from hubforge.contract import TRACKING_ENV
from hubforge.errors import ConfigError
from hubforge.spawner_profiles.catalog import load_catalog, tier_env
from hubforge.spawner_profiles.kube import offline_spawner, profile_for, render_pod
from hubforge.spawner_profiles.local import LocalTierSpawner

DEFAULT = yaml.safe_load(default_config_text())


def config(tracking: bool | None = None, **tier_tracking: bool) -> PlatformConfig:
    """The default config with ``tracking.enabled`` and some tiers' ``tracking`` set.

    A tier named here but not in the default is a copy of ``interactive``
    (CPU by default, open to every persona, never queued).
    """
    tiers = copy.deepcopy(DEFAULT["tiers"])
    for slug, value in tier_tracking.items():
        tiers.setdefault(slug, copy.deepcopy(DEFAULT["tiers"]["interactive"]))["tracking"] = value
    overrides: dict[str, Any] = {"tiers": tiers}
    if tracking is not None:
        overrides["tracking"] = {"enabled": tracking}
    data = merge(DEFAULT, overrides)
    validate(data, "platform.yaml")
    return PlatformConfig(data=data, source="platform.yaml", data_dir=Path("/nonexistent"))


def tracking_of(cfg: PlatformConfig) -> dict[str, bool]:
    return {tier.slug: tier.tracking for tier in load_catalog(cfg)}


# --- the config ----------------------------------------------------------------------------------


def test_tracking_is_on_by_default_everywhere() -> None:
    cfg = load_config(environ={})
    assert cfg.data["tracking"] == {"enabled": True}
    assert set(tracking_of(cfg).values()) == {True}
    assert "tracking:\n  enabled: true" in default_config_text()


def with_tier_tracking(value: Any) -> dict[str, Any]:
    """The default tiers (``tiers`` replace the default whole) with ``interactive.tracking`` set."""
    tiers = copy.deepcopy(DEFAULT["tiers"])
    tiers["interactive"]["tracking"] = value
    return {"tiers": tiers}


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"tracking": {"enabled": "sometimes"}}, "tracking.enabled: 'sometimes' is not of type 'boolean'"),
        ({"tracking": {"enabled": 1}}, "tracking.enabled: 1 is not of type 'boolean'"),
        ({"tracking": False}, "tracking: False is not of type 'object'"),
        ({"tracking": {"enable": False}}, "tracking.enable: unknown key"),
        (with_tier_tracking("off"), "tiers.interactive.tracking: 'off' is not of type 'boolean'"),
    ],
)
def test_bad_values_are_one_line_naming_file_and_key(tmp_path: Path, overrides: dict, expected: str) -> None:
    path = tmp_path / "platform.yaml"
    path.write_text(yaml.safe_dump(overrides))
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert str(info.value) == f"{path}: {expected}"


def test_yaml_on_and_off_are_booleans(tmp_path: Path) -> None:
    # YAML 1.1 (PyYAML) reads an unquoted off as false: what an admin would write.
    path = tmp_path / "platform.yaml"
    path.write_text("tracking: {enabled: off}\n")
    assert set(tracking_of(load_config(path, environ={})).values()) == {False}


# --- the tier overrides the platform, both ways ------------------------------------------------------


def test_a_tier_switches_tracking_off_under_a_global_on() -> None:
    assert tracking_of(config(True, training=False)) == {
        "interactive": True,
        "training": False,
        "hpo": True,
        "finetune": True,
    }


def test_a_tier_switches_tracking_on_under_a_global_off() -> None:
    assert tracking_of(config(False, interactive=True)) == {
        "interactive": True,
        "training": False,
        "hpo": False,
        "finetune": False,
    }


def test_without_mlflow_on_the_platform_nothing_is_tracked() -> None:
    cfg = config(True, interactive=True)
    data = merge(cfg.data, {"services": {"mlflow": {"enabled": False}}})
    off = PlatformConfig(data=data, source="platform.yaml", data_dir=Path("/nonexistent"))
    assert set(tracking_of(off).values()) == {False}


def test_tier_env_carries_the_switch() -> None:
    catalog = load_catalog(config(True, quiet=False))
    assert tier_env(catalog.get("quiet")) == {"HUBFORGE_TIER": "quiet", TRACKING_ENV: "off"}
    assert tier_env(catalog.get("interactive")) == {"HUBFORGE_TIER": "interactive", TRACKING_ENV: "on"}


# --- the local spawner --------------------------------------------------------------------------------

#: A "server" that writes its environment to $HOME/env.json and waits to be stopped.
DUMP_ENV = (
    "import json, os, signal, sys, time\n"
    "signal.signal(signal.SIGINT, lambda *_: sys.exit(0))\n"
    "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
    "path = os.path.join(os.environ['HOME'], 'env.json')\n"
    "open(path + '.tmp', 'w').write(json.dumps(dict(os.environ)))\n"
    "os.replace(path + '.tmp', path)\n"
    "time.sleep(120)\n"
)


def local_spawner(cfg: PlatformConfig, tmp_path: Path, groups: list[str]) -> LocalTierSpawner:
    """A LocalTierSpawner configured as the hub configures it, for a user in ``groups``."""
    user = SimpleNamespace(
        name="alice", escaped_name="alice", url="/user/alice/", groups=[SimpleNamespace(name=g) for g in groups]
    )
    hub = SimpleNamespace(public_host="", base_url="/hub/", api_url="http://127.0.0.1:1/hub/api")
    return LocalTierSpawner(
        user=user,
        hub=hub,
        tier_catalog=load_catalog(cfg),
        group_personas=cfg.group_personas(),
        gpu_db=str(tmp_path / "gpus.sqlite"),
        home_dir_template=str(tmp_path / "users" / "{username}"),
        cmd=[sys.executable, "-c", DUMP_ENV],
        environment={"HUBFORGE_MLFLOW_URL": "http://127.0.0.1:1/services/mlflow"},
    )


async def spawned_env(spawner: LocalTierSpawner, tier: str) -> dict[str, str]:
    """Start ``spawner`` on ``tier`` and return the environment its process got; stop it."""
    dump = Path(spawner.home_dir) / "env.json"
    dump.unlink(missing_ok=True)
    spawner.user_options = {"profile": tier}
    spawner.tier_choice = None
    await spawner.start()
    try:
        for _ in range(300):
            if dump.exists():
                return dict(json.loads(dump.read_text()))
            await asyncio.sleep(0.05)
        raise TimeoutError(f"the server on {tier} wrote no environment")
    finally:
        await spawner.stop(now=True)
        spawner.clear_state()


def test_local_spawner_puts_the_tiers_switch_into_the_servers_environment(tmp_path: Path) -> None:
    spawner = local_spawner(config(True, quiet=False), tmp_path, ["data-scientist"])

    async def both() -> tuple[dict[str, str], dict[str, str]]:
        # One spawner object, reused as the hub reuses it: the second tier must not inherit the first's off.
        return await spawned_env(spawner, "quiet"), await spawned_env(spawner, "interactive")

    quiet, interactive = asyncio.run(both())
    assert (quiet["HUBFORGE_TIER"], quiet[TRACKING_ENV]) == ("quiet", "off")
    assert (interactive["HUBFORGE_TIER"], interactive[TRACKING_ENV]) == ("interactive", "on")
    # The hub's own settings stay beside the switch.
    assert quiet["HUBFORGE_MLFLOW_URL"] == interactive["HUBFORGE_MLFLOW_URL"] == "http://127.0.0.1:1/services/mlflow"


# --- Kubernetes -----------------------------------------------------------------------------------------


def container_env(pod: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}


def test_kube_profile_and_rendered_pod_carry_the_switch() -> None:
    cfg = config(False, interactive=True)
    catalog = load_catalog(cfg)
    training = profile_for(catalog.get("training"))
    assert training["kubespawner_override"]["environment"] == {"HUBFORGE_TIER": "training", TRACKING_ENV: "off"}
    assert container_env(render_pod(cfg, "alice", "training"))[TRACKING_ENV] == "off"
    assert container_env(render_pod(cfg, "alice", "interactive"))[TRACKING_ENV] == "on"


def test_kube_spawner_reused_across_tiers_resets_the_switch() -> None:
    cfg = config(True, training=False)

    async def environments() -> list[dict[str, Any]]:
        seen = []
        async with offline_spawner(cfg, "alice") as spawner:
            for tier in ("training", "interactive"):
                spawner.user_options = {"profile": tier}
                await spawner.load_user_options()
                seen.append(dict(spawner.environment))
        return seen

    training, interactive = asyncio.run(environments())
    assert (training["HUBFORGE_TIER"], training[TRACKING_ENV]) == ("training", "off")
    assert (interactive["HUBFORGE_TIER"], interactive[TRACKING_ENV]) == ("interactive", "on")


# --- the real thing: a server, a kernel, MLflow -----------------------------------------------------------


@dataclass
class Execution:
    """What one executed cell answered: the reply's status and the text it printed."""

    status: str
    stdout: str
    stderr: str


class KernelChannel:
    """A kernel's websocket (``/api/kernels/<id>/channels``), spoken as JupyterLab speaks it.

    jupyter_server's default (JSON) websocket protocol: each message is a
    Jupyter message with a ``channel`` key.
    """

    def __init__(self, ws_url: str, authorization: str, timeout: float = 120):
        self.session = uuid.uuid4().hex
        self.timeout = timeout
        self.ws = websocket.create_connection(
            f"{ws_url}?session_id={self.session}", header=[f"Authorization: {authorization}"], timeout=timeout
        )

    def close(self) -> None:
        self.ws.close()

    def execute(self, code: str) -> Execution:
        """Run ``code``; wait for its reply and for the kernel to go idle."""
        msg_id = uuid.uuid4().hex
        header = {
            "msg_id": msg_id,
            "msg_type": "execute_request",
            "session": self.session,
            "username": "test",
            "date": datetime.now(UTC).isoformat(),
            "version": "5.3",
        }
        content = {"code": code, "silent": False, "store_history": True, "user_expressions": {}}
        content.update(allow_stdin=False, stop_on_error=True)
        message = {"header": header, "parent_header": {}, "metadata": {}, "content": content, "channel": "shell"}
        self.ws.send(json.dumps(message))
        streams: dict[str, list[str]] = {"stdout": [], "stderr": []}
        reply: dict[str, Any] | None = None
        idle = False
        while reply is None or not idle:
            msg = json.loads(self.ws.recv())
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, body = msg["msg_type"], msg["content"]
            if kind == "stream":
                streams[body["name"]].append(body["text"])
            elif kind == "error":
                streams["stderr"].append("\n".join(body.get("traceback", [])))
            elif kind == "execute_reply":
                reply = body
            elif kind == "status" and body["execution_state"] == "idle":
                idle = True
        return Execution(reply["status"], "".join(streams["stdout"]), "".join(streams["stderr"]))


@contextmanager
def notebook_session(http: httpx.Client, prefix: str, path: str) -> Iterator[KernelChannel]:
    """A notebook session on a jupyter-server's REST API, with its kernel's websocket.

    ``http`` carries the base URL and the Authorization header; ``prefix`` is
    the server's URL prefix (``/user/alice`` behind the hub, ``""`` alone).
    Leaving deletes the session, which shuts the kernel down (and so ends the run).
    """
    body = {"path": path, "name": Path(path).name, "type": "notebook", "kernel": {"name": "python3"}}
    resp = http.post(f"{prefix}/api/sessions", json=body)
    assert resp.status_code == 201, resp.text
    session = resp.json()
    base = str(http.base_url).rstrip("/").replace("http", "ws", 1)
    ws_url = f"{base}{prefix}/api/kernels/{session['kernel']['id']}/channels"
    channel = KernelChannel(ws_url, http.headers["Authorization"])
    try:
        yield channel
    finally:
        channel.close()
        deleted = http.delete(f"{prefix}/api/sessions/{session['id']}", timeout=90)
        assert deleted.status_code == 204, deleted.text


@pytest.mark.parametrize(("tier", "runs"), [("quiet", 0), ("interactive", 1)])
def test_a_server_on_a_tier_with_tracking_off_creates_no_run(
    mlflow_server: MlflowServer, tmp_path: Path, tier: str, runs: int
) -> None:
    from mlflow import MlflowClient

    # What the hub gives a server on the tier (tier_env), pointed at a real MLflow.
    choice = load_catalog(config(True, quiet=False)).get(tier)
    env = {
        **tier_env(choice),
        "HUBFORGE_MLFLOW_URL": mlflow_server.url,
        "JUPYTERHUB_USER": "alice",
        "HUBFORGE_SPOOL_DIR": str(tmp_path / "spool"),
    }
    server = Server(tmp_path / "server", env)
    try:
        path = server.notebook(f"{tier}.ipynb")
        with notebook_session(server.http, "", path) as kernel:
            cells = [kernel.execute(code) for code in ("x = 41 + 1", "print(x)", "%hubforge_tracking status")]
        assert [c.status for c in cells] == ["ok"] * 3, cells
        assert cells[1].stdout == "42\n"
        assert f"tracking: {'on' if runs else 'off'}" in cells[2].stdout, cells[2]
    finally:
        server.stop()
    client = MlflowClient(mlflow_server.url)
    name = f"/Users/alice/{path}"
    if runs:
        exp = wait_for(lambda: client.get_experiment_by_name(name), 30, f"experiment {name}")
        found = client.search_runs([exp.experiment_id])
        assert [r.data.tags["hubforge.tier"] for r in found] == [tier]
    else:
        assert client.get_experiment_by_name(name) is None
        everything = client.search_runs([e.experiment_id for e in client.search_experiments()])
        assert not [r for r in everything if r.data.tags.get("hubforge.tier") == tier]
