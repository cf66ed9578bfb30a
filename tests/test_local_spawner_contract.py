"""The one-machine spawner keeps JupyterHub's spawner contract.

Each test drives :class:`LocalTierSpawner` as the hub does, on JupyterHub's own
``User`` and ORM (an in-memory hub database): stopping a spawn that waits in the
GPU queue, allocations the hub no longer knows of, ``options_from_form`` from the
config, and what a refused request leaves in the saved options.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyterhub import orm
from jupyterhub.objects import Hub
from jupyterhub.user import User
from sqlalchemy.orm import Session
from tornado import web

from hubforge.config import load_config
from hubforge.spawner_profiles.allocator import GpuRequest
from hubforge.spawner_profiles.catalog import load_catalog
from hubforge.spawner_profiles.local import LocalTierSpawner

#: One H100, the training tier's model: a second training server has to queue.
ONE_GPU = [{"model": "nvidia-h100-80gb", "count": 1}]
GROUPS = {"alice": "data-scientist", "bob": "ml-engineer", "carol": "data-scientist", "dan": "data-steward"}


def hub_db() -> Session:
    """A hub database with the demo users, their groups and their default servers (none running)."""
    db: Session = orm.new_session_factory("sqlite://")()
    for name, group_name in GROUPS.items():
        group = orm.Group.find(db, group_name) or orm.Group(name=group_name)
        user = orm.User(name=name)
        user.groups.append(group)
        db.add(user)
        db.add(orm.Spawner(user=user, name=""))
    db.commit()
    return db


def spawner_for(db: Session, name: str, tmp_path: Path, **traits: Any) -> LocalTierSpawner:
    """The default server's spawner of ``name``, configured as the platform's hub configures it."""
    cfg = load_config(None)
    user = User(orm.User.find(db, name), {})
    spawner: LocalTierSpawner = user._new_spawner(
        "",
        spawner_class=LocalTierSpawner,
        hub=Hub(),
        tier_catalog=load_catalog(cfg),
        group_personas=cfg.group_personas(),
        gpu_db=str(tmp_path / "gpus.sqlite"),
        declared_gpus=ONE_GPU,
        home_dir_template=str(tmp_path / "users" / "{username}"),
        **traits,
    )
    return spawner


@pytest.fixture
def db() -> Iterator[Session]:
    session = hub_db()
    yield session
    session.close()


def training(user: str) -> GpuRequest:
    return GpuRequest(f"{user}/", user, GROUPS[user], "training", 1, "nvidia-h100-80gb")


# -- (a) stopping a spawn that still waits for GPUs ---------------------------------------------------------

QUEUED_STOP = """
import asyncio, json, signal, sys, time
sys.path.insert(0, {tests!r})
from pathlib import Path
from jupyterhub import orm
from test_local_spawner_contract import hub_db, spawner_for, training

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
    script = QUEUED_STOP.format(tests=str(Path(__file__).parent), tmp=str(tmp_path))
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


# -- (b) allocations follow the hub's view of its servers -------------------------------------------------------


def test_a_start_frees_a_stale_allocation_of_the_same_server(db: Session, tmp_path: Path) -> None:
    """An allocation left behind (the hub's database reset, a crash while the hub was away) under
    the name of a server the hub is starting no longer refuses the start with 409."""
    alice = spawner_for(db, "alice", tmp_path)
    assert alice.allocator.allocate_now(training("alice")) is not None  # left behind
    alice.user_options = {"profile": "training"}
    choice = alice.check_user_options()
    assert choice.tier.slug == "training"
    assert "alice/" not in alice.allocator.allocations()
    assert alice.allocator.allocate_now(training("alice")) is not None, "her start gets the GPU back"


def test_reconcile_frees_only_servers_the_hub_does_not_have(db: Session, tmp_path: Path) -> None:
    alice = spawner_for(db, "alice", tmp_path)
    allocator = alice.allocator
    # carol's server is running as far as the hub knows; dan's was stopped while the hub was away.
    carol = orm.User.find(db, "carol")
    carol.orm_spawners[""].server = orm.Server(base_url="/user/carol/")
    db.commit()
    cpu = {"tier": "interactive", "gpus": 0}
    for user in ("carol", "dan"):
        assert allocator.allocate_now(GpuRequest(f"{user}/", user, GROUPS[user], **cpu)) is not None  # type: ignore[arg-type]
    assert alice.hub_servers() == {"carol/"}
    assert alice.reconcile_allocations() == ["dan/"]
    assert sorted(allocator.allocations()) == ["carol/"]


def test_the_spawn_page_counts_stale_gpus_as_free(db: Session, tmp_path: Path) -> None:
    alice = spawner_for(db, "alice", tmp_path)
    assert alice.allocator.allocate_now(training("bob")) is not None  # bob's server is long gone
    page = alice.options_form(alice)
    assert "1/1 GPUs free" in page, "the GPU of a server the hub does not have is free"


# -- (c) options_from_form ------------------------------------------------------------------------------------


def test_options_from_form_reads_the_tier_fields_by_default(db: Session, tmp_path: Path) -> None:
    alice = spawner_for(db, "alice", tmp_path)
    form = {"profile": ["training"], "image_training": ["pytorch"], "gpus_training": ["2"], "gpus_hpo": ["4"]}
    assert alice.run_options_from_form(form) == {"profile": "training", "image": "pytorch", "gpus": "2"}


@pytest.mark.parametrize(
    ("configured", "expected"),
    [
        ("simple", {"profile": "training", "gpus_training": "2"}),
        ("passthrough", {"profile": ["training"], "gpus_training": ["2"]}),
        (
            lambda form, spawner: {"profile": form["profile"][0], "who": spawner.user.name},
            {"profile": "training", "who": "alice"},
        ),
    ],
)
def test_configured_options_from_form_wins(db: Session, tmp_path: Path, configured: Any, expected: dict) -> None:
    alice = spawner_for(db, "alice", tmp_path, options_from_form=configured)
    assert alice.run_options_from_form({"profile": ["training"], "gpus_training": ["2"]}) == expected


# -- what a refused request leaves ------------------------------------------------------------------------------


def test_a_refused_request_leaves_the_saved_options_as_they_were(db: Session, tmp_path: Path) -> None:
    orm_spawner = orm.User.find(db, "dan").orm_spawners[""]
    orm_spawner.user_options = {"profile": "interactive"}  # dan's last start
    db.commit()
    dan = spawner_for(db, "dan", tmp_path)
    # What JupyterHub does with a request before the spawner sees it: save it, hand it over.
    orm_spawner.user_options = dan.user_options = {"profile": "finetune"}
    db.commit()
    with pytest.raises(web.HTTPError) as refused:
        dan.check_user_options()
    assert refused.value.status_code == 403
    db.expire_all()
    assert orm_spawner.user_options == {"profile": "interactive"}, "the admin page shows what dan really uses"
    assert dan.user_options == {"profile": "interactive"}
