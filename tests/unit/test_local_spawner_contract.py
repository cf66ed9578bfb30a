"""The one-machine spawner keeps JupyterHub's spawner contract.

Each test drives :class:`LocalTierSpawner` as the hub does, on JupyterHub's own
``User`` and ORM (an in-memory hub database, ``harness.spawner``): allocations the
hub no longer knows of, ``options_from_form`` from the config, and what a refused
request leaves in the saved options. Stopping a spawn that waits in the GPU queue,
in a process of its own, is in tests/integration/test_local_spawner_contract.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyterhub import orm
from sqlalchemy.orm import Session
from tornado import web

from harness.spawner import GROUPS, hub_db, spawner_for, training
from hubforge.spawner_profiles.local.gpus import GpuRequest


@pytest.fixture
def db() -> Iterator[Session]:
    session = hub_db()
    yield session
    session.close()


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


def test_a_refused_request_is_recorded_as_a_denied_spawn_of_the_tier_asked_for(db: Session, tmp_path: Path) -> None:
    from hubforge.events.spool import open_spool, read_spool
    from hubforge.spawner_profiles.tiers import SERVER_SCHEMA

    dan = spawner_for(db, "dan", tmp_path)
    dan.audit_spool_dir = str(tmp_path / "events" / "hub")
    dan.user_options = {"profile": "finetune"}
    with pytest.raises(web.HTTPError):
        dan.check_user_options()
    spool = open_spool(dan.audit_spool_dir, "hub")
    assert spool is not None and spool.flush(10)
    (record,) = read_spool(dan.audit_spool_dir)
    assert record["__schema__"] == SERVER_SCHEMA
    assert (record["user"], record["action"], record["outcome"], record["tier"]) == (
        "dan",
        "spawn",
        "denied",
        "finetune",
    )
    assert record["resource"] == {"type": "server", "id": "dan/"} and record["origin"]["observer"] == "hub"
