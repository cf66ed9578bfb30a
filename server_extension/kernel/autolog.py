"""Autologged training calls as child runs of the notebook's run, logged off the cell's path.

MLflow's autologging wraps a library's training call (``estimator.fit``) in a
*patch function* that logs params, trains, then logs metrics, plots and the
model into the active run. In a notebook whose session run is active that means
every fit lands in one run (two fits collide: params may not change within a
run) and the cell waits seconds for plots, model serialisation and requirement
inference. Every integration applies ``safe_patch(..., manage_run=True)``, which
wraps the patch function with ``with_managed_run``; :func:`install` replaces
that wrapper (before ``mlflow.autolog()`` patches anything) with
:meth:`Autolog.wrap`, which routes each call:

* **replayed** (``REPLAYED``: integrations whose patch function only reads the
  fitted result, e.g. scikit-learn): the cell runs the real training call alone
  and hands a copy of the fitted estimator, its arguments and the result to the
  fit logger thread. When the kernel is idle and the session run is open, that
  thread opens a child run of it and runs MLflow's own patch function over the
  copy, with an ``original`` that returns the fitted copy instead of training
  again. A fit made before the run is open waits for it; nothing is missed.
* **inline** (the rest, e.g. Keras, whose callbacks log during training): the
  patch function runs on the cell, as MLflow runs it, inside a child run.
* **mlflow**: the person's own run is active: MLflow decides, as without hubforge.
* **plain**: tracking is off, or the call runs inside another training call
  (a pipeline's steps, a search's candidates, its worker threads): train only.

MLflow keeps autologging's bookkeeping per process (training sessions, the
post-training metrics switch); hubforge makes both per thread, so a replay on
the fit logger thread never hides a cell's own training or metric calls.
"""

from __future__ import annotations

import functools
import logging
import shutil
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from hubforge.server_extension.kernel.patches import (
    attach_active_run,
    carry_model_id,
    detach_active_run,
    per_thread_sessions,
    per_thread_switch,
    set_quietly,
)
from hubforge.server_extension.kernel.quiet import quiet_thread
from hubforge.server_extension.kernel.training import (
    FitJob,
    fitted,
    now_ms,
    requirements_key,
    run_name,
    snapshot,
    weakrefable,
)

__all__ = ["REPLAYED", "Autolog", "FitJob", "Session", "install", "prepare_flavor"]

log = logging.getLogger(__name__)

#: Integrations whose patch function can run after training, over a copy of its result.
REPLAYED = frozenset({"sklearn", "statsmodels"})
#: Seconds a fit being logged when the kernel ends may take past the deadline.
IN_FLIGHT_GRACE = 10.0
#: Seconds between attempts to open a child run while MLflow is away.
RETRY_FIRST, RETRY_MAX = 2.0, 30.0
PLAIN, MLFLOW, REPLAY, INLINE = "plain", "mlflow", "replay", "inline"


class Session(Protocol):
    """What :class:`Autolog` needs of the notebook's tracker."""

    enabled: bool
    busy: bool

    def session_run(self) -> tuple[str, str] | None:
        """(run id, experiment id) of the session run once it is open, else None."""

    def child_tags(self) -> dict[str, str]:
        """Tags a child run starts with (the notebook, the server, ...)."""

    def keep(self, job: FitJob, owner: tuple[int, float] | None) -> Path:
        """Keep ``job`` in the spool for the fit logger ``owner`` (pid, start time); the entry."""


