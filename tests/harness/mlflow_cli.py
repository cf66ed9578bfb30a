"""``mlflow server`` run by MLflow's own CLI, forked from a process that imported it once.

An ``mlflow server`` is two processes. MLflow's CLI reads the flags, checks the
database, sets up the worker's environment, starts a uvicorn worker and then only
waits for it; the worker answers. The CLI's import of MLflow costs about 2 s of CPU,
as much as the worker's whole start, and a test run starts dozens of servers on two
busy cores. Here the CLI is the same click command with the same arguments, run in a
process forked from multiprocessing's fork server, which imports it once per pytest
process; the worker it starts is the one ``mlflow server`` starts. Nothing of the
tests' process is inherited: the fork server was started clean, and each server gets
its own environment, session and log. ``hubforge up`` still runs ``mlflow server``.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import subprocess
import sys
import types
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["CliServer"]

#: Imported once by the fork server; every server's CLI process is a fork of it.
PRELOAD = ["mlflow.cli", "harness.mlflow_cli"]


@functools.cache
def _forkserver() -> multiprocessing.context.ForkServerContext:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


def _run(args: list[str], env: dict[str, str], log: str) -> None:
    """The CLI process: a session and a log of its own, the server's environment, then
    ``mlflow <args>`` as the ``mlflow`` command runs it (exits with its status)."""
    os.setsid()
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.environ.clear()
    os.environ.update(env)
    from mlflow.cli import cli

    cli.main(args=args, prog_name="mlflow")


class CliServer:
    """``mlflow <args>`` started as above; the parts of :class:`subprocess.Popen` the harness uses.

    ``pid`` leads its own session (``os.killpg`` stops the CLI and its worker together).
    """

    def __init__(self, args: Sequence[str], env: Mapping[str, str], log: Path):
        self.args = list(args)
        # daemon: should the tests' process end without stopping it, multiprocessing stops it
        self._process = _forkserver().Process(target=_run, args=(self.args, dict(env), str(log)), daemon=True)
        # multiprocessing re-runs the starting program's ``__main__`` in the child when it is a
        # script (a bench or a probe run by path); the CLI needs none of it.
        main = sys.modules["__main__"]
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            self._process.start()
        finally:
            sys.modules["__main__"] = main
        self.pid: int = self._process.pid  # type: ignore[assignment]

    def poll(self) -> int | None:
        return self._process.exitcode

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        if self._process.exitcode is None:
            raise subprocess.TimeoutExpired(["mlflow", *self.args], timeout or 0)
        return self._process.exitcode
