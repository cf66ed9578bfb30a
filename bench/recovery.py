"""Recovery after kill -9: each component against its own cold start, and a notebook's cells
while the hub restarts.

One platform per round (``hubforge up``, servers on the platform's account). While it starts,
each component's cold start is measured from its process's creation to its first answer:
the hub's ``/hub/health`` at the hub's own port, the proxy's public port accepting, the
governance service's and MLflow's health checks at their own ports. Then each is killed
outright (SIGKILL) and timed from the kill until its endpoint answers through the proxy
again (the hub: restarted by ``hubforge up`` after a 1 s backoff; the proxy: restarted by the
hub, which checks it every 5 s; governance and MLflow: by their supervisors, after 1 s).

Then alice runs ``n += 1`` cells in her notebook as fast as they answer while the hub is
killed and comes back: the longest wait for a cell's reply during the outage, against the
longest in as many cells with the hub up.
"""

from __future__ import annotations

import json
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil

from bench.report import Result
from harness.platform import HubSession, PlatformProcess, api, wait_for
from harness.server import KernelChannel, notebook_session
from hubforge.hub.launcher import HUB_MODULE, instance_processes

SUPERVISED = "hubforge.hub.supervised"


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class FirstAnswers:
    """Polls each check every 20 ms from a thread; the first moment (time.time()) each passed."""

    def __init__(self, checks: dict[str, Callable[[], bool]]):
        self.checks = dict(checks)
        self.seen: dict[str, float] = {}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._done.is_set() and len(self.seen) < len(self.checks):
            for name, check in self.checks.items():
                if name not in self.seen:
                    try:
                        passed = check()
                    except (OSError, ValueError, LookupError, psutil.Error):
                        passed = False
                    if passed:
                        self.seen[name] = time.time()
            time.sleep(0.02)

    def wait(self, timeout: float) -> dict[str, float]:
        self._thread.join(timeout)
        self._done.set()
        return self.seen


def _process(platform: PlatformProcess, match: Callable[[list[str]], bool]) -> psutil.Process:
    for proc in instance_processes(str(platform.data_dir.resolve())):
        try:
            if match(proc.cmdline()):
                return proc
        except psutil.NoSuchProcess:
            continue
    raise LookupError("no such process")


def _service(module: str) -> Callable[[list[str]], bool]:
    """The service's own process (its supervisor's child), not the supervisor."""
    return lambda line: SUPERVISED not in line and any(module in part for part in line)


def _supervised_port(platform: PlatformProcess, module: str) -> int:
    line = _process(platform, lambda line: SUPERVISED in line and any(module in p for p in line)).cmdline()
    return int(line[line.index("--port") + 1])


def _mlflow_server(line: list[str]) -> bool:
    """``mlflow server`` itself (not its supervisor, nor its uvicorn worker)."""
    return SUPERVISED not in line and "server" in line and any("mlflow" in part for part in line[:3])


COMPONENTS = {
    # name: (its process, its check through the proxy)
    "hub": (lambda line: line[1:3] == ["-m", HUB_MODULE], "/hub/health"),
    "proxy": (lambda line: any("configurable-http-proxy" in p for p in line[:3]), "/hub/health"),
    "governance": (_service("hubforge.hub.governance"), "/services/governance/api/health"),
    "mlflow": (_mlflow_server, "/services/mlflow/health"),
}


def cold_starts(platform: PlatformProcess) -> dict[str, float]:
    """Start the platform; seconds from each component's process creation to its first answer."""
    checks: dict[str, Callable[[], bool]] = {"proxy": lambda: _accepts(platform.port)}
    ports: dict[str, int] = {}

    def own(name: str, module: str, path: str) -> Callable[[], bool]:
        def check() -> bool:
            if name not in ports:
                ports[name] = _supervised_port(platform, module)
            return _ok(f"http://127.0.0.1:{ports[name]}{path}")

        return check

    def hub() -> bool:
        if "hub" not in ports:
            runtime = _process(platform, COMPONENTS["hub"][0]).environ()["HUBFORGE_RUNTIME"]
            ports["hub"] = int(json.loads(runtime)["hub_port"])
        return _ok(f"http://127.0.0.1:{ports['hub']}/hub/health")

    checks["hub"] = hub
    checks["governance"] = own("governance", "hubforge.hub.governance", "/services/governance/api/health")
    checks["mlflow"] = own("mlflow", "mlflow", "/services/mlflow/health")
    watch = FirstAnswers(checks)
    platform.start()
    platform.wait_ready()
    wait_for(lambda: "hubforge is ready" in platform.log_path.read_text(), 300, "every service")
    seen = watch.wait(60)
    return {name: seen[name] - _process(platform, COMPONENTS[name][0]).create_time() for name in COMPONENTS}


