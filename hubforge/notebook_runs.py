"""How a scheduled notebook run is executed, wherever it runs: the scheduler's own machine
(:mod:`hubforge.hub.scheduler.runner`) or a Kubernetes Job's pod (``hubforge schedule
execute``, see :mod:`hubforge.schedule`).

Both run papermill through hubforge's engine (the kernel tracks the run to MLflow as the
run's owner, with the job's tags), then send what the kernel kept because MLflow was away
with the replay a person's server runs, while the run's token still holds.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hubforge.contract import MLFLOW_URL_ENV, REPLAY_MODULE, SPOOL_DIR_ENV, tracking_on

__all__ = ["DELIVER_WITHIN", "papermill_command", "replay_command", "replay_env"]

#: Seconds the delivery of kept run data may take after a run.
DELIVER_WITHIN = 120.0


def papermill_command(notebook: Path, output: Path, workdir: Path, parameters: Mapping[str, Any]) -> list[str]:
    """papermill, through the ``hubforge`` engine, on ``notebook`` with ``parameters`` (its command
    line as hubforge runs it: :mod:`hubforge.papermill_cli`)."""
    return [
        sys.executable,
        "-m",
        "hubforge.papermill_cli",
        "--engine",
        "hubforge",
        "--no-progress-bar",
        "--log-output",
        "--cwd",
        str(workdir),
        "-y",
        json.dumps(dict(parameters)),
        str(notebook),
        str(output),
    ]


def replay_env(env: Mapping[str, str]) -> dict[str, str] | None:
    """The replay's environment, from a run's (``env``); None when the run is not tracked."""
    if not env.get(MLFLOW_URL_ENV) or not tracking_on(env) or not env.get(SPOOL_DIR_ENV):
        return None
    return {
        **env,
        "MLFLOW_TRACKING_URI": env[MLFLOW_URL_ENV],
        "MLFLOW_TRACKING_TOKEN": env.get("JUPYTERHUB_API_TOKEN", ""),
        # One quick try per request: an outage is waited out between runs, not inside one.
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    }


def replay_command(env: Mapping[str, str]) -> list[str]:
    """The replay of the run's spool (``env``'s ``HUBFORGE_SPOOL_DIR``)."""
    return [sys.executable, "-m", REPLAY_MODULE, "--spool", env[SPOOL_DIR_ENV]]
