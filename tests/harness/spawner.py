"""The one-machine spawner on JupyterHub's own ``User`` and ORM, with no hub running.

``hub_db`` is an in-memory hub database with the demo users, their groups and their
default servers; ``spawner_for`` gives a user's default server's :class:`LocalTierSpawner`
configured as the platform's hub configures it (one H100: a second training server queues).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jupyterhub import orm
from jupyterhub.objects import Hub
from jupyterhub.user import User
from sqlalchemy.orm import Session

from hubforge.catalog import load_catalog
from hubforge.config import load_config
from hubforge.spawner_profiles.local.gpus import GpuRequest
from hubforge.spawner_profiles.local.spawner import LocalTierSpawner

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


def training(user: str) -> GpuRequest:
    return GpuRequest(f"{user}/", user, GROUPS[user], "training", 1, "nvidia-h100-80gb")
