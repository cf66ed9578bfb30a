"""The central audit trail: ingest once, chain, sign, and name any tampering.

On SQLite and on the local PostgreSQL server: records from emitters' spools are
stored once (a record sent again is a duplicate), chained and signed; then each
kind of tampering a database owner could do without the signing key (edit a record,
edit it and rehash, delete, insert, reorder, cut the tail, append) is done with
plain SQL and ``verify`` must name it. Two writers at once extend one unbroken chain.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import sqlalchemy as sa

from harness.platform import PG_DSN, pg_databases
from hubforge.errors import StoreError
from hubforge.events.spool import EventSpool, read_spool
from hubforge.hub.governance.audit import AuditLog, link, load_public_key, load_signing_key, verify
from hubforge.hub.governance.store import GovernanceStore

SCHEMA = "https://events.hubforge.dev/server/contents/v1"


def event(user: str, path: str) -> dict[str, Any]:
    return {
        "user": user,
        "action": "save",
        "resource": {"type": "file", "id": path},
        "outcome": "success",
        "origin": {"observer": "server", "server": f"{user}/"},
        "path": path,
    }


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[GovernanceStore]:
    if request.param == "sqlite":
        urls = {"audit": f"sqlite:///{tmp_path / 'governance.sqlite'}"}
        context: Any = None
    else:
        context = pg_databases("audit")
        urls = context.__enter__()
    store = GovernanceStore(urls["audit"])
    store.upgrade()
    try:
        yield store
    finally:
        store.dispose()
        if context is not None:
            context.__exit__(None, None, None)


@pytest.fixture
def key_path(tmp_path: Path) -> Path:
    path = tmp_path / "keys" / "audit-signing-key.pem"
    load_signing_key(path, create=True)
    return path


def records(tmp_path: Path, emitter: str, count: int, user: str = "alice") -> list[dict[str, Any]]:
    """``count`` records as an emitter's spool writes them."""
    spool = EventSpool(tmp_path / f"spool-{emitter}", emitter)
    for i in range(count):
        spool.emit(SCHEMA, event(user, f"notebooks/{i}.ipynb"))
    spool.close()
    return list(read_spool(tmp_path / f"spool-{emitter}"))


