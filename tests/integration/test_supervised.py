"""A service that starts processes of its own, run as the hub runs it on one machine: under
``hubforge.hub.supervised``, with a real MLflow server and its uvicorn worker.

Killing the ``mlflow server`` process alone used to leave its worker serving as an orphan
that held the port, so the hub's restart of MLflow could never take its place. Now:
whatever MLflow started ends with it, the supervisor says how it ended and starts it
again (with backoff; a command that keeps failing is left to the hub, with its status);
a supervisor killed outright takes MLflow with it, and the next start stops the worker
left holding the port; SIGTERM stops everything, also while a restart waits; another
platform's process on the port is left alone.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from harness.platform import PROBE, free_port, still_running, wait_for
from hubforge.hub.supervised import stop_leftovers

INSTANCE = f"supervised-test-{os.getpid()}"


def supervised_mlflow(root: Path, port: int) -> subprocess.Popen[bytes]:
    mlflow = Path(sys.executable).with_name("mlflow")
    command = [str(mlflow), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
               "--backend-store-uri", f"sqlite:///{root / 'mlflow.sqlite'}",
               "--artifacts-destination", str(root / "artifacts")]  # fmt: skip
    env = {**os.environ, "HUBFORGE_INSTANCE": INSTANCE, "MLFLOW_DISABLE_TELEMETRY": "true"}
    return subprocess.Popen(
        [sys.executable, "-m", "hubforge.hub.supervised", "--port", str(port), "--", *command],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(root / "supervised.log").open("ab"),
    )


def answering(port: int) -> bool:
    try:
        return PROBE.get(f"http://127.0.0.1:{port}/health").status_code == 200
    except httpx.HTTPError:
        return False


def listeners(port: int) -> list[psutil.Process]:
    return [
        psutil.Process(c.pid)
        for c in psutil.net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid
    ]


def family(proc: subprocess.Popen[bytes]) -> list[psutil.Process]:
    return psutil.Process(proc.pid).children(recursive=True)


@pytest.fixture
def started(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = free_port()
    proc = supervised_mlflow(tmp_path, port)
    try:
        wait_for(lambda: answering(port), 120, "MLflow under its supervisor")
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(30)
        for left in listeners(port):
            left.kill()


def test_killing_mlflows_own_process_ends_its_worker_and_starts_it_again(tmp_path: Path, started: tuple) -> None:
    supervisor, port = started
    processes = family(supervisor)
    (server,) = [p for p in processes if p.ppid() == supervisor.pid]
    workers = [p for p in processes if p.pid != server.pid]
    assert workers, "MLflow serves from a worker process of its own"
    server.kill()
    _, alive = psutil.wait_procs(workers, timeout=15)
    assert alive == [], "the worker ended with MLflow's own process"
    wait_for(lambda: answering(port), 120, "MLflow started again by its supervisor")
    assert supervisor.poll() is None, "the same supervisor runs it"
    assert {p.pid for p in listeners(port)} <= {p.pid for p in family(supervisor)}, "only the new MLflow"
    said = (tmp_path / "supervised.log").read_text()
    assert "exited with signal SIGKILL; starting it again in 1s" in said, said


def _supervise(command: str, first: float = 0.05) -> subprocess.Popen[str]:
    """The supervisor's loop with a quick backoff, on a command of a few lines."""
    code = (
        "import sys\n"
        "from hubforge.hub.supervised import run\n"
        "from hubforge.processes import Backoff\n"
        f"sys.exit(run([sys.executable, '-c', {command!r}], 0, Backoff(first={first}, most={first}, attempts=3)))\n"
    )
    return subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)


def test_a_command_that_keeps_failing_is_left_to_the_hub_with_its_status() -> None:
    proc = _supervise("import sys; sys.exit(3)")
    _, said = proc.communicate(timeout=60)
    assert proc.returncode == 3, said
    assert said.count("exited with status 3; starting it again") == 3, said
    assert "3 times in a row: leaving it to the hub" in said


def test_sigterm_while_a_restart_waits_stops_at_once() -> None:
    proc = _supervise("import sys; sys.exit(4)", first=60)
    assert proc.stderr is not None
    assert "starting it again in 60s" in proc.stderr.readline()
    proc.terminate()
    assert proc.wait(10) == 4, "the hub's stop is not held up by the backoff"


def test_a_killed_supervisor_leaves_nothing_the_next_start_cannot_clear(tmp_path: Path, started: tuple) -> None:
    supervisor, port = started
    processes = family(supervisor)
    supervisor.kill()
    supervisor.wait(10)
    # MLflow's own process dies with its supervisor; what MLflow started (its uvicorn worker,
    # its job runners) lives on, the worker holding the port.
    time.sleep(2)
    orphans = [p for p in processes if still_running(p)]
    assert orphans and {p.pid for p in listeners(port)} <= {p.pid for p in orphans}
    again = supervised_mlflow(tmp_path, port)
    try:
        wait_for(lambda: not [p for p in orphans if still_running(p)], 60, "the leftovers to be stopped")
        wait_for(lambda: answering(port), 120, "MLflow started again on its port")
        said = (tmp_path / "supervised.log").read_text()
        assert f"leftover process(es) holding port {port}" in said, said
        # SIGTERM (the hub stopping its service) stops MLflow and all it started.
        processes = family(again)
        again.terminate()
        again.wait(30)
        _, alive = psutil.wait_procs(processes, timeout=15)
        assert alive == [] and listeners(port) == []
    finally:
        if again.poll() is None:
            again.kill()


def test_another_platforms_process_on_the_port_is_left_alone() -> None:
    port = free_port()
    other = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        env={**os.environ, "HUBFORGE_INSTANCE": "someone-elses"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: listeners(port), 30, "the other platform's server")
        assert stop_leftovers(port, INSTANCE) == []
        assert other.poll() is None
        assert stop_leftovers(port, "") == []  # without an instance of its own it stops nothing
    finally:
        other.kill()
        other.wait(10)
