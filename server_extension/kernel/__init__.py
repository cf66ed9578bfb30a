"""The IPython extension that tracks a notebook session to MLflow.

Loaded by every kernel the hubforge server extension starts
(``--IPKernelApp.extensions=hubforge.server_extension.kernel``). Loading is
cheap: mlflow (a second or so of imports) starts importing on a background
thread right away, while the person looks at the notebook, so that the first
tracked cell (see :class:`Tracker`) finds it ready.

How a kernel ends decides how its run ends: a shutdown request (Shut Down
Kernel, Restart, the server stopping, culling) runs :meth:`Tracker.finish` at
exit; ``SIGTERM`` (what jupyter_client sends a kernel that has not left in time,
or a process manager) does the same, ending the run KILLED when a cell was still
running. Only a kernel that dies outright (``kill -9``, out of memory) leaves its
run to the server, which ends it KILLED (see :mod:`hubforge.server_extension.pending`).

``%hubforge_tracking off|on|status`` controls it per notebook;
``HUBFORGE_TRACKING=off`` disables it.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import io
import logging
import os
import signal
import sys
import threading
import time
from typing import Any

from hubforge.features import usage
from hubforge.server_extension.kernel import quiet
from hubforge.server_extension.kernel.audit import CellAudit, cell_audit
from hubforge.server_extension.kernel.context import KernelContext
from hubforge.server_extension.kernel.queue import TrackingQueue
from hubforge.server_extension.kernel.tracker import Tracker, kernel_id

__all__ = [
    "KernelContext",
    "Tracker",
    "TrackingQueue",
    "current_tracker",
    "load_ipython_extension",
    "unload_ipython_extension",
]

#: What a tracked kernel sets for MLflow unless the person set it: no telemetry from a
#: company's notebooks, and no run links printed (they name the hub's internal address).
MLFLOW_DEFAULTS = {"MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}

_tracker: Tracker | None = None
_cells: CellAudit | None = None
_handler: logging.Handler | None = None


def current_tracker() -> Tracker | None:
    """This kernel's tracker, while the extension is loaded and tracking is on."""
    tracker = _tracker
    return tracker if tracker is not None and tracker.enabled else None


def load_ipython_extension(ipython: Any) -> None:
    """Register the cell events, the magic and the end-of-session hooks."""
    global _tracker, _cells
    if _tracker is not None:
        return
    ctx = KernelContext.from_env(kernel_id=kernel_id())
    history = getattr(getattr(ipython, "history_manager", None), "input_hist_raw", None)
    _tracker = tracker = Tracker(ctx, history=(lambda: history) if history is not None else None)
    _log_to_kernel_log()
    quiet.install()
    ipython.events.register("pre_run_cell", tracker.pre_run_cell)
    ipython.events.register("post_run_cell", tracker.post_run_cell)
    _cells = cells = cell_audit(os.environ, ctx.kernel_id, ctx.user, lambda: tracker.notebook)
    if cells is not None:
        ipython.events.register("pre_run_cell", cells.pre_run_cell)
        ipython.events.register("post_run_cell", cells.post_run_cell)
        atexit.register(cells.close)
    ipython.register_magic_function(_magic, "line", "hubforge_tracking")
    usage.set_recorder(tracker.record_features)
    atexit.register(tracker.finish)
    _finish_on_shutdown_request(ipython, tracker)
    _handle_sigterm()
    _end_with_the_server()
    if tracker.enabled and ctx.tracking_uri:
        for name, value in MLFLOW_DEFAULTS.items():
            os.environ.setdefault(name, value)
        file = ctx.notebook_file(ctx.notebook)
        if file is not None:
            # MLflow's own notebook detection otherwise asks every Jupyter server it finds
            # for its sessions (with the hub token: a 403 in the server's log).
            os.environ.setdefault("IPYNB_FILE", str(file))
        # Not a daemon: a kernel shut down in these seconds lets the import end before its
        # interpreter does. A daemon thread would be frozen inside the import machinery, and a
        # kernel importing anything on its way out would then wait for its lock for good.
        tracker.importer = threading.Thread(target=_import_mlflow, args=(tracker,), name="hubforge-import-mlflow")
        tracker.importer.start()


def _import_mlflow(tracker: Tracker) -> None:
    """Import mlflow ahead of the first cell, then freeze the kernel's start out of full
    collections (see :meth:`Tracker.freeze_start_heap`); a failure is the first cell's to report.

    A first cell that comes sooner waits for this thread, and so for the freeze too,
    before its own code runs.
    """
    quiet.quiet_thread()
    with contextlib.suppress(Exception):
        importlib.import_module("mlflow")
    tracker.freeze_start_heap()


def _log_to_kernel_log() -> None:
    """hubforge's kernel-side log lines go where the kernel's own log goes, not into cells.

    ipykernel points file descriptor 2 at the notebook; ``sys.stderr.fileno()`` is its
    copy of the process's original standard error (the server's log).
    """
    global _handler
    logger = logging.getLogger("hubforge")
    if _handler is not None:
        return
    try:
        stream: Any = io.TextIOWrapper(io.FileIO(os.dup(sys.stderr.fileno()), "w"), line_buffering=True)
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        stream = sys.__stderr__
    _handler = logging.StreamHandler(stream)
    _handler.setFormatter(logging.Formatter("[hubforge %(levelname)s %(name)s] %(message)s"))
    logger.addHandler(_handler)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    logger.propagate = False


