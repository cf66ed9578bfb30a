"""The scheduler as alice uses it on a running platform: a notebook for a job, and
``hubforge schedule create`` run with her hub token."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat

__all__ = ["SCHEDULER", "job_notebook", "schedule"]

SCHEDULER = "/services/scheduler"


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
