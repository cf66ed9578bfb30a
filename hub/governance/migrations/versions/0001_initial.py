"""The approval requests table.

Revision ID: 0001
Revises:
Create Date: 2025-01-01 00:00:00
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

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "gov_approval_requests"


def upgrade() -> None:
    """Create ``gov_approval_requests`` and its indexes."""
    # Literal column definitions, not the models: a migration must keep
    # meaning what it meant when it was written.
    op.create_table(
        TABLE,
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("target", sa.String(200), nullable=False),
        sa.Column("justification", sa.String(2000), nullable=False),
        sa.Column("requester", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decided_by", sa.String(255), nullable=True),
        sa.Column("comment", sa.String(2000), nullable=True),
        sa.CheckConstraint(
            "kind IN ('deploy-staging', 'deploy-production', 'data-access')",
            name="ck_gov_approval_requests_kind",
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'approved', 'rejected')",
            name="ck_gov_approval_requests_status",
        ),
    )
    for column in ("kind", "requester", "status"):
        op.create_index(f"ix_{TABLE}_{column}", TABLE, [column])


def downgrade() -> None:
    """Drop ``gov_approval_requests``."""
    op.drop_table(TABLE)