def _finish_on_shutdown_request(ipython: Any, tracker: Tracker) -> None:
    """End the run when the kernel is asked to shut down (or restart), before it winds down.

    At exit is too late for part of it: the interpreter has shut the thread pools
    MLflow's model logging uses. ipykernel calls ``do_shutdown`` on its control
    thread; the shutdown reply waits for the run to end.
    """
    kernel = getattr(ipython, "kernel", None)
    original = getattr(kernel, "do_shutdown", None)
    if original is None or getattr(original, "__hubforge__", False):
        return

    def do_shutdown(restart: bool) -> Any:
        tracker.finish()
        return original(restart)

    do_shutdown.__hubforge__ = True  # type: ignore[attr-defined]
    setattr(kernel, "do_shutdown", do_shutdown)  # noqa: B010 - on this kernel instance only


def _handle_sigterm() -> None:
    """End the run on SIGTERM too, unless someone else handles that signal already."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, _on_sigterm)


#: How long a kernel whose server died may take to end its run before it leaves anyway.
LEAVE_WITHIN_S = 30.0


def _end_with_the_server() -> None:
    """When the kernel's server dies, end the run and the cell audit before the kernel leaves.

    ipykernel's parent poller ends a kernel whose server is gone (killed, out of memory)
    with ``os._exit`` within a second: nothing registered for exit runs, and whatever the
    tracking queue still held would be lost. Its poller, not yet started while extensions
    load, becomes :class:`_ParentWatch`, which notices the same thing and ends the run
    (KILLED if a cell was running) first.
    """
    try:
        from ipykernel.kernelapp import IPKernelApp
        from ipykernel.parentpoller import ParentPollerUnix
    except ImportError:  # not an ipykernel kernel
        return
    if not IPKernelApp.initialized():
        return
    poller = getattr(IPKernelApp.instance(), "poller", None)
    if type(poller) is not ParentPollerUnix or poller.is_alive():
        return

    class _ParentWatch(ParentPollerUnix):
        """ipykernel's parent poller that ends the run before the kernel follows its server."""

        def run(self) -> None:
            # As ipykernel's: a parent pid that is not the real parent means "watch for init".
            parent = self.parent_pid if os.getppid() == self.parent_pid else 0
            while True:
                ppid = os.getppid()
                if (parent and ppid != parent) or (not parent and ppid == 1):
                    break
                time.sleep(1.0)
            try:
                _leave_with_the_server()
            finally:
                os._exit(1)

    poller.__class__ = _ParentWatch


def _leave_with_the_server() -> None:
    """End the run (KILLED if a cell was running) and the cell audit, within ``LEAVE_WITHIN_S``."""
    logging.getLogger("hubforge").warning("hubforge: this kernel's server is gone; ending its run, then leaving")
    deadline = threading.Timer(LEAVE_WITHIN_S, os._exit, (1,))
    deadline.daemon = True
    deadline.start()
    tracker, cells = _tracker, _cells
    if tracker is not None:
        tracker.finish(status="KILLED" if tracker.busy else None)
    if cells is not None:
        cells.close()


def _on_sigterm(signum: int, _frame: Any) -> None:
    """Finish the run, then leave: KILLED if a cell was running (it never got to end).

    While :meth:`Tracker.finish` still runs (on a shutdown request), the signal waits
    for it: jupyter_client sends SIGTERM halfway through its wait and SIGKILL at the end.
    """
    tracker = _tracker
    if tracker is not None and tracker.finishing and not tracker.finished:
        return
    busy = tracker is not None and tracker.busy
    if tracker is not None:
        tracker.finish(status="KILLED" if busy else None)
    if busy:
        # Raising here would only end the cell (IPython catches SystemExit): leave now, with
        # the cells recorded so far written (atexit, which would, does not run).
        if _cells is not None:
            _cells.close()
        os._exit(128 + signum)
    raise SystemExit(128 + signum)


def unload_ipython_extension(ipython: Any) -> None:
    """End the run and unhook everything."""
    global _tracker, _cells
    tracker, _tracker = _tracker, None
    cells, _cells = _cells, None
    if cells is not None:
        ipython.events.unregister("pre_run_cell", cells.pre_run_cell)
        ipython.events.unregister("post_run_cell", cells.post_run_cell)
        atexit.unregister(cells.close)
        cells.close()
    if tracker is None:
        return
    usage.set_recorder(None)
    ipython.events.unregister("pre_run_cell", tracker.pre_run_cell)
    ipython.events.unregister("post_run_cell", tracker.post_run_cell)
    atexit.unregister(tracker.finish)
    if signal.getsignal(signal.SIGTERM) is _on_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    tracker.finish()
    quiet.uninstall()


def _magic(line: str) -> None:
    """%hubforge_tracking off|on|status: control tracking of this notebook."""
    arg = line.strip().lower() or "status"
    if _tracker is None:
        print("hubforge tracking is not loaded")
        return
    if arg in {"on", "off"}:
        _tracker.set_enabled(arg == "on")
        print(f"hubforge tracking {arg}")
    elif arg == "status":
        print(_tracker.status())
    else:
        print("usage: %hubforge_tracking off|on|status")
