"""The governance store against real databases: a SQLite file and the local PostgreSQL.

PostgreSQL tests use one fresh database per test session (created from the
``test`` database, dropped at the end) and a clean ``public`` schema per test.
"""

from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg2
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from psycopg2 import sql

from hubforge.errors import StoreError
from hubforge.hub.governance import audit  # noqa: F401 (its tables join Base.metadata)
from hubforge.hub.governance.policy import Visibility
from hubforge.hub.governance.store import (
    VERSION_TABLE,
    AlreadyDecided,
    Base,
    GovernanceStore,
    RequestNotFound,
    SelfDecision,
)

PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A database of its own for this test session, dropped afterwards."""
    name = f"hubforge_test_{secrets.token_hex(6)}"
    admin = psycopg2.connect(dbname="test", **PG)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        # bare postgresql://, as the platform config writes it
        yield f"postgresql://{PG['user']}@{PG['host']}:{PG['port']}/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.close()


def _reset_postgres(url: str) -> None:
    conn = psycopg2.connect(dbname=sa.make_url(url).database, **PG)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    conn.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """An empty database on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'governance.sqlite'}"
    url = request.getfixturevalue("pg_database")
    _reset_postgres(url)
    return url


@pytest.fixture
def store(db_url: str) -> Iterator[GovernanceStore]:
    s = GovernanceStore(db_url)
    s.upgrade()
    yield s
    s.dispose()


def submit(
    store: GovernanceStore,
    requester: str = "alice",
    kind: str = "deploy-production",
    target: str = "m1",
):
    return store.create_request(kind=kind, target=target, justification="because", requester=requester)


def versions(store: GovernanceStore) -> list[str]:
    with store.engine.connect() as conn:
        return [row[0] for row in conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}"))]


# --- migrations ------------------------------------------------------------------


def test_upgrade_creates_prefixed_tables_and_its_own_version_table(db_url):
    store = GovernanceStore(db_url)
    assert sa.inspect(store.engine).get_table_names() == []
    store.upgrade()
    tables = set(sa.inspect(store.engine).get_table_names())
    trail = {"gov_audit_head", "gov_audit_events", "gov_audit_checkpoints"}
    assert tables == {"gov_approval_requests", *trail, VERSION_TABLE}
    assert versions(store) == ["0005"]
    store.dispose()


def test_upgrade_twice_is_idempotent_and_keeps_data(store):
    kept = submit(store)
    store.upgrade()
    store.upgrade()
    assert versions(store) == ["0005"]
    assert store.get_request(kept.id) == kept


def test_upgrade_leaves_other_applications_alembic_table_alone(db_url):
    # JupyterHub and MLflow keep their revision in the default alembic_version.
    store = GovernanceStore(db_url)
    with store.engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)"))
        conn.execute(sa.text("INSERT INTO alembic_version VALUES ('jupyterhub-head')"))
    store.upgrade()
    with store.engine.connect() as conn:
        other = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one()
    assert other == "jupyterhub-head"
    assert versions(store) == ["0005"]
    store.dispose()


def test_the_deploy_migration_keeps_the_rows_and_every_check(db_url):
    """0003 rebuilds the table on SQLite (a CHECK constraint cannot be added there): the rows
    stay, and the old checks hold beside the new ones, on both backends."""
    from alembic import command

    from hubforge.hub.governance.store import alembic_config

    store = GovernanceStore(db_url)
    with store.engine.begin() as connection:
        command.upgrade(alembic_config(connection), "0002")
        connection.execute(sa.text(
            "INSERT INTO gov_approval_requests (id, kind, target, justification, requester, status, created) "
            "VALUES ('kept-request-id-000001', 'data-access', 'ds', 'why', 'alice', 'pending', :now)"
        ), {"now": datetime.now(UTC)})  # fmt: skip
    store.upgrade()
    kept = store.get_request("kept-request-id-000001")
    assert kept is not None and (kept.kind, kept.model, kept.deployment_json()) == ("data-access", None, None)
    row = {"kind": "deploy-staging", "status": "pending", "canary_percent": 10, "deploy_status": None}
    columns = ", ".join(row)
    insert = sa.text(
        f"INSERT INTO gov_approval_requests (id, target, justification, requester, created, {columns}) "
        f"VALUES (:id, 't', 'j', 'bob', :now, {', '.join(':' + name for name in row)})"
    )
    with store.engine.begin() as connection:
        connection.execute(insert, {**row, "id": "fine", "now": datetime.now(UTC)})
    for column, value in (("status", "maybe"), ("kind", "deploy-moon"), ("canary_percent", 101),
                          ("deploy_status", "teleported")):  # fmt: skip
        with pytest.raises(sa.exc.IntegrityError), store.engine.begin() as connection:
            connection.execute(insert, {**row, column: value, "id": f"bad-{column}", "now": datetime.now(UTC)})
    store.dispose()


def test_models_match_the_migrations(store):
    def ours(name, type_, parent_names):
        return type_ != "table" or (bool(name) and name.startswith("gov_"))

    with store.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_name": ours, "compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


# --- requests --------------------------------------------------------------------


def test_create_and_get_round_trip(store):
    created = store.create_request(
        kind="data-access",
        target="customers-2024",
        justification="churn features",
        requester="alice",
    )
    assert created.status == "pending" and created.pending
    assert created.created.tzinfo is not None and created.created.utcoffset().total_seconds() == 0
    assert abs((datetime.now(UTC) - created.created).total_seconds()) < 60
    assert (created.decided, created.decided_by, created.comment) == (None, None, None)
    fetched = store.get_request(created.id)
    assert fetched == created
    assert fetched.to_json()["created"].endswith("Z")


def test_ids_are_random_url_safe_strings(store):
    ids = [submit(store).id for _ in range(5)]
    assert len(set(ids)) == 5
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{16,}", i) for i in ids)
    assert not any(i.isdigit() for i in ids)


def test_get_missing_request_is_none(store):
    assert store.get_request("no-such-id") is None


def test_list_requests_by_visibility_newest_first(store):
    a1 = submit(store, "alice", "deploy-staging", "m-a1")
    b1 = submit(store, "bob", "deploy-production", "m-b1")
    a2 = submit(store, "alice", "data-access", "ds-a2")
    assert [r.id for r in store.list_requests()] == [a2.id, b1.id, a1.id]
    assert [r.id for r in store.list_requests(Visibility("alice", frozenset()))] == [
        a2.id,
        a1.id,
    ]
    staging_approver = Visibility("bob", frozenset({"deploy-staging"}))
    assert [r.id for r in store.list_requests(staging_approver)] == [b1.id, a1.id]
    assert store.list_requests(Visibility("nobody", frozenset())) == []


def test_list_requests_filters(store):
    a = submit(store, "alice", "deploy-staging")
    b = submit(store, "bob", "deploy-staging")
    store.decide(b.id, "carol", "approve")
    assert [r.id for r in store.list_requests(status="pending")] == [a.id]
    assert [r.id for r in store.list_requests(status="approved", kind="deploy-staging")] == [b.id]
    assert store.list_requests(kind="data-access") == []


@pytest.mark.parametrize(("decision", "status"), [("approve", "approved"), ("reject", "rejected")])
def test_decide_records_who_when_and_why(store, decision, status):
    request = submit(store)
    decided = store.decide(request.id, "carol", decision, "looks good")
    assert decided.status == status
    assert decided.decided_by == "carol"
    assert decided.comment == "looks good"
    assert decided.decided is not None and decided.decided >= decided.created
    assert store.get_request(request.id) == decided


def test_decided_request_cannot_be_decided_again(store):
    request = submit(store)
    first = store.decide(request.id, "carol", "approve", "ok")
    with pytest.raises(AlreadyDecided):
        store.decide(request.id, "erin", "reject", "no")
    assert store.get_request(request.id) == first


def test_store_refuses_self_decision(store):
    request = submit(store, "carol")
    with pytest.raises(SelfDecision):
        store.decide(request.id, "carol", "approve")
    assert store.get_request(request.id).pending


def test_decide_missing_request(store):
    with pytest.raises(RequestNotFound):
        store.decide("no-such-id", "carol", "approve")


def test_racing_approvers_exactly_one_wins(store):
    request = submit(store)
    barrier = threading.Barrier(4)
    outcomes: list[str] = []

    def approve(name: str) -> None:
        barrier.wait()
        try:
            store.decide(request.id, name, "approve")
            outcomes.append("won")
        except AlreadyDecided:
            outcomes.append("conflict")
        except StoreError as exc:  # SQLite may report a lock instead
            outcomes.append(f"error: {exc}")

    threads = [threading.Thread(target=approve, args=(f"lead{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert outcomes.count("won") == 1, outcomes
    assert store.get_request(request.id).decided_by.startswith("lead")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda s: s.create_request(kind="deploy-moon", target="x", justification="y", requester="a"),
            "kind",
        ),
        (lambda s: s.decide("x", "carol", "maybe"), "decision"),
    ],
)
def test_invalid_values_are_store_errors(store, call, message):
    with pytest.raises(StoreError, match=message):
        call(store)


# --- failures become StoreError -----------------------------------------------------


def test_invalid_url_is_a_store_error():
    with pytest.raises(StoreError, match="invalid database URL"):
        GovernanceStore("nosuchdialect://x")


def test_missing_driver_is_a_store_error():
    with pytest.raises(StoreError, match="driver not installed"):
        GovernanceStore("postgresql+psycopg://postgres@127.0.0.1/none")


def test_bare_postgresql_url_uses_psycopg2():
    store = GovernanceStore("postgresql://postgres@127.0.0.1:1/none")
    assert store.engine.dialect.driver == "psycopg2"


def test_unreachable_database_is_a_store_error():
    # port 1 on loopback: refused at once, nothing listens there
    store = GovernanceStore("postgresql+psycopg2://postgres@127.0.0.1:1/none")
    with pytest.raises(StoreError, match="reading a request failed") as info:
        store.get_request("x")
    assert isinstance(info.value.__cause__, sa.exc.SQLAlchemyError)
    with pytest.raises(StoreError, match="migration failed"):
        store.upgrade()


@pytest.mark.postgres
def test_database_constraint_violation_is_a_store_error(pg_database):
    _reset_postgres(pg_database)
    store = GovernanceStore(pg_database)
    store.upgrade()
    with pytest.raises(StoreError, match="creating a request failed"):
        submit(store, target="x" * 201)  # varchar(200): PostgreSQL refuses it
    store.dispose()
