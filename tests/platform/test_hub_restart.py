"""The hub killed, the proxy killed, the hub upgraded: nobody's notebook stops; Ctrl-C stops all.

alice works in a notebook on a GPU server while the hub dies outright (kill -9): her
cells keep running over the open websocket while the hub is away, `hubforge up`
starts the hub again, and the new hub finds her server (same process, same kernel,
same variables, same GPU) and the proxy that kept routing to it. The proxy killed:
the hub starts another and restores her route; her kernel lives on. An upgrade
(`hubforge up --keep-servers`, stopped and started again): her kernel runs cells
throughout and is hers again afterwards. Last, the platform that went through all
that is stopped with Ctrl-C while a notebook of the corpus is open: every process it
started stops (the launcher's SIGINT checks) and the notebook's run ends FINISHED.

The tests share one platform start, in this order; each leaves the platform as it
found it, but the last, which stops it.
"""

from __future__ import annotations

import signal
import sqlite3
import time
from collections.abc import Iterator

import httpx
import psutil
import pytest

from harness.corpus import FOLDER, Lab, code_of
from harness.faults import alices_notebook, ran, server_ready
from harness.platform import PROBE, HubSession, PlatformProcess, api, assert_all_stopped, wait_for
from harness.server import KernelChannel
from hubforge.hub.handover import user_servers
from hubforge.hub.launcher import instance_processes

GPU_MACHINE = {
    "spawner": {
        "local": {
            "gpus": [{"model": "nvidia-h100-80gb", "count": 1}],
            "environments": {"scipy": "platform", "pytorch": "platform"},
            "poll_interval": 1,
        }
    }
}


def hub_answers(platform: PlatformProcess) -> bool:
    try:
        return PROBE.get(f"{platform.url}/hub/health").status_code == 200
    except httpx.HTTPError:
        return False


def cells_while_the_hub_is_away(platform: PlatformProcess, kernel: KernelChannel, wait_down: bool) -> int:
    """Run ``n += 1`` cells, at a person's pace, until the hub answers again; how many ran while it
    did not. ``wait_down``: first run them until it stops answering."""
    away = 0
    if wait_down:
        while hub_answers(platform):
            assert kernel.execute("n += 1").status == "ok"
            time.sleep(0.1)
    deadline = time.monotonic() + 180
    while not hub_answers(platform):
        assert time.monotonic() < deadline, f"the hub did not come back:\n{platform.log_tail()}"
        assert kernel.execute("n += 1").status == "ok", "a cell failed while the hub was away"
        away += 1
        time.sleep(0.2)
    return away


def status_of(http: httpx.Client, path: str) -> int | None:
    """The answer's status; None while nothing listens (the proxy is down)."""
    try:
        return http.get(path).status_code
    except httpx.TransportError:
        return None


def gpus_held(platform: PlatformProcess) -> dict[str, str]:
    """The GPU allocator's allocations (server -> GPUs), as the hub keeps them."""
    with sqlite3.connect(platform.data_dir / "gpus.sqlite") as db:
        return dict(db.execute("SELECT server_key, gpus FROM allocations").fetchall())


def servers_of(platform: PlatformProcess) -> set[int]:
    return {p.pid for p in user_servers(instance_processes(str(platform.data_dir.resolve())))}


def proxy_pid(platform: PlatformProcess) -> int | None:
    """The proxy's pid as the hub wrote it; None while the hub replaces the file."""
    try:
        return int((platform.data_dir / "proxy.pid").read_text())
    except (OSError, ValueError):
        return None


@pytest.fixture(scope="module")
def gpu_machine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformProcess]:
    """One platform on a one-GPU machine, started with ``--keep-servers`` as for an upgrade, for
    every test of this module. Each leaves it as it found it (the hub back, nobody's server
    running), so they share one start. The upgrade starts it again without the flag; the
    Ctrl-C test, last, stops it; the stop here ends everything should that one not run."""
    platform = PlatformProcess(tmp_path_factory.mktemp("gpu-machine") / "data", GPU_MACHINE)
    platform.start("--keep-servers")
    try:
        platform.wait_ready()
        yield platform
    finally:
        without_keep_servers(platform)
        code = platform.stop()
    assert code == 0, platform.log_tail()
    assert instance_processes(str(platform.data_dir.resolve())) == []


def without_keep_servers(platform: PlatformProcess) -> None:
    """Start ``platform`` again without ``--keep-servers`` if it still runs with it (the
    upgrade, which does that, did not run), so that its next stop ends everything."""
    assert platform.proc is not None
    if platform.proc.poll() is None and "--keep-servers" in platform.proc.args:
        platform.stop()
        platform.start()
        platform.wait_ready()


