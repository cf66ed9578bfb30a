"""platform.yaml's tracking switch, run for real: the local spawner's process and a jupyter-server.

Both spawners put ``HUBFORGE_TRACKING=on|off`` into a server's environment; the
server extension hands it to every kernel. The local spawner starts a process that
writes its environment down; the last test runs the whole chain: a jupyter-server
with a tier's environment, a kernel executing cells over the websocket, a real MLflow
server. The config and the catalog alone are in tests/unit/test_tracking_switch.py.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.mlflow import MlflowServer
from harness.platform import wait_for
from harness.server import Server, notebook_session
from harness.tracking import config
from hubforge.catalog import load_catalog, tier_env
from hubforge.config import PlatformConfig
from hubforge.contract import TRACKING_ENV
from hubforge.spawner_profiles.local.spawner import LocalTierSpawner

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


# --- the real thing: a server, a kernel, MLflow -----------------------------------------------------------


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
