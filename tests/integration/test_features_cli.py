"""``hubforge features apply`` from the platform's environment: the work runs in Feast's
environment, for the same platform config and data folder, and reports one line a step."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from hubforge.contract import CONFIG_ENV, DATA_ENV


def hubforge(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    hubforge_cli = Path(sys.executable).parent / "hubforge"
    return subprocess.run([str(hubforge_cli), *args], env=env, capture_output=True, text=True, timeout=300)


def test_apply_runs_in_the_feast_environment_and_a_second_run_only_checks(tmp_path: Path) -> None:
    config = tmp_path / "platform.yaml"
    config.write_text("{}\n")
    env = {"PATH": "/usr/bin:/bin", DATA_ENV: str(tmp_path / "data")}
    first = hubforge(["features", "apply", "--config", str(config)], env)
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    repo = tmp_path / "data" / "features"
    assert lines[0] == f"[hubforge] features: repository {repo} (written, project hubforge_demo)"
    assert any(line.startswith("[hubforge] features: materialized 3 feature views") for line in lines)
    assert (repo / "registry.db").is_file() and (repo / "online.db").is_file()
    # The config reached the other environment by path: a second run finds everything done.
    second = hubforge(["features", "apply"], {**env, CONFIG_ENV: str(config)})
    assert second.returncode == 0, second.stderr
    assert "[hubforge] features: registry: up to date" in second.stdout.splitlines()


def test_a_failure_there_is_one_line_and_the_exit_status_here(tmp_path: Path) -> None:
    config = tmp_path / "platform.yaml"
    config.write_text("backends: {redis_url: 'redis://127.0.0.1:1/0'}\n")
    run = hubforge(["features", "apply", "--config", str(config)], {"PATH": "/usr/bin:/bin", DATA_ENV: str(tmp_path)})
    assert run.returncode == 2
    assert run.stderr.startswith("hubforge: error: features: cannot reach Redis at redis://127.0.0.1:1/0: ")
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr
