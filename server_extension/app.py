"""Prepare every Python kernel the server starts for MLflow auto-tracking.

Mechanism, and why: jupyter_client's ``MultiKernelManager.pre_start_kernel(kernel_name,
kwargs)`` runs for every kernel start (sessions and ``POST /api/kernels`` alike),
returns the new ``KernelManager`` (so the kernelspec, and its language, is known)
and receives the launch ``kwargs`` as a mutable dict that is then handed to
``KernelManager.start_kernel(**kwargs)``. We wrap that one method on the server's
kernel manager *instance* and add ``env`` and ``extra_arguments`` there. Unlike
swapping ``kernel_manager_class`` or ``session_manager_class`` this leaves the
user's (or another extension's) choice of classes alone and composes with other
wrappers; unlike a kernel provisioner it needs no kernelspec edits. The launch
kwargs are saved by ``KernelManager`` for restarts, so a restarted kernel keeps
them. The session manager already puts ``JPY_SESSION_NAME`` (the notebook path)
into ``env`` (jupyter_server ``SessionManager.get_kernel_env``); we keep it.
"""

from __future__ import annotations

import atexit
import functools
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from jupyter_client.kernelspec import NATIVE_KERNEL_NAME
from traitlets import Bool, Float, Unicode
from traitlets.config import LoggingConfigurable

from hubforge.contract import CLOSE_BUDGET_ENV, EX_TEMPFAIL, KERNEL_PYTHON_ENV, REPLAY_MODULE, SPOOL_DIR_ENV

from .audit import load_audit
from .launch import (
    KERNEL_SHUTDOWN_WAIT,
    add_extension_argument,
    apply_env,
    close_budget,
    is_python_kernel,
    tracking_env,
    tracking_state,
    voila_notebook,
)
from .pending import adopt_dead, spool_root
from .replay import waiting
from .sessions import follow_notebooks

__all__ = ["HubforgeTracking", "Replayer", "load", "prepare_launch", "unload"]


class HubforgeTracking(LoggingConfigurable):
    """Settings of kernel auto-tracking (``c.HubforgeTracking.*`` in the server's config)."""

    enabled = Bool(
        True,
        help="Track notebook runs to MLflow. Kernels get HUBFORGE_TRACKING=off when False; "
        "HUBFORGE_TRACKING=off in the server's environment (set per tier by the hub) wins over True.",
    ).tag(config=True)

    origin = Unicode(
        "jupyterlab",
        help="What started the kernels, recorded as the run's origin tag (HUBFORGE_ORIGIN): "
        "jupyterlab for a user's server, voila for a Voila server. Kernels of Voila pages "
        "rendered by any server (/voila/render/...) are recorded as voila.",
    ).tag(config=True)

    kernel_extension = Unicode(
        "hubforge.server_extension.kernel",
        help="The IPython extension every Python kernel loads at start (--IPKernelApp.extensions).",
    ).tag(config=True)

    spool_dir = Unicode(
        "",
        help="Where kernels spill run data while MLflow is away, and keep what it had not taken "
        "when they end (HUBFORGE_SPOOL_DIR). Default: HUBFORGE_SPOOL_DIR in the server's "
        "environment, else <jupyter data dir>/hubforge/spool, in the person's home.",
    ).tag(config=True)

    kernel_shutdown_wait = Float(
        KERNEL_SHUTDOWN_WAIT,
        help="Seconds a tracked kernel gets to leave after a shutdown or restart request before it "
        "is killed (jupyter_client sends SIGTERM halfway, SIGKILL at the end); raises "
        "KernelManager.shutdown_wait_time (5 s by default) for Python kernels. A kernel ends its "
        "MLflow run within 8 s and logs fits still waiting until 5 s before the SIGTERM (fits it "
        "has no time for are kept for the server to log); a kernel killed sooner leaves its run to "
        "be ended KILLED.",
    ).tag(config=True)

    replay_interval = Float(
        30.0,
        help="Seconds between looks for run data kernels kept because MLflow was away when they "
        "ended; the server sends it when MLflow is back. 0 turns replay off.",
    ).tag(config=True)

    @property
    def spool_root(self) -> Path:
        """The spool root kernels and the replayer share."""
        return Path(self.spool_dir).expanduser() if self.spool_dir else spool_root(os.environ)


