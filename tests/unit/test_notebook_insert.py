"""Insert into notebook, kernel side: a fake comm stands for the frontend, a fake shell for IPython's.

The comm is the transport: the fake records what the kernel opened and plays the
frontend's side (answer, close, silence). The shell queues ``set_next_input`` in IPython's
real :class:`PayloadManager`, as ipykernel's does, so taking an input back is checked
against what the kernel would send with the next reply.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from IPython.core.payload import PayloadManager

from hubforge.widgets.client import WidgetError
from hubforge.widgets.notebook_insert import (
    INSERTED,
    NEXT_RUN,
    TARGET,
    Insertion,
    insert_through,
    notebook_insert,
)

CODE = 'online = OnlineFeatures.from_env().get(["merchant_risk:chargeback_rate_90d"], [{"merchant_id": 501}])'


class FakeShell:
    """IPython's shell as far as inserting goes: ``set_next_input`` queues a payload."""

    def __init__(self) -> None:
        self.payload_manager = PayloadManager()

    def set_next_input(self, text: str, replace: bool = False) -> None:
        self.payload_manager.write_payload({"source": "set_next_input", "text": text, "replace": replace})

    @property
    def queued(self) -> list[dict[str, Any]]:
        return list(self.payload_manager.read_payload())


class FakeComm:
    """The kernel's end of the comm; ``answer`` and ``frontend_closes`` are the frontend's moves."""

    def __init__(self, **opened: Any) -> None:
        self.opened = opened
        self.closed_by_kernel = False
        self._on_msg: Callable[[dict[str, Any]], None] | None = None
        self._on_close: Callable[[dict[str, Any]], None] | None = None

    def on_msg(self, callback: Callable[[dict[str, Any]], None] | None) -> None:
        self._on_msg = callback

    def on_close(self, callback: Callable[[dict[str, Any]], None] | None) -> None:
        self._on_close = callback

    def close(self) -> None:
        self.closed_by_kernel = True

    def answer(self, data: dict[str, Any]) -> None:
        assert self._on_msg is not None
        self._on_msg({"content": {"comm_id": "c1", "data": data}})

    def frontend_closes(self) -> None:
        assert self._on_close is not None
        self._on_close({"content": {"comm_id": "c1", "data": {}}})


def ask(shell: FakeShell, timeout: float = 60.0, near: str | None = "model-1") -> tuple[Insertion, FakeComm]:
    comms: list[FakeComm] = []

    def create_comm(**opened: Any) -> FakeComm:
        comms.append(FakeComm(**opened))
        return comms[-1]

    insertion = insert_through(shell, CODE, create_comm, near=near, timeout=timeout)
    (comm,) = comms
    return insertion, comm


def test_the_extensions_answer_means_the_cell_is_there_and_nothing_is_queued() -> None:
    shell = FakeShell()
    insertion, comm = ask(shell)
    assert comm.opened == {"target_name": TARGET, "data": {"code": CODE, "widget": "model-1"}}
    assert insertion.outcome is None
    comm.answer({"inserted": True})
    comm.frontend_closes()  # the extension closes the comm after answering
    assert insertion.outcome == INSERTED and shell.queued == []
    assert not comm.closed_by_kernel


def test_a_comm_closed_unanswered_falls_back_to_the_next_cell_run() -> None:
    # JupyterLab without the extension, and Voila, close a comm to a target they do not know.
    shell = FakeShell()
    insertion, comm = ask(shell, near=None)
    assert comm.opened["data"] == {"code": CODE}
    comm.frontend_closes()
    assert insertion.outcome == NEXT_RUN
    assert shell.queued == [{"source": "set_next_input", "text": CODE, "replace": False}]


def test_an_answer_that_is_not_inserted_is_no_success() -> None:
    shell = FakeShell()
    insertion, comm = ask(shell)
    comm.answer({"inserted": "yes"})
    assert insertion.outcome is None
    comm.frontend_closes()
    assert insertion.outcome == NEXT_RUN and len(shell.queued) == 1


def test_a_frontend_that_never_answers_gets_the_next_cell_run_after_the_timeout() -> None:
    # The classic notebook neither opens nor closes a comm to an unknown target.
    shell = FakeShell()
    insertion, comm = ask(shell, timeout=0.05)
    assert insertion.wait(10) == NEXT_RUN
    assert shell.queued == [{"source": "set_next_input", "text": CODE, "replace": False}]
    assert not comm.closed_by_kernel  # open still: a late answer is heard


def test_an_answer_after_the_timeout_takes_the_queued_input_back() -> None:
    shell = FakeShell()
    shell.payload_manager.write_payload({"source": "page", "data": {"text/plain": "help"}})  # someone else's
    seen: list[str] = []
    insertion, comm = ask(shell, timeout=0.05)
    insertion.then(seen.append)
    assert insertion.wait(10) == NEXT_RUN and len(shell.queued) == 2
    comm.answer({"inserted": True})
    assert insertion.outcome == INSERTED and seen == [NEXT_RUN, INSERTED]
    assert shell.queued == [{"source": "page", "data": {"text/plain": "help"}}]


def test_no_comm_at_all_falls_back_at_once() -> None:
    shell = FakeShell()

    def create_comm(**opened: Any) -> FakeComm:
        raise RuntimeError("Comms cannot be opened without a comm_manager.")

    insertion = insert_through(shell, CODE, create_comm)
    assert insertion.outcome == NEXT_RUN and len(shell.queued) == 1


def test_inserted_is_final_and_then_reports_what_is_decided_already() -> None:
    insertion = Insertion()
    assert insertion.decide(INSERTED)
    assert not insertion.decide(NEXT_RUN) and insertion.outcome == INSERTED
    seen: list[str] = []
    insertion.then(seen.append)
    assert seen == [INSERTED]


def test_plain_python_has_no_notebook_to_insert_into() -> None:
    with pytest.raises(WidgetError, match="needs a notebook's kernel"):
        notebook_insert(CODE)
