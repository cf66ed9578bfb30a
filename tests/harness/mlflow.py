"""A plain ``mlflow server`` as a process of the tests' own, and the fixtures that start it.

``MlflowServer`` runs ``mlflow server`` on SQLite and a free port; stop and start keep its
database. Used by the integration tests (through tests/integration/conftest.py) and by bench/.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from harness.platform import free_port, wait_for

MLFLOW = str(Path(sys.executable).with_name("mlflow"))


class PortTaken(RuntimeError):
    """The server could not bind its port: something else took it first."""


class MlflowServer:
    """A plain ``mlflow server`` on SQLite and a free port; stop/start keep the database."""

    def __init__(self, root: Path):
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_once = False
        self.log_start = 0

    def start(self) -> None:
        for attempt in range(3):
            try:
                self._start()
                return
            except PortTaken:
                # free_port() only says the port was free a moment ago. A first start may move
                # to another one; a restart must keep its address, which clients already hold.
                if self.started_once or attempt == 2:
                    raise
                self.port = free_port()
                self.url = f"http://127.0.0.1:{self.port}"

    def _start(self) -> None:
        cmd = [MLFLOW, "server", "--backend-store-uri", f"sqlite:///{self.root}/mlflow.db"]
        cmd += ["--artifacts-destination", str(self.root / "artifacts"), "--host", "127.0.0.1"]
        cmd += ["--port", str(self.port), "--workers", "1"]
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 - handed to the child
        self.log_start = (self.root / "server.log").stat().st_size
        # MLflow's job runner off, as the platform's default config has it: it is not what these
        # servers stand in for, and starting it doubles the time to the first answer.
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        wait_for(self._healthy, 120, "mlflow server health")
        self.started_once = True

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            log = (self.root / "server.log").read_text(errors="replace")[self.log_start :]
            if "address already in use" in log.lower():
                raise PortTaken(self.port)
            raise RuntimeError(log[-2000:])
        try:
            return httpx.get(f"{self.url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None


def new_run(client, name: str) -> str:
    exp = client.create_experiment(f"{name}-{os.urandom(4).hex()}")
    return client.create_run(exp).info.run_id


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """A plain ``mlflow server`` of the test module's own (tests may stop and restart it)."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_mlflow(tmp_path: Path) -> Iterator:
    """A plain ``mlflow server`` of the test's own, not started yet: outage tests start and stop it."""
    (tmp_path / "mlflow").mkdir()
    server = MlflowServer(tmp_path / "mlflow")
    yield server
    server.stop()
