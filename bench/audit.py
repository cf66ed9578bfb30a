"""Audit event emitters: the durable spool against plain ``logging`` and jupyter_events.

Each side emits the same 20,000 events (a server spawn, as the hub would record it)
from one thread, in the same process, alternating rounds:

- ours: :class:`~hubforge.events.spool.EventSpool`, checked, numbered and fsync'd in
  group commits, timed until the last event is on disk;
- ``logging``: one JSON line per event through a ``logging.FileHandler`` (no check, no
  fsync): the floor;
- jupyter_events: its ``EventLogger`` with a ``FileHandler``, validating each event on
  the caller's thread (no fsync either).

Reported: the time per event (the whole burst until written, divided by its events:
20,000 events/s is 50 µs) and the p99 of one emit call. Targets: at least 20,000
events/s with durability on, and an emit p99 of at most 100 µs.

Central ingest: 20,000 spool records in batches of 1,000 into the governance store's
audit trail (dedupe by emitter and sequence, hash chain, one signed checkpoint per
batch, the writers' lock), on SQLite and on the local PostgreSQL, against the same rows
inserted in the same batches into a plain table with no chain (the floor). Target: at
least 10,000 events/s (100 µs per event).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench.report import Result
from harness.platform import pg_databases
from hubforge.events import event_schemas
from hubforge.events.spool import EventSpool, read_spool
from hubforge.hub.governance.audit import AuditLog, load_signing_key
from hubforge.hub.governance.store import GovernanceStore

BATCH = 1000

EVENTS = 20_000
SCHEMA = "https://events.hubforge.dev/hub/server/v1"
EVENT: dict[str, Any] = {
    "user": "alice",
    "action": "spawn",
    "resource": {"type": "server", "id": "alice/"},
    "outcome": "success",
    "origin": {"observer": "hub", "client_address": "10.0.0.7"},
    "server_name": "",
    "tier": "training",
    "image": "pytorch",
    "gpus": 1,
}


def _burst(emit: Any, finish: Any) -> tuple[float, float]:
    """(µs per event until all are written, p99 µs of one emit call)."""
    calls: list[int] = []
    start = time.perf_counter()
    for _ in range(EVENTS):
        before = time.perf_counter_ns()
        emit()
        calls.append(time.perf_counter_ns() - before)
    finish()
    total = time.perf_counter() - start
    calls.sort()
    return total / EVENTS * 1e6, calls[int(len(calls) * 0.99)] / 1e3


def _spool(folder: Path) -> tuple[float, float]:
    spool = EventSpool(folder / "spool", "hub")
    try:
        return _burst(lambda: spool.emit(SCHEMA, EVENT), lambda: spool.flush(60))
    finally:
        spool.close()


def _logging(folder: Path) -> tuple[float, float]:
    logger = logging.getLogger(f"bench-audit-{folder.name}")
    logger.propagate = False
    handler = logging.FileHandler(folder / "logging.jsonl")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        return _burst(lambda: logger.info(json.dumps({"__schema__": SCHEMA, **EVENT})), handler.flush)
    finally:
        logger.removeHandler(handler)
        handler.close()


def _jupyter_events(folder: Path) -> tuple[float, float]:
    from jupyter_events import EventLogger

    handler = logging.FileHandler(folder / "jupyter_events.jsonl")
    event_logger = EventLogger(handlers=[handler])
    event_logger.register_event_schema(event_schemas()[SCHEMA])
    try:
        return _burst(lambda: event_logger.emit(schema_id=SCHEMA, data=EVENT), handler.flush)
    finally:
        handler.close()


def run(repeat: int) -> list[Result]:
    """Per-event time and emit p99 of the spool against logging and jupyter_events."""
    samples: dict[str, list[tuple[float, float]]] = {"spool": [], "logging": [], "jupyter_events": []}
    sides = {"spool": _spool, "logging": _logging, "jupyter_events": _jupyter_events}
    for round_ in range(repeat):
        order = list(sides) if round_ % 2 == 0 else list(reversed(sides))
        for side in order:
            with tempfile.TemporaryDirectory(prefix="hubforge-bench-audit-") as tmp:
                samples[side].append(sides[side](Path(tmp)))
    ours_time = [s[0] for s in samples["spool"]]
    ours_p99 = [s[1] for s in samples["spool"]]
    results = []
    for base in ("logging", "jupyter_events"):
        name = "plain logging to a file" if base == "logging" else "jupyter_events EventLogger"
        results.append(Result("audit emit, µs/event (durable)", "us", ours_time, [s[0] for s in samples[base]], name))
        results.append(Result("audit emit call p99", "us", ours_p99, [s[1] for s in samples[base]], name))
    return results + run_ingest(repeat)


def _ingest(url: str, folder: Path, records: list[dict[str, Any]]) -> tuple[float, float]:
    """(µs per event into the audit trail, µs per event into a plain table), fresh tables each."""
    store = GovernanceStore(url)
    store.upgrade()
    log = AuditLog(store, load_signing_key(folder / "key.pem", create=True))
    plain = sa.Table(
        "bench_plain_events",
        sa.MetaData(),
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("emitter", sa.String(255)),
        sa.Column("seq", sa.BigInteger),
        sa.Column("record", sa.Text),
    )
    plain.create(store.engine)
    try:
        start = time.perf_counter()
        for i in range(0, len(records), BATCH):
            log.ingest(records[i : i + BATCH])
        ours = (time.perf_counter() - start) / len(records) * 1e6
        start = time.perf_counter()
        for i in range(0, len(records), BATCH):
            rows = [
                {"id": i + n, "emitter": r["__emitter__"], "seq": r["__seq__"], "record": json.dumps(r)}
                for n, r in enumerate(records[i : i + BATCH])
            ]
            with store.engine.begin() as conn:
                conn.execute(plain.insert(), rows)
        floor = (time.perf_counter() - start) / len(records) * 1e6
        return ours, floor
    finally:
        plain.drop(store.engine)
        store.dispose()


def run_ingest(repeat: int) -> list[Result]:
    """Central ingest into SQLite and PostgreSQL against plain batched inserts."""
    with tempfile.TemporaryDirectory(prefix="hubforge-bench-ingest-") as tmp:
        spool = EventSpool(Path(tmp) / "spool", "hub", fsync=False)
        for i in range(EVENTS):
            spool.emit(SCHEMA, {**EVENT, "user": f"user{i % 50}"})
        spool.close()
        records = list(read_spool(Path(tmp) / "spool"))
        results = []
        for backend in ("sqlite", "postgresql"):
            samples = []
            for round_ in range(repeat):
                folder = Path(tmp) / f"{backend}{round_}"
                folder.mkdir()
                if backend == "sqlite":
                    samples.append(_ingest(f"sqlite:///{folder / 'gov.sqlite'}", folder, records))
                else:
                    with pg_databases("bench_audit") as urls:
                        samples.append(_ingest(urls["bench_audit"], folder, records))
            results.append(
                Result(
                    f"audit ingest, µs/event ({backend})",
                    "us",
                    [s[0] for s in samples],
                    [s[1] for s in samples],
                    "plain batched INSERT, no chain",
                )
            )
        return results
