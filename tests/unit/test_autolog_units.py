"""How hubforge routes MLflow's autologging, without a kernel or a server."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from hubforge.server_extension.kernel.autolog import INLINE, MLFLOW, PLAIN, REPLAY, Autolog
from hubforge.server_extension.kernel.patches import _PerThreadStack, per_thread_sessions, per_thread_switch
from hubforge.server_extension.kernel.training import FitJob, requirements_key, run_name, snapshot


class Session:
    """What a tracker gives Autolog; switched by the tests."""

    def __init__(self) -> None:
        self.enabled = True
        self.busy = False
        self.opened: tuple[str, str] | None = None

    def session_run(self) -> tuple[str, str] | None:
        return self.opened

    def child_tags(self) -> dict[str, str]:
        return {"hubforge.notebook": "a.ipynb"}


@pytest.fixture
def routed() -> Any:
    import mlflow

    fits = Autolog(Session(), mlflow)
    yield fits
    fits.drain(0)


def active(run_id: str) -> Any:
    return SimpleNamespace(info=SimpleNamespace(run_id=run_id))


def test_routes(routed: Autolog, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    session: Session = routed.session  # type: ignore[assignment]
    assert routed.route("sklearn") == REPLAY, "before the run opens: kept, logged once it is"
    assert routed.route("keras") == INLINE
    session.opened = ("session", "1")
    monkeypatch.setattr(mlflow, "active_run", lambda: active("session"))
    assert routed.route("sklearn") == REPLAY
    monkeypatch.setattr(mlflow, "active_run", lambda: active("mine"))
    assert routed.route("sklearn") == MLFLOW, "the person's own run: MLflow decides"
    monkeypatch.setattr(mlflow, "active_run", lambda: None)
    session.enabled = False
    assert routed.route("sklearn") == PLAIN, "%hubforge_tracking off"


def test_nested_and_worker_thread_training_is_plain(routed: Autolog) -> None:
    seen: list[str] = []
    with routed._training():
        seen.append(routed.route("sklearn"))  # a pipeline's step inside the fit
        worker = threading.Thread(target=lambda: seen.append(routed.route("sklearn")))
        worker.start()
        worker.join()
    seen.append(routed.route("sklearn"))
    assert seen == [PLAIN, PLAIN, REPLAY]


def test_snapshot_copies_the_estimator_and_shares_what_is_too_big() -> None:
    class Estimator:
        def __init__(self) -> None:
            self.coef = np.zeros(3)

    est, small, big = Estimator(), np.ones(10), np.ones(1000)
    args, kwargs, result = snapshot(((est, small), {"sample_weight": big}, est), limit=1000)
    assert args[0] is not est and result is args[0], "the estimator copied once, identity kept"
    assert args[1] is not small and np.array_equal(args[1], small)
    assert kwargs["sample_weight"] is big, "beyond the limit: shared, not copied"
    est.coef[0] = 7  # the person refits in place, in a later cell
    assert args[0].coef[0] == 0, "the replay sees the estimator as the fit left it"
    copied = snapshot(((est, small), {}, None), limit=10**9)
    assert copied[0][1] is not small


def test_what_cannot_be_copied_is_shared() -> None:
    lock = threading.Lock()
    value = ((lock,), {}, None)
    assert snapshot(value) is value


def test_run_names_and_requirement_keys() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def train() -> None: ...

    assert run_name((LogisticRegression(), np.ones(2)), train) == "LogisticRegression"
    assert run_name((np.ones(2),), train) == "train", "a function's training call: its name"
    pipe = make_pipeline(StandardScaler(), LogisticRegression())
    assert requirements_key((pipe,)) == frozenset({"sklearn"})
    assert requirements_key(()) == frozenset()


def test_training_sessions_are_per_thread() -> None:
    stack = _PerThreadStack()
    stack.append("a")
    other: list[int] = []
    thread = threading.Thread(target=lambda: other.append(len(stack)))
    thread.start()
    thread.join()
    assert (len(stack), other, list(stack), stack[-1]) == (1, [0], ["a"], "a")
    assert stack.pop() == "a" and len(stack) == 0


def test_mlflow_training_session_classes_become_per_thread() -> None:
    from mlflow.utils import autologging_utils

    # A stand-in module: this process's own MLflow stays as it is for the other tests.
    module = SimpleNamespace(
        _training_sessions=[], _get_new_training_session_class=autologging_utils._get_new_training_session_class
    )
    per_thread_sessions(module)
    cls = module._get_new_training_session_class()
    seen: list[bool] = []
    with cls(estimator=object(), allow_children=False):
        thread = threading.Thread(target=lambda: seen.append(cls.is_active()))
        thread.start()
        thread.join()
        assert cls.is_active()
    assert seen == [False], "another thread's training session is not this thread's"


def test_a_per_thread_switch() -> None:
    class Manager:
        def __init__(self) -> None:
            self.enabled = True

    manager = Manager()
    per_thread_switch(manager, "enabled", True)
    manager.enabled = False
    seen: list[bool] = []
    thread = threading.Thread(target=lambda: seen.append(manager.enabled))
    thread.start()
    thread.join()
    assert (manager.enabled, seen, type(manager).__name__) == (False, [True], "Manager")
    per_thread_switch(manager, "enabled", True)  # once is enough
    assert manager.enabled is False


def job(key: frozenset[str]) -> FitJob:
    return FitJob("sklearn", print, {}, print, (), {}, None, "Model", 0, 0, requirements_key=key)


def test_requirements_are_inferred_once_per_kind_of_model(routed: Autolog) -> None:
    calls: list[str] = []

    def infer(model_uri: str, flavor: str, fallback: Any = None) -> list[str]:
        calls.append(model_uri)
        time.sleep(0.2)
        return ["scikit-learn==1"]

    cached = routed.requirements(infer)
    assert cached("outside", "sklearn") == ["scikit-learn==1"], "outside a replay: MLflow's own"
    answers: list[list[str]] = []

    def replay(key: frozenset[str], uri: str) -> None:
        with routed._replaying(job(key)):
            answers.append(cached(uri, "sklearn", ["fallback"]))

    threads = [threading.Thread(target=replay, args=(frozenset({"sklearn"}), f"m{i}")) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    replay(frozenset({"sklearn", "xgboost"}), "other")
    assert len(calls) == 3, calls  # outside, the first sklearn one, the xgboost one
    assert answers == [["scikit-learn==1"]] * 4


def test_replayed_models_are_named_after_the_estimator(routed: Autolog) -> None:
    named = routed.model_name(lambda *args, **kwargs: kwargs["name"])
    assert named(name="model") == "model"
    with routed._replaying(job(frozenset())):
        assert named(name="model") == "Model"
        assert named(name="best_estimator") == "best_estimator"
