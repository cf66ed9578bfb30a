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

:class:`SessionRunPatch` makes the notebook's run the one the person's own
fluent calls find: ``mlflow.log_artifact`` (or anything that needs a run) in a
cell before the run is open waits for it instead of starting another one, and
``mlflow.start_run()`` under it opens a child run of it rather than failing with
"run is already active".

:func:`per_thread_sessions` and :func:`per_thread_switch` give MLflow's
autologging bookkeeping, which MLflow keeps per process, one copy per thread.
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable, Iterator
from contextlib import suppress
from typing import Any

__all__ = [
    "FluentPatch",
    "SessionRunPatch",
    "attach_active_run",
    "carry_model_id",
    "detach_active_run",
    "per_thread_sessions",
    "per_thread_switch",
    "set_quietly",
]

NAMES = ("log_metric", "log_metrics", "log_param", "log_params", "set_tag", "set_tags")


def _run_stack(mlflow: Any, thread: int | None = None) -> list[Any] | None:
    """The stack of active runs of ``thread`` (default: this one), or None where mlflow keeps none."""
    stack = getattr(getattr(mlflow.tracking, "fluent", None), "_active_run_stack", None)
    if stack is None or not hasattr(stack, "get"):
        return None
    if thread is None or thread == threading.get_ident():
        return stack.get()
    every = getattr(stack, "get_all_thread_values", None)
    return every().get(thread) if callable(every) else None


def detach_active_run(mlflow: Any, active: Any, thread: int | None = None) -> None:
    """Take ``active`` off the top of ``thread``'s (default: this thread's) stack of active runs."""
    stack = _run_stack(mlflow, thread)
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


class SessionRunPatch:
    """Patch ``mlflow.start_run`` and the fluent API's ``_get_or_start_run`` (see the module).

    ``attach()`` makes the notebook's run the calling thread's active run, waiting
    (within its own bound) for it to open, and returns it; None when there is none
    to give. ``run_id()`` is the notebook's run id once it is open.
    """

    def __init__(self, mlflow: Any, attach: Callable[[], Any], run_id: Callable[[], str | None]):
        self.mlflow = mlflow
        self.attach = attach
        self.run_id = run_id
        self.fluent = mlflow.tracking.fluent
        self.originals: dict[str, Callable[..., Any]] = {}

    def install(self) -> None:
        """Replace both (idempotent)."""
        if self.originals:
            return
        self.originals = {"start_run": self.mlflow.start_run, "_get_or_start_run": self.fluent._get_or_start_run}
        self._signature = inspect.signature(self.originals["start_run"])
        self.mlflow.start_run = functools.wraps(self.originals["start_run"])(
            lambda *args, **kwargs: self.start_run(*args, **kwargs)
        )
        self.fluent._get_or_start_run = self.get_or_start_run

    def restore(self) -> None:
        """Put mlflow's own functions back."""
        if self.originals:
            self.mlflow.start_run = self.originals["start_run"]
            self.fluent._get_or_start_run = self.originals["_get_or_start_run"]
            self.originals = {}

    def _active_or_session(self) -> Any:
        """This thread's active run; on the cells' thread with none, the notebook's run."""
        active = self.mlflow.active_run()
        if active is None and threading.current_thread() is threading.main_thread():
            active = self.attach()
        return active

    def get_or_start_run(self) -> Any:
        """The active run or the notebook's; a new run only when there is neither."""
        return self._active_or_session() or self.originals["_get_or_start_run"]()

    def start_run(self, *args: Any, **kwargs: Any) -> Any:
        """``mlflow.start_run``; a new run started under the notebook's run is its child."""
        try:
            call = self._signature.bind(*args, **kwargs)
        except TypeError:
            return self.originals["start_run"](*args, **kwargs)
        given = call.arguments
        if not any(given.get(k) for k in ("run_id", "nested", "parent_run_id")):
            active = self._active_or_session()
            if active is not None and active.info.run_id == self.run_id():
                given["nested"] = True
        return self.originals["start_run"](*call.args, **call.kwargs)


class _PerThreadStack:
    """A list-like stack that each thread sees its own of."""

    def __init__(self) -> None:
        self._local = threading.local()

    @property
    def _items(self) -> list[Any]:
        items = getattr(self._local, "items", None)
        if items is None:
            items = self._local.items = []
        return items

    def append(self, item: Any) -> None:
        self._items.append(item)

    def pop(self, *index: int) -> Any:
        return self._items.pop(*index)

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: Any) -> Any:
        return self._items[index]

    def __iter__(self) -> Iterator[Any]:
        return iter(list(self._items))


def per_thread_sessions(autologging_utils: Any) -> None:
    """Give every autologging training-session class (now and later) per-thread stacks."""
    for cls in getattr(autologging_utils, "_training_sessions", []):
        if not isinstance(cls._session_stack, _PerThreadStack):
            cls._session_stack = _PerThreadStack()
    maker = getattr(autologging_utils, "_get_new_training_session_class", None)
    if maker is None or getattr(maker, "__hubforge__", False):
        return

    @functools.wraps(maker)
    def per_thread(*args: Any, **kwargs: Any) -> Any:
        cls = maker(*args, **kwargs)
        cls._session_stack = _PerThreadStack()
        return cls

    per_thread.__hubforge__ = True  # type: ignore[attr-defined]
    autologging_utils._get_new_training_session_class = per_thread


def per_thread_switch(instance: Any, name: str, default: Any) -> None:
    """Make ``instance.<name>`` a per-thread value (swapping in a subclass with a property)."""
    base = type(instance)
    if getattr(base, "_hubforge_per_thread", False):
        return
    local = threading.local()
    instance.__dict__.pop(name, None)
    switch = property(lambda self: getattr(local, "value", default), lambda self, v: setattr(local, "value", v))
    instance.__class__ = type(base.__name__, (base,), {name: switch, "_hubforge_per_thread": True})


def set_quietly(obj: Any, name: str, value: Any) -> None:
    with suppress(Exception):
        setattr(obj, name, value)


def carry_model_id(mlflow: Any, replayed: Any, target: Any) -> None:
    """The logged model of the replayed copy is the caller's estimator's too (post-training metrics)."""
    manager = getattr(getattr(mlflow, "sklearn", None), "_AUTOLOGGING_METRICS_MANAGER", None)
    mapping = getattr(manager, "_model_id_mapping", None)
    if isinstance(mapping, dict) and id(replayed) in mapping:
        mapping[id(target)] = mapping[id(replayed)]
