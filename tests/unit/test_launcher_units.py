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
