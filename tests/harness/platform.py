"""Start the real platform as processes and act on it as a person would.

Used by the platform tests and by bench/. Nothing here is faked: `hubforge up`
runs as a subprocess with its own data folder and free ports, and people log
in through the hub's login form.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg2
import sqlalchemy as sa
import yaml

from hubforge.config import load_config
from hubforge.ports import free_port

DEMO_PASSWORD = "demo-" + uuid.uuid4().hex[:12]
PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
PERSONA_USERS = {
    "data-scientist": "alice",
    "ml-engineer": "bob",
    "ml-lead": "carol",
    "data-steward": "dan",
    "platform-admin": "erin",
}


#: One client for the tests' polls of local services (``PROBE.get(url)``): each ``httpx.get``
#: makes a client of its own, which loads the CA bundle (20 ms of CPU or more), and a poll
#: every 0.2 s of three health checks took half a core while a platform started. It keeps
#: no connection between requests, as those clients did not.
PROBE = httpx.Client(timeout=2, limits=httpx.Limits(max_keepalive_connections=0))


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def still_running(proc: psutil.Process) -> bool:
    """Whether ``proc`` still runs: not gone, and not a zombie left for its parent to reap. A
    process that ends between the two looks counts as gone (psutil raises then)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@contextmanager
def pg_databases(*names: str) -> Iterator[dict[str, str]]:
    """Fresh PostgreSQL databases on the local server, dropped afterwards; name -> URL."""
    suffix = uuid.uuid4().hex[:8]
    real = {name: f"hubforge_test_{name}_{suffix}" for name in names}
    conn = psycopg2.connect(PG_DSN)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for db in real.values():
                cur.execute(f'CREATE DATABASE "{db}"')
        yield {name: f"postgresql://postgres@127.0.0.1:5432/{db}" for name, db in real.items()}
    finally:
        with conn.cursor() as cur:
            for db in real.values():
                cur.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        conn.close()


#: System accounts of this test run's people: ``hft<4 hex>-<name>``, removed when the run ends.
ACCOUNT_PREFIX = f"hft{uuid.uuid4().hex[:4]}-"
_TEST_ACCOUNT = re.compile(r"hft[0-9a-f]{4}-")


def _merge(base: dict[str, Any], override: dict[str, Any]) -> None:
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def others_can_run_the_platform() -> bool:
    """Whether another account can reach the platform's Python: every folder above the
    environment and its interpreter open to others (a checkout under a private home is not)."""
    for path in (Path(sys.prefix), Path(os.path.realpath(sys.executable)).parent):
        for folder in (path, *path.parents):
            if not folder.stat().st_mode & stat.S_IXOTH:
                return False
    return True


#: Why the platform tests cannot run people's servers as their own accounts here, or "".
NO_ACCOUNTS = (
    "the tests do not run as root"
    if os.geteuid() != 0
    else ""
    if others_can_run_the_platform()
    else "the checkout is in a folder other accounts cannot enter, so their servers could not run"
)


#: Which test run (pytest's pid) owns each prefix: a run never removes a live run's accounts.
_RUNS = Path(tempfile.gettempdir()) / "hubforge-test-accounts"


def claim_test_accounts() -> None:
    """Record that this process owns ``ACCOUNT_PREFIX``."""
    _RUNS.mkdir(mode=0o700, exist_ok=True)
    (_RUNS / ACCOUNT_PREFIX).write_text(str(os.getpid()))


def remove_test_accounts(current_run: bool = True) -> list[str]:
    """Delete the accounts (and homes) test runs made: this run's, or those of runs that ended."""
    removed = []
    for entry in pwd.getpwall():
        prefix = entry.pw_name[:8]
        if not (_TEST_ACCOUNT.match(entry.pw_name) and entry.pw_gecos.startswith("hubforge ")):
            continue
        if (prefix == ACCOUNT_PREFIX) != current_run or (not current_run and _alive(prefix)):
            continue
        subprocess.run(["userdel", "--remove", entry.pw_name], capture_output=True, check=False)
        removed.append(entry.pw_name)
    if current_run:
        (_RUNS / ACCOUNT_PREFIX).unlink(missing_ok=True)
    return removed


def _alive(prefix: str) -> bool:
    try:
        pid = int((_RUNS / prefix).read_text())
    except (OSError, ValueError):
        return False
    return psutil.pid_exists(pid)


def derived_environment(folder: Path) -> Path:
    """A Python environment of its own at ``folder`` (its own prefix and interpreter) that
    sees the platform's packages: what an image's environment is on one machine, made in
    a second instead of installing PyTorch. Readable by every account."""
    base = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    subprocess.run([base, "-m", "venv", "--without-pip", str(folder)], check=True)
    platform_site = next(p for p in sys.path if p.endswith("site-packages") and p.startswith(sys.prefix))
    (site,) = folder.glob("lib/python3*/site-packages")
    (site / "platform_packages.pth").write_text(f"import site; site.addsitedir({platform_site!r})\n")
    for path in (folder, *folder.rglob("*")):
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() or os.access(path, os.X_OK) else 0o644)
    return folder


