"""The tracked kernel freezes its start out of full collections, and never a person's objects."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from hubforge.server_extension.kernel.tracker import Tracker


@pytest.fixture(autouse=True)
def _thawed() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


def _tracker(cells_began: bool = False) -> Any:
    return SimpleNamespace(cells_began=cells_began)


def test_the_start_is_frozen_while_no_cell_has_run() -> None:
    assert Tracker.freeze_start_heap(_tracker())
    assert gc.get_freeze_count() > 1000


def test_nothing_is_frozen_once_a_cell_has_begun() -> None:
    assert not Tracker.freeze_start_heap(_tracker(cells_began=True))
    assert gc.get_freeze_count() == 0


def test_a_freeze_a_cell_overtook_is_undone(monkeypatch: pytest.MonkeyPatch) -> None:
    tracker = _tracker()
    freeze = gc.freeze

    def a_cell_begins_meanwhile() -> None:  # the interpreter switched threads around the freeze
        tracker.cells_began = True
        freeze()

    monkeypatch.setattr(gc, "freeze", a_cell_begins_meanwhile)
    assert not Tracker.freeze_start_heap(tracker)
    assert tracker.cells_began
    assert gc.get_freeze_count() == 0


def test_a_permanent_generation_someone_else_made_is_left_alone() -> None:
    held = [[] for _ in range(10)]
    gc.freeze()
    frozen = gc.get_freeze_count()
    assert not Tracker.freeze_start_heap(_tracker())
    assert gc.get_freeze_count() == frozen
    del held
