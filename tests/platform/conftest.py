"""The platform layer's fixtures: the real platform, started once per backend for the whole run.

``test_accounts`` runs for every test of this layer (the only one whose tests make
people's system accounts): accounts this run's platforms made go when it ends.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness.platform import (
    PERSONA_USERS,
    HubSession,
    PlatformProcess,
    claim_test_accounts,
    pg_databases,
    remove_test_accounts,
    running,
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
    yield from running(PlatformProcess(tmp_path_factory.mktemp(name) / "data", overrides))


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def platform(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformProcess]:
    """The running platform, on SQLite (the default) and on PostgreSQL."""
    if request.param == "sqlite":
        yield from _run(tmp_path_factory, "sqlite", {})
        return
    with pg_databases("hub", "governance", "apps", "scheduler") as urls:
        backends = {f"{name}_db_url": url for name, url in urls.items()}
        yield from _run(tmp_path_factory, "postgresql", {"backends": backends})


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
