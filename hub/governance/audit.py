"""The central audit trail: a hash chain of every audit event, with signed checkpoints.

Emitters' records (:mod:`hubforge.events.spool`) are ingested here, once each
(emitter id + sequence number; a record sent again is counted as a duplicate, not
stored twice). Each stored record holds the sha256 of its canonical JSON chained to
the previous record's hash; every ingest ends with a checkpoint, the chain's
position and hash signed with the platform's Ed25519 key, in the same transaction.
The key lives under the data folder, readable only by the platform's account; the
public half beside it is what :func:`verify` trusts (never anything in the database).

One writer extends the chain at a time: an ingest's first statement updates the
chain-head row, which takes SQLite's write lock and PostgreSQL's row lock alike. Under
that lock it asks which of the batch's records are stored already (by runs of sequence
numbers, ranges of the unique key), chains the rest, and writes them: one ``COPY`` on
PostgreSQL (psycopg2), batched INSERTs elsewhere. The unique key stays the last word: a
record stored twice fails the whole ingest, which stores nothing.

:func:`verify` walks the whole chain and names the first problem: a record altered
(its hash is not its content's), deleted (a position missing), inserted (a link to no
record), reordered (a link to a later record), or a tail not covered by a signed
checkpoint (records appended, or removed, without the key).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import sqlalchemy as sa
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy.orm import Mapped, Session, mapped_column

from hubforge.errors import ConfigError, StoreError

from .store import TABLE_PREFIX, Base, GovernanceStore, UTCDateTime

__all__ = [
    "GENESIS",
    "KEY_FILE",
    "AuditEventRow",
    "AuditLog",
    "AuditQuery",
    "ChainHeadRow",
    "CheckpointRow",
    "Ingested",
    "Verdict",
    "canonical",
    "chain_rows",
    "copy_text",
    "emitter_key",
    "load_signing_key",
    "matching",
    "query_events",
    "seq_runs",
    "verify",
]

#: The link of the first record: no record comes before it.
GENESIS = "0" * 64
#: The signing key's file in the data folder (its public half: ``<file>.pub``).
KEY_FILE = "audit-signing-key.pem"
#: Who saw an event: the hub or a service (``platform``), or a person's server or kernel,
#: where the person's own code runs (``reported``: as that server reported it).
OBSERVERS = {"hub": "platform", "governance": "platform", "mlflow": "platform", "papermill": "reported",
             "server": "reported", "kernel": "reported"}  # fmt: skip
INSERT_BATCH = 1000
#: Most ranges of sequence numbers one duplicate check asks for (a spool's batch is one or two).
RUNS_PER_QUERY = 100


class ChainHeadRow(Base):
    """The chain's last position and hash: one row, updated by every ingest (the writers' lock)."""

    __tablename__ = TABLE_PREFIX + "audit_head"

    id: Mapped[int] = mapped_column(primary_key=True)
    position: Mapped[int] = mapped_column(sa.BigInteger)
    hash: Mapped[str] = mapped_column(sa.String(64))


class AuditEventRow(Base):
    """One stored audit event, a link of the chain."""

    __tablename__ = TABLE_PREFIX + "audit_events"
    __table_args__ = (sa.UniqueConstraint("emitter", "seq", name="uq_gov_audit_events_emitter_seq"),)

    position: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=False)
    emitter: Mapped[str] = mapped_column(sa.String(255))
    seq: Mapped[int] = mapped_column(sa.BigInteger)
    observed: Mapped[str] = mapped_column(sa.String(16))
    schema: Mapped[str] = mapped_column(sa.String(255), index=True)
    user: Mapped[str] = mapped_column(sa.String(256), index=True)
    action: Mapped[str] = mapped_column(sa.String(64))
    outcome: Mapped[str] = mapped_column(sa.String(16))
    resource: Mapped[str] = mapped_column(sa.String(1100))
    time: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    record: Mapped[str] = mapped_column(sa.Text)
    prev_hash: Mapped[str] = mapped_column(sa.String(64))
    # Not indexed: only verify's report of a broken link reads a record by its hash (0004).
    hash: Mapped[str] = mapped_column(sa.String(64))


class CheckpointRow(Base):
    """A signed checkpoint: the chain's position and hash when an ingest ended."""

    __tablename__ = TABLE_PREFIX + "audit_checkpoints"

    position: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[str] = mapped_column(sa.String(64))
    signed: Mapped[datetime] = mapped_column(UTCDateTime())
    signature: Mapped[str] = mapped_column(sa.String(128))


