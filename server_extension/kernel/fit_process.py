"""The kernel's side of its fit logger process (see :mod:`hubforge.server_extension.fit_logger`).

:class:`FitProcess` starts the process at the first fit handed to it, writes
the kept fits' ids to its standard input and reads its answers on a thread.
The process leaves after a while without work, or ends badly; ids it was sent
and did not answer go to the next one (the kept fits are still in the spool,
and a fit is never logged twice: the logger locks each one).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from hubforge.contract import FIT_LOGGER_MODULE
from hubforge.server_extension.kernel.quiet import quiet_thread

__all__ = ["FitProcess"]

log = logging.getLogger(__name__)
MODULE = FIT_LOGGER_MODULE


class FitProcess:
    """A fit logger process for the kernel's spool ``root``; ``on_outcome(id, outcome)`` hears
    what became of each id sent (``logged``, ``busy``, ``rejected: <why>``), on a thread."""

    def __init__(self, root: Path, on_outcome: Callable[[str, str], None]):
        self.root = root
        self.on_outcome = on_outcome
        self.sent: dict[str, subprocess.Popen[str]] = {}  # id -> the process it went to, until answered
        self._proc: subprocess.Popen[str] | None = None
        self._lock = threading.RLock()
        self._answered = threading.Condition(self._lock)
        self._closing = False

    def owner(self) -> tuple[int, float] | None:
        """(pid, start time) of the process, started now if need be; None when it cannot start."""
        with self._lock:
            proc = self._running()
            if proc is None:
                return None
            return proc.pid, _started(proc.pid)

    def send(self, entry_id: str) -> bool:
        """Hand a kept fit to the process; False when there is none to hand it to."""
        with self._lock:
            proc = None if self._closing else self._running()
            if proc is None or proc.stdin is None:
                return False
            try:
                proc.stdin.write(entry_id + "\n")
                proc.stdin.flush()
            except (OSError, ValueError):  # it left meanwhile: the reader hands its ids on
                return False
            self.sent[entry_id] = proc
            return True

    def close(self, deadline: float) -> int:
        """End the input; wait for the answers until ``deadline`` (``time.monotonic()``); how many
        are still out (the process goes on with them after the kernel, in its own session)."""
        with self._lock:
            self._closing = True
            if self._proc is not None and self._proc.stdin is not None:
                with contextlib.suppress(OSError):
                    self._proc.stdin.close()
            while self.sent and time.monotonic() < deadline:
                self._answered.wait(min(0.1, max(0.0, deadline - time.monotonic())))
            return len(self.sent)

    def _running(self) -> subprocess.Popen[str] | None:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        if self._closing:
            return None
        err = _kernel_log()
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", MODULE, "--spool", str(self.root)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                start_new_session=True,  # it finishes its fits even if the kernel's group is killed
            )
        except OSError as exc:
            log.warning("hubforge: the fit logger did not start (%s); fits are logged in the kernel", exc)
            self._proc = None
            return None
        finally:
            if err > 2:
                os.close(err)
        threading.Thread(target=self._read, args=(self._proc,), name="hubforge-fit-logger", daemon=True).start()
        return self._proc

    def _read(self, proc: subprocess.Popen[str]) -> None:
        quiet_thread()
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                answer = json.loads(line)
                entry_id, outcome = str(answer["id"]), str(answer["outcome"])
            except (ValueError, KeyError, TypeError):
                continue
            with self._lock:
                self.sent.pop(entry_id, None)
                self._answered.notify_all()
            self.on_outcome(entry_id, outcome)
        proc.wait()
        with self._lock:
            unanswered = [entry_id for entry_id, to in self.sent.items() if to is proc]
            for entry_id in unanswered:
                del self.sent[entry_id]
            self._answered.notify_all()
        if unanswered and not self._closing:
            log.info("hubforge: the fit logger left; %d fit(s) go to a new one", len(unanswered))
        for entry_id in unanswered:
            if not self.send(entry_id):
                self.on_outcome(entry_id, "busy")  # still kept in the spool: the server's replay logs it


def _kernel_log() -> int:
    """Where the process writes its log: the kernel's own (ipykernel's copy of the process's
    standard error; a new descriptor, the caller closes it), never the notebook."""
    try:
        return os.dup(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):
        return subprocess.DEVNULL


def _started(pid: int) -> float:
    try:
        import psutil

        return float(psutil.Process(pid).create_time())
    except Exception:
        return 0.0