def test_the_hub_and_the_proxy_killed_cost_alice_nothing(gpu_machine: PlatformProcess) -> None:
    platform = gpu_machine
    with alices_notebook(platform.url, {"profile": "training", "gpus": 1}) as (http, kernel):
        assert ran(kernel, "x = 41; n = 0") == ""
        held, servers, proxy = gpus_held(platform), servers_of(platform), proxy_pid(platform)
        assert list(held) == ["alice/"], "her server holds the machine's GPU"

        psutil.Process(int((platform.data_dir / "jupyterhub.pid").read_text())).kill()
        assert cells_while_the_hub_is_away(platform, kernel, wait_down=True) > 0, "her cells ran meanwhile"

        assert ran(kernel, "print(x + 1, n > 0)") == "42 True", "the same kernel, with its variables"
        assert servers_of(platform) == servers and proxy_pid(platform) == proxy, "the same processes"
        assert http.get("/hub/api/users/alice").json()["servers"][""]["ready"], "the new hub has her server"
        assert http.get("/user/alice/api/status").status_code == 200, "her token works through the new hub"
        assert gpus_held(platform) == held, "her GPU stays hers"
        wait_for(platform.ready, 120, "the governance service and MLflow to answer again")
        log = platform.log_path.read_text()
        assert "the hub exited with signal SIGKILL" in log and "the hub is back after" in log

        # The proxy killed: the hub starts another and routes alice to her server again; her
        # websocket went with the proxy, her kernel did not.
        assert proxy is not None
        psutil.Process(proxy).kill()
        wait_for(lambda: proxy_pid(platform) not in (None, proxy), 60, "the hub to start the proxy again")
        wait_for(lambda: status_of(http, "/user/alice/api/status") == 200, 60, "her route back")
        (running,) = http.get("/user/alice/api/kernels").json()
        ws = platform.url.replace("http", "ws", 1) + f"/user/alice/api/kernels/{running['id']}/channels"
        reconnected = KernelChannel(ws, http.headers["Authorization"])
        try:
            assert ran(reconnected, "print(x + 1)") == "42"
        finally:
            reconnected.close()
    assert not gpus_held(platform), "her GPU is free once her server stopped"


def test_a_spawn_waiting_for_gpus_when_the_hub_dies_waits_on_after_it(gpu_machine: PlatformProcess) -> None:
    """bob holds the machine's one GPU; alice asks for one and waits in the queue; the hub is
    killed. The restarted hub asks for alice's spawn again, in her place; when bob stops,
    she gets the GPU, and the allocations are exactly the running servers'."""
    platform = gpu_machine
    people = {name: HubSession(platform.url) for name in ("alice", "bob")}
    try:
        wait_for(platform.ready, 120, "the platform to answer")
        assert all(session.login(name).status_code == 302 for name, session in people.items())
        bob = api(platform.url, people["bob"].new_token("bob"))
        alice = api(platform.url, people["alice"].new_token("alice"))
        training = {"profile": "training", "gpus": 1}
        assert bob.post("/hub/api/users/bob/server", json=training).status_code in (201, 202)
        wait_for(lambda: server_ready(bob, "bob"), 180, "bob's server")
        assert alice.post("/hub/api/users/alice/server", json=training).status_code == 202
        wait_for(lambda: pending(alice, "alice") == "spawn", 30, "alice's spawn to wait")
        assert list(gpus_held(platform)) == ["bob/"]

        psutil.Process(int((platform.data_dir / "jupyterhub.pid").read_text())).kill()
        wait_for(lambda: not hub_answers(platform), 30, "the hub to go")
        wait_for(lambda: hub_answers(platform), 180, "the hub to come back")

        wait_for(lambda: pending(alice, "alice") == "spawn", 120, "alice's spawn to be asked for again")
        assert server_ready(bob, "bob") and list(gpus_held(platform)) == ["bob/"], "bob keeps his GPU"
        asked = "Asked again for the spawn of alice"
        wait_for(lambda: asked in platform.log_path.read_text(), 60, "the hub to say it asked again")
        assert [t["note"] for t in alice.get("/hub/api/users/alice/tokens").json()["api_tokens"]].count(
            "hubforge: a queued spawn asked for again after a hub restart"
        ) == 0, "the token that asked for it is gone"

        assert bob.delete("/hub/api/users/bob/server").status_code in (202, 204)
        wait_for(lambda: server_ready(alice, "alice"), 180, "alice's server, once bob's GPU is free")
        assert list(gpus_held(platform)) == ["alice/"], "the allocations are the running servers'"
        alice.delete("/hub/api/users/alice/server")
        wait_for(lambda: not gpus_held(platform), 120, "her GPU back")
    finally:
        for session in people.values():
            session.close()


