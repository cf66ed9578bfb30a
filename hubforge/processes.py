"""Child processes that do not outlive the process that started them (Linux ``prctl(2)``).

Off Linux the calls do nothing: there the children's own ends are what there is.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable

__all__ = ["become_subreaper", "die_with_parent"]

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
