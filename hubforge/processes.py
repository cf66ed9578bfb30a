"""Child processes that do not outlive the process that started them (Linux ``prctl(2)``),
and the restart policy of the processes hubforge keeps running.

Off Linux the ``prctl`` calls do nothing: there the children's own ends are what there is.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable

__all__ = ["Backoff", "become_subreaper", "describe_exit", "die_with_parent"]

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    return prctl


def die_with_parent(
    sig: int = signal.SIGKILL, *, user: int | None = None, group: int | None = None
) -> Callable[[], None]:
    """A ``preexec_fn``: become ``user``/``group`` (no supplementary groups), then have the
    child get ``sig`` when the thread that started it dies (``PR_SET_PDEATHSIG``).

    The credentials change here, not through ``Popen``'s ``user``: Python changes them
    after the ``preexec_fn``, and a change of credentials clears the death signal. A
    parent that died before the signal took hold ends the child too. libc's ``prctl`` is
    looked up now, before the fork: between fork and exec the child makes plain calls.
    """
    prctl = _prctl()
    parent = os.getpid()

    def preexec() -> None:
        if user is not None:
            os.setgroups([])
            os.setgid(group if group is not None else user)
            os.setuid(user)
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, sig)
            if os.getppid() != parent:
                os._exit(1)

    return preexec


def become_subreaper() -> None:
    """Make this process the one its descendants' orphans are handed to (``PR_SET_CHILD_SUBREAPER``)."""
    prctl = _prctl()
    if prctl is not None:
        prctl(_PR_SET_CHILD_SUBREAPER, 1)


def describe_exit(status: int | None) -> str:
    """A process's exit status in words: ``status 1``, ``signal SIGKILL``."""
    if status is None:
        return "no status"
    if status < 0:
        try:
            return f"signal {signal.Signals(-status).name}"
        except ValueError:
            return f"signal {-status}"
    return f"status {status}"


class Backoff:
    """How long to wait before the next restart of a process that keeps dying.

    The wait doubles from ``first`` to ``most`` with each restart that never became ready;
    after ``attempts`` of those in a row there is no next restart (None). A restart that
    becomes ready starts the count again.
    """

    def __init__(self, first: float = 1.0, most: float = 30.0, attempts: int = 6):
        self.first = first
        self.most = most
        self.attempts = attempts
        self.failures = 0

    def next_delay(self) -> float | None:
        """The wait before the next restart, counting this failure; None: give up."""
        self.failures += 1
        if self.failures > self.attempts:
            return None
        return float(min(self.most, self.first * 2 ** (self.failures - 1)))

    def recovered(self) -> None:
        """The process became ready: the next failure waits ``first`` again."""
        self.failures = 0