HEAD = cast(sa.Table, ChainHeadRow.__table__)
EVENTS = cast(sa.Table, AuditEventRow.__table__)
CHECKPOINTS = cast(sa.Table, CheckpointRow.__table__)
#: The events table's columns, in the order of the rows :func:`chain_rows` makes.
COLUMNS = ("position", "emitter", "seq", "observed", "schema", "user", "action", "outcome", "resource", "time",
           "record", "prev_hash", "hash")  # fmt: skip
COPY_EVENTS = "COPY {} ({}) FROM STDIN".format(EVENTS.name, ", ".join(f'"{c}"' for c in COLUMNS))
# COPY's text format: a backslash, the column separator and line ends are escaped, nothing else.
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
# One encoder for every record: json.dumps with options would make a new one per call.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def emitter_key(record: Mapping[str, Any]) -> str:
    """The trail's emitter of ``record``: its emitter id, and its spool's id when it has one
    (``hub/3f2a...``), so that a spool made again numbering from 1 is a new emitter."""
    emitter, spool = str(record["__emitter__"]), record.get("__spool__")
    return f"{emitter}/{spool}" if spool else emitter


def canonical(record: Mapping[str, Any]) -> str:
    """The one JSON text of ``record`` its hash is of: sorted keys, no spaces, UTF-8 as is."""
    return _CANONICAL.encode(record)


def link(prev_hash: str, text: str) -> str:
    """A record's hash: sha256 over the previous record's hash and its canonical JSON."""
    return hashlib.sha256(prev_hash.encode() + b"\n" + text.encode()).hexdigest()


def _checkpoint_message(position: int, hash_: str) -> bytes:
    return f"hubforge-audit-checkpoint:{position}:{hash_}".encode()


def load_signing_key(path: str | os.PathLike[str], create: bool = False) -> Ed25519PrivateKey:
    """The platform's audit signing key at ``path`` (PEM, 0600), made when ``create`` and missing.

    The public half is written beside it (``<path>.pub``) for :func:`verify`.
    """
    key_path = Path(path)
    if not key_path.exists():
        if not create:
            raise ConfigError(f"no audit signing key at {key_path}")
        key = Ed25519PrivateKey.generate()
        key_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())  # fmt: skip
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)  # fmt: skip
        Path(f"{key_path}.pub").write_bytes(public)
        return key
    loaded = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(loaded, Ed25519PrivateKey):
        raise ConfigError(f"{key_path} is not an Ed25519 private key")
    return loaded


def load_public_key(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    """The public key :func:`verify` trusts (PEM)."""
    loaded = serialization.load_pem_public_key(Path(path).read_bytes())
    if not isinstance(loaded, Ed25519PublicKey):
        raise ConfigError(f"{path} is not an Ed25519 public key")
    return loaded


@dataclass(frozen=True)
class Ingested:
    """What an ingest did: records stored, and records it had already (sent again)."""

    stored: int
    duplicates: int
    position: int


def _time(stamp: Any) -> datetime:
    if not isinstance(stamp, str):
        raise ValueError("__timestamp__ is not a string")
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone(UTC)


def seq_runs(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """``seqs`` as the fewest ranges of consecutive numbers (first, last), ascending.

    The duplicate check asks for these ranges of the unique key: an index range scan each,
    where a list of every number lets PostgreSQL's planner read all of an emitter's records.
    """
    runs: list[tuple[int, int]] = []
    for seq in sorted(set(seqs)):
        if runs and seq == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], seq)
        else:
            runs.append((seq, seq))
    return runs


