"""``hubforge up``: start the platform on one machine, keep it up, and stop all of it on Ctrl-C.

The supervisor starts one process, JupyterHub, in a session of its own; the
hub starts configurable-http-proxy, the hub-managed services (governance,
MLflow) and users' servers, and restarts the proxy and the services when they
exit. Every process of the platform carries ``HUBFORGE_INSTANCE=<data folder>``
in its environment, which is how a stop, or the next start after a crash, finds
all of them, whoever their parent was.

A hub that dies is started again, with backoff, and nobody's work goes with it:
people's servers (and their kernels) and the proxy keep running while the hub
is away; the services it ran are stopped and the new hub starts them; the new
hub takes the proxy over and finds the servers in its database. The supervisor
is the child subreaper of everything the platform starts, so it reaps what a
dead hub leaves, and a server that ends while the hub is away never stays a
zombie that looks alive.

``--keep-servers`` makes a stop (Ctrl-C, SIGTERM) leave people's servers and the
proxy running for the next start to take over (:mod:`.handover`): an upgrade.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager, suppress
from pathlib import Path
from typing import IO, Any

import httpx
import psutil

import hubforge
from hubforge.catalog import SERVER_STOP_GRACE
from hubforge.config import PlatformConfig
from hubforge.contract import CONFIG_ENV, DATA_ENV, DEMO_PASSWORD_ENV, INSTANCE_ENV
from hubforge.errors import LaunchError
from hubforge.ports import free_port
from hubforge.processes import Backoff, become_subreaper, describe_exit
from hubforge.spawner_profiles.local.accounts import Isolation, IsolationRefused, decide

from .handover import Handover, fit_loggers, kept_processes, user_servers
from .hubconfig import RUNTIME_ENV, Runtime
from .proxy import running_proxy
from .services import SERVICES, enabled_services, health_url, service_names

__all__ = [
    "Platform",
    "claim_privileged_ports",
    "demo_password",
    "find_proxy_command",
    "free_port",
    "free_privileged_port",
    "instance_processes",
    "release_ports",
]

SUPERVISOR_PID = "hubforge-up.pid"
#: Seconds a stopping platform waits for the kernels' fit loggers (after the servers, before
#: MLflow): under load, logging a model with its requirements takes tens of seconds.
FIT_LOGGER_GRACE = 45.0
PASSWORD_FILE = "demo-password"
PROXY_PID = "proxy.pid"
HUB_PID = "jupyterhub.pid"
#: The hub's program: JupyterHub after ``import hubforge`` (:mod:`hubforge.hub.jupyterhub`).
HUB_MODULE = "hubforge.hub.jupyterhub"


#: The lowest port :func:`free_privileged_port` hands out (the range below holds well-known services).
PRIVILEGED_FLOOR = 600


def privileged_port_limit() -> int:
    """The first port a process without privileges may bind (``net.ipv4.ip_unprivileged_port_start``)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text())
    except (OSError, ValueError):
        return 1024


def free_privileged_port(taken: set[int], host: str = "127.0.0.1") -> int | None:
    """A port below :func:`privileged_port_limit` that nobody listens on (None if none is free).

    Only a privileged process may bind one: while a service restarts, nobody's notebook can
    take its port over and be handed the requests (and tokens) meant for it.
    """
    for port in range(min(privileged_port_limit(), 1024) - 1, PRIVILEGED_FLOOR - 1, -1):
        if port in taken:
            continue
        with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
        return port
    return None


#: Where the platforms on this machine that use privileged ports say which they have taken
#: (root only): a free port is free until its service binds it, seconds or more later, and
#: two platforms starting at once would otherwise pick the same ones.
PORT_CLAIMS = Path("/run/hubforge-ports.json")


