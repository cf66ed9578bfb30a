"""The per-kernel tracker: one MLflow run per notebook session, opened on the first cell.

mlflow is imported on the first tracked cell, never at extension load. After
that, nothing on a cell's path touches the network: cell metrics and the
user's own fluent logging calls go through :class:`TrackingQueue`.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import sys
import tempfile
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

from hubforge.server_extension.kernel.context import KernelContext, run_tags
from hubforge.server_extension.kernel.patches import FluentPatch
from hubforge.server_extension.kernel.queue import TrackingQueue

__all__ = ["Tracker"]

log = logging.getLogger(__name__)
MAGIC = "%hubforge_tracking"


class Tracker:
    """Open, feed and close the run of one kernel; wired to IPython's cell events."""

    def __init__(self, ctx: KernelContext, close_timeout: float = 3.0):
        self.ctx = ctx
        self.enabled = ctx.enabled
        self.close_timeout = close_timeout
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self.queue: TrackingQueue | None = None
        self.last_failed = False
        self._patch: FluentPatch | None = None
        self._mlflow: Any = None
        self._t0 = 0.0
        self._reported_dropped = 0
        self._finished = False

    # -- IPython events ---------------------------------------------------------

    def pre_run_cell(self, info: Any) -> None:
        """Open the run on the first tracked cell; start the cell's clock."""
        if self.enabled and self.run_id is None and not (info.raw_cell or "").lstrip().startswith(MAGIC):
            self._start()
        self._t0 = time.perf_counter()

    def post_run_cell(self, result: Any) -> None:
        """Queue the cell's count, duration and error flag."""
        if not self.enabled or self.run_id is None or self.queue is None:
            return
        duration = time.perf_counter() - self._t0
        count = result.execution_count or 0
        failed = not result.success
        self.last_failed = failed
        q, run = self.queue, self.run_id
        q.log_metric(run, "hubforge.cell.duration_s", duration, step=count)
        q.log_metric(run, "hubforge.cell.error", 1.0 if failed else 0.0, step=count)
        q.log_metric(run, "hubforge.cell.count", count, step=count)
        if q.dropped > self._reported_dropped:
            self._reported_dropped = q.dropped
            print(f"hubforge: {q.dropped} tracking records dropped (MLflow unreachable, spool full)", file=sys.stderr)

    # -- the run ---------------------------------------------------------------

    def _start(self) -> None:
        if not self.ctx.tracking_uri:
            self.enabled = False
            print("hubforge: tracking off (no MLFLOW_TRACKING_URI)", file=sys.stderr)
            return
        try:
            self._open_run()
        except Exception as exc:  # a cell must never fail because of tracking
            self.enabled = False
            log.warning("hubforge tracking could not start: %s", exc)
            print(f"hubforge: tracking off, MLflow not reachable: {exc}", file=sys.stderr)

    def _open_run(self) -> None:
        import mlflow
        from mlflow import MlflowClient

        self._mlflow = mlflow
        client = MlflowClient()
        experiment = client.get_experiment_by_name(self.ctx.experiment_name)
        if experiment is None:
            self.experiment_id = client.create_experiment(self.ctx.experiment_name)
        else:
            self.experiment_id = experiment.experiment_id
        run = mlflow.start_run(experiment_id=self.experiment_id, tags=run_tags(self.ctx))
        self.run_id = run.info.run_id
        self.queue = TrackingQueue(MlflowClient, spool_dir=self.ctx.spool_dir)
        self._handoff(self.queue, self.run_id)
        self._patch = FluentPatch(mlflow, self.queue, self.run_id)
        self._patch.install()
        try:
            mlflow.autolog(silent=True)
        except Exception as exc:
            log.warning("hubforge: mlflow.autolog failed: %s", exc)

    @staticmethod
    def _handoff(queue: TrackingQueue, run_id: str) -> None:
        """papermill's parameters become run params; its engine learns the run id (see papermill_engine)."""
        try:
            parameters = json.loads(os.environ.get("HUBFORGE_PARAMETERS") or "{}")
        except ValueError:
            parameters = {}
        for key, value in parameters.items() if isinstance(parameters, dict) else ():
            queue.log_param(run_id, str(key), str(value))
        run_id_file = os.environ.get("HUBFORGE_RUN_ID_FILE")
        if run_id_file:
            with suppress(OSError):
                Path(run_id_file).write_text(run_id)

    def set_enabled(self, on: bool) -> None:
        """``%hubforge_tracking on|off``: stop or resume recording (the run stays open)."""
        self.enabled = on
        if self._patch is not None:
            self._patch.install() if on else self._patch.restore()

    def status(self) -> str:
        """What ``%hubforge_tracking status`` prints."""
        q = self.queue
        lines = [
            f"tracking: {'on' if self.enabled else 'off'}",
            f"run: {self.run_id or '(none yet)'}",
            f"experiment: {self.ctx.experiment_name} ({self.experiment_id or '-'})",
            f"queue depth: {q.depth if q else 0}",
            f"dropped: {q.dropped if q else 0}",
        ]
        if q is not None and q.last_error:
            lines.append(f"last error: {q.last_error}")
        return "\n".join(lines)

    def finish(self) -> None:
        """Flush, log notebook and environment, end the run (idempotent; never raises)."""
        if self._finished or self.run_id is None:
            return
        self._finished = True
        if self._patch is not None:
            self._patch.restore()
        from mlflow import MlflowClient

        client = MlflowClient()
        steps = [self._flush, self._log_snapshot, self._end_run]
        for step in steps:
            try:
                step(client)
            except Exception as exc:
                log.warning("hubforge tracking: %s failed: %s", step.__name__, exc)

    def _flush(self, client: Any) -> None:
        assert self.queue is not None
        self.queue.close(self.close_timeout)
        dropped = self.queue.dropped + self.queue.depth
        if dropped:
            client.set_tag(self.run_id, "hubforge.dropped", str(dropped))
            client.log_metric(self.run_id, "hubforge.dropped", dropped)

    def _log_snapshot(self, client: Any) -> None:
        with tempfile.TemporaryDirectory(prefix="hubforge-artifacts-") as tmp:
            req = Path(tmp) / "requirements.txt"
            req.write_text(_freeze())
            client.log_artifact(self.run_id, str(req), "environment")
            file = self.ctx.notebook_file
            if file is not None and file.suffix == ".ipynb" and file.is_file():
                import nbformat

                snapshot = Path(tmp) / file.name
                nbformat.write(nbformat.read(file, as_version=4), snapshot)
                client.log_artifact(self.run_id, str(snapshot), "notebook")

    def _end_run(self, client: Any) -> None:
        status = "FAILED" if self.last_failed else "FINISHED"
        active = self._mlflow.active_run() if self._mlflow else None
        if active is not None and active.info.run_id == self.run_id:
            self._mlflow.end_run(status=status)
        else:
            client.set_terminated(self.run_id, status)


def _freeze() -> str:
    """``pip freeze`` without a subprocess: name==version of every installed distribution."""
    seen: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name and name.lower() not in seen:
            seen[name.lower()] = f"{name}=={dist.version}"
    return "\n".join(sorted(seen.values(), key=str.lower)) + "\n"


def kernel_id() -> str:
    """The kernel id from the connection file name (``kernel-<id>.json``), or ''."""
    try:
        from ipykernel.connect import get_connection_file

        name = os.path.basename(get_connection_file())
    except Exception:
        return ""
    return name.removeprefix("kernel-").removesuffix(".json")
