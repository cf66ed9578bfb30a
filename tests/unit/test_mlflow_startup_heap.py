"""The MLflow worker builds its app with collections paused, then freezes what it built."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from hubforge.hub.mlflow.app import _startup_heap


@pytest.fixture(autouse=True)
def _restored() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.unfreeze()
    yield
    gc.unfreeze()
    if enabled:
        gc.enable()


def test_collections_wait_for_the_build_then_the_build_is_frozen() -> None:
    gc.enable()
    with _startup_heap():
        assert not gc.isenabled()
        built = [{"n": i} for i in range(1000)]
    assert gc.isenabled()
    assert gc.get_freeze_count() >= len(built)


def test_a_failed_build_resumes_collections_and_freezes_nothing() -> None:
    gc.enable()
    with pytest.raises(RuntimeError), _startup_heap():
        raise RuntimeError("the store is unreachable")
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0


def test_collections_switched_off_before_stay_off() -> None:
    gc.disable()
    with _startup_heap():
        pass
    assert not gc.isenabled()
