"""50 concurrent spawn requests on the interactive tier: hubforge against plain JupyterHub.

The same storm hits both hubs in one run: an admin's token asks for 50
users' servers at once, then polls each user until their server is ready.
Reported: the hub API's p99 latency over every request of the storm (the
spawn POSTs and the polling GETs), and the time until all 50 are ready. The
baseline is plain JupyterHub with SimpleLocalProcessSpawner.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

import httpx

from bench.plainhub import PlainHub
from bench.report import Result
from harness.platform import HubSession, PlatformProcess
from hubforge.spawner_profiles.local.spawner import singleuser_command

USERS = [f"user{i:02d}" for i in range(50)]

PLAIN_EXTRA = f"""
c.Authenticator.allowed_users = set({USERS!r}) | {{"erin"}}
c.JupyterHub.load_roles = [{{"name": "bench-admin", "scopes": ["admin:servers", "admin:users"], "users": ["erin"]}}]
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = "{{data}}/users/{{username}}"
c.Spawner.cmd = {singleuser_command()!r}
c.Spawner.args = ["--allow-root"]
# The same patience as hubforge's: 50 servers starting at once on a small machine are slow.
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120
"""


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def admin_token(url: str) -> str:
    session = HubSession(url)
    try:
        assert session.login("erin").status_code == 302
        return session.new_token("erin", note="bench")
    finally:
        session.close()


async def storm(url: str, token: str, body: dict | None) -> tuple[list[float], float]:
    """Start every user's server at once and wait for all; (request latencies, total seconds)."""
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=50)
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"token {token}"}, timeout=300, limits=limits
    ) as client:

        async def timed(method: str, path: str, **kw: object) -> httpx.Response:
            # A dropped connection under load is retried (and its time counted), as a browser would.
            start = time.monotonic()
            for attempt in range(5):
                try:
                    resp = await client.request(method, path, **kw)
                    break
                except httpx.TransportError:
                    if attempt == 4:
                        raise
                    await asyncio.sleep(0.2)
            latencies.append(time.monotonic() - start)
            return resp

        async def one(user: str) -> None:
            resp = await timed("POST", f"/hub/api/users/{user}/server", json=body)
            assert resp.status_code in (201, 202), resp.text
            while True:
                state = (await timed("GET", f"/hub/api/users/{user}")).json()["servers"].get("", {})
                if state.get("ready"):
                    return
                if not state.get("pending"):
                    raise RuntimeError(f"{user}'s server failed to start")
                await asyncio.sleep(0.5)

        start = time.monotonic()
        await asyncio.gather(*(one(u) for u in USERS))
        total = time.monotonic() - start

        async def stop(user: str) -> None:
            await client.delete(f"/hub/api/users/{user}/server")

        await asyncio.gather(*(stop(u) for u in USERS))
    return latencies, total


def run(repeat: int) -> list[Result]:
    """One storm per side (a storm is 50 servers; repeat is ignored to keep the run short)."""
    with tempfile.TemporaryDirectory(prefix="hubforge-storm-") as tmp:
        users = {u: {"groups": ["data-scientist"]} for u in USERS} | {"erin": {"groups": ["platform-admin"]}}
        # Both hubs run every server as their own account (the accounts suite measures isolation).
        shared = {"spawner": {"local": {"isolation": "none"}}}
        ours = PlatformProcess(Path(tmp) / "ours" / "data", {"users": users, **shared})
        ours.start()
        try:
            ours.wait_ready()
            our_lat, our_total = asyncio.run(storm(ours.url, admin_token(ours.url), {"profile": "interactive"}))
        finally:
            ours.stop()
        root = Path(tmp) / "plain"
        root.mkdir()
        plain = PlainHub(root, PLAIN_EXTRA)
        plain.start()
        plain.wait_ready()
        try:
            base_lat, base_total = asyncio.run(storm(plain.url, admin_token(plain.url), None))
        finally:
            plain.stop()
    baseline = "plain JupyterHub, SimpleLocalProcessSpawner"
    return [
        Result("50 spawns: hub API p99", "s", [p99(our_lat)], [p99(base_lat)], baseline),
        Result("50 spawns: all ready", "s", [our_total], [base_total], baseline),
    ]
