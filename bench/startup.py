"""Start-up and login + spawn: hubforge against plain JupyterHub with the same spawner.

Both sides run in this process's run, alternating, on free ports with fresh
data folders. "Hub-ready" is the hub's health check answering through the
proxy; "spawn-to-ready" runs from the login form to JupyterLab's page.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _platform import DEMO_PASSWORD, HubSession, PlatformProcess, api, free_port, wait_for
from bench.report import Result
from hubforge.hub.launcher import find_proxy_command

PLAIN_CONFIG = """
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {port}
c.JupyterHub.hub_port = {hub_port}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{api_port}"
c.ConfigurableHTTPProxy.command = [{chp!r}]
c.JupyterHub.db_url = "sqlite:///{data}/hub.sqlite"
c.JupyterHub.cookie_secret_file = "{data}/cookie_secret"
c.JupyterHub.authenticator_class = "shared-password"
c.SharedPasswordAuthenticator.user_password = {password!r}
c.Authenticator.allowed_users = {{"alice"}}
c.JupyterHub.spawner_class = "hubforge.spawner_profiles.local.LocalTierSpawner"
c.LocalTierSpawner.home_dir_template = "{data}/users/{{username}}"
c.Spawner.default_url = "/lab"
"""


class PlainHub:
    """Plain JupyterHub with hubforge's local spawner: the baseline."""

    def __init__(self, root: Path):
        self.data = root
        self.port = free_port()
        config = PLAIN_CONFIG.format(
            port=self.port,
            hub_port=free_port(),
            api_port=free_port(),
            chp=find_proxy_command(),
            data=root,
            password=DEMO_PASSWORD,
        )
        (root / "jupyterhub_config.py").write_text(textwrap.dedent(config))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with open(self.data / "hub.log", "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "jupyterhub", "-f", "jupyterhub_config.py"],
                cwd=self.data,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)


def hub_healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/hub/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def time_to_ready(hub: PlatformProcess | PlainHub) -> float:
    start = time.monotonic()
    hub.start()
    wait_for(lambda: hub_healthy(hub.url), 180, "the hub")
    return time.monotonic() - start


def login_and_spawn(url: str, user: str = "alice") -> float:
    """Seconds from the login form to JupyterLab's page, then stop the server again."""
    session = HubSession(url)
    start = time.monotonic()
    try:
        assert session.login(user).status_code == 302
        token = session.new_token(user)
        with api(url, token) as client:
            assert client.post(f"/hub/api/users/{user}/server").status_code in (201, 202)
            wait_for(
                lambda: client.get(f"/hub/api/users/{user}").json()["servers"].get("", {}).get("ready"),
                120,
                "the server",
                interval=0.05,
            )
            assert session.follow(f"/user/{user}/lab").status_code == 200
            elapsed = time.monotonic() - start
            client.delete(f"/hub/api/users/{user}/server")
            wait_for(lambda: not client.get(f"/hub/api/users/{user}").json()["servers"], 60, "stop")
        return elapsed
    finally:
        session.close()


def run(repeat: int) -> list[Result]:
    """Hub-ready and spawn-to-ready, hubforge against plain JupyterHub, alternating."""
    ours_up, ours_all, plain_up, ours_spawn, plain_spawn = [], [], [], [], []
    with tempfile.TemporaryDirectory(prefix="hubforge-bench-") as tmp:
        for i in range(repeat):
            ours = PlatformProcess(Path(tmp) / f"ours{i}" / "data")
            plain_root = Path(tmp) / f"plain{i}"
            plain_root.mkdir()
            plain = PlainHub(plain_root)
            started = time.monotonic()
            ours_up.append(time_to_ready(ours))
            try:
                ours.wait_ready()  # services too, before measuring a spawn
                ours_all.append(time.monotonic() - started)
                ours_spawn.append(login_and_spawn(ours.url))
            finally:
                ours.stop()
            plain_up.append(time_to_ready(plain))
            try:
                plain_spawn.append(login_and_spawn(plain.url))
            finally:
                plain.stop()
    return [
        Result("hubforge up -> hub ready", "s", ours_up, plain_up, "plain JupyterHub, same spawner"),
        Result("hubforge up -> services ready", "s", ours_all, plain_up, "plain JupyterHub, hub ready"),
        Result("login + spawn -> JupyterLab (alice)", "s", ours_spawn, plain_spawn, "plain JupyterHub, same spawner"),
    ]
