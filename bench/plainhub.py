"""Plain JupyterHub, the baseline every hub benchmark compares against.

Same proxy executable, same shared-password login, fresh SQLite state on
free ports; each benchmark adds the few lines that make its comparison fair
(which spawner, which users).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx

from harness.platform import DEMO_PASSWORD, free_port, wait_for
from hubforge.hub.launcher import find_proxy_command

__all__ = ["PlainHub", "hub_healthy"]

BASE_CONFIG = """
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {port}
c.JupyterHub.hub_port = {hub_port}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{api_port}"
c.ConfigurableHTTPProxy.command = [{chp!r}]
c.JupyterHub.db_url = "sqlite:///{data}/hub.sqlite"
c.JupyterHub.cookie_secret_file = "{data}/cookie_secret"
c.JupyterHub.authenticator_class = "shared-password"
c.SharedPasswordAuthenticator.user_password = {password!r}
c.Spawner.default_url = "/lab"
"""


def hub_healthy(url: str) -> bool:
    """Whether the hub answers its health check through the proxy."""
    try:
        return httpx.get(f"{url}/hub/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


class PlainHub:
    """``jupyterhub`` with the base config plus ``extra`` config lines (``{data}`` is the folder)."""

    def __init__(self, root: Path, extra: str):
        self.root, self.port = root, free_port()
        fields = {
            "port": self.port,
            "hub_port": free_port(),
            "api_port": free_port(),
            "chp": find_proxy_command(),
            "data": root,
            "password": DEMO_PASSWORD,
        }
        config = BASE_CONFIG.format(**fields) + textwrap.dedent(extra).replace("{data}", str(root))
        (root / "jupyterhub_config.py").write_text(config)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The hub's public address."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the hub (returns at once)."""
        with open(self.root / "hub.log", "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "jupyterhub", "-f", "jupyterhub_config.py"],
                cwd=self.root,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self, timeout: float = 120) -> None:
        """Wait for the health check."""
        wait_for(lambda: hub_healthy(self.url), timeout, "the plain hub")

    def stop(self) -> None:
        """SIGTERM, as Ctrl-C would; the hub stops its servers."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(120)