@contextmanager
def _claims(path: Path = PORT_CLAIMS) -> Iterator[dict[str, dict[str, Any]]]:
    """The claims of platforms whose launcher still runs, under an exclusive lock; written back."""
    with open(path.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            claims = json.loads(path.read_text())
        except (OSError, ValueError):
            claims = {}
        live = {
            instance: claim
            for instance, claim in (claims.items() if isinstance(claims, dict) else [])
            if isinstance(claim, dict) and psutil.pid_exists(int(claim.get("pid", 0)))
        }
        yield live
        scratch = path.with_suffix(".tmp")
        scratch.write_text(json.dumps(live))
        scratch.replace(path)


def claim_privileged_ports(instance: str, wanted: list[int], taken: set[int], path: Path = PORT_CLAIMS) -> list[int]:
    """``wanted`` with each 0 replaced by a free privileged port no other running platform has
    claimed, recorded as this instance's (with this process as the claimant); a 0 stays when no
    privileged port is free."""
    with _claims(path) as claims:
        claims.pop(instance, None)
        others = {int(port) for claim in claims.values() for port in claim.get("ports", [])}
        chosen: list[int] = []
        for port in wanted:
            if not port:
                port = free_privileged_port(taken | others | set(chosen) | set(wanted)) or 0
            chosen.append(port)
        claims[instance] = {"pid": os.getpid(), "ports": [port for port in chosen if port]}
    return chosen


def release_ports(instance: str, path: Path = PORT_CLAIMS) -> None:
    """Give up this instance's claim (its launcher is ending)."""
    if path.exists():
        with _claims(path) as claims:
            claims.pop(instance, None)


def port_in_use(host: str, port: int) -> bool:
    """Whether something accepts connections at host:port."""
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def find_proxy_command(configured: str = "") -> str:
    """configurable-http-proxy: as configured, else the project's node_modules, else PATH."""
    if configured:
        return configured
    roots = [Path(hubforge.__file__).resolve().parents[1], Path.cwd()]
    for root in roots:
        candidate = root / "node_modules" / ".bin" / "configurable-http-proxy"
        if candidate.exists():
            return str(candidate)
    found = shutil.which("configurable-http-proxy")
    if not found:
        raise LaunchError(
            "configurable-http-proxy not found: run `make up`, or `npm install configurable-http-proxy` "
            "and set hub.proxy_command"
        )
    return found


def demo_password(cfg: PlatformConfig, announce: Callable[[str], None]) -> str:
    """The demo password: HUBFORGE_DEMO_PASSWORD, else the saved one, else a new one announced once."""
    given = os.environ.get(DEMO_PASSWORD_ENV)
    if given:
        return given
    path = cfg.data_dir / PASSWORD_FILE
    if path.exists():
        return path.read_text().strip()
    password = secrets.token_urlsafe(12)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(password + "\n")
    users = ", ".join(cfg.users)
    announce(f"Demo password for {users}: {password}  (shown once; kept in {path})")
    return password


def instance_processes(instance: str, exclude: Iterator[int] | None = None) -> list[psutil.Process]:
    """Every live process whose environment marks it as part of ``instance``."""
    skip = {os.getpid(), *(exclude or ())}
    found = []
    for proc in psutil.process_iter(["pid"]):
        if proc.pid in skip:
            continue
        try:
            if proc.environ().get(INSTANCE_ENV) == instance:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def stop_processes(procs: list[psutil.Process], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL whatever is still there after ``timeout`` seconds."""
    for proc in procs:
        with suppress(psutil.NoSuchProcess):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for proc in alive:
        with suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(alive, timeout=5)


class Platform:
    """The platform's processes on one machine, started and stopped as a whole."""

    def __init__(
        self,
        cfg: PlatformConfig,
        log: Callable[[str], None] = print,
        output: IO[str] | None = None,
        keep_servers: bool = False,
    ):
        self.cfg = cfg
        self.log = log
        self.output = output
        self.keep_servers = keep_servers
        self.instance = str(cfg.data_dir)
        self.hub: subprocess.Popen[bytes] | None = None
        self.hub_env: dict[str, str] = {}
        self.signals: list[int] = []
        self.restarts = 0
        self.backoff = Backoff()
        #: What the last ``--keep-servers`` stop left running, when this start takes it over.
        self.handover: Handover | None = None
        self._claimed = False
        self._stopping = False
        self._claimed_ports = False  # privileged ports recorded in PORT_CLAIMS
        self.isolation = Isolation("none")  # until init_isolation decides
        # One client for every health check: making one loads the CA bundle (about 20 ms of
        # CPU), which a check every 0.1 s made a fifth of a core while the platform started.
        # No connection is kept between checks, as with a client of their own.
        self._checks: httpx.Client | None = None

    @property
    def url(self) -> str:
        """The public address of the hub."""
        return self.cfg.public_url

    def start(self) -> None:
        """Decide how people are isolated, prepare the data folder, clean up after a crash, start the hub."""
        become_subreaper()
        self.init_isolation()
        self.init_data_dir()
        self.init_handover()
        self.init_cleanup()
        self.init_ports()
        self.hub_env = self.init_environment()
        self.start_hub(self.hub_env)

    def init_isolation(self) -> None:
        """Run people's servers as their own accounts where possible; refuse where unsafe."""
        try:
            self.isolation = decide(self.cfg, os.geteuid())
        except IsolationRefused as exc:
            raise LaunchError(str(exc)) from None
        if self.isolation.warning:
            self.log(self.isolation.warning)
        for spec in SERVICES:
            reason = spec.unavailable(self.cfg) if spec.configured(self.cfg) else None
            if reason:
                self.log(f"the {spec.name} service does not start: {reason}")

    def init_data_dir(self) -> None:
        """Create the data folder, private to the platform's account, and claim it for this supervisor.

        The hub's and the services' databases, keys and logs are all in it: no person's
        account may read any of it (their servers reach the platform through the proxy).
        """
        self.cfg.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.cfg.data_dir.chmod(0o700)
        (self.cfg.data_dir / "logs").mkdir(exist_ok=True)
        pidfile = self.cfg.data_dir / SUPERVISOR_PID
        if pidfile.exists():
            other = _read_pid(pidfile)
            if other and other != os.getpid() and psutil.pid_exists(other) and _is_hubforge(other):
                raise LaunchError(f"hubforge is already running for {self.cfg.data_dir} (pid {other})")
        pidfile.write_text(f"{os.getpid()}\n")
        self._claimed = True

    def init_handover(self) -> None:
        """Take over what the last ``--keep-servers`` stop left running, if it is still there."""
        handover = Handover.load(self.cfg.data_dir)
        if handover is None:
            return
        proxy = running_proxy(str(self.cfg.data_dir / PROXY_PID), self.instance)
        servers = user_servers(instance_processes(self.instance))
        if handover.public_port != self.cfg.hub.port or proxy is None:
            self.log("What the last stop kept running can not be taken over (the proxy is gone or hub.port changed)")
            Handover.forget(self.cfg.data_dir)
            return
        self.handover = handover
        self.log(f"Taking over the proxy and {len(servers)} server(s) the last stop kept running")

    def init_cleanup(self) -> None:
        """Stop what a crashed earlier run left behind and forget its pid files (all but what
        this start takes over)."""
        running = instance_processes(self.instance)
        kept = self._kept(running) if self.handover is not None else set()
        leftovers = [p for p in running if p.pid not in kept]
        if leftovers:
            self.log(f"Stopping {len(leftovers)} process(es) left by an earlier run")
            stop_processes(leftovers)
        (self.cfg.data_dir / HUB_PID).unlink(missing_ok=True)
        if self.handover is None:
            (self.cfg.data_dir / PROXY_PID).unlink(missing_ok=True)

    def init_ports(self) -> None:
        """Pick the internal ports; refuse if the public port belongs to another program."""
        hub = self.cfg.hub
        kept = self.handover
        if kept is None and port_in_use(hub.ip, hub.port):
            raise LaunchError(f"hub.port: {hub.ip}:{hub.port} is in use by another program")
        wanted = [
            kept.hub_port if kept else hub.hub_port,
            kept.proxy_api_port if kept else hub.proxy_api_port,
            *(spec.configured_port(self.cfg) for spec in SERVICES),
        ]
        # A free port is free until somebody binds it: the public port is not bound
        # until the proxy starts, so it must not be handed out again, nor one port twice.
        taken = {hub.port, *(port for port in wanted if port)}
        # People's processes run as their own accounts: internal ports they cannot bind.
        privileged = self.isolation.mode == "users" and os.geteuid() == 0
        if privileged:
            wanted = claim_privileged_ports(self.instance, wanted, taken)
            self._claimed_ports = True
        ports = []
        for port in wanted:
            if not port:
                port = free_port()
                while port in taken:
                    port = free_port()
                taken.add(port)
            ports.append(port)
        open_ports = [port for port in ports if port >= privileged_port_limit()]
        if privileged and open_ports:
            self.log(
                f"Internal port(s) {', '.join(map(str, open_ports))} can be bound by anybody (configured, or "
                "no privileged port was free): a person's process could take one over while it restarts"
            )
        hub_port, proxy_api_port, *service_ports = ports
        self.runtime = Runtime(
            hub_port=hub_port,
            proxy_api_port=proxy_api_port,
            service_ports=dict(zip(service_names(), service_ports, strict=True)),
            proxy_command=find_proxy_command(hub.proxy_command),
            instance=self.instance,
            isolation=self.isolation.mode,
            keep_servers=self.keep_servers,
        )

    def init_environment(self) -> dict[str, str]:
        """The hub's environment: runtime facts, secrets, the instance marker."""
        env = dict(os.environ)
        env[RUNTIME_ENV] = self.runtime.to_json()
        env[INSTANCE_ENV] = self.instance
        env[DATA_ENV] = str(self.cfg.data_dir)
        env["CONFIGPROXY_AUTH_TOKEN"] = self.handover.proxy_token if self.handover else secrets.token_hex(32)
        if self.cfg.source != "default platform.yaml":
            env[CONFIG_ENV] = str(Path(self.cfg.source).resolve())
        if self.cfg.auth.type == "demo":
            env[DEMO_PASSWORD_ENV] = demo_password(self.cfg, self.log)
        return env

    def start_hub(self, env: dict[str, str]) -> None:
        """Start JupyterHub in a session of its own (Ctrl-C reaches only the supervisor)."""
        config_file = Path(__file__).with_name("jupyterhub_config.py")
        cmd = [sys.executable, "-m", HUB_MODULE, "-f", str(config_file)]
        out = self.output if self.output is not None else None
        self.hub = subprocess.Popen(
            cmd,
            cwd=self.cfg.data_dir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
            start_new_session=True,
            umask=0o077,  # what the hub and its services write is the platform's alone
        )

    def _poll(self, url: str, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self.signals:
                raise LaunchError("interrupted during start-up")
            if self.hub is not None and self.hub.poll() is not None:
                raise LaunchError(f"the hub exited with status {self.hub.returncode} during start-up")
            if self._answers(url):
                return
            time.sleep(0.1)
        raise LaunchError(f"nothing answered at {url} in time")

    def wait_ready(self, timeout: float = 120.0) -> float:
        """Poll the hub through the proxy until it answers; return the seconds waited."""
        started = time.monotonic()
        self._poll(f"{self.cfg.local_url}hub/health", started + timeout)
        return time.monotonic() - started

    def service_health_urls(self) -> dict[str, str]:
        """Each enabled service's health check, through the proxy."""
        base = f"{self.cfg.local_url}services"
        return {spec.name: health_url(spec, base) for spec in enabled_services(self.cfg)}

    def wait_services(self, timeout: float = 300.0) -> None:
        """Poll every service through the proxy until each answers, or the hub (which has
        answered) dies: that is a crash like any other, for :meth:`keep_up` to restart."""
        deadline = time.monotonic() + timeout
        for name, url in self.service_health_urls().items():
            try:
                self._poll(url, deadline)
            except LaunchError:
                if self.hub is not None and self.hub.poll() is not None and not self.signals:
                    return
                raise
            self.log(f"{name} is ready at {self.cfg.local_url}services/{name}/")

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the users' servers, then the hub (it stops the services), then anything still marked.

        The servers go first: JupyterHub stops its services (MLflow) and the proxy before
        the servers, and a server stopping ends its kernels' runs through both. Each
        server gets SERVER_STOP_GRACE seconds (hubforge.catalog). With ``--keep-servers``
        the servers and the proxy stay, for the next start (:meth:`hand_over`).
        """
        if self._stopping or not self._claimed:
            # Never sweep an instance this supervisor does not own (e.g. refused to start).
            return
        self._stopping = True
        if self.keep_servers and self.hub is not None:
            self.hand_over(timeout)
        else:
            servers = user_servers(instance_processes(self.instance))
            if servers:
                self.log(f"stopping {len(servers)} user server(s); their kernels end their MLflow runs")
                stop_processes(servers, timeout=SERVER_STOP_GRACE)
            self.wait_for_fit_loggers(FIT_LOGGER_GRACE)
            self.stop_hub(timeout)
            stop_processes(instance_processes(self.instance))
            Handover.forget(self.cfg.data_dir)
        pidfile = self.cfg.data_dir / SUPERVISOR_PID
        if _read_pid(pidfile) == os.getpid():
            pidfile.unlink(missing_ok=True)
        if self._claimed_ports:
            release_ports(self.instance)

    def wait_for_fit_loggers(self, grace: float) -> None:
        """Give the kernels' fit loggers, and the servers' replays, up to ``grace`` seconds to
        finish the fits they hold.

        A kernel hands a fit's model to its fit logger, in a session of its own, which ends
        the fit's run in MLflow once the model is logged; a kernel that ends waits for it only
        within its own budget, and what it could not hand over its server replays as the
        kernel ends. Stopping the hub now would stop MLflow under them and leave the fit's run
        RUNNING until the person's server next starts and replays it.
        """
        loggers = fit_loggers(instance_processes(self.instance))
        if not loggers:
            return
        self.log(
            f"waiting up to {grace:.0f} s for {len(loggers)} fit logger(s) to log their fits to MLflow "
            "(Ctrl-C again stops them now)"
        )
        signals, deadline, alive = len(self.signals), time.monotonic() + grace, loggers
        while alive and len(self.signals) == signals and (left := deadline - time.monotonic()) > 0:
            _, alive = psutil.wait_procs(alive, timeout=min(0.5, left))
        if alive:
            self.log(f"{len(alive)} fit logger(s) still busy; their fits are logged when the servers next start")

    def hand_over(self, timeout: float) -> None:
        """Stop the hub and its services; leave people's servers and the proxy to the next start."""
        self.stop_hub(timeout)
        running = self._stop_all_but_kept()
        if running_proxy(str(self.cfg.data_dir / PROXY_PID), self.instance) is None:
            stop_processes(instance_processes(self.instance))  # nothing can reach them without it
            return
        rt = self.runtime
        token = self.hub_env["CONFIGPROXY_AUTH_TOKEN"]
        Handover(self.cfg.hub.port, rt.hub_port, rt.proxy_api_port, token).save(self.cfg.data_dir)
        servers = len(user_servers(running))
        self.log(f"left the proxy and {servers} user server(s) running for the next start (--keep-servers)")

    def stop_hub(self, timeout: float) -> None:
        """SIGTERM to the hub; SIGKILL if it has not ended after ``timeout`` seconds."""
        if self.hub is not None and self.hub.poll() is None:
            self.hub.send_signal(signal.SIGTERM)
            try:
                self.hub.wait(timeout)
            except subprocess.TimeoutExpired:
                self.hub.kill()
                self.hub.wait()

    # -- keeping the hub up ---------------------------------------------------------------------------

    def restart_hub(self) -> None:
        """Start the hub again, after stopping what the dead one ran except people's servers and
        the proxy: its services (the new hub starts them on the same ports) and their children."""
        self._stop_all_but_kept()
        (self.cfg.data_dir / HUB_PID).unlink(missing_ok=True)
        self.restarts += 1
        self.start_hub(self.hub_env)

    def _kept(self, running: list[psutil.Process]) -> set[int]:
        """Of ``running``, what outlives the hub: people's servers, all they started, the proxy."""
        return kept_processes(running, self.cfg.data_dir / PROXY_PID, self.instance)

    def _stop_all_but_kept(self) -> list[psutil.Process]:
        """Stop the instance's processes except what outlives the hub; all that ran before."""
        running = instance_processes(self.instance)
        kept = self._kept(running)
        stop_processes([p for p in running if p.pid not in kept])
        return running

    def _hub_answers(self) -> bool:
        return self._answers(f"{self.cfg.local_url}hub/health")

    def _answers(self, url: str) -> bool:
        """Whether ``url`` answers 200 (within 2 s)."""
        if self._checks is None:
            self._checks = httpx.Client(timeout=2, limits=httpx.Limits(max_keepalive_connections=0))
        try:
            return self._checks.get(url).status_code == 200
        except httpx.HTTPError:
            return False

    def _wait(self, seconds: float) -> bool:
        """Sleep ``seconds``, reaping orphans; False when a signal to stop came meanwhile."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.signals:
                return False
            reap_orphans(self.hub)
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        return not self.signals

    def keep_up(self) -> int:
        """Watch the hub until a signal to stop: restart it (with backoff) whenever it dies.

        Returns the exit status for ``hubforge up``: 0 when stopped by a signal, else the
        last status of a hub that kept failing to come back.
        """
        down_since: float | None = None
        next_check = 0.0
        while not self.signals:
            assert self.hub is not None
            status = self.hub.poll()
            if status is not None:
                delay = self.backoff.next_delay()
                words = describe_exit(status)
                if delay is None:
                    self.log(f"the hub exited with {words} after {self.backoff.attempts} restarts in a row; giving up")
                    return status or 1
                self.log(f"the hub exited with {words}; people's servers keep running; restarting it in {delay:.0f}s")
                down_since = down_since or time.monotonic()
                if not self._wait(delay):
                    break
                self.restart_hub()
                continue
            now = time.monotonic()
            if down_since is not None and now >= next_check:
                next_check = now + 0.5
                if self._hub_answers():
                    self.log(f"the hub is back after {now - down_since:.1f}s (restart {self.restarts})")
                    self.backoff.recovered()
                    down_since = None
            if self.handover is not None and down_since is None:
                Handover.forget(self.cfg.data_dir)  # the hub has taken them over
                self.handover = None
            self._wait(0.2)
        return 0

    def run(self) -> int:
        """Start, report readiness, keep the hub up until Ctrl-C (SIGINT) or SIGTERM."""
        received = self.signals

        def on_signal(signum: int, _frame: object) -> None:
            received.append(signum)

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.start()
            try:
                waited = self.wait_ready()
                self.log(f"the hub answers at {self.url} after {waited:.1f}s; waiting for its services")
                self.wait_services()
            except LaunchError:
                if received:
                    return 0
                raise
            if self.hub is not None and self.hub.poll() is None:
                self.log(f"hubforge is ready at {self.url} (Ctrl-C stops it)")
            return self.keep_up()
        finally:
            self.stop()
            if self._checks is not None:
                self._checks.close()
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def reap_orphans(hub: subprocess.Popen[bytes] | None) -> None:
    """Collect the exit status of every child that has ended, except the hub's (``Popen``'s own):
    as subreaper, the supervisor inherits what a dead hub started."""
    while True:
        try:
            ended = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return
        if ended is None or (hub is not None and ended.si_pid == hub.pid):
            return
        with suppress(ChildProcessError):
            os.waitpid(ended.si_pid, os.WNOHANG)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _is_hubforge(pid: int) -> bool:
    try:
        return any("hubforge" in part for part in psutil.Process(pid).cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
