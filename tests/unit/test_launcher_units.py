"""The launcher's small parts: the demo password, the proxy command, the ports.

The instance marker, on real processes, is in tests/integration/test_launcher_units.py.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from hubforge.config import load_config
from hubforge.errors import LaunchError
from hubforge.hub import launcher
from hubforge.hub.launcher import demo_password, find_proxy_command
from hubforge.processes import Backoff, describe_exit


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("HUBFORGE_DEMO_PASSWORD", raising=False)
    (tmp_path / "data").mkdir()
    return load_config(environ={"HUBFORGE_DATA": str(tmp_path / "data")})


def test_demo_password_is_generated_once_and_announced_once(cfg) -> None:
    said: list[str] = []
    first = demo_password(cfg, said.append)
    second = demo_password(cfg, said.append)
    assert first == second and len(first) >= 16
    assert len(said) == 1
    assert first in said[0] and "alice, bob, carol, dan, erin" in said[0]
    mode = stat.S_IMODE((cfg.data_dir / "demo-password").stat().st_mode)
    assert mode == 0o600


def test_demo_password_from_the_environment_wins(cfg, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUBFORGE_DEMO_PASSWORD", "chosen-password")
    said: list[str] = []
    assert demo_password(cfg, said.append) == "chosen-password"
    assert said == [] and not (cfg.data_dir / "demo-password").exists()


def test_proxy_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert find_proxy_command("/opt/chp") == "/opt/chp"
    found = find_proxy_command("")
    assert found.endswith("configurable-http-proxy") and os.access(found, os.X_OK)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("hubforge.__file__", str(tmp_path / "pkg" / "__init__.py"))
    with pytest.raises(LaunchError, match="configurable-http-proxy not found"):
        find_proxy_command("")


def test_internal_ports_never_reuse_the_public_port_or_each_other(cfg, monkeypatch: pytest.MonkeyPatch) -> None:
    """The public port is free until the proxy binds it, so the OS may offer it again."""
    public = cfg.hub.port
    offered = iter([public, 41001, 41001, public, 41002, 41003, 41004, 41005, 41006, 41007, 41008])
    monkeypatch.setattr(launcher, "free_port", lambda host="127.0.0.1": next(offered))
    monkeypatch.setattr(launcher, "port_in_use", lambda host, port: False)
    monkeypatch.setattr(launcher, "find_proxy_command", lambda command: ["configurable-http-proxy"])
    platform = launcher.Platform(cfg)
    platform.init_ports()
    rt = platform.runtime
    ports = [rt.hub_port, rt.proxy_api_port, *rt.service_ports.values()]
    assert ports == [41001, 41002, 41003, 41004, 41005, 41006, 41007, 41008]


def test_restarts_back_off_and_give_up_after_a_run_of_failures() -> None:
    backoff = Backoff(first=1, most=8, attempts=5)
    assert [backoff.next_delay() for _ in range(6)] == [1, 2, 4, 8, 8, None]
    backoff.recovered()
    assert backoff.next_delay() == 1, "a restart that came up starts the count again"


@pytest.mark.parametrize(
    ("status", "words"),
    [(0, "status 0"), (1, "status 1"), (-9, "signal SIGKILL"), (-15, "signal SIGTERM"), (None, "no status")],
)
def test_exit_statuses_are_said_in_words(status: int | None, words: str) -> None:
    assert describe_exit(status) == words


def test_a_handover_is_private_and_round_trips(tmp_path: Path) -> None:
    from hubforge.hub.handover import HANDOVER_FILE, Handover

    kept = Handover(public_port=8000, hub_port=8081, proxy_api_port=8001, proxy_token="t" * 64)
    kept.save(tmp_path)
    assert stat.S_IMODE((tmp_path / HANDOVER_FILE).stat().st_mode) == 0o600, "it holds the proxy's token"
    assert Handover.load(tmp_path) == kept
    Handover.forget(tmp_path)
    assert Handover.load(tmp_path) is None


@pytest.mark.parametrize("text", ["", "{", "[]", '{"public_port": 1}', '{"public_port": "x", "hub_port": 1}'])
def test_a_damaged_handover_is_no_handover(tmp_path: Path, text: str) -> None:
    from hubforge.hub.handover import HANDOVER_FILE, Handover

    (tmp_path / HANDOVER_FILE).write_text(text)
    assert Handover.load(tmp_path) is None


class _Proc:
    def __init__(self, *cmdline: str) -> None:
        self._cmdline = list(cmdline)

    def cmdline(self) -> list[str]:
        return self._cmdline


def test_peoples_servers_are_found_by_either_program() -> None:
    from hubforge.hub.handover import user_servers

    ours = _Proc("/env/bin/python", "/env/bin/hubforge-singleuser", "--port=1")
    jupyterhubs = _Proc("/env/bin/python", "/env/bin/jupyterhub-singleuser")
    kernel = _Proc("/env/bin/python", "-m", "ipykernel_launcher", "-f", "hubforge-singleuser.json")
    assert user_servers([ours, jupyterhubs, kernel, _Proc("node", "configurable-http-proxy")]) == [ours, jupyterhubs]


def test_the_processes_a_stopping_platform_waits_for_are_the_fit_loggers_and_the_replays() -> None:
    from hubforge.contract import FIT_LOGGER_MODULE, REPLAY_MODULE
    from hubforge.hub.handover import fit_loggers

    class Proc:
        def __init__(self, *cmdline: str) -> None:
            self.args = list(cmdline)

        def cmdline(self) -> list[str]:
            return self.args

    logger = Proc("/venv/bin/python", "-m", FIT_LOGGER_MODULE, "--spool", "/s")
    replay = Proc("/venv/bin/python", "-m", REPLAY_MODULE, "--spool", "/s")
    others = [
        Proc("/venv/bin/python", "-m", "ipykernel_launcher", "-f", "k.json"),
        Proc("/venv/bin/hubforge-singleuser", "--debug"),
        Proc("/venv/bin/python", "-c", f"print('{FIT_LOGGER_MODULE}')"),  # named, not run
    ]
    assert fit_loggers([*others, logger, replay]) == [logger, replay]