def pending(http: httpx.Client, user: str) -> str | None:
    """What the hub says the user's default server is pending (spawn, stop), if anything."""
    try:
        found = http.get(f"/hub/api/users/{user}")
    except httpx.TransportError:
        return None
    return found.json()["servers"].get("", {}).get("pending") if found.status_code == 200 else None


def test_an_upgrade_restart_with_keep_servers_keeps_everybodys_work(gpu_machine: PlatformProcess) -> None:
    """The documented upgrade: `hubforge up --keep-servers` stopped (SIGTERM, as systemd stops
    it) and started again, on a platform whose hub and proxy were killed and came back. alice's
    cells run throughout; afterwards her server, kernel and variables are hers as before, and
    a normal stop then stops everything (the fixture's)."""
    platform = gpu_machine
    with alices_notebook(platform.url, {"profile": "interactive"}) as (http, kernel):
        assert ran(kernel, "x = 41; n = 0") == ""
        servers, proxy = servers_of(platform), proxy_pid(platform)

        assert platform.stop(signal.SIGTERM) == 0, platform.log_tail()
        assert not hub_answers(platform), "the hub is stopped"
        assert servers_of(platform) == servers and psutil.pid_exists(proxy), "her server and the proxy are not"
        assert ran(kernel, "n += 1; print(x + n)") == "42", "her notebook works while the hub is away"
        assert (platform.data_dir / "handover.json").exists()

        platform.start()  # the upgraded platform (without the flag: its own stop will end everything)
        assert cells_while_the_hub_is_away(platform, kernel, wait_down=False) >= 0
        platform.wait_ready()
        assert ran(kernel, "print(x, n > 0)") == "41 True", "the same kernel, with its variables"
        assert servers_of(platform) == servers and proxy_pid(platform) == proxy, "taken over, not restarted"
        assert http.get("/user/alice/api/status").status_code == 200, "her token works through the new hub"
        assert "Taking over the proxy and 1 server(s)" in platform.log_path.read_text()
        wait_for(lambda: not (platform.data_dir / "handover.json").exists(), 30, "the handover to be done")


def test_ctrl_c_of_the_platform_ends_an_open_notebooks_run(gpu_machine: PlatformProcess) -> None:
    """`hubforge up` stopped with Ctrl-C while alice's notebook is open: every process it started
    stops, and the notebook's run ends FINISHED."""
    from mlflow import MlflowClient

    platform = gpu_machine
    without_keep_servers(platform)
    try:
        session = HubSession(platform.url)
        assert session.login("alice").status_code == 302
        with api(platform.url, session.new_token("alice", note="ctrl-c")) as http:
            http.timeout = httpx.Timeout(120)
            assert http.post("/hub/api/users/alice/server").status_code in (201, 202)
            wait_for(lambda: http.get("/hub/api/users/alice").json()["servers"].get("", {}).get("ready"), 120, "server")
            lab = Lab(http)
            _, kernel = lab.open(lab.upload("print_then_train.ipynb"))
            said = lab.run(kernel, code_of("print_then_train.ipynb"), 0.5)
            assert [e.status for e in said] == ["ok"] * 4
            kernel.close()
        session.close()
    finally:
        assert platform.stop(signal.SIGINT, timeout=120) == 0, platform.log_tail()
    assert_all_stopped(platform)
    # The platform is down: read MLflow's own store and artifact folder.
    store = MlflowClient(f"sqlite:///{platform.data_dir / 'mlflow.sqlite'}")
    exp = store.get_experiment_by_name(f"/Users/alice/{FOLDER}/print_then_train.ipynb")
    runs = store.search_runs([exp.experiment_id])
    (top,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert top.info.status == "FINISHED", platform.log_tail()
    folder = platform.data_dir / "mlartifacts" / exp.experiment_id / top.info.run_id / "artifacts"
    assert (folder / "notebook" / "print_then_train.ipynb").is_file()
    assert "scikit-learn==" in (folder / "environment" / "requirements.txt").read_text()
    fits = {r.info.run_name: r.info.status for r in runs if r.data.tags.get("mlflow.parentRunId") == top.info.run_id}
    assert fits == {"DecisionTreeClassifier": "FINISHED", "KNeighborsClassifier": "FINISHED"}, platform.log_tail(300)
