"""Where hubforge reaches into mlflow: the fluent logging functions and the active run.

:class:`FluentPatch` routes the user's own ``mlflow.log_metric``/``log_param``/
``set_tag`` calls through the queue. Only calls aimed at the tracked run take
the fast path (no ``run_id`` or the tracked one, and no other run active);
anything else, and any argument the queue does not carry (``model_id``,
``dataset``), goes to MLflow unchanged.

:func:`detach_active_run` and :func:`attach_active_run` move a run started on
one thread (where it was opened, off the cells' path) to the thread that runs
the cells: mlflow keeps the active run per thread, and autolog and the fluent
API look there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["FluentPatch", "attach_active_run", "detach_active_run"]

NAMES = ("log_metric", "log_metrics", "log_param", "log_params", "set_tag", "set_tags")


def _run_stack(mlflow: Any) -> list[Any] | None:
    """This thread's stack of active runs, or None where mlflow no longer keeps one there."""
    stack = getattr(getattr(mlflow.tracking, "fluent", None), "_active_run_stack", None)
    return stack.get() if stack is not None and hasattr(stack, "get") else None


def detach_active_run(mlflow: Any, active: Any) -> None:
    """Take ``active`` (just returned by ``mlflow.start_run`` on this thread) off this thread."""
    stack = _run_stack(mlflow)
    if stack and stack[-1] is active:
        stack.pop()


def attach_active_run(mlflow: Any, active: Any) -> bool:
    """Make ``active`` this thread's active run, unless one is active already; True when it is.

    Where mlflow's internals have moved, falls back to resuming the run by id
    (``start_run(run_id=...)``, which asks the server).
    """
    if mlflow.active_run() is not None:
        return False
    stack = _run_stack(mlflow)
    if stack is None:
        mlflow.start_run(run_id=active.info.run_id)
    else:
        stack.append(active)
    return True


class FluentPatch:
    """Swap mlflow's fluent logging functions for queue-backed ones; ``restore()`` undoes it."""

    def __init__(self, mlflow: Any, queue: Any, run_id: str):
        self.mlflow = mlflow
        self.queue = queue
        self.run_id = run_id
        self.originals: dict[str, Callable[..., Any]] = {}

    def install(self) -> None:
        """Replace the module attributes (idempotent)."""
        if self.originals:
            return
        for name in NAMES:
            self.originals[name] = getattr(self.mlflow, name)
            setattr(self.mlflow, name, getattr(self, name))

    def restore(self) -> None:
        """Put mlflow's own functions back."""
        for name, func in self.originals.items():
            setattr(self.mlflow, name, func)
        self.originals.clear()

    def _ours(self, run_id: str | None = None) -> bool:
        if run_id is not None:
            return run_id == self.run_id
        active = self.mlflow.active_run()
        return active is None or active.info.run_id == self.run_id

    def log_metric(self, key, value, step=None, synchronous=None, timestamp=None, run_id=None, **kwargs):
        """``mlflow.log_metric``, queued when aimed at the tracked run."""
        if kwargs or not self._ours(run_id):
            return self.originals["log_metric"](key, value, step, synchronous, timestamp, run_id, **kwargs)
        self.queue.log_metric(self.run_id, key, value, timestamp, step)
        return None

    def log_metrics(self, metrics, step=None, synchronous=None, run_id=None, timestamp=None, **kwargs):
        """``mlflow.log_metrics``, queued when aimed at the tracked run."""
        if kwargs or not self._ours(run_id):
            return self.originals["log_metrics"](metrics, step, synchronous, run_id, timestamp, **kwargs)
        for key, value in metrics.items():
            self.queue.log_metric(self.run_id, key, value, timestamp, step)
        return None

    def log_param(self, key, value, synchronous=None):
        """``mlflow.log_param``, queued when aimed at the tracked run; returns the value."""
        if not self._ours():
            return self.originals["log_param"](key, value, synchronous)
        self.queue.log_param(self.run_id, key, value)
        return value

    def log_params(self, params, synchronous=None, run_id=None):
        """``mlflow.log_params``, queued when aimed at the tracked run."""
        if not self._ours(run_id):
            return self.originals["log_params"](params, synchronous, run_id)
        for key, value in params.items():
            self.queue.log_param(self.run_id, key, value)
        return None

    def set_tag(self, key, value, synchronous=None):
        """``mlflow.set_tag``, queued when aimed at the tracked run."""
        if not self._ours():
            return self.originals["set_tag"](key, value, synchronous)
        self.queue.set_tag(self.run_id, key, value)
        return None

    def set_tags(self, tags, synchronous=None):
        """``mlflow.set_tags``, queued when aimed at the tracked run."""
        if not self._ours():
            return self.originals["set_tags"](tags, synchronous)
        for key, value in tags.items():
            self.queue.set_tag(self.run_id, key, value)
        return None
