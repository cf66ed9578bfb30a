"""A scheduled run through real papermill and its hubforge engine: parameters reach the
notebook, a failing cell is the run's one-line error, a run past its timeout is stopped with
its kernel, and the environment holds the owner's identity and nothing of the platform's."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import nbformat
import psutil

from hubforge.hub.scheduler.runner import Execution, execute, run_environment


def notebook(path: Path, body: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_code_cell("region = 'emea'\nweeks = 1", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(body),
    ]
    nbformat.write(nb, path)
    return path


def run(tmp_path: Path, body: str, parameters: dict, timeout_s: int = 120) -> tuple[str, str, Execution]:
    execution = Execution(
        notebook(tmp_path / "job.ipynb", body), tmp_path / "out.ipynb", tmp_path / "run.log", tmp_path / "work"
    )
    env = run_environment(
        "alice", "alice-run-token", {"HUBFORGE_APPS_URL": "http://127.0.0.1:9/services/apps"},
        job="j-1", run="r-1", home=tmp_path, spool=tmp_path / "spool", tracking=False,
    )  # fmt: skip
    outcome = asyncio.run(execute(execution, parameters, env, timeout_s))
    return outcome.state, outcome.error, execution


def outputs(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    return "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))


def test_parameters_arrive_and_the_environment_is_the_owners_only(tmp_path: Path) -> None:
    body = (
        "import os, json\n"
        "print('sales for', region, 'over', weeks, 'weeks')\n"
        "print(json.dumps(sorted(k for k in os.environ if k.startswith(('JUPYTERHUB', 'HUBFORGE', 'MLFLOW')))))\n"
        "print('token', os.environ['JUPYTERHUB_API_TOKEN'], 'origin', os.environ['HUBFORGE_ORIGIN'])"
    )
    state, error, execution = run(tmp_path, body, {"region": "apac", "weeks": 6})
    assert (state, error) == ("succeeded", ""), execution.log.read_text()[-2000:]
    shown = outputs(execution.output)
    assert "sales for apac over 6 weeks" in shown
    assert "token alice-run-token origin scheduler" in shown
    names = json.loads(next(line for line in shown.splitlines() if line.startswith("[")))
    assert "JUPYTERHUB_API_TOKEN" in names and "HUBFORGE_JOB" in names and "HUBFORGE_JOB_RUN" in names
    assert not [n for n in names if "DB" in n or "SECRET" in n or n == "JUPYTERHUB_SERVICE_NAME"]


def test_a_failing_cell_is_the_runs_one_line_error_and_the_output_is_kept(tmp_path: Path) -> None:
    state, error, execution = run(tmp_path, "1 / 0", {})
    assert state == "failed"
    assert "ZeroDivisionError" in error and "\n" not in error
    assert "ZeroDivisionError" in json.dumps(nbformat.read(execution.output, as_version=4))


def test_a_run_past_its_timeout_is_stopped_and_its_kernel_is_gone(tmp_path: Path) -> None:
    body = "import os, time\nopen('kernel.pid', 'w').write(str(os.getpid()))\ntime.sleep(600)"
    state, error, execution = run(tmp_path, body, {}, timeout_s=8)
    assert (state, error) == ("timed_out", "stopped after its timeout of 8 s")
    kernel = int((execution.workdir / "kernel.pid").read_text())
    assert not psutil.pid_exists(kernel) or psutil.Process(kernel).status() == psutil.STATUS_ZOMBIE
