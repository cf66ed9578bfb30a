"""``mlflow server`` run by MLflow's own CLI, forked from a process that imported what it needs once.

An ``mlflow server`` is two processes. MLflow's CLI reads the flags, checks the
database, sets up the worker's environment and runs ``python -m uvicorn`` for the
worker, then only waits for it; the worker answers. Each imports MLflow: about 2 s of
CPU apiece, on two busy cores, for every one of the dozens of servers a test run
starts. Here both come from multiprocessing's fork server, which imports the
libraries they share once per pytest process (:data:`PRELOAD`):

- the CLI process is a fork of it, running the same click command with the same
  arguments, in the server's environment, a session and a log of its own;
- that process forks again before the CLI starts; the fork waits for the command the
  CLI runs for its worker, then runs uvicorn's own command line with those arguments,
  in the environment the CLI gave it. It is the CLI's child, as the worker is, and
  imports MLflow's server package (``mlflow.server``) itself: that package reads its
  security settings from the environment as it is imported.

Nothing of the tests' process is inherited: the fork server was started clean.
``hubforge up`` still runs ``mlflow server``.
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
import subprocess
import sys
import types
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["CliServer"]

#: Imported once by the fork server (each by name, from the installed packages: Python 3.11's
#: fork server ignores the tests' own path): what a worker imports short of MLflow's server
#: package, about 85% of its import time. Nothing that reads the server's environment as it is
#: imported, which the fork server does not have: not ``mlflow.server``, which then decides
#: whether it runs as a server and reads its security settings (allowed hosts, CORS origins,
#: static prefix; checked in :func:`_run`), nor ``jupyterhub.services.auth``, whose defaults
#: are the ``JUPYTERHUB_*`` variables of its import.
PRELOAD = [
    "uvicorn.main", "fastapi", "flask", "sqlalchemy", "alembic",
    "mlflow", "mlflow.client", "mlflow.models", "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.model_registry.sqlalchemy_store", "mlflow.store.artifact.artifact_repository_registry",
    "mlflow.gateway.config", "mlflow.gateway.providers.base", "mlflow.tracing.utils.otlp",
    "mlflow.webhooks.delivery", "mlflow.telemetry.track", "mlflow.genai.scorers.scorer_utils",
    "mlflow.genai.review_queues", "mlflow.store.tracking.gateway.config_resolver", "mlflow.types.chat",
]  # fmt: skip


@functools.cache
def _forkserver() -> multiprocessing.context.ForkServerContext:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


def _run(args: list[str], env: dict[str, str], log: str) -> None:
    """The CLI process: a session and a log of its own, the server's environment, then
    ``mlflow <args>`` as the ``mlflow`` command runs it (exits with its status), its worker
    forked from it (:func:`_worker`)."""
    if "mlflow.server" in sys.modules or "jupyterhub.services.auth" in sys.modules:
        raise RuntimeError("the fork server imported a module that reads the server's environment: see PRELOAD")
    os.setsid()
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    # standard input on fd 0, as a program has it (multiprocessing closed it): uvicorn hands it
    # to the workers it starts when asked for more than one
    fd = os.open(os.devnull, os.O_RDONLY)
    os.dup2(fd, 0)
    os.close(fd)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115
    os.environ.clear()
    os.environ.update(env)
    read, write = os.pipe()
    worker = os.fork()
    if worker == 0:
        os.close(write)
        _worker(read)
    os.close(read)
    import mlflow.server
    from mlflow.cli import cli

    mlflow.server._exec_cmd = _WorkerStart(worker, write, mlflow.server._exec_cmd)
    cli.main(args=args, prog_name="mlflow")


def _worker(read: int) -> None:
    """The worker: waits for the uvicorn command the CLI runs, then runs it here; leaves
    quietly if the CLI ends without one."""
    with os.fdopen(read, "rb") as pipe:
        sent = pipe.read()
    if not sent:
        os._exit(0)
    order = json.loads(sent)
    # a program of its own, as `python -m uvicorn` is: not multiprocessing's daemonic child (uvicorn
    # starts its workers with multiprocessing when asked for more than one)
    multiprocessing.current_process()._config.pop("daemon", None)  # type: ignore[attr-defined]
    os.environ.clear()
    os.environ.update(order["env"])
    sys.argv = ["uvicorn", *order["args"]]
    status = 0
    try:
        import uvicorn

        uvicorn.main.main(args=order["args"], prog_name="uvicorn")
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # the worker's own traceback, as `python -m uvicorn` would print it
        import traceback

        traceback.print_exc()
        status = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(status)


class _WorkerStart:
    """Stands in for MLflow's ``_exec_cmd`` in the CLI: the first ``python -m uvicorn`` it is
    asked to run goes to the forked worker; anything else runs as MLflow runs it."""

    def __init__(self, pid: int, pipe: int, exec_cmd):
        self.pid, self.pipe, self.exec_cmd = pid, pipe, exec_cmd

    def __call__(self, cmd, *, extra_env=None, **kwargs):
        if self.pipe < 0 or list(cmd[1:3]) != ["-m", "uvicorn"] or kwargs.get("env") is not None:
            return self.exec_cmd(cmd, extra_env=extra_env, **kwargs)
        order = {"args": list(cmd[3:]), "env": {**os.environ, **(extra_env or {})}}
        with os.fdopen(self.pipe, "wb") as pipe:
            pipe.write(json.dumps(order).encode())
        self.pipe = -1
        return _Child(self.pid)


class _Child:
    """The parts of :class:`subprocess.Popen` MLflow's CLI uses, for the forked worker."""

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            _, status = os.waitpid(self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, sig)


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
