"""The governance store: approval requests in SQLite or PostgreSQL.

A plain class over SQLAlchemy 2 (sync); handlers call it from a worker
thread. Tables are prefixed ``gov_`` and alembic keeps its revision in
``hubforge_governance_alembic_version``, so the store can share one
PostgreSQL database with JupyterHub and MLflow. Every SQLAlchemy error
leaves this module as a :class:`~hubforge.errors.StoreError`.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from hubforge.errors import Conflict, Forbidden, Invalid, NotFound, StoreError

from .model import (
    DATA_ACCESS,
    DECISIONS,
    DEPLOY_STATUSES,
    KINDS,
    MAX_COMMENT,
    MAX_GRANT_DAYS,
    MAX_JUSTIFICATION,
    MAX_MODEL,
    MAX_TARGET,
    STATUSES,
    ApprovalRequest,
    access_expires,
)
from .policy import Visibility

__all__ = [
    "TABLE_PREFIX",
    "VERSION_TABLE",
    "AlreadyDecided",
    "ApprovalRequestRow",
    "Base",
    "GovernanceStore",
    "InvalidText",
    "RequestNotFound",
    "SelfDecision",
    "alembic_config",
]

log = logging.getLogger(__name__)

TABLE_PREFIX = "gov_"
VERSION_TABLE = "hubforge_governance_alembic_version"

T = TypeVar("T")

# Ids are secrets.token_urlsafe(16); anything else names no request, and is
# never sent to the database (PostgreSQL refuses a NUL even in a lookup).
_REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")


class InvalidText(Invalid):
    """Text no backend can hold: a NUL (PostgreSQL refuses it) or a lone surrogate (not Unicode)."""


class RequestNotFound(NotFound):
    """No approval request has the given id."""


class AlreadyDecided(Conflict):
    """The approval request was decided before (perhaps a moment ago, by someone else)."""


class SelfDecision(Forbidden):
    """The approver is the requester: separation of duties forbids it."""


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend.

    SQLite keeps no zone, so values come back naive; they were written as UTC,
    so they are made aware again on the way out.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Refuse naive datetimes and store UTC."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: the governance store keeps UTC only")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Attach UTC where the backend dropped the zone."""
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base of the governance tables (the alembic target metadata)."""


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _check_storable(**texts: str | None) -> None:
    """Refuse, the same on every backend, text that one of them could not store."""
    for name, text in texts.items():
        if text is None:
            continue
        if "\x00" in text:
            raise InvalidText(f"governance store: {name} contains NUL, which PostgreSQL cannot store")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidText(f"governance store: {name} is not valid Unicode (a lone surrogate)") from None


class ApprovalRequestRow(Base):
    """A row of ``gov_approval_requests``; see :class:`~.model.ApprovalRequest`."""

    __tablename__ = TABLE_PREFIX + "approval_requests"
    __table_args__ = (
        sa.CheckConstraint(_in("kind", KINDS), name="ck_gov_approval_requests_kind"),
        sa.CheckConstraint(_in("status", STATUSES), name="ck_gov_approval_requests_status"),
        sa.CheckConstraint(
            "canary_percent IS NULL OR (canary_percent >= 0 AND canary_percent <= 100)",
            name="ck_gov_approval_requests_canary",
        ),
        sa.CheckConstraint(
            "deploy_status IS NULL OR " + _in("deploy_status", DEPLOY_STATUSES),
            name="ck_gov_approval_requests_deploy",
        ),
        sa.CheckConstraint(
            f"duration_days IS NULL OR (duration_days >= 1 AND duration_days <= {MAX_GRANT_DAYS})",
            name="ck_gov_approval_requests_duration",
        ),
        # The active grants of one user (GovernanceStore.active_grants).
        sa.Index("ix_gov_approval_requests_grants", "kind", "requester", "status"),
    )

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(32), index=True)
    target: Mapped[str] = mapped_column(sa.String(MAX_TARGET))
    justification: Mapped[str] = mapped_column(sa.String(MAX_JUSTIFICATION))
    requester: Mapped[str] = mapped_column(sa.String(255), index=True)
    status: Mapped[str] = mapped_column(sa.String(16), index=True)
    created: Mapped[datetime] = mapped_column(UTCDateTime())
    decided: Mapped[datetime | None] = mapped_column(UTCDateTime())
    decided_by: Mapped[str | None] = mapped_column(sa.String(255))
    comment: Mapped[str | None] = mapped_column(sa.String(MAX_COMMENT))
    model: Mapped[str | None] = mapped_column(sa.String(MAX_MODEL), index=True)
    version: Mapped[str | None] = mapped_column(sa.String(32))
    canary_percent: Mapped[int | None] = mapped_column(sa.Integer)
    digest: Mapped[str | None] = mapped_column(sa.String(80))
    policy: Mapped[str | None] = mapped_column(sa.Text)
    deploy_status: Mapped[str | None] = mapped_column(sa.String(16))
    deploy_detail: Mapped[str | None] = mapped_column(sa.String(2000))
    deploy_changed: Mapped[datetime | None] = mapped_column(UTCDateTime())
    duration_days: Mapped[int | None] = mapped_column(sa.Integer)
    expires: Mapped[datetime | None] = mapped_column(UTCDateTime())

    def to_model(self) -> ApprovalRequest:
        """The row as a detached value."""
        return ApprovalRequest(
            id=self.id,
            kind=self.kind,
            target=self.target,
            justification=self.justification,
            requester=self.requester,
            status=self.status,
            created=self.created,
            decided=self.decided,
            decided_by=self.decided_by,
            comment=self.comment,
            model=self.model,
            version=self.version,
            canary_percent=self.canary_percent,
            digest=self.digest,
            policy=json.loads(self.policy) if self.policy else None,
            deploy_status=self.deploy_status,
            deploy_detail=self.deploy_detail,
            deploy_changed=self.deploy_changed,
            duration_days=self.duration_days,
            expires=self.expires,
        )


def alembic_config(connection: sa.Connection | None = None, url: str | None = None) -> Config:
    """An alembic config for the governance migrations, without an ini file.

    The migrations ship inside the package; ``connection`` (preferred) or
    ``url`` tells ``env.py`` where to run them.
    """
    cfg = Config()
    location = resources.files(__package__).joinpath("migrations")
    cfg.set_main_option("script_location", str(location))
    cfg.set_main_option("version_table", VERSION_TABLE)
    if url:
        # ConfigParser interpolation would choke on a %-escaped password.
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["connection"] = connection
    return cfg


def _engine_url(url: str) -> sa.URL:
    """``url`` parsed; a bare ``postgresql://`` means psycopg2, the driver hubforge ships."""
    parsed = sa.make_url(url)
    # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3, which is not installed.
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg2")
    return parsed


