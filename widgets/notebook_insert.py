"""``notebook_insert``: put code in a new notebook cell, at once where JupyterLab can.

In JupyterLab with hubforge's extension (``labextension/`` in the source tree, installed
by ``make install``) the kernel opens a comm to the target :data:`TARGET` with the code;
the extension inserts an unrun code cell below the widget's cell and answers
``{"inserted": true}``. A frontend without that target closes the comm unanswered
(JupyterLab without the extension, Voila) or never answers (the classic notebook): the
code then goes through IPython's ``set_next_input``, which the kernel sends with the reply
to the next cell run, as before the extension existed.

The answer is a comm message: the kernel handles it on its shell thread once the click
that asked has been handled, so the outcome is an :class:`Insertion` decided later.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol

from .client import WidgetError

__all__ = [
    "ANSWER_TIMEOUT",
    "INSERTED",
    "NEXT_RUN",
    "TARGET",
    "Insertion",
    "insert_through",
    "notebook_insert",
]

#: The comm target of the JupyterLab extension (labextension/src/index.ts).
TARGET = "hubforge.insert"
#: The code is in a new cell below the widget's.
INSERTED = "inserted"
#: The code goes into a new cell with the reply to the next cell run (``set_next_input``).
NEXT_RUN = "next_run"
#: Seconds to wait for a frontend that neither answers nor closes the comm (the classic notebook).
ANSWER_TIMEOUT = 5.0

Message = dict[str, Any]


class CommLike(Protocol):
    """The part of :class:`comm.base_comm.BaseComm` used here."""

    def on_msg(self, callback: Callable[[Message], None] | None) -> None: ...

    def on_close(self, callback: Callable[[Message], None] | None) -> None: ...


class Insertion:
    """Where code asked into a new cell went: :data:`INSERTED`, :data:`NEXT_RUN`, or None while undecided.

    :data:`NEXT_RUN` may still turn into :data:`INSERTED` (an answer later than the
    timeout); :data:`INSERTED` is final.
    """

    def __init__(self, outcome: str | None = None) -> None:
        self._lock = threading.Lock()
        self._outcome = outcome
        self._callbacks: list[Callable[[str], None]] = []
        self._changed = threading.Condition(self._lock)

    @property
    def outcome(self) -> str | None:
        """:data:`INSERTED`, :data:`NEXT_RUN`, or None while the notebook has not answered."""
        return self._outcome

    def then(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(outcome)`` now if decided, and on each later change (from any thread)."""
        with self._lock:
            self._callbacks.append(callback)
            outcome = self._outcome
        if outcome is not None:
            callback(outcome)

    def wait(self, timeout: float = 30.0) -> str | None:
        """Wait up to ``timeout`` seconds for an outcome; the outcome (None if still undecided)."""
        with self._changed:
            self._changed.wait_for(lambda: self._outcome is not None, timeout)
            return self._outcome

    def decide(self, outcome: str, first: Callable[[str | None], None] | None = None) -> bool:
        """Record ``outcome`` unless it changes nothing or the code is already inserted; whether it did.

        ``first(outcome before)`` runs under the lock just before the change, so what it does
        and the change are one step against a decision from another thread; the callbacks
        run after, outside the lock.
        """
        with self._lock:
            before = self._outcome
            if before in (outcome, INSERTED):
                return False
            if first is not None:
                first(before)
            self._outcome = outcome
            callbacks = list(self._callbacks)
            self._changed.notify_all()
        for callback in callbacks:
            callback(outcome)
        return True


def _shell() -> Any:
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    return get_ipython()


def notebook_insert(code: str, *, near: str | None = None, timeout: float = ANSWER_TIMEOUT) -> Insertion:
    """Put ``code`` in a new cell below the one showing widget ``near`` (a model id); WidgetError without a notebook.

    In a kernel: through JupyterLab's extension at once, else with the next cell run
    (:func:`insert_through`). In a terminal IPython: the next prompt. In plain Python:
    :class:`WidgetError`.
    """
    shell = _shell()
    if shell is None:
        raise WidgetError("Insert into notebook needs a notebook's kernel: copy the code above instead")
    if getattr(shell, "kernel", None) is None:  # IPython without a kernel: no frontend to ask
        shell.set_next_input(code, replace=False)
        return Insertion(NEXT_RUN)
    import comm

    return insert_through(shell, code, comm.create_comm, near=near, timeout=timeout)


def insert_through(
    shell: Any,
    code: str,
    create_comm: Callable[..., CommLike],
    *,
    near: str | None = None,
    timeout: float = ANSWER_TIMEOUT,
) -> Insertion:
    """Ask the frontend, through a comm made by ``create_comm``, to insert ``code``; its answer decides.

    ``{"inserted": true}``: :data:`INSERTED`. Closed without it, no comm, or no answer
    within ``timeout`` seconds: ``shell.set_next_input(code)`` and :data:`NEXT_RUN`; an
    answer after the timeout takes the queued input back and makes it :data:`INSERTED`.
    """
    insertion = Insertion()

    def fall_back() -> None:
        # Only while undecided (decide refuses after an answer), and queued in the same step.
        insertion.decide(NEXT_RUN, lambda _: shell.set_next_input(code, replace=False))

    data: dict[str, str] = {"code": code}
    if near:
        data["widget"] = near
    try:
        channel = create_comm(target_name=TARGET, data=data)
    except Exception:  # no comm manager, a kernel shutting down: the queued input still works
        fall_back()
        return insertion

    # The comm stays open after the timeout: a kernel that closed it would drop a late answer
    # (the comm unknown by then) while the extension has inserted the cell all the same.
    timer = threading.Timer(timeout, fall_back)
    timer.daemon = True

    def answered(msg: Message) -> None:
        if _data(msg).get("inserted") is True:
            timer.cancel()
            insertion.decide(INSERTED, lambda before: _take_back(shell, code) if before == NEXT_RUN else None)

    def closed(_msg: Message) -> None:
        timer.cancel()
        fall_back()

    channel.on_msg(answered)
    channel.on_close(closed)
    timer.start()
    return insertion


def _data(msg: Message) -> dict[str, Any]:
    content = msg.get("content")
    data = content.get("data") if isinstance(content, dict) else None
    return data if isinstance(data, dict) else {}


def _take_back(shell: Any, code: str) -> None:
    """Drop the ``set_next_input`` of ``code`` still queued: the cell exists already."""
    manager = getattr(shell, "payload_manager", None)
    if manager is None:
        return
    kept = [p for p in manager.read_payload() if not (p.get("source") == "set_next_input" and p.get("text") == code)]
    manager.clear_payload()
    for payload in kept:
        manager.write_payload(payload, single=False)