def _row(
    record: Mapping[str, Any], key: tuple[str, int], position: int, text: str, prev_hash: str, hash_: str
) -> tuple[Any, ...]:
    origin = record.get("origin") or {}
    resource = record.get("resource") or {}
    observed = OBSERVERS.get(str(origin.get("observer")), "reported")
    where = f"{resource.get('type', '')}:{resource.get('id', '')}"[:1100]
    return (position, *key, observed, record["__schema__"], record.get("user", ""), record.get("action", ""),
            record.get("outcome", ""), where, _time(record.get("__timestamp__")), text, prev_hash, hash_)  # fmt: skip


def chain_rows(
    batch: list[Mapping[str, Any]], keys: list[tuple[str, int]], stored: set[tuple[str, int]], position: int,
    last_hash: str,
) -> tuple[list[tuple[Any, ...]], int]:  # fmt: skip
    """The rows (in :data:`COLUMNS` order) ``batch`` adds after ``position`` and ``last_hash``,
    and how many of its records were duplicates: a key (``keys[i]`` is ``batch[i]``'s) in
    ``stored``, or seen earlier in the batch."""
    seen = set(stored)
    rows: list[tuple[Any, ...]] = []
    for record, key in zip(batch, keys, strict=True):
        if key in seen:
            continue
        seen.add(key)
        position += 1
        text = canonical(record)
        hash_ = link(last_hash, text)
        rows.append(_row(record, key, position, text, last_hash, hash_))
        last_hash = hash_
    return rows, len(batch) - len(rows)


def _copy_field(value: Any) -> str:
    if value is None:  # NULL, refused by every column as an INSERT's None would be
        return "\\N"
    if isinstance(value, datetime):
        return value.isoformat()
    text = str(value)
    # Most fields need no escape: four scans are three times faster than translating each.
    if "\\" in text or "\t" in text or "\n" in text or "\r" in text:
        return text.translate(_COPY_ESCAPES)
    return text


def copy_text(rows: Iterable[tuple[Any, ...]]) -> str:
    """``rows`` in COPY's text format: a line each, tab-separated, datetimes in ISO 8601."""
    return "".join("\t".join(map(_copy_field, row)) + "\n" for row in rows)


def _lock_head(conn: sa.Connection) -> tuple[int, str]:
    """Take the writers' lock (SQLite's write lock, PostgreSQL's row lock on the chain's head)
    and read the head: one statement where the database can return what it updated."""
    head = HEAD
    lock = sa.update(head).where(head.c.id == 1).values(id=1)
    read = sa.select(head.c.position, head.c.hash).where(head.c.id == 1)
    if conn.dialect.update_returning:
        found = conn.execute(lock.returning(head.c.position, head.c.hash)).one_or_none()
    else:  # SQLite before 3.35
        found = conn.execute(read).one_or_none() if conn.execute(lock).rowcount else None
    if found is None:  # made by the migration; gone means the database was not migrated or was altered
        raise StoreError("governance store: the audit chain's head row is missing")
    return found.position, found.hash


def _stored_keys(conn: sa.Connection, keys: list[tuple[str, int]]) -> set[tuple[str, int]]:
    """Which of ``keys`` the trail has already."""
    events = EVENTS
    by_emitter: dict[str, list[int]] = {}
    for emitter, seq in keys:
        by_emitter.setdefault(emitter, []).append(seq)
    stored: set[tuple[str, int]] = set()
    for emitter, seqs in by_emitter.items():
        runs = seq_runs(seqs)
        for start in range(0, len(runs), RUNS_PER_QUERY):
            ranges = [events.c.seq.between(first, last) for first, last in runs[start : start + RUNS_PER_QUERY]]
            query = sa.select(events.c.seq).where(events.c.emitter == emitter, sa.or_(*ranges))
            stored.update((emitter, seq) for seq in conn.execute(query).scalars())
    return stored


def _insert_rows(conn: sa.Connection, rows: list[tuple[Any, ...]]) -> None:
    for start in range(0, len(rows), INSERT_BATCH):
        conn.execute(
            sa.insert(EVENTS), [dict(zip(COLUMNS, row, strict=True)) for row in rows[start : start + INSERT_BATCH]]
        )


