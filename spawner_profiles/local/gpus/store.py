"""Where GPU allocations and usage are kept: one SQLite file beside the hub's.

The allocator keeps its working state in memory and writes every change here
in one transaction before it changes memory, so that a hub restart finds the
same GPUs held and the same usage history. ``held_devices`` has the device
UUID as its primary key: two servers can never hold one GPU, even by a bug.
``waiting`` keeps the requests still in the queue, so that those a hub crash
interrupted are asked for again, in their place (see ``GpuAllocator.acquire``).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import NamedTuple

from hubforge.errors import HubforgeError

from .allocation import Allocation
from .devices import Gpu

__all__ = ["GpuStateError", "GpuStore", "UsageRow", "WaitingRow"]

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS allocations (
    server_key TEXT PRIMARY KEY,
    user TEXT NOT NULL,
    grp TEXT NOT NULL,
    tier TEXT NOT NULL,
    started REAL NOT NULL,
    gpus TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS held_devices (
    uuid TEXT PRIMARY KEY,
    server_key TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS usage (
    id INTEGER PRIMARY KEY,
    server_key TEXT NOT NULL,
    user TEXT NOT NULL,
    grp TEXT NOT NULL,
    tier TEXT NOT NULL,
    gpus INTEGER NOT NULL,
    start REAL NOT NULL,
    "end" REAL
);
CREATE TABLE IF NOT EXISTS waiting (
    server_key TEXT PRIMARY KEY,
    user TEXT NOT NULL,
    arrival REAL NOT NULL,
    resume TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS usage_end ON usage ("end");
CREATE INDEX IF NOT EXISTS usage_open ON usage (server_key) WHERE "end" IS NULL;
"""


class GpuStateError(HubforgeError):
    """The GPU allocation database could not be read or written."""


class UsageRow(NamedTuple):
    """One usage interval: a server's GPUs from ``start`` to ``end`` (None: still held)."""

    server_key: str
    group: str
    start: float
    end: float | None
    gpus: int


class WaitingRow(NamedTuple):
    """A request that waits in the queue: since when, and what asks for it again after a hub restart."""

    server_key: str
    user: str
    arrival: float
    resume: str


class GpuStore:
    """Allocations and usage intervals in a SQLite file at ``path``."""

    def __init__(self, path: str | Path):
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Autocommit mode: transactions are opened explicitly by _transaction().
            self._db = sqlite3.connect(path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            with self._transaction():
                # Statement by statement: executescript() would commit the transaction first.
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except (OSError, sqlite3.Error) as exc:
            raise GpuStateError(f"{path}: cannot open the GPU allocation database: {exc}") from exc
        self.path = path

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def allocations(self) -> list[Allocation]:
        """Every allocation recorded, oldest first."""
        rows = self._db.execute("SELECT server_key, user, grp, tier, started, gpus FROM allocations ORDER BY started")
        return [
            Allocation(key, user, grp, tier, tuple(Gpu(**g) for g in json.loads(gpus)), started)
            for key, user, grp, tier, started, gpus in rows
        ]

    def usage_since(self, since: float) -> list[UsageRow]:
        """Usage intervals still held or ended after ``since``."""
        rows = self._db.execute(
            'SELECT server_key, grp, start, "end", gpus FROM usage WHERE "end" IS NULL OR "end" > ? ORDER BY start',
            (since,),
        )
        return [UsageRow(*row) for row in rows]

    def record(self, allocations: list[Allocation]) -> None:
        """Record new allocations, their held devices and open usage intervals, atomically."""
        try:
            with self._transaction() as db:
                for a in allocations:
                    gpus = json.dumps([asdict(g) for g in a.gpus])
                    db.execute(
                        "INSERT INTO allocations VALUES (?, ?, ?, ?, ?, ?)",
                        (a.server_key, a.user, a.group, a.tier, a.started, gpus),
                    )
                    db.executemany("INSERT INTO held_devices VALUES (?, ?)", [(g.uuid, a.server_key) for g in a.gpus])
                    if a.gpus:
                        db.execute(
                            'INSERT INTO usage (server_key, user, grp, tier, gpus, start, "end") '
                            "VALUES (?, ?, ?, ?, ?, ?, NULL)",
                            (a.server_key, a.user, a.group, a.tier, len(a.gpus), a.started),
                        )
        except sqlite3.Error as exc:
            raise GpuStateError(f"{self.path}: cannot record GPU allocations: {exc}") from exc

    def remove(self, server_keys: list[str], end: float) -> None:
        """Forget the allocations of ``server_keys`` and close their usage intervals at ``end``."""
        keys = [(k,) for k in server_keys]
        try:
            with self._transaction() as db:
                db.executemany("DELETE FROM held_devices WHERE server_key = ?", keys)
                db.executemany("DELETE FROM allocations WHERE server_key = ?", keys)
                db.executemany(
                    'UPDATE usage SET "end" = max(start, ?) WHERE server_key = ? AND "end" IS NULL',
                    [(end, k) for k in server_keys],
                )
        except sqlite3.Error as exc:
            raise GpuStateError(f"{self.path}: cannot release GPU allocations: {exc}") from exc

    def waiting(self) -> dict[str, WaitingRow]:
        """The requests recorded as waiting in the queue, by server key."""
        rows = self._db.execute("SELECT server_key, user, arrival, resume FROM waiting ORDER BY arrival")
        return {row[0]: WaitingRow(*row) for row in rows}

    def wait(self, row: WaitingRow) -> None:
        """Record that a request waits (replacing what an earlier wait of the same server left)."""
        try:
            with self._transaction() as db:
                db.execute("INSERT OR REPLACE INTO waiting VALUES (?, ?, ?, ?)", row)
        except sqlite3.Error as exc:
            raise GpuStateError(f"{self.path}: cannot record a waiting GPU request: {exc}") from exc

    def done_waiting(self, server_key: str) -> None:
        """The request of ``server_key`` waits no more (served, withdrawn, or given up)."""
        try:
            with self._transaction() as db:
                db.execute("DELETE FROM waiting WHERE server_key = ?", (server_key,))
        except sqlite3.Error as exc:
            raise GpuStateError(f"{self.path}: cannot record a waiting GPU request: {exc}") from exc

    def close(self) -> None:
        """Close the database connection."""
        self._db.close()
