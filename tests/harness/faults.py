"""Faults on a running platform: its processes found by what they are, alice's notebook
driven through the hub, and what her kernel says of its run.

Shared by the fault tests (tests/platform/test_faults*.py, test_hub_restart.py) and
``bench/recovery.py``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import psutil

from harness.platform import MLFLOW_API, PROBE, HubSession, api, wait_for
from harness.server import KernelChannel, notebook_session
from hubforge.hub.handover import user_servers
from hubforge.hub.launcher import instance_processes

SUPERVISED = "hubforge.hub.supervised"


def service_supervisor(platform: Any, matches: Callable[[list[str]], bool]) -> psutil.Process | None:
    """The supervisor of the service whose command ``matches`` (None while there is none)."""
    for proc in psutil.Process(platform.proc.pid).children(recursive=True):
        try:
            line = proc.cmdline()
        except psutil.NoSuchProcess:
            continue
        if SUPERVISED in line and matches(line[line.index("--") :]):
            return proc
    return None


def mlflow_supervisor(platform: Any) -> psutil.Process | None:
    """MLflow's supervisor, of this platform's processes (None while there is none)."""
    return service_supervisor(platform, lambda line: any(part.endswith("mlflow") for part in line))


def supervised_port(proc: psutil.Process) -> int:
    """The port a supervisor keeps its service on."""
    line = proc.cmdline()
    return int(line[line.index("--port") + 1])


def mlflow_answers(port: int) -> bool:
    """MLflow's health check, at its own port (under its prefix), not through the proxy."""
    try:
        return PROBE.get(f"http://127.0.0.1:{port}/services/mlflow/health").status_code == 200
    except httpx.HTTPError:
        return False


def server_of(platform: Any, user: str) -> psutil.Process:
    """``user``'s single-user server process."""
    for proc in user_servers(instance_processes(str(platform.data_dir.resolve()))):
        try:
            if proc.environ().get("JUPYTERHUB_USER") == user:
                return proc
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    raise AssertionError(f"{user} has no server running")


def kernels_of(server: psutil.Process) -> list[psutil.Process]:
    """The live ipykernel processes a server started (not one killed that it has yet to reap)."""
    found = []
    for proc in server.children(recursive=True):
        try:
            if "ipykernel_launcher" in " ".join(proc.cmdline()):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return found


def server_ready(http: httpx.Client, user: str) -> bool:
    return bool(http.get(f"/hub/api/users/{user}").json()["servers"].get("", {}).get("ready"))


@contextmanager
def alices_server(url: str, spawn: dict | None = None) -> Iterator[httpx.Client]:
    """alice logged in, her default server started as ``spawn`` asks; stopped afterwards."""
    session = HubSession(url)
    try:
        assert session.login("alice").status_code == 302
        with api(url, session.new_token("alice", note="faults")) as http:
            started = http.post("/hub/api/users/alice/server", json=spawn or {})
            assert started.status_code in (201, 202), started.text
            wait_for(lambda: server_ready(http, "alice"), 180, "her server")
            try:
                yield http
            finally:
                http.delete("/hub/api/users/alice/server", timeout=120)
                wait_for(lambda: not http.get("/hub/api/users/alice").json()["servers"], 120, "her server to stop")
    finally:
        session.close()


@contextmanager
def alices_notebook(url: str, spawn: dict, path: str = "restart.ipynb") -> Iterator[tuple[httpx.Client, KernelChannel]]:
    """alice logged in, her server started as ``spawn`` asks, a notebook open on it."""
    with alices_server(url, spawn) as http, notebook_session(http, "/user/alice", path) as kernel:
        yield http, kernel


def ran(kernel: KernelChannel, code: str) -> str:
    """What ``code`` printed; it must have run without an error."""
    done = kernel.execute(code)
    assert done.status == "ok", done.stderr
    return done.stdout.strip()


def tracking_status(kernel: KernelChannel) -> dict[str, str]:
    """``%hubforge_tracking status`` as a dict (``run``, ``queue depth``, ...)."""
    lines = ran(kernel, "%hubforge_tracking status").splitlines()
    return dict(line.split(": ", 1) for line in lines if ": " in line)


def session_run(kernel: KernelChannel, timeout: float = 60) -> str:
    """The id of the run the kernel's tracking session opened (waiting for it to open)."""

    def opened() -> str | None:
        run = tracking_status(kernel).get("run", "")
        return run if re.fullmatch(r"[0-9a-f]{32}", run) else None

    found: str = wait_for(opened, timeout, "the notebook's run to open", interval=0.5)
    return found


def metric_steps(http: httpx.Client, run_id: str, key: str) -> list[int]:
    """The steps of ``key`` MLflow holds for the run, as its REST API gives them (sorted)."""
    found = http.get(f"{MLFLOW_API}/metrics/get-history", params={"run_id": run_id, "metric_key": key})
    assert found.status_code == 200, found.text
    return sorted(int(m.get("step", 0)) for m in found.json().get("metrics", []))


def run_info(http: httpx.Client, run_id: str) -> dict[str, Any]:
    """The run's ``info`` as MLflow's REST API gives it."""
    found = http.get(f"{MLFLOW_API}/runs/get", params={"run_id": run_id})
    assert found.status_code == 200, found.text
    info: dict[str, Any] = found.json()["run"]["info"]
    return info


def ended(http: httpx.Client, run_id: str) -> str | None:
    """The run's status once it has ended; None while it runs (or MLflow is away)."""
    try:
        status = run_info(http, run_id)["status"]
    except (AssertionError, httpx.HTTPError):
        return None
    return None if status == "RUNNING" else str(status)


def paced(kernel: KernelChannel, code: str, pause: float = 0.1) -> None:
    """Run a cell, then pause as a person would before the next."""
    ran(kernel, code)
    time.sleep(pause)
