"""Shared fixtures: the real platform, started once per backend for the whole run."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from _platform import (
    PERSONA_USERS,
    HubSession,
    PlatformProcess,
    claim_test_accounts,
    pg_databases,
    remove_test_accounts,
)


@pytest.fixture(scope="session", autouse=True)
def test_accounts() -> Iterator[None]:
    """People's system accounts made by this run's platforms go when it ends (and any an
    interrupted earlier run left behind, before it starts)."""
    claim_test_accounts()
    remove_test_accounts(current_run=False)
    yield
    remove_test_accounts()


def _run(tmp_path_factory: pytest.TempPathFactory, name: str, overrides: dict) -> Iterator[PlatformProcess]:
    proc = PlatformProcess(tmp_path_factory.mktemp(name) / "data", overrides)
    proc.start()
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def platform(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformProcess]:
    """The running platform, on SQLite (the default) and on PostgreSQL."""
    if request.param == "sqlite":
        yield from _run(tmp_path_factory, "sqlite", {})
        return
    with pg_databases("hub", "governance") as urls:
        backends = {"hub_db_url": urls["hub"], "governance_db_url": urls["governance"]}
        yield from _run(tmp_path_factory, "postgresql", {"backends": backends})


@pytest.fixture(scope="session")
def sqlite_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformProcess]:
    """A platform of its own, for tests that stop or crash it."""
    yield from _run(tmp_path_factory, "own", {})


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where tests leave files for people to look at (screenshots); kept after the run."""
    path = Path(__file__).resolve().parents[1] / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture
def session_for(platform: PlatformProcess) -> Iterator:
    """Log a persona in: ``session_for("ml-lead")`` -> (HubSession, username)."""
    opened: list[HubSession] = []

    def login(persona: str) -> tuple[HubSession, str]:
        user = PERSONA_USERS[persona]
        session = HubSession(platform.url)
        opened.append(session)
        resp = session.login(user)
        assert resp.status_code == 302, resp.text
        return session, user

    yield login
    for session in opened:
        session.close()


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """A plain ``mlflow server`` of the test module's own (tests may stop and restart it)."""
    from test_kernel_queue import MlflowServer

    server = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_mlflow(tmp_path: Path) -> Iterator:
    """A plain ``mlflow server`` of the test's own, not started yet: outage tests start and stop it."""
    from test_kernel_queue import MlflowServer

    (tmp_path / "mlflow").mkdir()
    server = MlflowServer(tmp_path / "mlflow")
    yield server
    server.stop()
