"""configurable-http-proxy that outlives the hub on one machine.

JupyterHub's :class:`~jupyterhub.proxy.ConfigurableHTTPProxy` stops any proxy its
pid file names before it starts its own. After a hub crash that proxy is still
routing every person to their server; replacing it would cut each open
connection (kernel websockets, terminals, downloads) for nothing. A restarted hub
therefore takes the running proxy over when it is this platform's (the pid file's
process is configurable-http-proxy, marked with this instance) and answers this
hub's token; otherwise it starts one as JupyterHub does. z2jh does the same with a
proxy pod of its own: the hub pod restarts, the proxy keeps serving.
"""

from __future__ import annotations

from contextlib import suppress
from types import TracebackType

import psutil
from jupyterhub.proxy import ConfigurableHTTPProxy
from tornado.ioloop import PeriodicCallback
from traitlets import Unicode

from hubforge.contract import INSTANCE_ENV

__all__ = ["KeptProxy", "RunningProcess", "running_proxy"]

PROXY_PROGRAM = "configurable-http-proxy"


class RunningProcess:
    """A process this hub did not start, with the part of ``Popen``'s face JupyterHub uses."""

    def __init__(self, proc: psutil.Process):
        self._proc = proc
        self.pid = proc.pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        """None while it runs (a zombie has ended); its exit status is its parent's to read."""
        if self.returncode is None:
            try:
                running = self._proc.is_running() and self._proc.status() != psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                running = False
            if not running:
                self.returncode = -1
        return self.returncode

    def terminate(self) -> None:
        with suppress(psutil.NoSuchProcess):
            self._proc.terminate()

    def kill(self) -> None:
        with suppress(psutil.NoSuchProcess):
            self._proc.kill()

    def wait(self, timeout: float | None = None) -> int | None:
        with suppress(psutil.NoSuchProcess):
            self._proc.wait(timeout)
        return self.poll()

    def __enter__(self) -> RunningProcess:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        return None


def running_proxy(pid_file: str, instance: str) -> psutil.Process | None:
    """The proxy ``pid_file`` names, if it runs and belongs to ``instance``; else None."""
    try:
        with open(pid_file) as fh:
            proc = psutil.Process(int(fh.read().strip()))
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        if not any(PROXY_PROGRAM in part for part in proc.cmdline()[:3]):
            return None
        if proc.environ().get(INSTANCE_ENV) != instance:
            return None
    except (OSError, ValueError, psutil.Error):
        return None
    return proc


class KeptProxy(ConfigurableHTTPProxy):
    """configurable-http-proxy, taken over from the last hub when it still runs."""

    instance = Unicode(
        "",
        help="The platform instance marker (HUBFORGE_INSTANCE) a proxy must carry to be taken over.",
    ).tag(config=True)

    async def start(self) -> None:
        """Take the running proxy over, or start one (stopping a stale one first)."""
        proc = running_proxy(self.pid_file, self.instance) if self.pid_file and self.instance else None
        if proc is None:
            await super().start()
            return
        self.proxy_process = RunningProcess(proc)
        try:
            await self.get_all_routes()
        except Exception as exc:  # any failure: it is not a proxy this hub can use
            self.log.warning("The running proxy (pid %s) does not answer this hub (%s): replacing it", proc.pid, exc)
            await super().start()
            return
        self.log.info("Took over the running proxy (pid %s): people's connections were kept", proc.pid)
        callback = PeriodicCallback(self.check_running, 1e3 * self.check_running_interval)
        self._check_running_callback = callback
        callback.start()

    def _check_pid(self, pid: int) -> None:
        """A pid file naming a process of another program is stale (the pid was reused)."""
        super()._check_pid(pid)
        with suppress(psutil.Error):
            if not any(PROXY_PROGRAM in part for part in psutil.Process(pid).cmdline()[:3]):
                raise ProcessLookupError(pid)