def _copy_rows(conn: sa.Connection, rows: list[tuple[Any, ...]]) -> None:
    """The rows in one COPY, in the ingest's transaction: PostgreSQL takes it several times faster
    than the same rows as INSERTs, which it must parse (13 literals a row). Errors leave as
    SQLAlchemy's would, a lost connection invalidated."""
    dbapi = conn.dialect.loaded_dbapi
    raw = conn.connection.driver_connection  # psycopg2's own, in the ingest's transaction
    if raw is None:  # invalidated under us: the same error as a lost connection
        raise sa.exc.DisconnectionError("the ingest's connection was closed")
    try:
        with raw.cursor() as cursor:
            cursor.copy_expert(COPY_EVENTS, io.StringIO(copy_text(rows)))
    except dbapi.Error as exc:
        lost = conn.dialect.is_disconnect(exc, raw, None)
        if lost:
            conn.invalidate(exc)
        raise sa.exc.DBAPIError.instance(COPY_EVENTS, None, exc, dbapi.Error, connection_invalidated=lost) from exc


class AuditLog:
    """The audit trail in the governance store's database, signed with ``key``."""

    def __init__(self, store: GovernanceStore, key: Ed25519PrivateKey) -> None:
        self.store = store
        self.key = key

    def ingest(self, records: Iterable[Mapping[str, Any]]) -> Ingested:
        """Store ``records`` (spool records, already checked against their schemas) at the
        chain's end, skipping any this emitter sent before; one transaction, one checkpoint."""
        batch = list(records)
        return self.store._run("ingesting audit events", lambda session: self._ingest(session, batch))

    def _ingest(self, session: Session, batch: list[Mapping[str, Any]]) -> Ingested:
        conn = session.connection()
        position, last_hash = _lock_head(conn)  # first: the writers' lock
        keys = [(emitter_key(record), int(record["__seq__"])) for record in batch]
        rows, duplicates = chain_rows(batch, keys, _stored_keys(conn, keys), position, last_hash)
        if not rows:
            return Ingested(stored=0, duplicates=duplicates, position=position)
        (_copy_rows if conn.dialect.driver == "psycopg2" else _insert_rows)(conn, rows)
        position, last_hash = rows[-1][0], rows[-1][-1]
        conn.execute(sa.update(HEAD).where(HEAD.c.id == 1).values(position=position, hash=last_hash))
        signature = base64.b64encode(self.key.sign(_checkpoint_message(position, last_hash))).decode()
        checkpoint = {"position": position, "hash": last_hash, "signed": datetime.now(UTC), "signature": signature}
        conn.execute(sa.insert(CHECKPOINTS).values(**checkpoint))
        return Ingested(stored=len(rows), duplicates=duplicates, position=position)


@dataclass(frozen=True)
class AuditQuery:
    """Which stored events to list, newest first: every filter is optional.

    ``only_user``: the caller may see only their own events (no ``custom:audit-trail:read``).
    ``before``: the cursor, the position the previous page ended at.
    """

    only_user: str | None = None
    user: str | None = None
    schema: str | None = None
    action: str | None = None
    resource: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    before: int | None = None
    limit: int = 100


def _listed(row: Any) -> dict[str, Any]:
    record = json.loads(row.record)
    return {
        "position": row.position,
        "time": row.time.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "schema": row.schema,
        "user": row.user,
        "action": row.action,
        "outcome": row.outcome,
        "resource": record.get("resource", {}),
        "observed": row.observed,
        "emitter": row.emitter,
        "event": {k: v for k, v in record.items() if not k.startswith("__")},
    }


def matching(select: sa.Select[Any], q: AuditQuery) -> sa.Select[Any]:
    """``select`` (of the events table) narrowed to the events ``q``'s filters match; its
    cursor and limit are the caller's to apply."""
    t = EVENTS
    equal = {"user": q.only_user, "schema": q.schema, "action": q.action, "resource": q.resource}
    for column, value in equal.items():
        if value is not None:
            select = select.where(t.c[column] == value)
    if q.user is not None:
        select = select.where(t.c.user == q.user)
    if q.since is not None:
        select = select.where(t.c.time >= q.since)
    if q.until is not None:
        select = select.where(t.c.time < q.until)
    return select