class PlatformProcess:
    """`hubforge up` as a subprocess on free ports with its own data folder, in the test run's
    environment with ``environment`` over it."""

    def __init__(
        self, data_dir: Path, overrides: dict[str, Any] | None = None, environment: dict[str, str] | None = None
    ) -> None:
        self.data_dir = data_dir
        self.environment = environment or {}
        self.port = free_port()
        # Run as root, people's servers run as accounts of this test run's own prefix (where
        # those accounts can run the platform at all: see NO_ACCOUNTS).
        local: dict[str, Any] = {"account_prefix": ACCOUNT_PREFIX}
        if NO_ACCOUNTS:
            local["isolation"] = "none"
        config: dict[str, Any] = {"data_dir": str(data_dir), "hub": {"port": self.port}, "spawner": {"local": local}}
        _merge(config, overrides or {})
        self.config = config
        data_dir.mkdir(parents=True, exist_ok=True)
        self.config_path = data_dir.parent / f"{data_dir.name}-platform.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = data_dir.parent / f"{data_dir.name}-up.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def isolated(self) -> bool:
        """Whether people's servers run as their own accounts (as root, unless told otherwise)."""
        return not NO_ACCOUNTS and self.config["spawner"]["local"].get("isolation", "auto") != "none"

    def account(self, user: str) -> pwd.struct_passwd | None:
        """The system account of hub user ``user`` (None when not isolated)."""
        return pwd.getpwnam(ACCOUNT_PREFIX + user) if self.isolated else None

    def home(self, user: str) -> Path:
        """The home folder of ``user``'s server."""
        account = self.account(user)
        return Path(account.pw_dir) if account else self.data_dir / "users" / user

    @property
    def url(self) -> str:
        """The hub's public address, without a trailing slash."""
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """The environment `hubforge up` runs with."""
        env = dict(os.environ)
        env.update({"HUBFORGE_DEMO_PASSWORD": DEMO_PASSWORD, "PYTHONUNBUFFERED": "1"})
        env.pop("HUBFORGE_DATA", None)
        env.pop("HUBFORGE_CONFIG", None)
        env.update(self.environment)
        return env

    def start(self, *args: str) -> None:
        """Start `hubforge up` with ``args`` (returns at once; see wait_ready)."""
        hubforge = Path(sys.executable).with_name("hubforge")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(hubforge), "up", "--config", str(self.config_path), *args],
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def ready(self) -> bool:
        """Whether the hub, the governance service and MLflow answer through the proxy."""
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"hubforge up exited with {self.proc.returncode}:\n{self.log_tail()}")
        try:
            hub = PROBE.get(f"{self.url}/hub/health").status_code == 200
            gov = PROBE.get(f"{self.url}/services/governance/api/health").status_code == 200
            mlflow = PROBE.get(f"{self.url}/services/mlflow/health").status_code == 200
        except httpx.HTTPError:
            return False
        return hub and gov and mlflow

    def wait_ready(self, timeout: float = 180) -> None:
        """Wait until every part answers."""
        try:
            wait_for(self.ready, timeout, "the platform to answer")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n{self.log_tail()}") from None

    def stop(self, sig: int = signal.SIGINT, timeout: float = 60) -> int:
        """Send ``sig`` to `hubforge up` (Ctrl-C by default) and wait for it to exit."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode

    def log_tail(self, lines: int = 60) -> str:
        """The end of the platform's log, for failure messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class HubSession:
    """A person in a browser: cookies, the login form, XSRF headers."""

    def __init__(self, url: str):
        self.url = url
        self.client = httpx.Client(base_url=url, follow_redirects=False, timeout=30)

    def close(self) -> None:
        """Close the connection pool."""
        self.client.close()

    def login(self, username: str, password: str = DEMO_PASSWORD) -> httpx.Response:
        """Log in through the hub's login form."""
        page = self.client.get("/hub/login")
        page.raise_for_status()
        match = re.search(r'name="_xsrf" value="([^"]+)"', page.text)
        assert match, "the login form has no _xsrf field"
        return self.client.post(
            "/hub/login", data={"username": username, "password": password, "_xsrf": match.group(1)}
        )

    def xsrf(self) -> str:
        """The hub's XSRF token from its cookie (what the hub's own pages send back)."""
        for cookie in self.client.cookies.jar:
            if cookie.name == "_xsrf" and cookie.path == "/hub/":
                return cookie.value
        self.client.get("/hub/home")
        return next(c.value for c in self.client.cookies.jar if c.name == "_xsrf")

    def new_token(self, username: str, note: str = "test") -> str:
        """Create an API token for the logged-in user, as the token page does."""
        resp = self.client.post(
            f"/hub/api/users/{username}/tokens",
            json={"note": note},
            headers={"X-XSRFToken": self.xsrf()},
        )
        resp.raise_for_status()
        return str(resp.json()["token"])

    def follow(self, path: str, limit: int = 20) -> httpx.Response:
        """GET ``path`` and follow redirects within the hub (OAuth hops included)."""
        resp = self.client.get(path)
        for _ in range(limit):
            if resp.status_code not in (301, 302, 303, 307):
                return resp
            location = resp.headers["location"]
            resp = self.client.get(httpx.URL(str(resp.url)).join(location))
        raise AssertionError(f"too many redirects from {path}")

    def decide(self, request_id: str, decision: str = "approve", comment: str | None = None) -> httpx.Response:
        """Decide a governance request as the person does: in this browser session, with the
        governance service's own hub-login cookie and XSRF token (no token decides)."""
        self.follow("/services/governance/requests")  # the OAuth hop sets the service's cookies
        xsrf = next(
            c.value for c in self.client.cookies.jar if c.name == "_xsrf" and c.path.startswith("/services/governance")
        )
        body = {"decision": decision, **({"comment": comment} if comment is not None else {})}
        return self.client.post(
            f"/services/governance/api/requests/{request_id}/decision", json=body, headers={"X-XSRFToken": xsrf}
        )


