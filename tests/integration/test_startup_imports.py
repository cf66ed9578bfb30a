"""A hubforge process (the CLI, a person's server, the hub) does not pay for ``rfc3987_syntax``'s
parsers at start, and jsonschema's ``iri`` checks answer as they do in a process without hubforge;
a person's server loads JupyterLab without starting yarn."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from hubforge.spawner_profiles.local.spawner import singleuser_command

CHECK = """
import json, sys
{first}
import jsonschema
from hubforge.config import load_config
load_config(None)
built = "rfc3987_syntax.syntax_helpers" in sys.modules
checker = jsonschema.FormatChecker()
values = ["https://example.com/\\u00e4", "not an iri", "../x", "http://[::1"]
answers = [checker.conforms(v, f) for v in values for f in ("iri", "iri-reference")]
print(json.dumps({{"built_at_start": built, "answers": answers}}))
"""


def run(first: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHECK.format(first=first)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_a_hubforge_process_defers_the_parsers_and_answers_the_same() -> None:
    deferred = run("import hubforge")
    eager = run("import jsonschema")  # jsonschema first: the real package, as without hubforge
    assert deferred["built_at_start"] is False
    assert eager["built_at_start"] is True
    assert deferred["answers"] == eager["answers"]
    assert deferred["answers"][:4] == [True, True, False, False]


def test_peoples_servers_start_without_building_the_parsers() -> None:
    """The local spawner's server command, as far as its start imports: jsonschema, not the parsers."""
    (program,) = singleuser_command()
    assert Path(program).name == "hubforge-singleuser"
    out = subprocess.run(
        [sys.executable, "-X", "importtime", program, "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip(), "it answers as jupyterhub-singleuser does"
    imported = {line.split("|")[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")}
    assert "jsonschema._format" in imported and "jupyter_server.serverapp" in imported
    assert "rfc3987_syntax.syntax_helpers" not in imported


def test_the_hub_starts_without_building_the_parsers() -> None:
    """``hubforge up``'s hub program, as far as its start imports: JupyterHub's, not the parsers."""
    from hubforge.hub.launcher import HUB_MODULE

    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", HUB_MODULE, "--version"], capture_output=True, text=True, check=True
    )
    import jupyterhub

    assert out.stdout.strip() == jupyterhub.__version__, "it answers as jupyterhub does"
    imported = {line.split("|")[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")}
    assert "jsonschema._format" in imported and "jupyterhub.app" in imported
    assert "rfc3987_syntax.syntax_helpers" not in imported


def test_a_scheduled_run_starts_papermill_without_building_the_parsers(tmp_path: Path) -> None:
    """The scheduler's papermill command, as far as its start imports: papermill's command line
    and nbformat's validation, not the parsers."""
    from hubforge.notebook_runs import papermill_command

    command = papermill_command(tmp_path / "in.ipynb", tmp_path / "out.ipynb", tmp_path, {})
    program = command[: command.index("--engine")]
    out = subprocess.run([*program, "--version"], capture_output=True, text=True, check=True)
    import papermill

    assert out.stdout.split()[0] == papermill.__version__, "it answers as papermill does"
    timed = [sys.executable, "-X", "importtime", *program[1:], "--help"]
    imported = subprocess.run(timed, capture_output=True, text=True, check=True).stderr
    names = {line.split("|")[-1].strip() for line in imported.splitlines() if line.startswith("import time:")}
    assert "papermill.cli" in names and "jsonschema._format" in names
    assert "rfc3987_syntax.syntax_helpers" not in names


LAB = """
{first}
import jupyterlab.labapp  # builds its _AppHandler, whose registry default asks yarn
from jupyterlab.commands import AppOptions
print(AppOptions().registry)
"""
SKIP = "from hubforge.server_extension.singleuser import skip_yarn_registry_lookup\nassert skip_yarn_registry_lookup()"


def _load_jupyterlab(tmp_path: Path, first: str, **env: str) -> tuple[str, list[str]]:
    """JupyterLab loaded with a ``node`` on PATH that notes each call: (its registry, the calls)."""
    shims = tmp_path / "bin"
    shims.mkdir(exist_ok=True)
    calls = tmp_path / "node-calls"
    calls.unlink(missing_ok=True)
    node = shims / "node"
    node.write_text(f'#!/bin/sh\necho "$*" >> {calls}\nexec /usr/bin/node "$@"\n')
    node.chmod(0o755)
    environ = {**os.environ, "PATH": f"{shims}{os.pathsep}{os.environ['PATH']}", **env}
    for name in ("YARN_REGISTRY", "npm_config_registry"):
        if name not in env:
            environ.pop(name, None)
    out = subprocess.run(
        [sys.executable, "-c", LAB.format(first=first)], capture_output=True, text=True, check=True, env=environ
    )
    return out.stdout.strip(), calls.read_text().splitlines() if calls.exists() else []


def test_peoples_servers_load_jupyterlab_without_asking_yarn(tmp_path: Path) -> None:
    """hubforge-singleuser answers JupyterLab's registry question itself: no Node.js process at
    start, yarn's default registry, or the one the environment names as yarn would read it."""
    registry, calls = _load_jupyterlab(tmp_path, "")
    assert calls and "config" in calls[0], "without hubforge, JupyterLab runs yarn as it loads"
    assert registry == "https://registry.yarnpkg.com"

    assert _load_jupyterlab(tmp_path, SKIP) == (registry, [])
    mirror = "https://npm.example.internal/"
    assert _load_jupyterlab(tmp_path, SKIP, YARN_REGISTRY=mirror) == (mirror, [])
    assert _load_jupyterlab(tmp_path, SKIP, npm_config_registry=mirror) == (mirror, [])
