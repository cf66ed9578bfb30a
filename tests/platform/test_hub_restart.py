"""The hub killed, the proxy killed, the hub upgraded: nobody's notebook stops.

alice works in a notebook on a GPU server while the hub dies outright (kill -9): her
cells keep running over the open websocket while the hub is away, `hubforge up`
starts the hub again, and the new hub finds her server (same process, same kernel,
same variables, same GPU) and the proxy that kept routing to it. The proxy killed:
the hub starts another and restores her route; her kernel lives on. An upgrade
(`hubforge up --keep-servers`, stopped and started again): her kernel runs cells
throughout and is hers again afterwards.
"""

from __future__ import annotations

import signal
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil

from harness.platform import HubSession, PlatformProcess, api, wait_for
from harness.server import KernelChannel, notebook_session
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


@contextmanager
def alices_notebook(platform: PlatformProcess, spawn: dict) -> Iterator[tuple[httpx.Client, KernelChannel]]:
    """alice logged in, her server started as ``spawn`` asks, a notebook open on it."""
    session = HubSession(platform.url)
    try:
        assert session.login("alice").status_code == 302
        with api(platform.url, session.new_token("alice")) as http:
            assert http.post("/hub/api/users/alice/server", json=spawn).status_code in (201, 202)
            wait_for(
                lambda: http.get("/hub/api/users/alice").json()["servers"].get("", {}).get("ready"), 180, "her server"
            )
            with notebook_session(http, "/user/alice", "restart.ipynb") as kernel:
                yield http, kernel
    finally:
        session.close()


def hub_answers(platform: PlatformProcess) -> bool:
    try:
        return httpx.get(f"{platform.url}/hub/health", timeout=2).status_code == 200
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


def ran(kernel: KernelChannel, code: str) -> str:
    done = kernel.execute(code)
    assert done.status == "ok", done.stderr
    return done.stdout.strip()


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


def test_the_hub_and_the_proxy_killed_cost_alice_nothing(tmp_path: Path) -> None:
    platform = PlatformProcess(tmp_path / "data", GPU_MACHINE)
    platform.start()
    try:
        platform.wait_ready()
        with alices_notebook(platform, {"profile": "training", "gpus": 1}) as (http, kernel):
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
    finally:
        assert platform.stop() == 0, platform.log_tail()
    assert instance_processes(str(platform.data_dir.resolve())) == []


def test_an_upgrade_restart_with_keep_servers_keeps_everybodys_work(tmp_path: Path) -> None:
    """The documented upgrade: `hubforge up --keep-servers` stopped (SIGTERM, as systemd stops
    it) and started again. alice's cells run throughout; afterwards her server, kernel and
    variables are hers as before, and a normal stop then stops everything."""
    platform = PlatformProcess(tmp_path / "data")
    platform.start("--keep-servers")
    try:
        platform.wait_ready()
        with alices_notebook(platform, {"profile": "interactive"}) as (http, kernel):
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
    finally:
        assert platform.stop() == 0, platform.log_tail()
    assert instance_processes(str(platform.data_dir.resolve())) == []
