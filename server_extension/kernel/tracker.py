"""The per-kernel tracker: one MLflow run per notebook session, opened from the first cell.

Nothing on a cell's path waits for MLflow. The first tracked cell finishes the
mlflow import begun when the kernel started (it waits only when the person was
quicker than the import), switches autologging on (see :mod:`.autolog`: fits
become child runs, logged off the cell's path) and starts a background thread
that opens the run; meanwhile cell metrics, and the person's own fluent logging
calls, are queued under a placeholder id that :class:`TrackingQueue` holds until
the run is named. The run becomes the cells' active run at the start of the next
cell once it is open, or as soon as a cell asks MLflow for its run.

The notebook may be renamed or moved while the kernel runs: the server tells the
kernel (:mod:`hubforge.server_extension.notebook_paths`), and the run's source
tags, its snapshot and the runs opened afterwards follow.
"""

from __future__ import annotations

import atexit
import dataclasses
import gc
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path, PurePosixPath
from typing import Any

from hubforge.contract import KEY, KIND, METRIC, PARAM, RUN_ID_FILE_ENV, TAG
from hubforge.features.usage import FeatureUsage, Retrieval
from hubforge.installed import freeze
from hubforge.server_extension.kernel import autolog as autologging
from hubforge.server_extension.kernel.context import (
    KernelContext,
    experiment_name,
    experiment_named,
    is_untitled,
    run_tags,
    source_tags,
)
from hubforge.server_extension.kernel.ending import RunEnding, parameters
from hubforge.server_extension.kernel.fit_process import FitProcess
from hubforge.server_extension.kernel.patches import (
    FluentPatch,
    SessionRunPatch,
    attach_active_run,
    detach_active_run,
)
from hubforge.server_extension.kernel.queue import TrackingQueue, refused
from hubforge.server_extension.kernel.quiet import quiet_thread
from hubforge.server_extension.notebook_paths import NotebookWatch
from hubforge.server_extension.pending import (
    PLACEHOLDER,
    PendingRun,
    keep_refused,
    list_pending,
    write_live,
)
from hubforge.server_extension.requirements_cache import REQUIREMENTS, RequirementsCache

__all__ = ["Tracker"]

log = logging.getLogger(__name__)
MAGIC = "%hubforge_tracking"
#: The run id cell metrics are queued under until MLflow has created the run.
PENDING = PLACEHOLDER
#: Seconds between attempts to open the run while MLflow is away (doubling to the max).
RETRY_FIRST, RETRY_MAX = 2.0, 60.0
#: Seconds from a shutdown request to the kernel leaving, at most (fits handed over meanwhile;
#: the server sets it beside the kernel's shutdown wait: HUBFORGE_CLOSE_BUDGET).
CLOSE_BUDGET = 20.0
#: Run data queued between cells goes out once the kernel has been this many seconds
#: without a cell starting or ending (a long cell's own metrics flow while it runs), and
#: within ``SEND_WITHIN_S`` seconds however busy it is: requests stay off cells run back to back.
SEND_WHEN_QUIET_S = 0.5
SEND_WITHIN_S = 10.0
#: Source tags that follow the notebook when it is renamed; the run's name does too.
MOVING_TAGS = ("mlflow.source.name", "hubforge.notebook")
RUN_NAME = "mlflow.runName"


