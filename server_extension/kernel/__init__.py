"""The IPython extension that tracks a notebook session to MLflow.

Loaded by every kernel the hubforge server extension starts
(``--IPKernelApp.extensions=hubforge.server_extension.kernel``). Loading is
cheap: mlflow (a second or so of imports) starts importing on a background
thread right away, while the person looks at the notebook, so that the run
opened from the first tracked cell (see :class:`Tracker`) is ready by the next.
``%hubforge_tracking off|on|status`` controls it per notebook;
``HUBFORGE_TRACKING=off`` disables it.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import threading
from typing import Any

from hubforge.server_extension.kernel.context import KernelContext
from hubforge.server_extension.kernel.queue import TrackingQueue
from hubforge.server_extension.kernel.tracker import Tracker, kernel_id

__all__ = ["KernelContext", "Tracker", "TrackingQueue", "load_ipython_extension", "unload_ipython_extension"]

_tracker: Tracker | None = None


def load_ipython_extension(ipython: Any) -> None:
    """Register the cell events, the magic and the end-of-session hook."""
    global _tracker
    if _tracker is not None:
        return
    _tracker = tracker = Tracker(KernelContext.from_env(kernel_id=kernel_id()))
    ipython.events.register("pre_run_cell", tracker.pre_run_cell)
    ipython.events.register("post_run_cell", tracker.post_run_cell)
    ipython.register_magic_function(_magic, "line", "hubforge_tracking")
    atexit.register(tracker.finish)
    if tracker.enabled and tracker.ctx.tracking_uri:
        threading.Thread(target=_import_mlflow, name="hubforge-import-mlflow", daemon=True).start()


def _import_mlflow() -> None:
    """Import mlflow ahead of the first cell; a failure is the opener's to report."""
    with contextlib.suppress(Exception):
        importlib.import_module("mlflow")


def unload_ipython_extension(ipython: Any) -> None:
    """End the run and unhook everything."""
    global _tracker
    tracker, _tracker = _tracker, None
    if tracker is None:
        return
    ipython.events.unregister("pre_run_cell", tracker.pre_run_cell)
    ipython.events.unregister("post_run_cell", tracker.post_run_cell)
    atexit.unregister(tracker.finish)
    tracker.finish()


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