def query_events(store: GovernanceStore, q: AuditQuery) -> tuple[list[dict[str, Any]], int | None]:
    """A page of events newest first, and the cursor of the next page (None at the end)."""
    t = EVENTS
    select = matching(sa.select(t).order_by(t.c.position.desc()).limit(q.limit + 1), q)
    if q.before is not None:
        select = select.where(t.c.position < q.before)

    def run(session: Session) -> tuple[list[dict[str, Any]], int | None]:
        rows = session.execute(select).all()
        page = [_listed(row) for row in rows[: q.limit]]
        return page, (page[-1]["position"] if len(rows) > q.limit else None)

    return store._run("listing audit events", run)


@dataclass(frozen=True)
class Verdict:
    """What :func:`verify` found: ``problem`` (one line) is None when the chain is intact."""

    records: int
    checkpoints: int
    problem: str | None = None

    @property
    def intact(self) -> bool:
        """Whether nothing was found wrong."""
        return self.problem is None


def _rows(conn: sa.Connection, chunk: int = 5000) -> Iterator[Any]:
    events = EVENTS
    after = -1
    while True:
        query = (
            sa.select(events.c.position, events.c.record, events.c.prev_hash, events.c.hash)
            .where(events.c.position > after)
            .order_by(events.c.position)
            .limit(chunk)
        )
        rows = conn.execute(query).all()
        if not rows:
            return
        yield from rows
        after = rows[-1].position


def _broken_link(conn: sa.Connection, position: int, prev_hash: str) -> str:
    """What a record linking to something other than the record before it tells (one scan of
    the table, unindexed: it runs once, when the chain is already found broken)."""
    events = EVENTS
    linked = conn.execute(sa.select(events.c.position).where(events.c.hash == prev_hash)).scalar()
    if linked is None:  # links to a hash no record has: the one before it was rewritten
        return f"record {position - 1} was altered, or a record after it deleted"
    if linked > position:
        return f"record {position} was moved (reordered)"
    if linked == position - 2:
        return f"record {position - 1} was inserted"
    return f"records {linked + 1} to {position - 1} were inserted"


def verify(store: GovernanceStore, public_key: Ed25519PublicKey) -> Verdict:
    """Check the whole chain and its checkpoints; the first problem found, in chain order."""
    with store.engine.connect() as conn:
        checkpoints = {
            row.position: row for row in conn.execute(sa.select(CHECKPOINTS).order_by(CHECKPOINTS.c.position))
        }
        count = 0
        expected_position, previous = 1, GENESIS
        last_signed = 0
        for row in _rows(conn):
            count += 1
            if row.position != expected_position:
                gone = (
                    f"record {expected_position} was deleted"
                    if row.position == expected_position + 1
                    else f"records {expected_position} to {row.position - 1} were deleted"
                )
                return Verdict(count, len(checkpoints), gone)
            if link(row.prev_hash, row.record) != row.hash:
                return Verdict(count, len(checkpoints), f"record {row.position} was altered")
            if row.prev_hash != previous:
                return Verdict(count, len(checkpoints), _broken_link(conn, row.position, row.prev_hash))
            if (mark := checkpoints.get(row.position)) is not None:
                try:
                    public_key.verify(base64.b64decode(mark.signature), _checkpoint_message(mark.position, mark.hash))
                except (InvalidSignature, ValueError):
                    return Verdict(count, len(checkpoints), f"checkpoint {mark.position} has a bad signature")
                if mark.hash != row.hash:
                    return Verdict(
                        count, len(checkpoints), f"records up to {row.position} were rewritten (checkpoint mismatch)"
                    )
                last_signed = row.position
            previous, expected_position = row.hash, row.position + 1
        newest = max(checkpoints, default=0)
        if newest > count:
            return Verdict(count, len(checkpoints), f"records {count + 1} to {newest} were deleted (the signed end)")
        if last_signed < count:
            return Verdict(
                count, len(checkpoints), f"records {last_signed + 1} to {count} are covered by no signed checkpoint"
            )
        return Verdict(count, len(checkpoints))