class Tracker(RunEnding):
    """Open, feed and close the run of one kernel; wired to IPython's cell events.

    ``close_budget`` bounds :meth:`finish` (seconds from the shutdown request to the
    process leaving; see :class:`.ending.RunEnding`). ``import_wait`` bounds what a
    first cell waits for the mlflow import.
    """

    def __init__(
        self,
        ctx: KernelContext,
        close_budget: float | None = None,
        import_wait: float = 30.0,
        history: Callable[[], list[str]] | None = None,
    ):
        self.ctx = ctx
        self.history = history  # the kernel's input history (IPython's In), for the run's record
        self.enabled = ctx.enabled
        self.close_budget = close_budget or ctx.close_budget or CLOSE_BUDGET
        self.import_wait = import_wait
        self.watch = NotebookWatch(Path(ctx.spool_dir), ctx.kernel_id, ctx.notebook)
        self.busy = False  # a cell is executing
        self.cells_began = False  # a cell's own code has started (see freeze_start_heap)
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self.queue: TrackingQueue | None = None
        self.autolog: autologging.Autolog | None = None
        self.features = FeatureUsage()  # the feature views and services this session read
        self.last_failed = False
        self.finishing = False  # finish() has started (on whichever thread)
        self.finished = False  # ... and is done
        self.kept: Path | None = None  # where run data waits for MLflow, if the kernel ended without it
        self.refused_at: Path | None = None  # where records MLflow refused are kept
        self.importer: threading.Thread | None = None  # the mlflow import begun at kernel start
        self._mlflow: Any = None
        self._patch: FluentPatch | None = None
        self._session_patch: SessionRunPatch | None = None
        self._opener: threading.Thread | None = None
        self._opened: Any = None  # the ActiveRun, once open
        self._attached = False
        self._attached_to: int | None = None  # the thread whose active run it is
        self._open_error: str | None = None
        self._unreachable: str | None = None  # why MLflow is away, while the opener retries
        self._told_unreachable = False
        self._stop = threading.Event()  # set when the kernel finishes: the opener gives up
        self._lock = threading.Lock()  # the fluent patch and the notices, across threads
        self._renaming = threading.Lock()  # one experiment rename at a time
        self._notices: list[str] = []
        self._t0 = 0.0
        self._reported_dropped = 0
        self._start_ms = 0
        self._requirements = ""
        self._opened_as = ""  # the notebook's path when its run opened
        self._record: PendingRun | None = None  # what this kernel records, as a pending entry would say it
        self._live: Path | None = None  # its live/ file, for the server to adopt if the kernel dies

    @property
    def notebook(self) -> str:
        """The notebook's path as it is now (relative to the server's root)."""
        return self.watch.path

    # -- IPython events ---------------------------------------------------------

    def pre_run_cell(self, info: Any) -> None:
        """Start tracking on the first tracked cell; attach the run once open; follow renames."""
        self.busy = True
        if self.enabled and not (info.raw_cell or "").lstrip().startswith(MAGIC):
            if self.queue is None:
                self._start()
            elif self._opened is not None and not self._attached:
                self._attach()
        if self.watch.changed():
            self._moved()
        if self.queue is not None:
            self.queue.activity()
        self.cells_began = True
        self._t0 = time.perf_counter()

    def post_run_cell(self, result: Any) -> None:
        """Queue the cell's duration (step: its execution count), and an error mark when it
        failed; say once what went wrong."""
        duration = time.perf_counter() - self._t0
        self.busy = False
        if self.autolog is not None:
            self.autolog.wake()
        if self._open_error is not None:
            self._give_up()
        self._tell()
        if not self.enabled or self.queue is None:
            return
        count = result.execution_count or 0
        failed = not result.success
        self.last_failed = failed
        q, run = self.queue, self.run_id or PENDING
        q.activity()
        q.log_metric(run, "hubforge.cell.duration_s", duration, step=count)
        if failed:
            q.log_metric(run, "hubforge.cell.error", 1.0, step=count)

    def _tell(self) -> None:
        """Print, once, each thing the person should know: one short line each, no traceback."""
        q, autolog = self.queue, self.autolog
        if not (
            self._notices
            or (autolog is not None and autolog.notices)
            or (q is not None and q.dropped > self._reported_dropped)
            or (self._unreachable is not None and not self._told_unreachable)
        ):
            return  # after nearly every cell: nothing, and no lock taken
        lines = []
        if self._unreachable is not None and not self._told_unreachable and self.run_id is None:
            self._told_unreachable = True
            lines.append(
                f"MLflow not reachable ({self._unreachable}); this notebook's run data is kept and sent when it is back"
            )
        q = self.queue
        if q is not None and q.dropped > self._reported_dropped:
            self._reported_dropped = q.dropped
            lines.append(f"{q.dropped} tracking records dropped (MLflow unreachable, spool full)")
        with self._lock:
            lines += self._notices
            self._notices.clear()
            if self.autolog is not None:
                lines += self.autolog.notices
                self.autolog.notices.clear()
        for line in lines:
            print(f"hubforge: {line}", file=sys.stderr)

    # -- starting ----------------------------------------------------------------

    def freeze_start_heap(self) -> bool:
        """Keep what the kernel built to start out of every later full garbage collection,
        while no cell's code has run yet; True when it did.

        ipykernel, IPython and MLflow are some 200,000 long-lived objects, which CPython
        scans whole every so many surviving allocations: about 65 ms during which the
        cell waits, three times what an untracked kernel's scan of its own start costs.
        Frozen (``gc.freeze``, which only moves them aside: instant), they are left out of
        the scan. Nothing is collected first: the periodic collections of the import leave
        a few dozen unreachable objects, which stay, and a collection here would cost a
        first cell that waits for this the 65 ms again.

        Only the start is frozen (with the person's IPython startup files, if any): a
        person's own objects must stay collectable (frozen cyclic garbage is never freed),
        so nothing is frozen once a cell's code has begun, and a freeze that a cell
        overtook is undone. A kernel whose permanent generation someone else uses is left
        alone.
        """
        if self.cells_began or gc.get_freeze_count():
            return False
        gc.freeze()
        if self.cells_began:  # a cell began between the check and the freeze
            gc.unfreeze()
            return False
        return True

    def _start(self) -> None:
        """On the first tracked cell: mlflow, autologging, the queue; the run opens in the background."""
        if not self.ctx.tracking_uri:
            self.enabled = False
            print("hubforge: tracking off (no MLFLOW_TRACKING_URI)", file=sys.stderr)
            return
        self._start_ms = int(time.time() * 1000)
        self.features = FeatureUsage()
        spool = Path(self.ctx.spool_dir)
        self.queue = TrackingQueue(
            _client, spool_dir=spool, on_refused=self._refused, quiet=SEND_WHEN_QUIET_S, max_delay=SEND_WITHIN_S
        )
        self.queue.hold(PENDING)
        try:
            self._set_up_mlflow()
        except Exception as exc:  # a cell must never fail because of tracking
            log.warning("hubforge tracking could not start: %s", exc)
            self._open_error = str(exc) or type(exc).__name__
            return
        self._opener = threading.Thread(target=self._open, name="hubforge-open-run", daemon=True)
        self._opener.start()

    def _set_up_mlflow(self) -> None:
        """On the cells' thread, before any other thread talks to MLflow: patches and autolog.

        ``mlflow.autolog()`` runs import hooks for libraries already imported while
        holding mlflow's import-hook lock; with no other thread importing yet, that
        cannot deadlock.
        """
        if self.importer is not None:
            self.importer.join(self.import_wait)
        import mlflow

        self._mlflow = mlflow
        with self._lock:
            self._patch = FluentPatch(mlflow, self.queue, PENDING)
            self._patch.install()
        self._session_patch = SessionRunPatch(mlflow, self.attach_waiting, lambda: self.run_id)
        self._session_patch.install()
        self.autolog = autologging.Autolog(self, mlflow)
        self.autolog.process = FitProcess(Path(self.ctx.spool_dir), self.autolog.outcome)
        self.autolog.requirements_cache = RequirementsCache(Path(self.ctx.spool_dir) / REQUIREMENTS)
        autologging.install(self.autolog)
        mlflow.autolog(silent=True)
        # mlflow registered its own atexit run ender on import; end ours first, our way.
        atexit.unregister(self.finish)
        atexit.register(self.finish)

    def _open(self) -> None:
        """On the opener thread: the experiment and the run, then hand the queued data over."""
        quiet_thread()
        assert self.queue is not None
        try:
            self._record = self._describe()
            self._say_live()
            opened = self._open_run_retrying(self._mlflow)
            if opened is None:
                return
            detach_active_run(self._mlflow, opened)
            with self._lock:
                if self._patch is not None:
                    self._patch.run_id = opened.info.run_id
                self.run_id = self._record.run_id = opened.info.run_id
            self._requirements = freeze()  # for the server, should the kernel die
            self._say_live()
            self._handoff(self.queue, self.run_id)
            self.queue.release(PENDING, self.run_id)
            self._opened = opened
            with suppress(Exception):  # the person's own start_run() then lands in this experiment
                self._mlflow.set_experiment(experiment_id=self.experiment_id)
            if self.notebook != self._opened_as:  # moved while the run was opening
                self._rename_experiment()
            if self.autolog is not None:
                self.autolog.wake()
        except Exception as exc:  # a cell must never fail because of tracking
            log.warning("hubforge tracking could not start: %s", exc)
            self._open_error = str(exc) or type(exc).__name__

    def _describe(self) -> PendingRun:
        """This kernel's run as a pending entry says it: enough to open it elsewhere."""
        file = self.ctx.notebook_file(self.notebook)
        return PendingRun(
            tracking_uri=self.ctx.tracking_uri or "",
            run_id=self.run_id,
            experiment_name=experiment_name(self.ctx, self.notebook),
            tags=run_tags(self.ctx, self.notebook),
            start_time=self._start_ms,
            notebook_file=str(file) if file is not None else "",
        )

    def _say_live(self) -> None:
        """(Re)write this kernel's live/ file; tracking goes on without it if that fails."""
        assert self._record is not None and self.queue is not None
        try:
            self._live = write_live(Path(self.ctx.spool_dir), self._record, self.queue.spool_path, self._requirements)
        except OSError as exc:
            log.warning("hubforge tracking: cannot record the run in %s: %s", self.ctx.spool_dir, exc)

    def _open_run_retrying(self, mlflow: Any) -> Any:
        """The experiment and the run, tried again with backoff while MLflow is away.

        Meanwhile cells run and their data waits in the queue (memory, then the disk
        spool); the person is told once. None when the kernel finishes first. Each
        try names the experiment after the notebook as it is named then.
        """
        delay = RETRY_FIRST
        while not self._stop.is_set():
            assert self._record is not None
            try:
                client = mlflow.MlflowClient()
                self._opened_as = self.notebook
                name = self._record.experiment_name = experiment_name(self.ctx, self._opened_as)
                self.experiment_id = experiment_named(client.get_experiment_by_name, client.create_experiment, name)
                return mlflow.start_run(
                    experiment_id=self.experiment_id, tags={**self._record.tags, **self._tags_now()}
                )
            except Exception as exc:
                if refused(exc):  # MLflow answered no: waiting changes nothing
                    raise
                if self._unreachable is None:
                    self._unreachable = str(exc).splitlines()[0][:200] or type(exc).__name__
                log.debug("hubforge: MLflow not reachable, retrying in %.0f s: %s", delay, exc)
                self._stop.wait(delay)
                delay = min(delay * 2, RETRY_MAX)
        return None

    def _tags_now(self) -> dict[str, str]:
        """The tags that name the notebook, as it is named now; the run is named after it."""
        tags = {key: value for key, value in source_tags(self.ctx, self.notebook).items() if key in MOVING_TAGS}
        return {**tags, RUN_NAME: PurePosixPath(self.notebook).name}

    def _attach(self) -> bool:
        """Make the open run this (the cells') thread's active run; True when it is."""
        if self._attached or self._opened is None or not self.enabled:
            return self._attached
        try:
            self._attached = attach_active_run(self._mlflow, self._opened)
            self._attached_to = threading.get_ident()
        except Exception as exc:
            log.warning("hubforge: could not make run %s active: %s", self.run_id, exc)
        return self._attached

    def attach_waiting(self, timeout: float = 30.0) -> Any:
        """The notebook's run as the cells' active run, waiting for it to open; None without one.

        For a cell that asks MLflow for its run (``mlflow.log_artifact``, ``start_run``)
        before the next cell would have attached it.
        """
        opener = self._opener
        if self._opened is None and opener is not None and self._unreachable is None and not self.finishing:
            opener.join(timeout)
        return self._opened if self._attach() else None

    def session_run(self) -> tuple[str, str] | None:
        """(run id, experiment id) once the run is open (see :class:`.autolog.Session`)."""
        run_id, experiment_id = self.run_id, self.experiment_id
        return (run_id, experiment_id) if run_id and experiment_id else None

    def record_features(self, retrieval: Retrieval) -> None:
        """A read of feature values (see :mod:`hubforge.features.usage`): counted here, merged
        into the session run's tags on the queue's sender thread; a repeated one costs a lookup."""
        queue = self.queue
        if self.enabled and queue is not None and self.features.note(retrieval):
            queue.fold(self.run_id or PENDING, self.features.merge, retrieval)

    def source_tags(self) -> dict[str, str]:
        """The source tags of runs started in this kernel, naming the notebook as it is now."""
        return source_tags(self.ctx, self.notebook)

    def child_tags(self) -> dict[str, str]:
        """The tags a child run (a fit) starts with."""
        return {key: value for key, value in self.source_tags().items() if key != "mlflow.user"}

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

    # -- while it runs ---------------------------------------------------------------

    def _moved(self, rename_now: bool = True) -> None:
        """The notebook was renamed or moved: the run's source tags and live record follow."""
        log.info("hubforge: the notebook is now %s", self.notebook)
        if self.queue is not None:
            for key, value in self._tags_now().items():
                self.queue.set_tag(self.run_id or PENDING, key, value)
        if self._record is not None:
            file = self.ctx.notebook_file(self.notebook)
            self._record.notebook_file = str(file) if file is not None else ""
            self._record.tags.update(self._tags_now())
            self._say_live()
        if rename_now and self.run_id is not None and self.experiment_id is not None:
            threading.Thread(target=self._rename_experiment, name="hubforge-rename", daemon=True).start()

    def _rename_experiment(self) -> None:
        """An untitled notebook's experiment is its own: it takes the notebook's new name if free.

        One rename at a time, each to the name of the notebook as it is then: quick
        successive moves end with the experiment named after the last.
        """
        quiet_thread()
        assert self._record is not None
        with self._renaming:
            old, new = self._record.experiment_name, experiment_name(self.ctx, self.notebook)
            if not is_untitled(self._opened_as) or is_untitled(self.notebook) or old == new:
                return
            try:
                client = self._mlflow.MlflowClient()
                if client.get_experiment_by_name(new) is None:
                    client.rename_experiment(self.experiment_id, new)
                    self._record.experiment_name = new
            except Exception as exc:
                log.info("hubforge: experiment %s keeps its name: %s", old, exc)

    def _refused(self, items: list[list[Any]], why: str) -> None:
        """On the sender thread: MLflow refused ``items``; keep them with the reason, tell the person."""
        run = dataclasses.replace(self._record or self._describe(), run_id=self.run_id)
        reasons = [f"{_KINDS.get(i[KIND], i[KIND])} {i[KEY]}: {why}" for i in items]
        self.refused_at = keep_refused(Path(self.ctx.spool_dir), run, items, reasons)
        first = items[0]
        what = f"{_KINDS.get(first[KIND], first[KIND])} {first[KEY]!r}" + (
            f" and {len(items) - 1} more" if len(items) > 1 else ""
        )
        with self._lock:
            self._notices.append(f"MLflow refused {what}: {why[:160]} (kept in {self.refused_at})")

    @staticmethod
    def _handoff(queue: TrackingQueue, run_id: str) -> None:
        """papermill's parameters become run params; its engine learns the run id (see papermill_engine)."""
        for key, value in parameters().items():
            queue.log_param(run_id, str(key), str(value))
        run_id_file = os.environ.get(RUN_ID_FILE_ENV)
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
        if self.watch.changed(fresh=True):  # the path as it is now, not as of the last look
            self._moved()
        q = self.queue
        opening = self._opener is not None and self._opener.is_alive()
        fits = self.autolog
        lines = [
            f"tracking: {'on' if self.enabled else 'off'}",
            f"run: {self.run_id or ('(opening)' if opening else '(none yet)')}",
            f"notebook: {self.notebook}",
            f"experiment: {experiment_name(self.ctx, self.notebook)}, id {self.experiment_id or '-'}",
            f"queue depth: {q.depth if q else 0}",
            f"dropped: {q.dropped if q else 0}",
            f"refused: {q.refused if q else 0}" + (f" (kept in {self.refused_at})" if self.refused_at else ""),
            f"fits: {fits.logged if fits else 0} logged, {fits.logging if fits else 0} logging, "
            f"{fits.waiting if fits else 0} waiting, {fits.failed if fits else 0} not taken",
        ]
        if q is not None and q.last_error:
            lines.append(f"last error: {q.last_error}")
        kept = len(list_pending(Path(self.ctx.spool_dir)))
        if kept:
            lines.append(f"kept for MLflow: {kept} ended run(s), sent by the server when MLflow is back")
        return "\n".join(lines)


_KINDS = {METRIC: "metric", PARAM: "param", TAG: "tag"}


def _client() -> Any:
    """The queue's MlflowClient, made on its sender thread."""
    quiet_thread()
    from mlflow import MlflowClient

    return MlflowClient()


def kernel_id() -> str:
    """The kernel id from the connection file name (``kernel-<id>.json``), or ''."""
    try:
        from ipykernel.connect import get_connection_file

        name = os.path.basename(get_connection_file())
    except Exception:
        return ""
    return name.removeprefix("kernel-").removesuffix(".json")
