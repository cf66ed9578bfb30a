"""Data-access requests say how many days access lasts; an approved one keeps when it ends.

Requests approved before this revision asked for no duration: they get the default, 30 days
from their decision (an approval never ran forever by intent; it only had no end written down).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 12:00:00
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import sqlalchemy as sa
from alembic import op

__all__ = [
    "branch_labels",
    "depends_on",
    "down_revision",
    "downgrade",
    "revision",
    "upgrade",
]

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "gov_approval_requests"
DURATION_CHECK = "duration_days IS NULL OR (duration_days >= 1 AND duration_days <= 90)"
#: "The active grants of user X": data-access, X, approved; expiry is checked on the few left.
GRANTS_INDEX = f"ix_{TABLE}_grants"
#: The default duration, as of this revision (the code's may change; this backfill may not).
DEFAULT_DAYS = 30


def upgrade() -> None:
    """Add ``duration_days`` and ``expires``, and give earlier approvals the default end."""
    # Literal column definitions, not the models; batch mode, as 0003 explains.
    with op.batch_alter_table(TABLE, recreate="auto") as batch:
        batch.add_column(sa.Column("duration_days", sa.Integer, nullable=True))
        batch.add_column(sa.Column("expires", sa.DateTime(timezone=True), nullable=True))
        batch.create_check_constraint("ck_gov_approval_requests_duration", DURATION_CHECK)
        batch.create_index(GRANTS_INDEX, ["kind", "requester", "status"])
    _backfill_expiry()


def _backfill_expiry() -> None:
    # Row by row in Python: date arithmetic is spelt differently in SQLite and PostgreSQL, and
    # data-access approvals are few. Values come back as each backend stores them (naive UTC
    # on SQLite, aware on PostgreSQL) and go back the same way.
    table = sa.table(
        TABLE,
        sa.column("id", sa.String),
        sa.column("kind", sa.String),
        sa.column("status", sa.String),
        sa.column("decided", sa.DateTime(timezone=True)),
        sa.column("expires", sa.DateTime(timezone=True)),
    )
    bind = op.get_bind()
    approved = sa.select(table.c.id, table.c.decided).where(
        table.c.kind == "data-access",
        table.c.status == "approved",
        table.c.decided.is_not(None),
        table.c.expires.is_(None),
    )
    for request_id, decided in bind.execute(approved).all():
        ends = decided + timedelta(days=DEFAULT_DAYS)
        bind.execute(sa.update(table).where(table.c.id == request_id).values(expires=ends))


def downgrade() -> None:
    """Drop the duration and the expiry again."""
    with op.batch_alter_table(TABLE, recreate="auto") as batch:
        batch.drop_index(GRANTS_INDEX)
        batch.drop_constraint("ck_gov_approval_requests_duration", type_="check")
        batch.drop_column("expires")
        batch.drop_column("duration_days")
