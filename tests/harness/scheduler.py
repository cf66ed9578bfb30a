"""The scheduler as alice uses it on a running platform: a notebook for a job, and
``hubforge schedule create`` run with her hub token."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import nbformat

from hubforge.hub.scheduler.store import FINAL

__all__ = ["SCHEDULER", "ended_runs", "job_notebook", "schedule", "soon"]

SCHEDULER = "/services/scheduler"
#: How far ahead a test schedules its run: ``hubforge schedule create`` has to start and ask
#: before then, which takes seconds on a loaded machine (the scheduler refuses past times).
AHEAD = timedelta(seconds=10)


def job_notebook(
    body: str = (
        "import os, pwd\n"
        "print('report for', region, 'as', os.environ['JUPYTERHUB_USER'], pwd.getpwuid(os.getuid()).pw_name)\n"
        "secret = [k for k in os.environ if 'DB_URL' in k or k in ('JUPYTERHUB_SERVICE_NAME', 'HUBFORGE_DATA')]\n"
        "print('platform secrets:', sorted(secret))"
    ),
) -> dict[str, Any]:
    """A job's notebook: a cell tagged ``parameters`` (``region``), then ``body``."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_code_cell("region = 'emea'", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(body),
    ]
    return json.loads(nbformat.writes(nb))


def schedule(platform: Any, token: str, path: Path, *options: str) -> str:
    """``hubforge schedule create`` as alice runs it; the new job's id."""
    env = {**os.environ, "HUBFORGE_SCHEDULER_URL": platform.url + SCHEDULER, "JUPYTERHUB_API_TOKEN": token}
    hubforge = Path(sys.executable).with_name("hubforge")
    done = subprocess.run([str(hubforge), "schedule", "create", str(path), *options], env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.split()[1]


def soon() -> str:
    """A moment for ``--once``: :data:`AHEAD` from now."""
    return (datetime.now(UTC) + AHEAD).isoformat()


def ended_runs(client: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    """The job's runs that have ended (``client`` carries the owner's token)."""
    return [run for run in client.get(f"{SCHEDULER}/api/jobs/{job_id}/runs").json() if run["state"] in FINAL]