def running(proc: PlatformProcess) -> Iterator[PlatformProcess]:
    """``proc`` started and answering, for a fixture to yield from; stopped after."""
    proc.start()
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


def assert_all_stopped(platform: PlatformProcess) -> None:
    """After `hubforge up` stopped: none of its processes left, its port closed, its pid file gone."""
    from hubforge.hub.launcher import instance_processes  # the hub's own (heavy) imports, when used

    assert instance_processes(str(platform.data_dir.resolve())) == []
    with closing(socket.socket()) as sock:
        assert sock.connect_ex(("127.0.0.1", platform.port)) != 0, "the public port is still open"
    assert not (platform.data_dir / "hubforge-up.pid").exists()


def up_in_foreground(platform: PlatformProcess) -> subprocess.CompletedProcess[str]:
    """``hubforge up`` with the platform's config and environment, run to its exit (a refusal)."""
    hubforge = str(Path(sys.executable).with_name("hubforge"))
    return subprocess.run(
        [hubforge, "up", "--config", str(platform.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=platform.env(),
    )


def api(url: str, token: str) -> httpx.Client:
    """An API client that authenticates with a hub token."""
    return httpx.Client(base_url=url, headers={"Authorization": f"token {token}"}, timeout=30)


#: MLflow's REST API behind the hub.
MLFLOW_API = "/services/mlflow/api/2.0/mlflow"


def experiment_runs(client: httpx.Client, experiment: str) -> tuple[str, list[dict[str, Any]]] | None:
    """(experiment id, its runs as MLflow's REST API gives them), read as ``client``'s user;
    None while the experiment does not exist."""
    exp = client.get(f"{MLFLOW_API}/experiments/get-by-name", params={"experiment_name": experiment})
    if exp.status_code == 404:
        return None
    assert exp.status_code == 200, exp.text
    experiment_id = exp.json()["experiment"]["experiment_id"]
    found = client.post(f"{MLFLOW_API}/runs/search", json={"experiment_ids": [experiment_id]})
    assert found.status_code == 200, found.text
    return experiment_id, found.json().get("runs", [])


def replay_spool(spool: Path, tracking_uri: str) -> subprocess.CompletedProcess[str]:
    """Run the server's replay of a spool, as the server starts it, to the end."""
    return subprocess.run(
        [sys.executable, "-m", "hubforge.server_extension.replay", "--spool", str(spool)],
        env={**os.environ, "MLFLOW_TRACKING_URI": tracking_uri},
        capture_output=True,
        text=True,
        timeout=300,
    )


#: Debian's chromium, headless, for Playwright tests (never a browser download).
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def stored(platform: PlatformProcess, where: str, **params: Any) -> list[dict[str, Any]]:
    """The trail's records ``where`` (SQL on gov_audit_events) in chain order, read from the
    platform's governance database: each record with its ``position`` and ``observed``."""
    cfg = load_config(str(platform.config_path))
    engine = sa.create_engine(cfg.db_url("governance"))
    try:
        with engine.connect() as conn:
            query = f"SELECT position, observed, record FROM gov_audit_events WHERE {where} ORDER BY position"
            rows = conn.execute(sa.text(query), params).all()
    finally:
        engine.dispose()
    return [{"position": r.position, "observed": r.observed, **json.loads(r.record)} for r in rows]