# What keeps a PostgreSQL connection from waiting forever; a URL's own parameters win. The
# client: a bounded connect, and TCP keepalives and a user timeout that end a connection
# whose peer went silent. The server: a lock wait ends in an error instead of holding an
# ingest behind the chain head, and a transaction its client abandoned (a cut network,
# a killed process) is ended and rolled back, which releases the chain head it held.
PG_CONNECT = {
    "connect_timeout": "10",
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
    "tcp_user_timeout": "30000",
}
PG_SESSION = "-c lock_timeout=30s -c idle_in_transaction_session_timeout=5min"


def _connect_args(url: sa.URL) -> dict[str, str]:
    """Driver arguments that bound every wait on ``url``'s PostgreSQL (none for SQLite)."""
    if url.get_backend_name() != "postgresql":
        return {}
    args = {key: value for key, value in PG_CONNECT.items() if key not in url.query}
    own = url.query.get("options", "")
    # Later -c settings override earlier ones: the URL's own options come last.
    args["options"] = f"{PG_SESSION} {own if isinstance(own, str) else ' '.join(own)}".strip()
    return args


def _ensure_sqlite_folder(url: sa.URL) -> None:
    """Create the folder of a SQLite file: the default lives in a data_dir made on demand."""
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return
    folder = Path(url.database).parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"governance store: cannot create {folder}: {exc.strerror}") from exc