def prepare_launch(settings: HubforgeTracking, km: Any, kwargs: dict[str, Any], root_dir: str) -> bool:
    """Add hubforge's env and kernel argument to ``kwargs`` if ``km`` starts a Python kernel.

    Returns whether it did. ``kwargs`` are ``KernelManager.start_kernel``'s.
    """
    if not is_python_kernel(km.kernel_spec):
        return False
    server_env = os.environ
    use_image_python(km, server_env.get(KERNEL_PYTHON_ENV, ""))
    origin = settings.origin
    voila_page = voila_notebook(kwargs.get("env") or {})
    if voila_page is not None:  # an app page, whatever the server is
        origin = "voila"
    additions = tracking_env(server_env, root_dir=root_dir, origin=origin, enabled=settings.enabled)
    additions[SPOOL_DIR_ENV] = str(settings.spool_root)
    if voila_page:
        # jupyter-server names a session's notebook in JPY_SESSION_NAME; Voila has no session.
        additions["JPY_SESSION_NAME"] = voila_page
    # No env means the provisioner would copy os.environ: start from the same.
    kwargs["env"] = apply_env(kwargs.get("env") or server_env, server_env, additions)
    kwargs["extra_arguments"] = add_extension_argument(kwargs.get("extra_arguments"), settings.kernel_extension)
    if hasattr(km, "shutdown_wait_time"):
        km.shutdown_wait_time = max(float(km.shutdown_wait_time), settings.kernel_shutdown_wait)
        kwargs["env"][CLOSE_BUDGET_ENV] = str(close_budget(km.shutdown_wait_time))
    return True


def use_image_python(km: Any, python: str) -> bool:
    """Run the server's own Python kernel with ``python`` (the image's environment on one
    machine, ``HUBFORGE_KERNEL_PYTHON``); kernelspecs a person installed are theirs."""
    spec = km.kernel_spec
    argv = list(getattr(spec, "argv", []) or [])
    if not python or not argv or km.kernel_name != NATIVE_KERNEL_NAME:
        return False
    if argv[0] not in {sys.executable, "python", "python3", f"python{sys.version_info[0]}.{sys.version_info[1]}"}:
        return False
    spec.argv = [python, *argv[1:]]
    return True


def _hooked(original: Callable[..., Any], settings: HubforgeTracking, root_dir: str) -> Callable[..., Any]:
    @functools.wraps(original)
    def pre_start_kernel(kernel_name: str | None, kwargs: dict[str, Any]) -> Any:
        km, name, kernel_id = original(kernel_name, kwargs)
        try:
            if prepare_launch(settings, km, kwargs, root_dir):
                settings.log.debug("hubforge: kernel %s (%s) prepared for tracking", kernel_id, name)
        except Exception:  # tracking must never stop a kernel from starting
            settings.log.warning("hubforge: kernel %s starts without tracking", kernel_id, exc_info=True)
        return km, name, kernel_id

    pre_start_kernel.__hubforge__ = True  # type: ignore[attr-defined]
    return pre_start_kernel


def load(serverapp: Any) -> None:
    """Install the kernel hook on ``serverapp.kernel_manager`` (once), and the audit observers."""
    if getattr(serverapp, "hubforge_audit", None) is None:
        from .apps import app_handlers

        # Apps opened from the gallery render here, as this server's owner.
        serverapp.web_app.add_handlers(".*$", app_handlers(serverapp.web_app.settings["base_url"]))
        serverapp.hubforge_audit = load_audit(serverapp)
        # jupyter-server unloads no module extension: write and deliver once its extensions
        # have stopped (after its kernels, whose last events are in by then), or at exit.
        serverapp.cleanup_extensions = _then(serverapp.cleanup_extensions, lambda: unload(serverapp))
        atexit.register(unload, serverapp)
    settings = HubforgeTracking(parent=serverapp)
    kernels = serverapp.kernel_manager
    original = getattr(kernels, "pre_start_kernel", None)
    if original is None:
        # E.g. a gateway kernel manager: kernels start elsewhere, with their own env.
        serverapp.log.warning("hubforge: %s starts no local kernels; tracking is not set up", type(kernels).__name__)
        return
    if getattr(original, "__hubforge__", False):
        return
    root_dir = os.path.abspath(serverapp.root_dir)
    kernels.pre_start_kernel = _hooked(original, settings, root_dir)
    serverapp.log.info(
        "hubforge: Python kernels load %s (tracking %s)",
        settings.kernel_extension,
        tracking_state(os.environ, settings.enabled),
    )
    follow_notebooks(serverapp, settings.spool_root)
    _stop_gracefully_on_sigint(serverapp)
    env = apply_env(os.environ, os.environ, tracking_env(os.environ, root_dir=root_dir))
    if settings.replay_interval > 0 and env.get("MLFLOW_TRACKING_URI"):
        replayer = Replayer(settings.spool_root, env, settings.replay_interval, serverapp.log, Path(root_dir))
        replayer.start()
        kernels.shutdown_kernel = _then(kernels.shutdown_kernel, replayer.soon)
        serverapp.hubforge_replayer = replayer


def unload(serverapp: Any) -> None:
    """The server is stopping: write the audit spool, and deliver what it can; start a last
    replay of what the ended kernels kept."""
    audit = getattr(serverapp, "hubforge_audit", None)
    if audit is not None:
        serverapp.hubforge_audit = None
        audit.close()
    replayer = getattr(serverapp, "hubforge_replayer", None)
    if replayer is not None:
        serverapp.hubforge_replayer = None
        replayer.finish()


