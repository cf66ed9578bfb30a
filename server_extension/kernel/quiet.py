"""Keep what hubforge's background threads print out of the person's cells.

ipykernel sends whatever a thread writes to ``sys.stdout``/``sys.stderr`` to the
notebook, into whichever cell is current. hubforge's threads (the run opener, the
sender, the fit logger) run MLflow code that prints: run links, progress bars,
warnings from autologging. :class:`QuietStream` stands in for both streams and
sends the writes of those threads (and of the worker pools MLflow starts from
them) to the kernel's log instead; every other thread writes through unchanged.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any

__all__ = ["QuietStream", "install", "is_quiet", "quiet_thread", "uninstall"]

log = logging.getLogger("hubforge.tracking.output")
#: Thread name prefixes of hubforge's own threads and of MLflow's worker pools.
_PREFIXES = ("hubforge-", "mlflow", "MLflow", "Mlflow")
#: Marked threads, per thread: a mark ends with its thread. (A set of thread ids would
#: outlive them, and the next thread given the same id, the person's own, would lose its
#: output to the log.)
_marks = threading.local()


def quiet_thread() -> None:
    """Mark the calling thread as one whose output belongs in the log, not in a cell.

    Never the main thread: the cells run there.
    """
    if threading.current_thread() is not threading.main_thread():
        _marks.quiet = True


def is_quiet() -> bool:
    """Whether the calling thread is one of hubforge's or MLflow's background threads."""
    if getattr(_marks, "quiet", False):
        return True
    thread = threading.current_thread()
    return thread is not threading.main_thread() and thread.name.startswith(_PREFIXES)


class QuietStream:
    """A stand-in for a text stream; writes from quiet threads go to the log."""

    def __init__(self, stream: Any, name: str):
        self._hubforge_stream = stream
        self._hubforge_name = name
        # What ipykernel calls on both streams in every cell (8 flushes, 2 set_parent),
        # bound here: no frame of ours, no failed lookup before __getattr__.
        for method in ("flush", "set_parent"):
            bound = getattr(stream, method, None)
            if callable(bound):
                setattr(self, method, bound)

    def write(self, text: str) -> int:
        """Write ``text``, or log it when a quiet thread wrote it."""
        if is_quiet():
            if text.strip():
                log.info("%s: %s", self._hubforge_name, text.rstrip())
            return len(text)
        return int(self._hubforge_stream.write(text))

    def writelines(self, lines: Any) -> None:
        """Write each line (see :meth:`write`)."""
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._hubforge_stream, name)


def install() -> None:
    """Put :class:`QuietStream` in front of ``sys.stdout`` and ``sys.stderr`` (once)."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, QuietStream):
            setattr(sys, name, QuietStream(stream, name))


def uninstall() -> None:
    """Give the streams back."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if isinstance(stream, QuietStream):
            setattr(sys, name, stream._hubforge_stream)