def recovery(platform: PlatformProcess, name: str) -> float:
    """Seconds from a kill -9 of ``name`` until its check answers through the proxy again."""
    match, path = COMPONENTS[name]
    victim = _process(platform, match)
    url = f"{platform.url}{path}"
    killed = time.monotonic()
    victim.kill()
    wait_for(lambda: not victim.is_running() or victim.status() == psutil.STATUS_ZOMBIE, 10, f"{name} to die")

    def back() -> bool:
        try:
            return _ok(url) and _process(platform, match).pid != victim.pid
        except LookupError:
            return False

    wait_for(back, 180, f"{name} back", interval=0.02)
    return time.monotonic() - killed


def cell_gaps(kernel: KernelChannel, until: Callable[[], bool], least: int) -> list[float]:
    """Seconds each ``n += 1`` cell took to answer, run back to back until ``until()`` and ``least`` cells."""
    gaps: list[float] = []
    while len(gaps) < least or not until():
        started = time.monotonic()
        assert kernel.execute("n += 1").status == "ok"
        gaps.append(time.monotonic() - started)
    return gaps


def notebook_during_hub_restart(platform: PlatformProcess) -> tuple[float, float]:
    """(longest cell reply with the hub up, longest while the hub was killed and came back)."""
    session = HubSession(platform.url)
    try:
        assert session.login("alice").status_code == 302
        with api(platform.url, session.new_token("alice")) as http:
            assert http.post("/hub/api/users/alice/server").status_code in (201, 202)
            wait_for(lambda: http.get("/hub/api/users/alice").json()["servers"].get("", {}).get("ready"), 180, "alice")
            with notebook_session(http, "/user/alice", "bench.ipynb") as kernel:
                assert kernel.execute("n = 0").status == "ok"
                up = cell_gaps(kernel, lambda: True, 200)
                hub = _process(platform, COMPONENTS["hub"][0])
                hub.kill()
                wait_for(lambda: not _ok(f"{platform.url}/hub/health"), 30, "the hub to be away", interval=0.02)
                away = cell_gaps(kernel, lambda: _ok(f"{platform.url}/hub/health"), 1)
            http.delete("/hub/api/users/alice/server")
    finally:
        session.close()
    return max(up), max(away)


def run(repeat: int) -> list[Result]:
    """Each component's recovery against its cold start; cells during a hub restart."""
    cold: dict[str, list[float]] = {name: [] for name in COMPONENTS}
    back: dict[str, list[float]] = {name: [] for name in COMPONENTS}
    cells_up: list[float] = []
    cells_away: list[float] = []
    with tempfile.TemporaryDirectory(prefix="hubforge-bench-") as tmp:
        for i in range(repeat):
            platform = PlatformProcess(Path(tmp) / f"r{i}" / "data", {"spawner": {"local": {"isolation": "none"}}})
            try:
                for name, seconds in cold_starts(platform).items():
                    cold[name].append(seconds)
                for name in COMPONENTS:
                    back[name].append(recovery(platform, name))
                    platform.wait_ready()
                up, away = notebook_during_hub_restart(platform)
                cells_up.append(up)
                cells_away.append(away)
            finally:
                platform.stop()
    results = [
        Result(f"kill -9 {name} -> answers again", "s", back[name], cold[name], f"{name} cold start, same run")
        for name in COMPONENTS
    ]
    results.append(
        Result("longest cell wait, hub restarting", "s", cells_away, cells_up, "longest of 200 cells, hub up")
    )
    return results
