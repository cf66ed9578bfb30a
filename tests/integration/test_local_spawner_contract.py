"""The one-machine spawner keeps JupyterHub's spawner contract: stopping a spawn that waits for GPUs.

Driven as the hub drives it, on JupyterHub's own ``User`` and ORM (an in-memory hub
database, ``harness.spawner``), in a process of its own. The rest of the contract is in
tests/unit/test_local_spawner_contract.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

# -- (a) stopping a spawn that still waits for GPUs ---------------------------------------------------------

QUEUED_STOP = """
import asyncio, json, signal, sys, time
sys.path.insert(0, {tests!r})
from pathlib import Path
from jupyterhub import orm
from harness.spawner import hub_db, spawner_for, training

signals = []
signal.signal(signal.SIGINT, lambda *_: signals.append("SIGINT"))
signal.signal(signal.SIGTERM, lambda *_: signals.append("SIGTERM"))

async def main():
    db = hub_db()
    orm.User.find(db, "bob").orm_spawners[""].server = orm.Server(base_url="/user/bob/")  # running
    db.commit()
    alice = spawner_for(db, "alice", Path({tmp!r}))
    assert alice.allocator.allocate_now(training("bob")) is not None  # bob holds the one GPU
    alice.user_options = {{"profile": "training"}}
    start = asyncio.ensure_future(alice.start())
    for _ in range(200):
        if any("in line" in e["message"] for e in alice._events):
            break
        await asyncio.sleep(0.05)
    queued = len(alice.allocator.queue())
    began = time.monotonic()
    await alice.stop()
    stop_s = time.monotonic() - began
    try:
        await asyncio.wait_for(start, 5)
        ended = "returned"
    except BaseException as exc:
        ended = type(exc).__name__
    await asyncio.sleep(0.2)  # a stray signal would have arrived by now
    print(json.dumps({{
        "queued_before": queued, "queued_after": len(alice.allocator.queue()), "stop_s": stop_s,
        "start": ended, "signals": signals, "poll": await alice.poll(),
        "allocations": sorted(alice.allocator.allocations()),
    }}))

asyncio.run(main())
"""


def test_stopping_a_queued_spawn_leaves_the_queue_and_signals_nothing(tmp_path: Path) -> None:
    """The hub stops pending spawns (its shutdown with cleanup_servers, the API's stop): a spawn
    still in the GPU queue has no process, and JupyterHub's stop would signal pid 0, the hub's
    own process group. Run in a process group of its own, so a regression cannot hit pytest's."""
    script = QUEUED_STOP.format(tests=str(Path(__file__).resolve().parents[1]), tmp=str(tmp_path))
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=120,
        start_new_session=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["queued_before"] == 1, result
    assert result["signals"] == [], "nothing is signalled for a spawn with no process"
    assert result["queued_after"] == 0, "the stopped spawn left the queue"
    assert result["start"] == "CancelledError", "the waiting start() ends"
    assert result["poll"] == 0, "and the server polls as stopped"
    assert result["allocations"] == ["bob/"], "bob keeps his GPU; alice got none"
    assert result["stop_s"] < 5
