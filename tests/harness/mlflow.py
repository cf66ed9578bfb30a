"""A plain ``mlflow server`` as a process of the tests' own, and the fixtures that start it.

``MlflowServer`` runs ``mlflow server`` on SQLite and a free port; stop and start keep its
database. Used by the integration tests (through tests/integration/conftest.py) and by bench/.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from harness.mlflow_cli import CliServer
from harness.platform import PROBE, free_port, wait_for
from hubforge.hub.services import MLFLOW_KEEP_ALIVE_S

#: Makes the empty database an ``mlflow server`` with served artifacts makes on its first start.
_MIGRATE = """
import sys
from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as Registry
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore as Tracking
uri = "sqlite:///" + sys.argv[1]
Tracking(uri, "mlflow-artifacts:/")
Registry(uri)
"""


def migrated_database(path: Path) -> None:
    """An empty MLflow database at ``path``, its schema already migrated (nothing if ``path`` exists).

    An ``mlflow server`` on a new SQLite database migrates it as it starts: about a second of
    CPU, which every server the tests start would pay. Their servers start instead on a copy of
    one database migrated once per MLflow version (and kept for later runs); to MLflow that is
    a server started again on its own database. The platform layer's servers still migrate
    their new databases themselves.
    """
    if path.exists():
        return
    template = Path(tempfile.gettempdir()) / f"hubforge-tests-mlflow-{importlib.metadata.version('mlflow')}.sqlite"
    if not template.exists():
        made = template.with_name(f".{template.name}.{os.getpid()}")
        made.unlink(missing_ok=True)
        subprocess.run([sys.executable, "-c", _MIGRATE, str(made)], check=True, capture_output=True)
        os.replace(made, template)  # whole or not at all, for the run's other lanes
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, path)


class PortTaken(RuntimeError):
    """The server could not bind its port: something else took it first."""


class MlflowServer:
    """A plain ``mlflow server`` on SQLite and a free port; stop/start keep the database."""

    def __init__(self, root: Path):
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: CliServer | None = None
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
        migrated_database(self.root / "mlflow.db")
        args = ["server", "--backend-store-uri", f"sqlite:///{self.root}/mlflow.db"]
        args += ["--artifacts-destination", str(self.root / "artifacts"), "--host", "127.0.0.1"]
        args += ["--port", str(self.port), "--workers", "1"]
        args += ["--uvicorn-opts", f"--timeout-keep-alive {MLFLOW_KEEP_ALIVE_S}"]  # as the platform's
        log = self.root / "server.log"
        log.touch()
        self.log_start = log.stat().st_size
        # MLflow's job runner off, as the platform's default config has it: it is not what these
        # servers stand in for, and starting it doubles the time to the first answer.
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        self.proc = CliServer(args, env, log)
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
            return PROBE.get(f"{self.url}/health", timeout=1).status_code == 200
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


def running_mlflow(root: Path) -> Iterator[MlflowServer]:
    """A plain ``mlflow server`` in ``root``, started, until the generator is closed."""
    server = MlflowServer(root)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """A plain ``mlflow server`` shared by the modules of the pytest run, which keep out of each
    other's way by their people and notebook names (``/Users/<person>/<notebook>``), as a
    company's people do on one server. A module whose tests stop and start it overrides this
    fixture with a server of its own (``running_mlflow``)."""
    yield from running_mlflow(tmp_path_factory.mktemp("mlflow"))


@pytest.fixture
def own_mlflow(tmp_path: Path) -> Iterator:
    """A plain ``mlflow server`` of the test's own, not started yet: outage tests start and stop it."""
    (tmp_path / "mlflow").mkdir()
    server = MlflowServer(tmp_path / "mlflow")
    yield server
    server.stop()
