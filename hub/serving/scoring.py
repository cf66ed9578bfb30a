"""MLflow scoring servers: one process per release, started with a clean environment.

:class:`ScoringProcess` runs MLflow's scoring server as ``mlflow models serve
--env-manager local`` does (uvicorn with MLflow's scoring app, in the platform's own
Python environment), but starts uvicorn itself: the CLI would stay alive beside it as its
idle parent, one more MLflow import (about 2 s of CPU) and its memory for every served
version. It waits, polling ``GET /ping`` against a deadline, until it answers. It listens
on a Unix socket in the service's own folder (mode 0700; uvicorn's ``UVICORN_UDS``), not
on a TCP port: on one machine every person's server and kernels run beside it, and a
loopback port would let any of them call a model without the router's hub authentication,
or take the port before the scoring server binds it; a socket only the service's account
can reach does neither, and costs less per request than loopback TCP.

The process gets :func:`clean_environment` and nothing of the service's own: no hub
token, no ``JUPYTERHUB_*`` or ``HUBFORGE_*`` variable (a model is code, and it runs
there). It leads a process group of its own, so :meth:`ScoringProcess.stop` ends uvicorn's
workers with it, and it is told to end if the service dies (``PR_SET_PDEATHSIG``).

:class:`ScoringPool` keeps one process per release (model, version, digest), starts it
on demand (once, however many callers wait), checks the release's folder against its
digest before each start, and stops the processes no endpoint uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from hubforge.errors import LaunchError, Refusal, Unavailable
from hubforge.hub.mlflow.internals import SCORING_APP, SCORING_MODEL_ENV
from hubforge.processes import die_with_parent

from .model import Release
from .upstream import UpstreamError, UpstreamPool

__all__ = [
    "FIXED_ENV",
    "ScoringPool",
    "ScoringProcess",
    "ScoringSettings",
    "clean_environment",
]

#: Settings every scoring process gets, none of them a secret: MLflow reports nothing to
#: its authors, and uvicorn writes no log line per request (the router's log has them).
FIXED_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "UVICORN_ACCESS_LOG": "false"}
#: Seconds between two readiness checks of a starting process.
POLL_S = 0.1
#: Seconds a release whose start failed is not started again for a scoring request.
RETRY_AFTER_S = 30.0
#: Lines of a failed process's log quoted in its error.
LOG_TAIL = 5


def clean_environment(home: Path, scripts: str, socket: Path) -> dict[str, str]:
    """The whole environment of a scoring process but its model: ``PATH`` (the platform's
    scripts first), ``HOME``, the locale, :data:`FIXED_ENV` and the socket to listen on
    (``UVICORN_UDS``); nothing inherited."""
    return {
        "PATH": os.pathsep.join([scripts, "/usr/local/bin", "/usr/bin", "/bin"]),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        **FIXED_ENV,
        "UVICORN_UDS": str(socket),
    }


def _default_uvicorn() -> str:
    return os.path.join(os.path.dirname(sys.executable), "uvicorn")


@dataclass(frozen=True)
class ScoringSettings:
    """How scoring processes are started: their home, log and socket folders, timeouts."""

    home: Path
    logs: Path
    sockets: Path
    uvicorn: str = field(default_factory=_default_uvicorn)
    start_timeout: float = 120.0
    stop_timeout: float = 10.0
    workers: int = 1


#: The longest Unix socket path Linux binds (``sun_path`` holds 108 bytes with its NUL).
MAX_SOCKET_PATH = 107


class ScoringProcess:
    """One scoring server (uvicorn running MLflow's scoring app) for ``release``."""

    def __init__(self, release: Release, settings: ScoringSettings) -> None:
        self.release = release
        self.settings = settings
        self.socket = settings.sockets / f"{secrets.token_hex(6)}.sock"
        self.proc: subprocess.Popen[bytes] | None = None
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", release.model)
        self.log_path = settings.logs / f"{safe}-{release.version}-{release.digest[7:19]}.log"
        if len(os.fsencode(self.socket)) > MAX_SOCKET_PATH:
            raise LaunchError(f"{self.socket}: the state folder is too deep for a Unix socket path")

    @property
    def pid(self) -> int | None:
        """The process id (uvicorn's; with several workers, their parent's)."""
        return None if self.proc is None else self.proc.pid

    @property
    def alive(self) -> bool:
        """Whether the process runs."""
        return self.proc is not None and self.proc.poll() is None

    @property
    def address(self) -> str:
        """Where it listens: its Unix socket's path."""
        return str(self.socket)

    def command(self) -> list[str]:
        """The command line: uvicorn with MLflow's scoring app, as ``mlflow models serve`` runs
        it. It listens on ``UVICORN_UDS`` (in :meth:`environment`), not on a host and port."""
        return [self.settings.uvicorn, "--workers", str(self.settings.workers), SCORING_APP]

    def environment(self) -> dict[str, str]:
        """:func:`clean_environment` and the release's folder, which MLflow's app loads."""
        settings = self.settings
        env = clean_environment(settings.home, os.path.dirname(settings.uvicorn), self.socket)
        env[SCORING_MODEL_ENV] = self.release.path
        return env

    async def start(self, upstream: UpstreamPool) -> None:
        """Start the process and return once it answers ``/ping`` (LaunchError otherwise)."""
        self.socket.unlink(missing_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(self.command())}\n".encode())
            log.flush()
            # Started from the event loop's thread, which lives as long as the service:
            # PDEATHSIG follows the thread that forked, not the process.
            self.proc = subprocess.Popen(
                self.command(),
                env=self.environment(),
                cwd=self.settings.home,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent(signal.SIGTERM),  # SIGTERM when the service dies
            )
        try:
            await self._wait_ready(upstream)
        except BaseException:
            await self.stop()
            raise

    async def _wait_ready(self, upstream: UpstreamPool) -> None:
        deadline = time.monotonic() + self.settings.start_timeout
        while time.monotonic() < deadline:
            if not self.alive:
                raise LaunchError(f"the scoring server of {self._name()} exited: {self.log_tail()}")
            with contextlib.suppress(UpstreamError):
                if (await upstream.request(self.address, "GET", "/ping")).status == 200:
                    return
            await asyncio.sleep(POLL_S)
        raise LaunchError(f"the scoring server of {self._name()} did not answer in {self.settings.start_timeout:g} s")

    def _name(self) -> str:
        return f"{self.release.model} version {self.release.version}"

    def log_tail(self) -> str:
        """The last lines of the process's log, on one line."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(line.strip() for line in lines[-LOG_TAIL:] if line.strip()) or "(empty log)"

    async def stop(self) -> None:
        """SIGTERM to the process group; SIGKILL after ``stop_timeout`` seconds."""
        if self.proc is not None:
            await asyncio.to_thread(self._stop)
        self.socket.unlink(missing_ok=True)

    def _stop(self) -> None:
        assert self.proc is not None
        pgid = self.proc.pid
        members = self._members()
        if not _signal_group(pgid, signal.SIGTERM):
            self.proc.wait()
            return
        deadline = time.monotonic() + self.settings.stop_timeout
        while time.monotonic() < deadline and (self.proc.poll() is None or any(map(_running, members))):
            time.sleep(0.05)
        _signal_group(pgid, signal.SIGKILL)
        self.proc.wait()

    def _members(self) -> list[psutil.Process]:
        """The process's descendants (uvicorn's workers), whose end :meth:`stop` waits for too."""
        try:
            return list(psutil.Process(self.pid).children(recursive=True))
        except psutil.Error:
            return []


def _signal_group(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def _running(proc: psutil.Process) -> bool:
    """Whether ``proc`` still runs (a zombie left to whoever adopted it does not)."""
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class ScoringPool:
    """One running :class:`ScoringProcess` per release key, started on demand.

    ``verify``: checks a release's folder before each start (raises a Refusal when it
    changed). ``upstream``: the client the readiness checks (and the router) use.
    """

    def __init__(self, settings: ScoringSettings, upstream: UpstreamPool, verify: Callable[[Release], None]) -> None:
        self.settings = settings
        self.upstream = upstream
        self.verify = verify
        self.processes: dict[tuple[str, str, str], ScoringProcess] = {}
        self._starting: dict[tuple[str, str, str], asyncio.Future[ScoringProcess]] = {}
        self._failed: dict[tuple[str, str, str], tuple[float, str]] = {}

    def address(self, release: Release) -> str | None:
        """Where ``release``'s running process listens, None when it has none."""
        proc = self.processes.get(release.key)
        return proc.address if proc is not None and proc.alive else None

    async def ensure(self, release: Release, *, retry: bool = True) -> ScoringProcess:
        """``release``'s running process, started (and waited for) if need be.

        ``retry`` False (a scoring request): a release whose last start failed less than
        :data:`RETRY_AFTER_S` ago is Unavailable at once, with that failure.
        """
        proc = self.processes.get(release.key)
        if proc is not None and proc.alive:
            return proc
        failed = self._failed.get(release.key)
        if not retry and failed is not None and time.monotonic() - failed[0] < RETRY_AFTER_S:
            raise Unavailable(failed[1])
        future = self._starting.get(release.key)
        if future is None:
            future = asyncio.ensure_future(self._start(release, proc))
            self._starting[release.key] = future
        # Shielded: a caller that gives up does not stop the start others wait for.
        return await asyncio.shield(future)

    async def _start(self, release: Release, old: ScoringProcess | None) -> ScoringProcess:
        try:
            if old is not None:
                self.upstream.forget(old.address)
                await old.stop()  # crashed: reap it before its successor starts
            await asyncio.to_thread(self.verify, release)
            proc = ScoringProcess(release, self.settings)
            await proc.start(self.upstream)
            self.processes[release.key] = proc
            self._failed.pop(release.key, None)
            return proc
        except (Refusal, LaunchError) as exc:
            self._failed[release.key] = (time.monotonic(), str(exc))
            raise
        finally:
            self._starting.pop(release.key, None)

    def describe(self, release: Release) -> dict[str, Any]:
        """``release``'s process: ``state`` (ready, starting, stopped or failed), where it
        listens (``unix:<path>``, for the platform's account only), the error of a failed one."""
        proc = self.processes.get(release.key)
        if proc is not None and proc.alive:
            return {"state": "ready", "listen": f"unix:{proc.address}"}
        if release.key in self._starting:
            return {"state": "starting", "listen": None}
        failed = self._failed.get(release.key)
        if failed is not None:
            return {"state": "failed", "listen": None, "error": failed[1]}
        return {"state": "stopped", "listen": None}

    async def retain(self, releases: Iterable[Release]) -> None:
        """Stop every process whose release is not among ``releases``."""
        keep = {release.key for release in releases}
        for key in [key for key in self.processes if key not in keep]:
            proc = self.processes.pop(key)
            self.upstream.forget(proc.address)
            await proc.stop()
        for key in [key for key in self._failed if key not in keep]:
            del self._failed[key]

    async def close(self) -> None:
        """Stop every process, those still starting included (the service is stopping)."""
        starting = list(self._starting.values())
        for future in starting:
            future.cancel()
        await asyncio.gather(*starting, return_exceptions=True)
        await self.retain(())
