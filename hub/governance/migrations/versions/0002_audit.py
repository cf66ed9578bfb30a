"""The audit trail: a hash chain of audit events, its head and its signed checkpoints.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

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

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EVENTS = "gov_audit_events"


def upgrade() -> None:
    """Create ``gov_audit_head``, ``gov_audit_events`` and ``gov_audit_checkpoints``."""
    # Literal column definitions, not the models: a migration must keep
    # meaning what it meant when it was written.
    head = op.create_table(
        "gov_audit_head",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("position", sa.BigInteger, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    # The one row every ingest locks first, there from the start: two first ingests
    # racing to create it would both try.
    op.bulk_insert(head, [{"id": 1, "position": 0, "hash": "0" * 64}])
    op.create_table(
        EVENTS,
        sa.Column("position", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("emitter", sa.String(255), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("observed", sa.String(16), nullable=False),
        sa.Column("schema", sa.String(255), nullable=False),
        sa.Column("user", sa.String(256), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("resource", sa.String(1100), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("record", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.UniqueConstraint("emitter", "seq", name="uq_gov_audit_events_emitter_seq"),
    )
    for column in ("schema", "user", "time", "hash"):
        op.create_index(f"ix_{EVENTS}_{column}", EVENTS, [column])
    op.create_table(
        "gov_audit_checkpoints",
        sa.Column("position", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("signed", sa.DateTime(timezone=True), nullable=False),
        sa.Column("signature", sa.String(128), nullable=False),
    )


def downgrade() -> None:
    """Drop the audit tables."""
    op.drop_table("gov_audit_checkpoints")
    op.drop_table(EVENTS)
    op.drop_table("gov_audit_head")
