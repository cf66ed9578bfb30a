"""A tracked kernel's fit logger: the process beside the kernel that logs its fits.

Logging an autologged fit is seconds of work (plots, the model, its requirements
inferred in a subprocess). In the kernel's own process it takes the interpreter
lock and a core from the cells the person runs meanwhile. So the kernel only
opens the fit's run and keeps the fitted objects under the spool (see
:mod:`.kept_fits`), and hands each entry's id to this process, which it starts
at its first fit, at a lower CPU priority, in a session of its own::

    python -m hubforge.server_extension.fit_logger --spool DIR

It reads entry ids on standard input, one per line, logs each (see
:class:`.fit_replay.FitLogging`) and answers one JSON line per entry on standard
output: ``{"id": ..., "outcome": "logged" | "rejected: <why>"}``. While MLflow
is away it keeps trying. At the end of its input (the kernel ended, or closed
it) it logs what it holds and exits; after ``--idle`` seconds without work it
exits too, and the kernel starts another when it needs one. Whatever it could
not log stays in the spool for the user's server to replay. Exit status 0, or
2 on a usage error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import threading
import time
from collections import deque
from pathlib import Path

from .fit_replay import AWAY, BUSY, FitLogging
from .kept_fits import FITS
from .requirements_cache import REQUIREMENTS

__all__ = ["BACKGROUND_NICE", "main"]

log = logging.getLogger("hubforge.fit_logger")
#: Below the kernel's cells: the scheduler gives a core to a cell first.
BACKGROUND_NICE = 10
#: Seconds between tries while MLflow is away (doubling), and how long the last try may take.
RETRY_FIRST, RETRY_MAX, FINAL_WAIT = 2.0, 30.0, 120.0


class Inbox:
    """Entry ids read from standard input on a thread; ``closed`` once it ends."""

    def __init__(self) -> None:
        self.ids: deque[str] = deque()
        self.closed = False
        self._cond = threading.Condition()
        threading.Thread(target=self._read, name="fit-logger-stdin", daemon=True).start()

    def _read(self) -> None:
        for line in sys.stdin:
            name = line.strip()
            if name:
                with self._cond:
                    self.ids.append(name)
                    self._cond.notify_all()
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def next(self, timeout: float) -> str | None:
        """The next id, waiting up to ``timeout`` seconds; None when there is none (yet, or any more)."""
        with self._cond:
            self._cond.wait_for(lambda: self.ids or self.closed, timeout)
            return self.ids.popleft() if self.ids else None


def main(argv: list[str] | None = None) -> int:
    """Log the fits named on standard input until it ends (or nothing comes for ``--idle`` s)."""
    parser = argparse.ArgumentParser(prog="python -m hubforge.server_extension.fit_logger", description=__doc__)
    parser.add_argument("--spool", type=Path, required=True, help="the spool root the kernel keeps fits in")
    parser.add_argument("--idle", type=float, default=120.0, help="seconds without work before leaving (120)")
    args = parser.parse_args(argv)
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        parser.error("MLFLOW_TRACKING_URI is not set: where should the fits go?")
    logging.basicConfig(level=logging.INFO, format="[hubforge fit logger] %(message)s", stream=sys.stderr)
    with contextlib.suppress(OSError):
        os.nice(BACKGROUND_NICE)
    from mlflow import MlflowClient

    inbox = Inbox()
    logging_ = FitLogging(MlflowClient(), args.spool / REQUIREMENTS, warm=True)
    retry: deque[str] = deque()
    delay, final = RETRY_FIRST, None
    while True:
        if inbox.closed and final is None:
            final = time.monotonic() + FINAL_WAIT
        if final is not None and (time.monotonic() > final or not (inbox.ids or retry)):
            return 0
        name = inbox.next(0 if retry else args.idle) or (retry.popleft() if retry else None)
        if name is None:
            if not inbox.closed:
                return 0  # idle: the kernel starts another logger when it has work again
            continue
        outcome = logging_.log(args.spool, args.spool / FITS / name, mine=True)
        if outcome == AWAY:
            retry.append(name)
            time.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)
            continue
        delay = RETRY_FIRST
        if outcome != BUSY:
            _answer(name, outcome)


def _answer(name: str, outcome: str) -> None:
    """Tell the kernel what became of a fit. A kernel that has ended reads no more: its fits
    are still logged, the answers go nowhere (a broken pipe must not end the process with
    fits still to log, their runs left RUNNING)."""
    try:
        print(json.dumps({"id": name, "outcome": outcome}), flush=True)
    except (BrokenPipeError, ValueError):  # ValueError: stdout already closed
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # and nothing fails at exit flushing it
        os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