class GovernanceStore:
    """Approval requests in a SQL database given by its SQLAlchemy URL."""

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            parsed = _engine_url(url)
            _ensure_sqlite_folder(parsed)
            # pre_ping: a PostgreSQL restart must not fail the next request.
            self.engine = sa.create_engine(parsed, pool_pre_ping=True, connect_args=_connect_args(parsed))
        except SQLAlchemyError as exc:
            raise StoreError(f"governance store: invalid database URL: {exc}") from exc
        except ImportError as exc:
            raise StoreError(f"governance store: database driver not installed: {exc}") from exc
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def __repr__(self) -> str:
        return f"<GovernanceStore {self.engine.url!r}>"

    @contextmanager
    def _session(self, action: str) -> Iterator[Session]:
        """A transaction; SQLAlchemy errors become StoreError naming ``action``."""
        try:
            with self._sessions.begin() as session:
                yield session
        except SQLAlchemyError as exc:
            detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            raise StoreError(f"governance store: {action} failed: {detail}") from exc

    def _run(self, action: str, func: Callable[[Session], T]) -> T:
        with self._session(action) as session:
            return func(session)

    def upgrade(self) -> None:
        """Create or migrate the tables to the newest revision (idempotent)."""
        try:
            with self.engine.begin() as connection:
                command.upgrade(alembic_config(connection), "head")
        except SQLAlchemyError as exc:
            detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            raise StoreError(f"governance store: migration failed: {detail}") from exc
        log.info(
            "Governance store at revision head (%s)",
            self.engine.url.render_as_string(hide_password=True),
        )

    def dispose(self) -> None:
        """Close pooled connections."""
        self.engine.dispose()

    def create_request(
        self,
        *,
        kind: str,
        target: str,
        justification: str,
        requester: str,
        model: str | None = None,
        version: str | None = None,
        canary_percent: int | None = None,
        policy: Mapping[str, Any] | None = None,
        duration_days: int | None = None,
    ) -> ApprovalRequest:
        """Record a new pending request and return it (deploy requests name ``model`` and ``version``,
        data-access requests may give ``duration_days``)."""
        if kind not in KINDS:
            raise StoreError(f"governance store: unknown request kind {kind!r}")
        if duration_days is not None and (kind != DATA_ACCESS or not 1 <= duration_days <= MAX_GRANT_DAYS):
            raise StoreError(f"governance store: a duration of 1 to {MAX_GRANT_DAYS} days is for data-access only")
        _check_storable(target=target, justification=justification, requester=requester, model=model)
        row = ApprovalRequestRow(
            # Random, not sequential: ids must not reveal how many requests exist.
            id=secrets.token_urlsafe(16),
            kind=kind,
            target=target,
            justification=justification,
            requester=requester,
            status="pending",
            created=datetime.now(UTC),
            model=model,
            version=version,
            canary_percent=canary_percent,
            policy=json.dumps(dict(policy)) if policy is not None else None,
            duration_days=duration_days,
        )

        def create(session: Session) -> ApprovalRequest:
            session.add(row)
            session.flush()
            return row.to_model()

        return self._run("creating a request", create)

    def get_request(self, request_id: str) -> ApprovalRequest | None:
        """The request with ``request_id``, or None."""
        if not _REQUEST_ID.fullmatch(request_id):
            return None

        def get(session: Session) -> ApprovalRequest | None:
            row = session.get(ApprovalRequestRow, request_id)
            return None if row is None else row.to_model()

        return self._run("reading a request", get)

    def list_requests(
        self,
        visible_to: Visibility | None = None,
        *,
        status: str | None = None,
        kind: str | None = None,
        model: str | None = None,
        limit: int | None = None,
        after: tuple[datetime, str] | None = None,
    ) -> list[ApprovalRequest]:
        """Requests, newest first; only those ``visible_to`` allows, when given.

        ``after`` (the created time and id of the last request of the previous page) and
        ``limit`` page through them.
        """
        t = ApprovalRequestRow
        query = sa.select(t)
        if visible_to is not None:
            own = t.requester == visible_to.user
            kinds = t.kind.in_(sorted(visible_to.kinds))
            query = query.where(sa.or_(own, kinds) if visible_to.kinds else own)
        for column, value in ((t.status, status), (t.kind, kind), (t.model, model)):
            if value is not None:
                query = query.where(column == value)
        if after is not None:
            created, request_id = after
            query = query.where(sa.or_(t.created < created, sa.and_(t.created == created, t.id > request_id)))
        query = query.order_by(t.created.desc(), t.id)
        if limit is not None:
            query = query.limit(limit)

        def select(session: Session) -> list[ApprovalRequest]:
            return [row.to_model() for row in session.scalars(query)]

        return self._run("listing requests", select)

    def active_grants(self, user: str, target: str | None = None, now: datetime | None = None) -> list[ApprovalRequest]:
        """``user``'s approved data-access requests whose access has not ended at ``now`` (default:
        now), of ``target`` only when given; the newest grant first."""
        _check_storable(user=user, target=target)
        t = ApprovalRequestRow
        now = now or datetime.now(UTC)
        query = sa.select(t).where(t.kind == DATA_ACCESS, t.requester == user, t.status == "approved", t.expires > now)
        if target is not None:
            query = query.where(t.target == target)

        def select(session: Session) -> list[ApprovalRequest]:
            return [row.to_model() for row in session.scalars(query.order_by(t.decided.desc(), t.id))]

        return self._run("listing grants", select)

    def decide(
        self,
        request_id: str,
        approver: str,
        decision: str,
        comment: str = "",
        record: Callable[[ApprovalRequest], None] | None = None,
        *,
        digest: str | None = None,
        policy: Mapping[str, Any] | None = None,
    ) -> ApprovalRequest:
        """Approve or reject a pending request and return it.

        Raises :class:`RequestNotFound`, :class:`AlreadyDecided`, or
        :class:`SelfDecision` when ``approver`` is the requester (separation
        of duties is kept here too, so no caller can skip the policy check).
        ``record`` is called with the decided request before the decision commits:
        when it raises, the decision is rolled back (the audit trail's fail-closed).
        ``digest`` (what an approved deployment may serve) and ``policy`` (the policy's word on
        this decision) are kept with the decision. An approved data-access request gets its
        ``expires``, ``duration_days`` after the decision, in the same transaction.
        """
        if decision not in DECISIONS:
            raise StoreError(f"governance store: unknown decision {decision!r}")
        if not _REQUEST_ID.fullmatch(request_id):
            raise RequestNotFound(f"no approval request {request_id!r}")
        _check_storable(approver=approver, comment=comment)
        values: dict[str, Any] = {
            "status": DECISIONS[decision],
            "decided": datetime.now(UTC),
            "decided_by": approver,
            "comment": comment,
        }
        if digest is not None:
            values["digest"] = digest
        if policy is not None:
            values["policy"] = json.dumps(dict(policy))

        def decide(session: Session) -> ApprovalRequest:
            result = self._decide(session, request_id, approver, values)
            if record is not None:
                record(result)
            return result

        return self._run("deciding a request", decide)

    def set_deployment(self, request_id: str, status: str, detail: str | None = None) -> ApprovalRequest:
        """Record how an approved deploy request's deployment went (``detail``: the endpoint or
        the error, cut to fit)."""
        if status not in DEPLOY_STATUSES:
            raise StoreError(f"governance store: unknown deployment status {status!r}")
        detail = None if detail is None else detail.replace("\x00", "")[:2000]
        t = ApprovalRequestRow
        update = (
            sa.update(t)
            .where(t.id == request_id, t.status == "approved")
            .values(deploy_status=status, deploy_detail=detail, deploy_changed=datetime.now(UTC))
            .execution_options(synchronize_session=False)
        )

        def record(session: Session) -> ApprovalRequest:
            if session.execute(update).rowcount != 1:  # type: ignore[attr-defined]
                raise RequestNotFound(f"no approved request {request_id!r}")
            row = session.get(t, request_id, populate_existing=True)
            assert row is not None
            return row.to_model()

        return self._run("recording a deployment", record)

    def deployments(self, status: str) -> list[ApprovalRequest]:
        """Approved deploy requests whose deployment is ``status``, oldest first."""
        t = ApprovalRequestRow
        query = sa.select(t).where(t.deploy_status == status).order_by(t.deploy_changed, t.id)

        def select(session: Session) -> list[ApprovalRequest]:
            return [row.to_model() for row in session.scalars(query)]

        return self._run("listing deployments", select)

    @staticmethod
    def _decide(session: Session, request_id: str, approver: str, values: dict[str, Any]) -> ApprovalRequest:
        # A conditional UPDATE, not read-then-write: of two approvers racing,
        # exactly one wins and the other gets AlreadyDecided.
        t = ApprovalRequestRow
        update = (
            sa.update(t)
            .where(t.id == request_id, t.status == "pending", t.requester != approver)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        updated = session.execute(update).rowcount  # type: ignore[attr-defined]
        row = session.get(t, request_id, populate_existing=True)
        if row is None:
            raise RequestNotFound(f"no approval request {request_id!r}")
        if updated != 1:
            if row.requester == approver:
                raise SelfDecision("separation of duties: nobody may decide their own request")
            raise AlreadyDecided(f"the request was already decided ({row.status})")
        if row.kind == DATA_ACCESS and row.status == "approved" and row.decided is not None:
            # The row is ours until commit (the UPDATE above holds it): its duration cannot change.
            row.expires = access_expires(row.decided, row.duration_days)
            session.flush()
        return row.to_model()
