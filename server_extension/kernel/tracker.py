"""The per-kernel tracker: one MLflow run per notebook session, opened from the first cell.

Nothing on a cell's path waits for MLflow. The first tracked cell starts a
background thread that imports mlflow, installs the fluent fast path and opens
the run; meanwhile cell metrics (and the user's own fluent logging calls) are
queued under a placeholder id that :class:`TrackingQueue` holds until the run
is named. The run becomes the cells' active run, and autolog is switched on, at
the start of the first cell after it is open.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import logging
import os
import sys
import tempfile
import threading
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

from hubforge.server_extension.kernel.context import KernelContext, run_tags
from hubforge.server_extension.kernel.patches import FluentPatch, attach_active_run, detach_active_run
from hubforge.server_extension.kernel.queue import TrackingQueue
from hubforge.server_extension.pending import (
    PLACEHOLDER,
    PendingRun,
    list_pending,
    remove_live,
    write_live,
    write_pending,
)

__all__ = ["Tracker"]

log = logging.getLogger(__name__)
MAGIC = "%hubforge_tracking"
#: The run id cell metrics are queued under until MLflow has created the run.
PENDING = PLACEHOLDER
#: Seconds between attempts to open the run while MLflow is away (doubling to the max).
RETRY_FIRST, RETRY_MAX = 2.0, 60.0


class Tracker:
    """Open, feed and close the run of one kernel; wired to IPython's cell events.

    A cell that starts while the run is still being opened (back-to-back
    execution: papermill, Run All) waits for it once, at most ``open_wait``
    seconds, so that autolog is on before that cell's training code runs; the
    cell that started the opening never waits, and so is not autologged.
    """

    def __init__(self, ctx: KernelContext, close_timeout: float = 3.0, open_wait: float = 3.0):
        self.ctx = ctx
        self.enabled = ctx.enabled
        self.close_timeout = close_timeout
        self.open_wait = open_wait
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self.queue: TrackingQueue | None = None
        self.last_failed = False
        self._patch: FluentPatch | None = None
        self._mlflow: Any = None
        self._opener: threading.Thread | None = None
        self._opened: Any = None  # the ActiveRun, once open, until it is the cells' active run
        self._open_error: str | None = None
        self._unreachable: str | None = None  # why MLflow is away, while the opener retries
        self._told_unreachable = False
        self._stop = threading.Event()  # set when the kernel finishes: the opener gives up
        self._attached = False
        self._active = False
        self._waited = False
        self._lock = threading.Lock()  # the fluent patch, installed by the opener, switched by the magic
        self._t0 = 0.0
        self._reported_dropped = 0
        self._finished = False
        self._start_ms = 0
        self.kept: Path | None = None  # where run data waits for MLflow, if the kernel ended without it
        self._record: PendingRun | None = None  # what this kernel records, as a pending entry would say it
        self._live: Path | None = None  # its live/ file, for the server to adopt if the kernel dies

    # -- IPython events ---------------------------------------------------------

    def pre_run_cell(self, info: Any) -> None:
        """Start opening the run on the first tracked cell, activate it once open; start the clock."""
        if self.enabled and not (info.raw_cell or "").lstrip().startswith(MAGIC):
            if self.queue is None:
                self._start()
            elif not self._active:
                self._activate()
        self._t0 = time.perf_counter()

    def post_run_cell(self, result: Any) -> None:
        """Queue the cell's count, duration and error flag."""
        if self._open_error is not None:
            self._give_up()
        if self._unreachable is not None and not self._told_unreachable and self.run_id is None:
            self._told_unreachable = True
            print(
                f"hubforge: MLflow not reachable ({self._unreachable}); this notebook's run data "
                "is kept and sent when it is back",
                file=sys.stderr,
            )
        if not self.enabled or self.queue is None:
            return
        duration = time.perf_counter() - self._t0
        count = result.execution_count or 0
        failed = not result.success
        self.last_failed = failed
        q, run = self.queue, self.run_id or PENDING
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
        self._start_ms = int(time.time() * 1000)
        self.queue = TrackingQueue(_client, spool_dir=Path(self.ctx.spool_dir))
        self.queue.hold(PENDING)
        self._opener = threading.Thread(target=self._open, name="hubforge-open-run", daemon=True)
        self._opener.start()

    def _open(self) -> None:
        """On the opener thread: mlflow, the fluent fast path, the experiment and the run."""
        assert self.queue is not None
        try:
            self._record = self._describe()
            self._say_live()
            import mlflow

            # Right after the import, before any network call: a cell that imported mlflow
            # meanwhile waited on the import lock and must find its logging calls queued.
            with self._lock:
                self._mlflow = mlflow
                self._patch = FluentPatch(mlflow, self.queue, PENDING)
                if self.enabled:
                    self._patch.install()
            opened = self._open_run_retrying(mlflow, self._record.tags)
            if opened is None:
                return
            detach_active_run(mlflow, opened)
            self._patch.run_id = self.run_id = self._record.run_id = opened.info.run_id
            self._say_live()
            self._handoff(self.queue, self.run_id)
            self.queue.release(PENDING, self.run_id)
            self._opened = opened
        except Exception as exc:  # a cell must never fail because of tracking
            log.warning("hubforge tracking could not start: %s", exc)
            self._open_error = str(exc) or type(exc).__name__

    def _describe(self) -> PendingRun:
        """This kernel's run as a pending entry says it: enough to open it elsewhere."""
        return PendingRun(
            tracking_uri=self.ctx.tracking_uri or "",
            run_id=self.run_id,
            experiment_name=self.ctx.experiment_name,
            tags=run_tags(self.ctx),
            start_time=self._start_ms,
        )

    def _say_live(self) -> None:
        """(Re)write this kernel's live/ file; tracking goes on without it if that fails."""
        assert self._record is not None and self.queue is not None
        try:
            self._live = write_live(Path(self.ctx.spool_dir), self._record, self.queue.spool_path)
        except OSError as exc:
            log.warning("hubforge tracking: cannot record the run in %s: %s", self.ctx.spool_dir, exc)

    def _open_run_retrying(self, mlflow: Any, tags: dict[str, str]) -> Any:
        """The experiment and the run, tried again with backoff while MLflow is away.

        Meanwhile cells run and their data waits in the queue (memory, then the disk
        spool); the person is told once. None when the kernel finishes first.
        """
        delay = RETRY_FIRST
        while not self._finished:
            try:
                client = mlflow.MlflowClient()
                experiment = client.get_experiment_by_name(self.ctx.experiment_name)
                if experiment is None:
                    self.experiment_id = client.create_experiment(self.ctx.experiment_name)
                else:
                    self.experiment_id = experiment.experiment_id
                return mlflow.start_run(experiment_id=self.experiment_id, tags=tags)
            except Exception as exc:
                if _refused(exc):  # MLflow answered no: waiting changes nothing
                    raise
                if self._unreachable is None:
                    self._unreachable = str(exc).splitlines()[0][:200] or type(exc).__name__
                log.debug("hubforge: MLflow not reachable, retrying in %.0f s: %s", delay, exc)
                self._stop.wait(delay)
                delay = min(delay * 2, RETRY_MAX)
        return None

    def _activate(self) -> None:
        """On a cell: make the open run the cells' active run, then switch autolog on.

        Only the first cell to try waits (for the opening, then for the sender to be
        between requests: see :meth:`TrackingQueue.paused`), within ``open_wait``; a
        later one tries again without waiting.
        """
        assert self.queue is not None
        wait = 0.0 if self._waited else self.open_wait
        self._waited = True
        deadline = time.monotonic() + wait
        if self._opened is None and self._opener is not None:
            self._opener.join(wait)
        if self._open_error is not None:
            self._give_up()
        if self._opened is None or not self.enabled:
            return
        mlflow = self._mlflow
        if not self._attached:
            self._attached = True
            try:
                attach_active_run(mlflow, self._opened)
            except Exception as exc:
                log.warning("hubforge: could not make run %s active: %s", self.run_id, exc)
        with self.queue.paused(max(0.0, deadline - time.monotonic())) as quiet:
            if not quiet:
                return
            self._active = True
            try:
                mlflow.autolog(silent=True)
            except Exception as exc:
                log.warning("hubforge: mlflow.autolog failed: %s", exc)

    def _give_up(self) -> None:
        """The run could not be opened: say so, stop tracking, drop what was queued for it.

        ``%hubforge_tracking on`` then tries again from scratch on the next cell.
        """
        error, self._open_error = self._open_error, None
        print(f"hubforge: tracking off, MLflow not reachable: {error}", file=sys.stderr)
        with self._lock:
            self.enabled = False
            if self._patch is not None:
                self._patch.restore()
            self._patch = None
        if self.queue is not None:
            self.queue.close(0)
        self.queue = self._opener = None
        self._waited = False

    @staticmethod
    def _handoff(queue: TrackingQueue, run_id: str) -> None:
        """papermill's parameters become run params; its engine learns the run id (see papermill_engine)."""
        for key, value in _parameters().items():
            queue.log_param(run_id, str(key), str(value))
        run_id_file = os.environ.get("HUBFORGE_RUN_ID_FILE")
        if run_id_file:
            with suppress(OSError):
                Path(run_id_file).write_text(run_id)

    def set_enabled(self, on: bool) -> None:
        """``%hubforge_tracking on|off``: stop or resume recording (the run stays open)."""
        with self._lock:
            self.enabled = on
            if self._patch is not None:
                self._patch.install() if on else self._patch.restore()

    def status(self) -> str:
        """What ``%hubforge_tracking status`` prints."""
        q = self.queue
        opening = self._opener is not None and self._opener.is_alive()
        lines = [
            f"tracking: {'on' if self.enabled else 'off'}",
            f"run: {self.run_id or ('(opening)' if opening else '(none yet)')}",
            f"experiment: {self.ctx.experiment_name} ({self.experiment_id or '-'})",
            f"queue depth: {q.depth if q else 0}",
            f"dropped: {q.dropped if q else 0}",
        ]
        if q is not None and q.last_error:
            lines.append(f"last error: {q.last_error}")
        kept = len(list_pending(Path(self.ctx.spool_dir)))
        if kept:
            lines.append(f"kept for MLflow: {kept} ended run(s), sent by the server when MLflow is back")
        return "\n".join(lines)

    def finish(self) -> None:
        """Flush, log notebook and environment, end the run (idempotent; never raises).

        What MLflow cannot take before the kernel ends (it is away, or never opened the
        run) is kept on disk (see :mod:`hubforge.server_extension.pending`) for the server to replay.
        """
        if self._finished or self.queue is None:
            return
        self._finished = True
        self._stop.set()
        if self._opener is not None:
            self._opener.join(self.close_timeout)
        with self._lock:
            if self._patch is not None:
                self._patch.restore()
        try:
            self._finish()
        finally:
            remove_live(self._live)

    def _finish(self) -> None:
        assert self.queue is not None
        try:
            if self.run_id is None:
                if self.queue.depth:
                    self._keep(self.queue.detach(), artifacts=True)
                return
            # MLflow failing right now: keep the data at once, within the kernel's time to end.
            if not self.queue.flush(0.5 if self.queue.failing else self.close_timeout):
                self._keep(self.queue.detach(), artifacts=True)
                return
            self.queue.close(self.close_timeout)
        except Exception as exc:
            log.warning("hubforge tracking: could not keep the run's data: %s", exc)
            return
        from mlflow import MlflowClient

        client = MlflowClient()
        for step in (self._note_dropped, self._log_snapshot, self._end_run):
            try:
                step(client)
            except Exception as exc:
                log.warning("hubforge tracking: %s failed: %s", step.__name__, exc)
                with suppress(Exception):
                    self._keep([], artifacts=step is not self._end_run)
                return

    def _keep(self, items: list[Any], artifacts: bool) -> None:
        """Leave ``items``, the snapshot (if ``artifacts``) and how the run ends for a later replay."""
        assert self.queue is not None
        # The live record's id: one id for this run, on disk and in MLflow (hubforge.replay_id).
        run = dataclasses.replace(
            self._record or self._describe(),
            run_id=self.run_id,
            status="FAILED" if self.last_failed else "FINISHED",
            end_time=int(time.time() * 1000),
            dropped=self.queue.dropped,
        )
        if self.run_id is None:  # the params _handoff would have logged to the opened run
            items = [["p", PENDING, str(k), str(v)] for k, v in _parameters().items()] + items
        with tempfile.TemporaryDirectory(prefix="hubforge-artifacts-") as tmp:
            files = self._snapshot(Path(tmp)) if artifacts else []
            self.kept = write_pending(Path(self.ctx.spool_dir), run, items, files)
        log.warning(
            "hubforge tracking: MLflow unreachable as the kernel ends; %d records of %s kept in %s, "
            "sent when it is back",
            len(items),
            self.run_id or self.ctx.experiment_name,
            self.kept,
        )

    def _note_dropped(self, client: Any) -> None:
        assert self.queue is not None
        dropped = self.queue.dropped
        if dropped:
            client.set_tag(self.run_id, "hubforge.dropped", str(dropped))
            client.log_metric(self.run_id, "hubforge.dropped", dropped)

    def _snapshot(self, folder: Path) -> list[tuple[Path, str]]:
        """The environment and the notebook as files in ``folder``, with their artifact paths."""
        req = folder / "requirements.txt"
        req.write_text(_freeze())
        files = [(req, "environment")]
        file = self.ctx.notebook_file
        if file is not None and file.suffix == ".ipynb" and file.is_file():
            import nbformat

            snapshot = folder / file.name
            nbformat.write(nbformat.read(file, as_version=4), snapshot)
            files.append((snapshot, "notebook"))
        return files

    def _log_snapshot(self, client: Any) -> None:
        with tempfile.TemporaryDirectory(prefix="hubforge-artifacts-") as tmp:
            for local, artifact_path in self._snapshot(Path(tmp)):
                client.log_artifact(self.run_id, str(local), artifact_path)

    def _end_run(self, client: Any) -> None:
        status = "FAILED" if self.last_failed else "FINISHED"
        active = self._mlflow.active_run() if self._mlflow else None
        if active is not None and active.info.run_id == self.run_id:
            self._mlflow.end_run(status=status)
        else:
            client.set_terminated(self.run_id, status)


def _parameters() -> dict[str, Any]:
    """The notebook's papermill parameters (``HUBFORGE_PARAMETERS``, a JSON object), or {}."""
    try:
        parameters = json.loads(os.environ.get("HUBFORGE_PARAMETERS") or "{}")
    except ValueError:
        return {}
    return parameters if isinstance(parameters, dict) else {}


#: 4xx answers that say "not now" rather than "no": timeouts, rate limits, a credential
#: the hub does not know at this moment. Waiting can change these.
_NOT_NOW = {401, 408, 425, 429}


def _refused(exc: Exception) -> bool:
    """Whether MLflow itself answered with a refusal (a 4xx that waiting will not change)."""
    code = getattr(exc, "get_http_status_code", lambda: 500)()
    return isinstance(code, int) and 400 <= code < 500 and code not in _NOT_NOW


def _client() -> Any:
    """The queue's MlflowClient, made on its sender thread."""
    from mlflow import MlflowClient

    return MlflowClient()


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
