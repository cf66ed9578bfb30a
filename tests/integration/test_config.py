"""The ``hubforge`` command on the platform config: one-line errors, refusals before anything starts.

The config itself (defaults, merging, errors naming the key) is in tests/unit/test_config.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from harness.config import write


def _cli(*args: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("hubforge")
    return subprocess.run(
        [str(exe), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", **(env_extra or {})},
    )


def test_cli_config_check_reports_one_line_and_fails(tmp_path: Path) -> None:
    path = write(tmp_path, {"hub": {"prot": 1}})
    result = _cli("config", "check", "--config", str(path))
    assert result.returncode != 0
    assert result.stderr.strip() == f"hubforge: error: {path}: hub.prot: unknown key"
    assert result.stdout == ""


def test_cli_up_refuses_bad_config_before_starting_anything(tmp_path: Path) -> None:
    path = write(tmp_path, {"data_dir": str(tmp_path / "data"), "personas": {"wizard": {"groups": []}}})
    result = _cli("--config", str(path), "up")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "personas.wizard: unknown persona 'wizard'" in result.stderr
    assert not (tmp_path / "data").exists()


def test_cli_help_lists_subcommands() -> None:
    result = _cli("--help")
    assert result.returncode == 0
    for command in ("up", "config"):
        assert command in result.stdout
    check = _cli("config", "check", env_extra={"HUBFORGE_DATA": "/tmp/x"})
    assert check.returncode == 0 and check.stdout.startswith("ok: default platform.yaml")