def _stop_gracefully_on_sigint(serverapp: Any) -> None:
    """Let SIGINT stop the server as SIGTERM does: its kernels shut down, their runs end.

    jupyter-server handles SIGINT only with a terminal (to ask "shut down?"); without
    one, SIGINT is a KeyboardInterrupt that leaves the kernels running to die with
    their parent, their runs never ended. JupyterHub's local spawner stops a server
    with SIGINT (jupyterhub-singleuser means it to stop gracefully, but only installs
    that with a terminal too). A server started from a shell's background job (a hub
    run with ``&`` or ``nohup``) inherits SIGINT *ignored*, and the hub's stop would
    wait out its interrupt timeout for nothing: that is taken over too.
    """
    stop = getattr(serverapp, "_signal_stop", None)
    if stop is None or threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGINT) in (signal.default_int_handler, signal.SIG_IGN):
        signal.signal(signal.SIGINT, stop)


def _then(method: Callable[..., Any], after: Callable[[], None]) -> Callable[..., Any]:
    """The kernel manager's ``method`` (a coroutine function), then ``after()``."""

    @functools.wraps(method)
    async def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return await method(*args, **kwargs)
        finally:
            after()

    return wrapped


class Replayer:
    """Send run data that ended kernels kept (MLflow was away) once MLflow is back.

    A daemon thread looks at the spool root every ``interval`` seconds. Kernels that
    died without ending their run (killed, out of memory) are adopted first (see
    :func:`~.pending.adopt_dead`), so their runs end KILLED instead of
    staying RUNNING (first after a
    few seconds, for what waited while the server was down); when entries for this
    server's MLflow wait, it runs ``python -m hubforge.server_extension.replay`` as a
    child process, so the server itself never imports mlflow. While MLflow stays away
    the looks back off, up to ten intervals apart. A kernel that shut down may have
    kept fits for it to log: :meth:`soon` asks for a look within a second.
    """

    def __init__(
        self, root: Path, env: Mapping[str, str], interval: float, log: Any, notebook_root: Path | None = None
    ):
        self.root = root
        self.notebook_root = notebook_root
        self.uri = env["MLFLOW_TRACKING_URI"].rstrip("/")
        # One quick try per request: an outage is waited out between runs, not inside one.
        self.env = {**env, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
        self.interval = interval
        self.log = log
        self.child: subprocess.Popen[bytes] | None = None
        self.runs = 0
        self._backoff = 1
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="hubforge-replay", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def soon(self) -> None:
        """Look now rather than at the next interval (a kernel just ended)."""
        self._wake.set()

    def _loop(self) -> None:
        wait = min(self.interval, 5.0)
        while not self._stop.is_set():
            self._wake.wait(wait)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                wait = self.tick()
            except Exception:  # never let a bad look end the loop
                self.log.warning("hubforge: replay look failed", exc_info=True)
                wait = self.interval

    def tick(self) -> float:
        """One look: reap a finished child, start one if entries wait; the seconds to the next look."""
        if self.child is not None:
            code = self.child.poll()
            if code is None:
                return self.interval
            self._report(code)
            self.child = None
            if code == EX_TEMPFAIL:
                self._backoff = min(self._backoff * 2, 10)
                return self.interval * self._backoff
        self._backoff = 1
        for entry in adopt_dead(self.root, self.notebook_root):
            self.log.warning("hubforge: a kernel died without ending its MLflow run; %s ends it as KILLED", entry.name)
        if not self.waiting():
            return self.interval
        self._start_child()
        return min(self.interval, 1.0)

    def finish(self) -> None:
        """The server is stopping, its kernels have ended: stop looking, and start a last
        replay of what they kept unless one runs. It goes on after the server (a platform
        stopping waits for it before MLflow); otherwise the fits a kernel could not hand to
        its fit logger would wait, their runs RUNNING, for the server's next start."""
        self.stop()
        if self.child is not None and self.child.poll() is None:
            return
        try:
            if self.waiting():
                self._start_child()
        except Exception:
            self.log.warning("hubforge: the last replay did not start", exc_info=True)

    def _start_child(self) -> None:
        log_file = open(self.root / ".replay.log", "wb")  # noqa: SIM115 - handed to the child
        with log_file:
            self.child = subprocess.Popen(
                [sys.executable, "-m", REPLAY_MODULE, "--spool", str(self.root)],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        self.runs += 1

    def waiting(self) -> bool:
        """Whether entries or fits for this server's MLflow (or unreadable ones, to set aside) wait."""
        return waiting(self.root, self.uri)

    def _report(self, code: int) -> None:
        try:
            said = (self.root / ".replay.log").read_text(errors="replace").strip()
        except OSError:
            said = ""
        level = self.log.info if code in (0, EX_TEMPFAIL) else self.log.warning
        level("hubforge: replay of kept run data exited %s%s", code, f":\n{said}" if said else "")