def filled(store: GovernanceStore, key_path: Path, tmp_path: Path, count: int = 20) -> AuditLog:
    log = AuditLog(store, load_signing_key(key_path))
    batch = records(tmp_path, "server:alice/", count)
    assert log.ingest(batch[: count // 2]).stored == count // 2
    assert log.ingest(batch[count // 2 :]).stored == count - count // 2
    return log


def problem(store: GovernanceStore, key_path: Path) -> str | None:
    return verify(store, load_public_key(f"{key_path}.pub")).problem


def sql(store: GovernanceStore, statement: str, **params: Any) -> None:
    with store.engine.begin() as conn:
        conn.execute(sa.text(statement), params)


def row(store: GovernanceStore, position: int) -> Any:
    with store.engine.connect() as conn:
        query = sa.text("SELECT * FROM gov_audit_events WHERE position = :p")
        return conn.execute(query, {"p": position}).mappings().one()


def test_records_are_stored_once_chained_and_signed(store: GovernanceStore, key_path: Path, tmp_path: Path) -> None:
    log = AuditLog(store, load_signing_key(key_path))
    batch = records(tmp_path, "server:alice/", 30)
    first = log.ingest(batch[:20])
    again = log.ingest(batch[10:])  # the forwarder sends an overlap again after a crash
    assert (first.stored, first.duplicates, again.stored, again.duplicates) == (20, 0, 10, 10)
    verdict = verify(store, load_public_key(f"{key_path}.pub"))
    assert verdict.intact and verdict.records == 30 and verdict.checkpoints == 2
    stored = row(store, 1)
    assert (stored["emitter"], stored["seq"], stored["user"], stored["observed"]) == (
        f"server:alice//{batch[0]['__spool__']}",
        1,
        "alice",
        "reported",
    )
    assert stored["resource"] == "file:notebooks/0.ipynb"


@pytest.mark.parametrize(
    ("tamper", "named"),
    [
        ("edit", "record 7 was altered"),
        ("edit and rehash", "record 7 was altered, or a record after it deleted"),
        ("delete", "record 7 was deleted"),
        ("delete the tail", "records 19 to 20 were deleted (the signed end)"),
        ("insert", "record 7 was inserted"),
        ("reorder", "record 7 was moved (reordered)"),
        ("append", "records 21 to 21 are covered by no signed checkpoint"),
        ("forge a checkpoint", "checkpoint 20 has a bad signature"),
    ],
)
def test_verify_names_each_kind_of_tampering(
    store: GovernanceStore, key_path: Path, tmp_path: Path, tamper: str, named: str
) -> None:
    filled(store, key_path, tmp_path)
    assert problem(store, key_path) is None
    seven = row(store, 7)
    forged = seven["record"].replace("notebooks/6.ipynb", "notebooks/secret.ipynb")
    if tamper == "edit":
        sql(store, "UPDATE gov_audit_events SET record = :r WHERE position = 7", r=forged)
    elif tamper == "edit and rehash":
        rehashed = link(seven["prev_hash"], forged)
        sql(store, "UPDATE gov_audit_events SET record = :r, hash = :h WHERE position = 7", r=forged, h=rehashed)
    elif tamper == "delete":
        sql(store, "DELETE FROM gov_audit_events WHERE position = 7")
    elif tamper == "delete the tail":
        sql(store, "DELETE FROM gov_audit_events WHERE position > 18")
    elif tamper == "insert":  # shift the rest up, put a well-linked forgery at 7
        sql(store, "UPDATE gov_audit_events SET position = -position WHERE position >= 7")
        sql(store, "UPDATE gov_audit_events SET position = -position + 1 WHERE position < 0")
        sql(
            store,
            'INSERT INTO gov_audit_events (position, emitter, seq, observed, schema, "user", action, outcome,'
            " resource, time, record, prev_hash, hash) SELECT 7, 'forger', 1, observed, schema, \"user\", action,"
            " outcome, resource, time, :r, prev_hash, :h FROM gov_audit_events WHERE position = 8",
            r=forged,
            h=link(seven["prev_hash"], forged),
        )
    elif tamper == "reorder":
        sql(store, "UPDATE gov_audit_events SET position = -1 WHERE position = 7")
        sql(store, "UPDATE gov_audit_events SET position = 7 WHERE position = 8")
        sql(store, "UPDATE gov_audit_events SET position = 8 WHERE position = -1")
    elif tamper == "append":  # a well-linked record after the end, without the key
        last = row(store, 20)
        sql(
            store,
            'INSERT INTO gov_audit_events (position, emitter, seq, observed, schema, "user", action, outcome,'
            " resource, time, record, prev_hash, hash) SELECT 21, 'forger', 1, observed, schema, \"user\", action,"
            " outcome, resource, time, record, :p, :h FROM gov_audit_events WHERE position = 20",
            p=last["hash"],
            h=link(last["hash"], last["record"]),
        )
    elif tamper == "forge a checkpoint":
        sql(store, "UPDATE gov_audit_checkpoints SET signature = :s WHERE position = 20", s="A" * 88)
    assert problem(store, key_path) == named


def test_two_writers_extend_one_unbroken_chain(store: GovernanceStore, key_path: Path, tmp_path: Path) -> None:
    batches = {name: records(tmp_path, name, 400, user=name) for name in ("server:alice/", "server:bob/")}
    failures: list[BaseException] = []

    def write(name: str) -> None:
        log = AuditLog(store, load_signing_key(key_path))
        try:
            for start in range(0, 400, 50):
                log.ingest(batches[name][start : start + 50])
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=write, args=(name,)) for name in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert failures == []
    verdict = verify(store, load_public_key(f"{key_path}.pub"))
    assert verdict.intact and verdict.records == 800 and verdict.checkpoints == 16


def test_the_signing_key_is_private_and_its_public_half_beside_it(key_path: Path) -> None:
    assert oct(key_path.stat().st_mode & 0o777) == oct(0o600)
    assert oct(key_path.parent.stat().st_mode & 0o777) == oct(0o700)
    assert Path(f"{key_path}.pub").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert load_signing_key(key_path).public_key() is not None


def test_hubforge_audit_verify_exits_non_zero_on_tampering(tmp_path: Path, key_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'governance.sqlite'}"
    store = GovernanceStore(url)
    store.upgrade()
    filled(store, key_path, tmp_path)
    command = [sys.executable, "-m", "hubforge.cli", "audit", "verify", "--db-url", url, "--public-key",
               f"{key_path}.pub"]  # fmt: skip
    ok = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "ok: 20 records, 2 signed checkpoints, the chain is intact"
    sql(store, "DELETE FROM gov_audit_events WHERE position = 3")
    bad = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1
    assert bad.stdout.strip() == "tampered: record 3 was deleted"
    store.dispose()


def test_the_collector_ingests_what_each_platform_spool_gained_once(
    store: GovernanceStore, key_path: Path, tmp_path: Path
) -> None:
    from hubforge.events.spool import INGESTED_FILE, platform_spool_dir
    from hubforge.hub.governance.collect import SpoolCollector

    data = tmp_path / "data"
    spools = {name: EventSpool(platform_spool_dir(data, name), name) for name in ("hub", "mlflow")}
    collector = SpoolCollector(data, AuditLog(store, load_signing_key(key_path)))
    assert collector.collect() == 0
    for i in range(1500):  # more than one ingest batch
        spools["hub"].emit(SCHEMA, event("alice", f"{i}.ipynb"))
    spools["mlflow"].emit(SCHEMA, event("bob", "b.ipynb"))
    assert all(spool.flush(10) for spool in spools.values())
    assert collector.collect() == 1501
    spools["hub"].emit(SCHEMA, event("alice", "late.ipynb"))
    spools["hub"].flush(10)
    assert collector.collect() == 1
    (platform_spool_dir(data, "hub") / INGESTED_FILE).unlink()  # as if the service died before saving it
    assert collector.collect() == 0, "read again, stored once"
    verdict = verify(store, load_public_key(f"{key_path}.pub"))
    assert verdict.intact and verdict.records == 1502
    for spool in spools.values():
        spool.close()


def test_a_spool_made_again_after_its_folder_was_lost_is_stored_not_skipped(
    store: GovernanceStore, key_path: Path, tmp_path: Path
) -> None:
    log = AuditLog(store, load_signing_key(key_path))
    first = records(tmp_path, "hub", 5)
    assert log.ingest(first).stored == 5
    shutil.rmtree(tmp_path / "spool-hub")  # a fresh home, a data folder restored without it
    again = records(tmp_path, "hub", 3)
    assert [r["__seq__"] for r in again] == [1, 2, 3], "a new spool numbers from 1"
    assert again[0]["__spool__"] != first[0]["__spool__"]
    done = log.ingest(again)
    assert (done.stored, done.duplicates) == (3, 0), "its records are new, not the old spool's 1 to 3"
    assert log.ingest(again).duplicates == 3
    assert verify(store, load_public_key(f"{key_path}.pub")).intact


def trail_state(store: GovernanceStore) -> tuple[Any, ...]:
    """The events, the head and the checkpoints, as a second client reads them."""
    with store.engine.connect() as conn:
        events = conn.execute(sa.text("SELECT position, emitter, seq FROM gov_audit_events ORDER BY position")).all()
        head = conn.execute(sa.text("SELECT position, hash FROM gov_audit_head")).one()
        checkpoints = conn.execute(sa.text("SELECT position FROM gov_audit_checkpoints ORDER BY position")).all()
    return tuple(events), tuple(head), tuple(checkpoints)


def test_text_a_copy_could_misread_is_stored_as_sent(store: GovernanceStore, key_path: Path, tmp_path: Path) -> None:
    """PostgreSQL takes the rows as COPY text, where a tab, a line end or a backslash mean something."""
    log = AuditLog(store, load_signing_key(key_path))
    awkward = ["tab\there", "new\nline", "cr\rhere", "back\\slash", "\\N", "\\.", "été ✓ 🎉", "'); DROP TABLE x; --"]
    batch = [
        {"__timestamp__": "2026-12-03T10:00:00.250Z", "__emitter__": "hub", "__seq__": i + 1, "__schema__": SCHEMA,
         **event(f"user {text}", f"notebooks/{text}.ipynb")}
        for i, text in enumerate(awkward)
    ]  # fmt: skip
    assert log.ingest(batch).stored == len(awkward)
    for position, sent in enumerate(batch, start=1):
        kept = row(store, position)
        assert (kept["user"], kept["resource"]) == (sent["user"], f"file:{sent['path']}")
        assert json.loads(kept["record"]) == sent
    assert verify(store, load_public_key(f"{key_path}.pub")).intact, "every record hashes to what was chained"


def test_records_sent_again_around_gaps_are_skipped_and_the_rest_stored(
    store: GovernanceStore, key_path: Path, tmp_path: Path
) -> None:
    log = AuditLog(store, load_signing_key(key_path))
    batch = records(tmp_path, "server:alice/", 15)
    first = [r for r in batch if r["__seq__"] in {1, 2, 3, 4, 5, 8, 10, 11, 12}]
    assert log.ingest(first).stored == 9
    again = log.ingest(batch + batch[13:])  # every record, and the last two twice in the one batch
    assert (again.stored, again.duplicates) == (6, 11)
    events, _head, _checkpoints = trail_state(store)
    assert sorted(seq for _position, _emitter, seq in events) == list(range(1, 16)), "each once"
    verdict = verify(store, load_public_key(f"{key_path}.pub"))
    assert verdict.intact and (verdict.records, verdict.checkpoints) == (15, 2)


def test_a_batch_that_fails_part_way_stores_nothing(store: GovernanceStore, key_path: Path, tmp_path: Path) -> None:
    log = AuditLog(store, load_signing_key(key_path))
    batch = records(tmp_path, "server:alice/", 20)
    assert log.ingest(batch[:5]).stored == 5
    # A stray row where the next ingest's third record goes: written without the key, it
    # fails that ingest after two of its rows have gone in.
    sql(
        store,
        'INSERT INTO gov_audit_events (position, emitter, seq, observed, schema, "user", action, outcome, resource,'
        " time, record, prev_hash, hash) SELECT 8, 'stray', 1, observed, schema, \"user\", action, outcome, resource,"
        " time, record, prev_hash, hash FROM gov_audit_events WHERE position = 5",
    )
    before = trail_state(store)
    with pytest.raises(StoreError, match="ingesting audit events failed"):
        log.ingest(batch[5:])
    assert trail_state(store) == before, "no row, no head move, no checkpoint"
    sql(store, "DELETE FROM gov_audit_events WHERE emitter = 'stray'")
    assert log.ingest(batch[5:]).stored == 15
    verdict = verify(store, load_public_key(f"{key_path}.pub"))
    assert verdict.intact and (verdict.records, verdict.checkpoints) == (20, 2)


def test_postgresql_takes_the_rows_in_one_copy_and_sqlite_in_inserts(
    store: GovernanceStore, key_path: Path, tmp_path: Path
) -> None:
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        statements.append(statement)

    sa.event.listen(store.engine, "before_cursor_execute", seen)
    try:
        assert AuditLog(store, load_signing_key(key_path)).ingest(records(tmp_path, "hub", 30)).stored == 30
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", seen)
    inserts = [s for s in statements if s.startswith("INSERT INTO gov_audit_events")]
    assert len(inserts) == (0 if store.engine.dialect.name == "postgresql" else 1)
    assert verify(store, load_public_key(f"{key_path}.pub")).records == 30


@pytest.mark.postgres
def test_a_connection_lost_before_the_copy_stores_nothing_and_the_next_ingest_works(
    key_path: Path, tmp_path: Path
) -> None:
    with pg_databases("audit") as urls:
        store = GovernanceStore(urls["audit"])
        store.upgrade()
        log = AuditLog(store, load_signing_key(key_path))
        batch = records(tmp_path, "hub", 10)

        def cut(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
            if statement.startswith("SELECT gov_audit_events.seq"):  # the duplicate check, just before the COPY
                with contextlib.closing(psycopg2.connect(PG_DSN)) as admin, admin.cursor() as c:
                    c.execute("SELECT pg_terminate_backend(%s, 10000)", (cursor.connection.get_backend_pid(),))

        sa.event.listen(store.engine, "after_cursor_execute", cut)
        try:
            with pytest.raises(StoreError, match=r"ingesting audit events failed: .*connection") as failed:
                log.ingest(batch)
        finally:
            sa.event.remove(store.engine, "after_cursor_execute", cut)
        assert isinstance(failed.value.__cause__, sa.exc.DBAPIError)
        assert failed.value.__cause__.connection_invalidated, "the pool does not hand the dead connection out again"
        assert trail_state(store)[0] == ()
        assert log.ingest(batch).stored == 10
        assert verify(store, load_public_key(f"{key_path}.pub")).intact
        store.dispose()


def test_the_hash_index_is_dropped_by_its_migration_and_the_trail_kept(
    store: GovernanceStore, key_path: Path, tmp_path: Path
) -> None:
    from alembic import command

    from hubforge.hub.governance.store import alembic_config

    def indexes() -> set[str]:
        return {index["name"] or "" for index in sa.inspect(store.engine).get_indexes("gov_audit_events")}

    assert "ix_gov_audit_events_hash" not in indexes() and "ix_gov_audit_events_time" in indexes()
    with store.engine.begin() as connection:
        command.downgrade(alembic_config(connection), "0003")
    assert "ix_gov_audit_events_hash" in indexes()
    filled(store, key_path, tmp_path)
    store.upgrade()
    assert "ix_gov_audit_events_hash" not in indexes()
    assert problem(store, key_path) is None
    sql(store, "UPDATE gov_audit_events SET position = -1 WHERE position = 7")
    sql(store, "UPDATE gov_audit_events SET position = 7 WHERE position = 8")
    sql(store, "UPDATE gov_audit_events SET position = 8 WHERE position = -1")
    assert problem(store, key_path) == "record 7 was moved (reordered)", "found by its hash without the index"


@pytest.mark.parametrize("returning", [True, False], ids=["returning", "no-returning"])
def test_an_ingest_locks_and_reads_the_head_whether_or_not_the_database_returns_rows(
    store: GovernanceStore, key_path: Path, tmp_path: Path, returning: bool
) -> None:
    store.engine.dialect.update_returning = returning  # False: as on SQLite before 3.35
    log = filled(store, key_path, tmp_path)
    verdict = verify(store, load_public_key(f"{key_path}.pub"))
    assert verdict.intact and (verdict.records, verdict.checkpoints) == (20, 2)
    sql(store, "DELETE FROM gov_audit_head")
    with pytest.raises(StoreError, match="the audit chain's head row is missing"):
        log.ingest(records(tmp_path, "late", 1))


@pytest.mark.postgres
def test_postgresql_sessions_bound_every_wait_and_the_url_has_the_last_word() -> None:
    with pg_databases("audit") as urls:
        defaults, own = (
            GovernanceStore(urls["audit"]),
            GovernanceStore(f"{urls['audit']}?options=-c%20lock_timeout%3D2s"),
        )
        try:
            for store, lock_timeout in ((defaults, "30s"), (own, "2s")):
                with store.engine.connect() as conn:
                    server = {name: conn.execute(sa.text(f"SHOW {name}")).scalar()
                              for name in ("lock_timeout", "idle_in_transaction_session_timeout")}  # fmt: skip
                    client = conn.connection.driver_connection.get_dsn_parameters()
                assert server == {"lock_timeout": lock_timeout, "idle_in_transaction_session_timeout": "5min"}
                bounds = {"connect_timeout": "10", "keepalives": "1", "keepalives_idle": "30"}
                bounds["tcp_user_timeout"] = "30000"
                assert {key: client[key] for key in bounds} == bounds
        finally:
            defaults.dispose()
            own.dispose()


@pytest.mark.postgres
def test_an_ingest_behind_a_chain_head_held_by_an_abandoned_transaction_fails_instead_of_waiting(
    key_path: Path, tmp_path: Path
) -> None:
    with pg_databases("audit") as urls:
        store = GovernanceStore(f"{urls['audit']}?options=-c%20lock_timeout%3D1s")
        store.upgrade()
        log = AuditLog(store, load_signing_key(key_path))
        batch = records(tmp_path, "hub", 5)
        # A writer whose client vanished mid-ingest: it holds the head's row lock, idle.
        holder = psycopg2.connect(urls["audit"])
        try:
            holder.cursor().execute("UPDATE gov_audit_head SET position = position WHERE id = 1")
            with pytest.raises(StoreError, match=r"ingesting audit events failed: .*lock timeout"):
                log.ingest(batch)
        finally:
            holder.close()  # what PostgreSQL does on its own after idle_in_transaction_session_timeout
        assert log.ingest(batch).stored == 5, "nothing of the failed ingest was stored"
        assert verify(store, load_public_key(f"{key_path}.pub")).intact
        store.dispose()
