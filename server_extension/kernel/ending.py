"""How a notebook's run ends: flushed, its snapshot logged, its status set, its fits handed over.

:class:`RunEnding` is the ending half of :class:`~.tracker.Tracker`. It runs on
the kernel's shutdown request (before the interpreter winds down: MLflow still
has its thread pools), on SIGTERM, or at exit, whichever comes first, bounded by
the tracker's ``close_budget``. What MLflow cannot take before the kernel ends
(it is away, or never opened the run) is kept on disk for the server to replay
(see :mod:`hubforge.server_extension.pending` and :mod:`hubforge.server_extension.kept_fits`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
import threading
import time
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hubforge.contract import PARAMETERS_ENV, param_item
from hubforge.server_extension.kept_fits import KeptFit, write_fit
from hubforge.server_extension.kernel.artifacts import feature_files, session_files
from hubforge.server_extension.kernel.patches import detach_active_run
from hubforge.server_extension.kernel.training import FitJob
from hubforge.server_extension.pending import PLACEHOLDER as PENDING
from hubforge.server_extension.pending import PendingRun, remove_live, write_pending

__all__ = ["SESSION_BUDGET", "RunEnding", "parameters"]

log = logging.getLogger(__name__)
#: Seconds from a shutdown request to the notebook's run having ended, with its snapshot.
SESSION_BUDGET = 8.0


class RunEnding:
    """The ending of :class:`~.tracker.Tracker` (the attributes below are the tracker's)."""

    ctx: Any
    queue: Any
    autolog: Any
    features: Any
    run_id: str | None
    experiment_id: str | None
    finishing: bool
    finished: bool
    kept: Path | None
    last_failed: bool
    close_budget: float
    history: Any
    watch: Any
    _mlflow: Any
    _opener: threading.Thread | None
    _opened: Any
    _attached_to: int | None
    _patch: Any
    _lock: threading.Lock
    _stop: threading.Event
    _record: PendingRun | None
    _live: Path | None

    if TYPE_CHECKING:  # the tracker's, used here

        def _describe(self) -> PendingRun: ...
        def _moved(self, rename_now: bool = True) -> None: ...
        def _rename_experiment(self) -> None: ...
        def child_tags(self) -> dict[str, str]: ...

        @property
        def notebook(self) -> str: ...

    def finish(self, status: str | None = None) -> None:
        """End the run: flush, snapshot, status; then log waiting fits (idempotent; never raises).

        Runs on the kernel's shutdown request (before the interpreter winds down: MLflow
        still has its thread pools), else at exit. Bounded by ``close_budget``.
        ``status`` overrides FINISHED/FAILED (KILLED when the kernel is stopped in the
        middle of a cell). What MLflow cannot take before the kernel ends (it is away,
        or never opened the run) is kept on disk (see :mod:`hubforge.server_extension.pending`)
        for the server to replay.
        """
        if self.finishing:
            return
        self.finishing = True
        try:
            if self.queue is not None:
                self._finish_run(status)
        finally:
            self.finished = True

    def _finish_run(self, status: str | None) -> None:
        deadline = time.monotonic() + self.close_budget
        self._stop.set()
        if self._opener is not None:
            self._opener.join(min(2.0, SESSION_BUDGET / 4))
        with self._lock:
            if self._patch is not None:
                self._patch.restore()
        if self.watch.changed(fresh=True):
            self._moved(rename_now=False)
        if self.run_id is not None and self.experiment_id is not None:
            self._rename_experiment()  # a rename still under way, or the last moment's, before the end
        status = status or ("FAILED" if self.last_failed else "FINISHED")
        if self._opened is not None:  # MLflow's own atexit must not end it again, as FINISHED
            detach_active_run(self._mlflow, self._opened, self._attached_to)
        try:
            self._finish(status, deadline)
        except Exception as exc:
            log.warning("hubforge tracking: could not end the run: %s", exc)
        finally:
            remove_live(self._live)

    def _finish(self, status: str, deadline: float) -> None:
        assert self.queue is not None
        if self.run_id is None:
            self._keep(self.queue.detach(), status, artifacts=True)
            return
        # MLflow failing right now: keep the data at once, within the kernel's time to end.
        if not self.queue.flush(0.5 if self.queue.failing else min(3.0, SESSION_BUDGET / 2)):
            self._keep(self.queue.detach(), status, artifacts=True)
            return
        self.queue.close(1.0)
        client = self._mlflow.MlflowClient()
        for step in (self._note_dropped, self._log_snapshot):
            try:
                step(client)
            except Exception as exc:
                log.warning("hubforge tracking: %s failed: %s", step.__name__, exc)
                with suppress(Exception):
                    self._keep([], status, artifacts=True)
                return
        try:
            client.set_terminated(self.run_id, status)
        except Exception as exc:
            log.warning("hubforge tracking: could not end run %s: %s", self.run_id, exc)
            with suppress(Exception):
                self._keep([], status, artifacts=False)
            return
        # The run has ended; its fits still waiting get what is left of the budget, then
        # the server's replay logs the rest.
        left = self.autolog.drain(deadline - 0.5) if self.autolog is not None else []
        if left:
            kept = self._keep_fits(left)
            log.info("hubforge tracking: %d fit(s) kept for the server to log", kept)
            with suppress(Exception):
                client.set_tag(self.run_id, "hubforge.fits_kept", str(kept))

    def _keep(self, items: list[Any], status: str, artifacts: bool) -> None:
        """Leave ``items``, the snapshot (if ``artifacts``) and how the run ends for a later replay."""
        assert self.queue is not None
        # The live record's id: one id for this run, on disk and in MLflow (hubforge.replay_id).
        run = dataclasses.replace(
            self._record or self._describe(),
            run_id=self.run_id,
            status=status,
            end_time=int(time.time() * 1000),
            dropped=self.queue.dropped,
        )
        if self.run_id is None:  # the params _handoff would have logged to the opened run
            items = [param_item(PENDING, str(k), str(v)) for k, v in parameters().items()] + items
        with tempfile.TemporaryDirectory(prefix="hubforge-artifacts-") as tmp:
            files = self._snapshot(Path(tmp)) if artifacts else []
            self.kept = write_pending(Path(self.ctx.spool_dir), run, items, files)
        if self.autolog is not None:  # under the run by its id, or by the id its replay will open it with
            self._keep_fits(self.autolog.drain(0), replay_id="" if self.run_id else run.id)
        log.warning(
            "hubforge tracking: MLflow unreachable as the kernel ends; %d records of %s kept in %s, "
            "sent when it is back",
            len(items),
            self.run_id or run.experiment_name,
            self.kept,
        )

    def _keep_fits(self, jobs: list[FitJob], replay_id: str = "") -> int:
        """Leave fits not logged yet for the server's replay (see :mod:`~hubforge.server_extension.kept_fits`)."""
        kept = 0
        for job in jobs:
            try:
                self.keep(job, None, replay_id)
                kept += 1
            except Exception as exc:
                log.warning("hubforge tracking: the %s fit could not be kept: %s", job.name, exc)
        return kept

    def keep(self, job: FitJob, owner: tuple[int, float] | None, replay_id: str = "") -> Path:
        """Keep ``job`` in the spool: for the fit logger ``owner`` (pid, start time), or, without
        one, for the server's replay; under the notebook's run, or the run its replay opens."""
        import cloudpickle

        fit = KeptFit(
            tracking_uri=self.ctx.tracking_uri or "",
            experiment_name=self._record.experiment_name if self._record else "",
            integration=job.integration,
            method=getattr(job.original, "__name__", "fit"),
            name=job.name,
            started_ms=job.started_ms,
            ended_ms=job.ended_ms,
            run_id=None if replay_id else self.run_id,
            replay_id=replay_id,
            cwd=os.getcwd(),
            tags={**self.child_tags(), **job.tags},
            child_run_id=job.child_run_id,
            owner_pid=owner[0] if owner else 0,
            owner_started=owner[1] if owner else 0.0,
            host=os.uname().nodename if owner else "",
        )
        return write_fit(Path(self.ctx.spool_dir), fit, cloudpickle.dumps((job.args, job.kwargs, job.result)))

    def _note_dropped(self, client: Any) -> None:
        assert self.queue is not None
        dropped = self.queue.dropped
        if dropped:
            client.set_tag(self.run_id, "hubforge.dropped", str(dropped))
            client.log_metric(self.run_id, "hubforge.dropped", dropped)

    def _snapshot(self, folder: Path) -> list[tuple[Path, str]]:
        """The environment, the notebook under its current name, the cells as they ran, the features read."""
        try:
            history = list(self.history()) if self.history is not None else None
        except Exception:
            history = None
        files = session_files(folder, self.ctx.notebook_file(self.notebook), history=history)
        return files + feature_files(folder, self.features.summary())

    def _log_snapshot(self, client: Any) -> None:
        with tempfile.TemporaryDirectory(prefix="hubforge-artifacts-") as tmp:
            for local, artifact_path in self._snapshot(Path(tmp)):
                client.log_artifact(self.run_id, str(local), artifact_path)


def parameters() -> dict[str, Any]:
    """The notebook's papermill parameters (``HUBFORGE_PARAMETERS``, a JSON object), or {}."""
    try:
        given = json.loads(os.environ.get(PARAMETERS_ENV) or "{}")
    except ValueError:
        return {}
    return given if isinstance(given, dict) else {}
