"""Spawn-to-ready with one system account per person, against every server on the platform's account.

Two platforms run side by side in one run, the same build and config but for
``spawner.local.isolation``: ``users`` (hubforge's default as root: the first
spawn creates the person's account and home and checks it can run the
platform's Python) and ``none`` (every server runs as the platform's own
account). An admin's token starts each person's server and polls until it is
ready, alternating between the two platforms person by person so that load on
the machine hits both alike: first spawns (which create the accounts), then, per
round, a later spawn of each person after their server stopped. Needs root.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.report import Result
from bench.spawnstorm import admin_token
from harness.platform import PlatformProcess, claim_test_accounts, remove_test_accounts

PEOPLE = [f"person{i}" for i in range(6)]


def _spawn(client: httpx.Client, user: str) -> float:
    """Seconds from the start request until the hub says the server is ready."""
    start = time.monotonic()
    resp = client.post(f"/hub/api/users/{user}/server", json={"profile": "interactive"})
    assert resp.status_code in (201, 202), resp.text
    while True:
        state = client.get(f"/hub/api/users/{user}").json()["servers"].get("", {})
        if state.get("ready"):
            return time.monotonic() - start
        if not state.get("pending"):
            raise RuntimeError(f"{user}'s server failed to start")
        time.sleep(0.1)


def _stop(client: httpx.Client, user: str) -> None:
    client.delete(f"/hub/api/users/{user}/server")
    deadline = time.monotonic() + 120
    while client.get(f"/hub/api/users/{user}").json()["servers"]:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{user}'s server did not stop")
        time.sleep(0.2)


def run(repeat: int) -> list[Result]:
    """First and later spawn-to-ready, isolated vs shared account (skipped without root)."""
    if os.geteuid() != 0:
        print("accounts: skipped, people's accounts are made only as root", file=sys.stderr)
        return []
    users = {u: {"groups": ["data-scientist"]} for u in PEOPLE} | {"erin": {"groups": ["platform-admin"]}}
    claim_test_accounts()
    figures: dict[str, dict[str, list[float]]] = {mode: {"first": [], "later": []} for mode in ("users", "none")}
    with tempfile.TemporaryDirectory(prefix="hubforge-bench-accounts-") as tmp:
        platforms = {}
        for mode in figures:
            config = {"users": users, "spawner": {"local": {"isolation": mode}}}
            platforms[mode] = PlatformProcess(Path(tmp) / mode / "data", config)
        try:
            for platform in platforms.values():
                platform.start()
            clients = {}
            for mode, platform in platforms.items():
                platform.wait_ready()
                clients[mode] = httpx.Client(
                    base_url=platform.url, headers={"Authorization": f"token {admin_token(platform.url)}"}, timeout=120
                )
            for rnd in range(1 + repeat):
                kind = "first" if rnd == 0 else "later"
                for i, user in enumerate(PEOPLE):
                    order = ("users", "none") if (i + rnd) % 2 == 0 else ("none", "users")
                    for mode in order:
                        figures[mode][kind].append(_spawn(clients[mode], user))
                        _stop(clients[mode], user)
        finally:
            for platform in platforms.values():
                if platform.proc is not None:
                    platform.stop()
            remove_test_accounts()
    shared = "servers on the platform's own account"
    return [
        Result("first spawn, account made -> ready", "s", figures["users"]["first"], figures["none"]["first"], shared),
        Result("later spawn -> ready", "s", figures["users"]["later"], figures["none"]["later"], shared),
    ]