class Autolog:
    """Route autologged training calls (see the module) and log the replayed ones."""

    def __init__(self, session: Session, mlflow: Any, thread: bool = True):
        self.session = session
        self.mlflow = mlflow
        self.patches: dict[str, Callable[..., Any]] = {}  # an integration's patch function, as MLflow made it
        self.logged = 0
        self.failed = 0
        self.notices: list[str] = []  # one-line news for the person, shown after a cell
        self.process: Any = None  # the kernel's fit logger process (FitProcess), when it has one
        self.requirements_cache: Any = None  # a RequirementsCache shared with the person's other processes
        self._started_process = False
        self._handed: dict[str, str] = {}  # kept fit id -> estimator name, sent to the process
        self._local = threading.local()
        self._inside: set[int] = set()  # threads inside a routed training call
        self._jobs: deque[FitJob] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._current: FitJob | None = None
        self._draining = False
        self._requirements: dict[tuple[Any, ...], _Inferred] = {}
        self._requirements_lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="hubforge-fits", daemon=True)
        if thread:
            self._thread.start()

    # -- routing (on whatever thread trains) -------------------------------------------------

    def wrap(self, mlflow_wrapper: Callable[..., Any]) -> Callable[..., Any]:
        """A replacement for ``safety.with_managed_run``; ``mlflow_wrapper`` is MLflow's own."""

        def with_managed_run(integration: str, patch_function: Callable[..., Any], tags: Any = None) -> Any:
            managed = mlflow_wrapper(integration, patch_function, tags=tags)
            self.patches.setdefault(integration, patch_function)
            if integration in REPLAYED:
                self._start_process()

            def patch(original: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
                route = self.route(integration)
                if route == PLAIN:
                    return original(*args, **kwargs)
                if route == MLFLOW:
                    return managed(original, *args, **kwargs)
                job = (integration, patch_function, dict(tags or {}), original, args, kwargs)
                return self._replay_later(*job) if route == REPLAY else self._inline(*job)

            return functools.update_wrapper(patch, patch_function)

        return with_managed_run

    def _start_process(self) -> None:
        """Start the fit logger as soon as a library whose fits it logs is imported (once).

        Its own start (mlflow, the library, the first requirements) then happens while the
        person works towards a first fit, at a lower priority, not after it.
        """
        if self._started_process or self.process is None:
            return
        self._started_process = True
        threading.Thread(target=self.process.owner, name="hubforge-start-fit-logger", daemon=True).start()

    def route(self, integration: str) -> str:
        """Where this training call's autologging goes (see the module)."""
        me = threading.get_ident()
        if me == self._thread.ident or self._depth() or self._closed:
            return PLAIN
        if self._inside - {me}:
            return PLAIN  # a worker thread of a training call in progress elsewhere
        active = self.mlflow.active_run()
        opened = self.session.session_run()
        if active is not None and (opened is None or active.info.run_id != opened[0]):
            return MLFLOW
        if not self.session.enabled:
            return PLAIN
        return REPLAY if integration in REPLAYED else INLINE

    def _depth(self) -> int:
        """How many routed training calls the calling thread is inside."""
        return int(getattr(self._local, "depth", 0))

    @contextmanager
    def _training(self) -> Iterator[None]:
        me = threading.get_ident()
        self._local.depth = self._depth() + 1
        self._inside.add(me)
        try:
            yield
        finally:
            self._local.depth -= 1
            if not self._local.depth:
                self._inside.discard(me)

    def _replay_later(self, integration, patch_function, tags, original, args, kwargs) -> Any:
        started = now_ms()
        with self._training():
            result = original(*args, **kwargs)  # the user's error, if any, is theirs: no run
        try:
            copied_args, copied_kwargs, copied_result = snapshot((args, kwargs, result))
            target = weakref.ref(args[0]) if args and weakrefable(args[0]) else None
            job = FitJob(
                integration, patch_function, tags, original, copied_args, copied_kwargs, copied_result,
                run_name(args, original), started, now_ms(), target, requirements_key(copied_args),
            )  # fmt: skip
        except Exception as exc:
            log.warning("hubforge: could not keep a %s training call for MLflow: %s", integration, exc)
            self._notice(f"this {integration} fit is not logged ({type(exc).__name__}: {exc})")
            return result
        with self._cond:
            self._jobs.append(job)
            self._cond.notify_all()
        if (
            integration == "sklearn"
            and self.process is None
            and ("sklearn", job.requirements_key) not in self._requirements
        ):
            threading.Thread(target=self.warm_up, args=(job,), name="hubforge-requirements", daemon=True).start()
        return result

    def warm_up(self, job: FitJob) -> None:
        """Infer the requirements of ``job``'s kind of model now: its logging finds them ready.

        Inference loads the model in a subprocess (seconds); done ahead (beside the cells,
        or as the fit logger starts), the fit is logged sooner.
        """
        quiet_thread()
        import tempfile

        try:
            import mlflow.sklearn
            from mlflow.utils.autologging_utils import get_autologging_config

            default = mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE
            form = get_autologging_config("sklearn", "serialization_format", default)  # as autolog saves it
            with self._replaying(job), tempfile.TemporaryDirectory(prefix="hubforge-requirements-") as tmp:
                mlflow.sklearn.save_model(job.args[0], f"{tmp}/model", serialization_format=form)
        except Exception as exc:
            log.debug("hubforge: requirements of %s not inferred ahead: %s", job.name, exc)

    def _inline(self, integration, patch_function, tags, original, args, kwargs) -> Any:
        opened = self.session.session_run()
        if opened is None:
            self._notice(f"{run_name(args, original)} is not logged: the notebook's MLflow run is not open yet")
            with self._training():
                return original(*args, **kwargs)
        run_id, experiment_id = opened
        child = {**self.session.child_tags(), **tags, "mlflow.parentRunId": run_id}
        with (
            self._training(),
            self.mlflow.start_run(
                experiment_id=experiment_id, run_name=run_name(args, original), nested=True, tags=child
            ),
        ):
            return patch_function(original, *args, **kwargs)

    # -- the fit logger thread -------------------------------------------------------------------

    @property
    def waiting(self) -> int:
        """Training calls kept, waiting to be logged."""
        return len(self._jobs)

    @property
    def logging(self) -> int:
        """Training calls being logged now, here or by the fit logger process."""
        return int(self._current is not None) + len(self._handed)

    def outcome(self, entry_id: str, outcome: str) -> None:
        """What the fit logger process says became of a fit handed to it (on its reader thread)."""
        with self._cond:
            name = self._handed.pop(entry_id, "")
            if outcome == "logged":
                self.logged += 1
            elif outcome.startswith("rejected: "):
                self.failed += 1
                self.notices.append(f"MLflow did not take the {name} fit: {outcome.removeprefix('rejected: ')}")
            self._cond.notify_all()

    def _hand(self, job: FitJob) -> bool:
        """Hand ``job`` (its run open) to the fit logger process; False to log it here instead."""
        owner = self.process.owner() if self.process is not None else None
        if owner is None:
            return False
        try:
            entry = self.session.keep(job, owner)
        except Exception as exc:
            log.warning("hubforge: the %s fit stays in the kernel: %s", job.name, exc)
            return False
        with self._cond:
            self._handed[entry.name] = job.name
        if self.process.send(entry.name):
            return True
        with self._cond:
            self._handed.pop(entry.name, None)
        shutil.rmtree(entry, ignore_errors=True)  # not kept twice: it is logged here
        return False

    def wake(self) -> None:
        """Something the thread waits for changed (the run opened, a cell ended)."""
        if self._jobs:  # after most cells nothing waits: no thread to wake
            with self._cond:
                self._cond.notify_all()

    def _loop(self) -> None:
        quiet_thread()
        delay = RETRY_FIRST
        while True:
            with self._cond:
                while not (self._jobs and (self._draining or not self.session.busy) and self.session.session_run()):
                    if self._closed:
                        return
                    self._cond.wait(1.0)
                if self._closed:
                    return
                job = self._current = self._jobs.popleft()
            began = time.monotonic()
            done = self.log_fit(job)
            log.debug(
                "hubforge: %s fit %s in %.1f s", job.name, "logged" if done else "waits", time.monotonic() - began
            )
            with self._cond:
                self._current = None
                if not done:
                    self._jobs.appendleft(job)
                    self._cond.wait(delay)
                    delay = min(delay * 2, RETRY_MAX)
                else:
                    delay = RETRY_FIRST
                self._cond.notify_all()

    def drain(self, deadline: float) -> list[FitJob]:
        """Log (or hand to the fit logger) what is kept until ``deadline`` (``time.monotonic()``),
        cells or not, and wait for the fit logger's answers until then; stop the thread; hand
        back the training calls not started by then.

        A fit being logged at the deadline is given ``IN_FLIGHT_GRACE`` seconds more: half
        logged, it could be logged again only as a second run.
        """
        with self._cond:
            self._draining = True
            self._cond.notify_all()
            while self._jobs and time.monotonic() < deadline:
                if self._current is None and self.session.session_run() is None:
                    break  # no run to hang them under
                self._cond.wait(min(0.05, max(0.0, deadline - time.monotonic())))
            left = list(self._jobs)
            self._jobs.clear()
            self._closed = True
            self._cond.notify_all()
            while self._current is not None and time.monotonic() < deadline + IN_FLIGHT_GRACE:
                self._cond.wait(0.05)
        if self.process is not None:
            # The kernel waits for its fit logger until the deadline: a server or a platform
            # stopping waits for its kernels, not for a process of their own session, and
            # stops MLflow next. What is still out then, the logger finishes after the kernel.
            out = self.process.close(deadline)
            if out:
                log.info("hubforge: the fit logger goes on with %d fit(s) after the kernel", out)
        return left

    def log_fit(self, job: FitJob) -> bool:
        """Open the child run and replay MLflow's patch function; False when MLflow is away."""
        from hubforge.server_extension.kernel.queue import reason, refused

        opened = self.session.session_run()
        assert opened is not None
        run_id, experiment_id = opened
        try:
            prepare_flavor(self, job.integration)
        except Exception as exc:
            log.debug("hubforge: %s not prepared: %s", job.integration, exc)
        client = self.mlflow.MlflowClient()
        try:
            child = self._child_run(client, job, run_id, experiment_id)
        except Exception as exc:
            if refused(exc):
                self._failed(job, reason(exc))
                return True
            return False
        if job.integration in REPLAYED and self._hand(job):
            return True
        status = "FINISHED"
        active = self.mlflow.ActiveRun(child)
        attach_active_run(self.mlflow, active)
        try:
            with self._replaying(job):
                job.patch_function(fitted(job.original, job.result), *job.args, **job.kwargs)
        except Exception as exc:
            status = "FAILED"
            self._failed(job, f"{type(exc).__name__}: {exc}"[:300])
        finally:
            detach_active_run(self.mlflow, active)
        target = job.target() if job.target is not None else None
        if target is not None:
            carry_model_id(self.mlflow, job.args[0] if job.args else None, target)
        try:
            client.set_terminated(child.info.run_id, status, end_time=job.ended_ms)
        except Exception as exc:
            log.warning("hubforge: could not end the run of %s: %s", job.name, exc)
        self.logged += status == "FINISHED"
        return True

    def _child_run(self, client: Any, job: FitJob, run_id: str, experiment_id: str) -> Any:
        """The fit's own run: the one opened for it already, else a new child of the notebook's run.

        The caller's estimator learns it: post-training metrics (``accuracy_score(y,
        model.predict(X))`` in a later cell) go to the run that trained the model, and
        MLflow finds that run on the estimator.
        """
        if job.child_run_id:
            return client.get_run(job.child_run_id)
        from hubforge.server_extension.kernel.context import create_run_where_taken

        tags = {**self.session.child_tags(), **job.tags, "mlflow.parentRunId": run_id}
        child = create_run_where_taken(
            client.create_run, experiment_id, tags, start_time=job.started_ms, run_name=job.name
        )
        job.child_run_id = child.info.run_id
        target = job.target() if job.target is not None else None
        if target is not None and job.integration == "sklearn":
            set_quietly(target, "_mlflow_run_id", child.info.run_id)
        return child

    def _failed(self, job: FitJob, why: str) -> None:
        self.failed += 1
        log.warning("hubforge: MLflow did not take the %s fit: %s", job.name, why)
        self._notice(f"MLflow did not take the {job.name} fit: {why}")

    def _notice(self, text: str) -> None:
        with self._cond:
            self.notices.append(text)

    @contextmanager
    def _replaying(self, job: FitJob) -> Iterator[None]:
        self._local.job = job
        try:
            yield
        finally:
            self._local.job = None

    # -- what MLflow calls while a job replays -------------------------------------------------

    def requirements(self, original: Callable[..., Any]) -> Callable[..., Any]:
        """``infer_pip_requirements``, remembered per flavor and model libraries while replaying.

        MLflow infers a model's requirements by loading it in a subprocess (seconds);
        a notebook's fits of the same kind of model need the same packages. (The
        fallback, MLflow's answer when inference fails, is the flavor's: the same too.)
        """

        @functools.wraps(original)
        def infer_pip_requirements(model_uri: Any, flavor: Any, fallback: Any = None, *args: Any, **kwargs: Any):
            job = getattr(self._local, "job", None)
            if job is None:
                return original(model_uri, flavor, fallback, *args, **kwargs)
            key = (flavor, job.requirements_key)
            with self._requirements_lock:
                inferred = self._requirements.get(key)
                mine = inferred is None
                if inferred is None:
                    inferred = self._requirements[key] = _Inferred()
            if mine:
                try:
                    inferred.value = self._infer(original, key, model_uri, fallback, *args, **kwargs)
                finally:
                    inferred.done.set()
            else:
                inferred.done.wait(300)
            if inferred.value is None:
                return original(model_uri, flavor, fallback, *args, **kwargs)
            return list(inferred.value)

        return infer_pip_requirements

    def _infer(self, original: Callable[..., Any], key: tuple[str, frozenset[str]], *args: Any, **kwargs: Any):
        """MLflow's inference for ``key`` (flavor, model libraries), remembered on disk when it can be."""
        cache = self.requirements_cache
        found = cache.get(*key) if cache is not None else None
        if found is not None:
            return found
        model_uri, fallback, *rest = args
        value = list(original(model_uri, key[0], fallback, *rest, **kwargs))
        if cache is not None and value != list(fallback or ()):  # a fallback is MLflow's failure, not an answer
            cache.put(*key, value)
        return value

    def model_name(self, original: Callable[..., Any]) -> Callable[..., Any]:
        """A flavor's ``log_model`` that names a replayed fit's model after the estimator.

        Autologging names every model "model"; two fits of a notebook then show two
        models of the same name.
        """

        @functools.wraps(original)
        def log_model(*args: Any, **kwargs: Any) -> Any:
            job = getattr(self._local, "job", None)
            if job is not None and kwargs.get("name") == "model":
                kwargs["name"] = job.name
            return original(*args, **kwargs)

        return log_model


# -- installing ---------------------------------------------------------------------------------------


def install(autolog: Autolog) -> None:
    """Route MLflow's autologging through ``autolog``; call before ``mlflow.autolog()``."""
    from mlflow.utils import autologging_utils
    from mlflow.utils.autologging_utils import safety

    if not getattr(safety.with_managed_run, "__hubforge__", False):
        replacement = autolog.wrap(safety.with_managed_run)
        replacement.__hubforge__ = True  # type: ignore[attr-defined]
        safety.with_managed_run = replacement
    per_thread_sessions(autologging_utils)
    import mlflow.models

    if not getattr(mlflow.models.infer_pip_requirements, "__wrapped__", None):
        mlflow.models.infer_pip_requirements = autolog.requirements(mlflow.models.infer_pip_requirements)


def prepare_flavor(autolog: Autolog, integration: str) -> None:
    """What a flavor needs before its first replay: its model name, its per-thread metrics switch."""
    if integration != "sklearn":
        return
    import mlflow.sklearn

    if not getattr(mlflow.sklearn.log_model, "__wrapped__", None):
        mlflow.sklearn.log_model = autolog.model_name(mlflow.sklearn.log_model)  # type: ignore[attr-defined]
    manager = getattr(mlflow.sklearn, "_AUTOLOGGING_METRICS_MANAGER", None)
    if manager is not None:
        per_thread_switch(manager, "_log_post_training_metrics_enabled", True)


@dataclass
class _Inferred:
    """A model kind's requirements: being inferred (``done`` unset) or known (``value``)."""

    done: threading.Event = field(default_factory=threading.Event)
    value: list[str] | None = None
