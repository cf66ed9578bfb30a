"""The demo repository's files and what a run of ``apply`` has left to do: plain logic, no Feast.

``feature_store.yaml`` is rendered from the platform config (SQLite in the repository, or
the Redis of ``backends.redis_url``); :class:`State` is what the last successful run
recorded beside it, and :func:`plan` compares the two to decide which steps run again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from importlib import resources
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml

from hubforge.errors import HubforgeError, Unavailable

__all__ = [
    "DATA_VERSION",
    "DEFAULT_PROJECT",
    "DEFINITIONS",
    "FILES",
    "REFRESH_AFTER",
    "FeaturesError",
    "Plan",
    "State",
    "definitions_text",
    "feature_store_yaml",
    "online_store",
    "plan",
    "redacted",
    "redis_connection_string",
]

#: The Feast project of the demo repository.
DEFAULT_PROJECT = "hubforge_demo"
#: The repository's one Python file, shipped in ``demo-repo/``.
DEFINITIONS = "definitions.py"
#: Bump when the data generator's output changes (:mod:`.datagen`): ``apply`` then writes the data again.
DATA_VERSION = 1
#: The generated Parquet files under ``<repo>/data/``, by name (without ``.parquet``).
FILES = ("customer_profile", "customer_activity", "merchant_risk", "churn_labels", "transactions")
#: Data older than this is generated again at the current hour, so the views' TTLs keep it in reach.
REFRESH_AFTER = timedelta(days=7)


class FeaturesError(HubforgeError):
    """The feature repository could not be written, applied or materialized, or a read was
    refused; one line saying why."""

    def _render_traceback_(self) -> list[str]:
        """What IPython shows in a notebook instead of a traceback: the line says it all (a
        refused read is no bug of the person's code)."""
        return [f"\x1b[0;31m{type(self).__name__}\x1b[0m: {self}"]


class StoreUnreachable(FeaturesError, Unavailable):
    """A store of the repository (the online store's Redis, say) cannot be reached now: no
    fault of the request, try again later (503)."""


def definitions_text() -> str:
    """The shipped ``definitions.py`` of the demo repository."""
    return resources.files(__package__).joinpath("demo-repo", DEFINITIONS).read_text()


def redacted(url: str) -> str:
    """``url`` without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return parts._replace(netloc=f"{user}:***@{host}").geturl()


def redis_connection_string(url: str) -> str:
    """Feast's ``host:port,db=N,...`` spelling of a ``redis://`` or ``rediss://`` URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise FeaturesError(
            f"features: backends.redis_url: Feast's Redis store needs redis://host:port/db, not {redacted(url)!r}"
        )
    try:
        port = parts.port or 6379
    except ValueError:
        raise FeaturesError(f"features: backends.redis_url: invalid port in {redacted(url)!r}") from None
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise FeaturesError(f"features: backends.redis_url: the database must be a number, not {path!r}")
    fields = [f"{parts.hostname}:{port}", f"db={int(path or 0)}"]
    if parts.scheme == "rediss":
        fields.append("ssl=true")
    if parts.username:
        fields.append(f"username={unquote(parts.username)}")
    if parts.password:
        password = unquote(parts.password)
        if "," in password:
            # Feast splits its connection string on commas and has no escape for them.
            raise FeaturesError("features: backends.redis_url: Feast cannot use a Redis password with a comma")
        fields.append(f"password={password}")
    return ",".join(fields)


def online_store(redis_url: str) -> dict[str, Any]:
    """The ``online_store`` block: Redis when configured, else SQLite inside the repository."""
    if redis_url:
        return {"type": "redis", "connection_string": redis_connection_string(redis_url)}
    return {"type": "sqlite", "path": "online.db"}


def feature_store_yaml(project: str, redis_url: str) -> str:
    """The repository's ``feature_store.yaml``: file registry and offline store, SQLite or Redis online."""
    config = {
        "project": project,
        "project_description": "hubforge's demo features: customers and merchants of a payments company.",
        "provider": "local",
        "registry": {"registry_type": "file", "path": "registry.db", "cache_ttl_seconds": 60},
        "offline_store": {"type": "file"},
        "online_store": online_store(redis_url),
        "entity_key_serialization_version": 3,
        "auth": {"type": "no_auth"},
    }
    header = "# Written by `hubforge features apply` from the platform config; edits are replaced.\n"
    return header + yaml.safe_dump(config, sort_keys=False)


def digest(*texts: str) -> str:
    """A short fingerprint of some texts."""
    sha = hashlib.sha256()
    for text in texts:
        sha.update(text.encode())
        sha.update(b"\0")
    return sha.hexdigest()[:16]


@dataclass(frozen=True)
class State:
    """What the last successful ``apply`` did: kept as JSON in the repository.

    ``definitions`` fingerprints the repository's files and Feast's version (what was
    applied), ``online`` the online store, ``anchor`` and ``data_version`` the data
    written; ``materialized_to`` is when the online store was last filled.
    """

    definitions: str
    online: str
    anchor: str
    data_version: int
    materialized_to: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str) -> State | None:
        """The state in ``text``; None when it is unreadable or of another shape (all steps run)."""
        try:
            return cls(**json.loads(text))
        except (ValueError, TypeError):
            return None


@dataclass(frozen=True)
class Plan:
    """The steps one run of ``apply`` takes (writing the files always runs, and is cheap)."""

    generate: bool
    apply: bool
    materialize: bool


def plan(before: State | None, now: State, *, data_present: bool, registry_present: bool, force: bool) -> Plan:
    """What to redo, given the last run's state and this run's (``now.anchor``: the current hour).

    Data is generated when missing, of another generator version or older than
    :data:`REFRESH_AFTER`; the definitions are applied when they (or Feast) changed or
    the registry is gone; the online store is filled again when any of that happened or
    it is another store. With nothing changed nothing runs: the data only changes when
    it is generated, so there would be nothing new to materialize.
    """
    if before is None or force:
        return Plan(generate=True, apply=True, materialize=True)
    stale = datetime.fromisoformat(now.anchor) - datetime.fromisoformat(before.anchor) >= REFRESH_AFTER
    generate = not data_present or stale or before.data_version != now.data_version
    apply = not registry_present or before.definitions != now.definitions
    materialize = generate or apply or before.online != now.online or not before.materialized_to
    return Plan(generate=generate, apply=apply, materialize=materialize)
