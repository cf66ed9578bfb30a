"""Start-up and login + spawn: hubforge against plain JupyterHub with the same spawner.

Both sides run in this process's run, alternating, on free ports with fresh
data folders. "Hub-ready" is the hub's health check answering through the
proxy; "spawn-to-ready" runs from the login form to JupyterLab's page.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from bench.plainhub import PlainHub, hub_healthy
from bench.report import Result
from harness.platform import HubSession, PlatformProcess, api, wait_for

#: The spawner as the platform configures it (hub/hubconfig.py): its tier catalog, which hub
#: groups grant which persona, its GPU database; alice is a data scientist, as on the platform.
PLAIN_EXTRA = """
from hubforge.catalog import load_catalog
from hubforge.config import load_config
_cfg = load_config(None)
c.Authenticator.allowed_users = {"alice"}
c.JupyterHub.load_groups = {"data-scientist": {"users": ["alice"]}}
c.JupyterHub.spawner_class = "hubforge.spawner_profiles.local.spawner.LocalTierSpawner"
c.LocalTierSpawner.home_dir_template = "{data}/users/{username}"
c.LocalTierSpawner.tier_catalog = load_catalog(_cfg)
c.LocalTierSpawner.group_personas = _cfg.group_personas()
c.LocalTierSpawner.gpu_db = "{data}/gpus.sqlite"
"""


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
            # Servers on the platform's own account, as the plain hub's (suite accounts measures isolation).
            ours = PlatformProcess(Path(tmp) / f"ours{i}" / "data", {"spawner": {"local": {"isolation": "none"}}})
            plain_root = Path(tmp) / f"plain{i}"
            plain_root.mkdir()
            plain = PlainHub(plain_root, PLAIN_EXTRA)
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
