"""Deploy requests name a model version, a canary share, the approved digest, the policy's word
and how their deployment went.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 12:00:00
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

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "gov_approval_requests"
CANARY_CHECK = "canary_percent IS NULL OR (canary_percent >= 0 AND canary_percent <= 100)"
DEPLOY_CHECK = "deploy_status IS NULL OR deploy_status IN ('deploying', 'deployed', 'failed', 'rolled_back')"


def upgrade() -> None:
    """Add ``model``, ``version``, ``canary_percent``, ``digest`` and ``policy``."""
    # Literal column definitions, not the models. SQLite cannot add a CHECK constraint to a
    # table: batch mode recreates it, copying the rows and the reflected constraints
    # (tests/integration/test_governance_store.py checks they still hold afterwards).
    with op.batch_alter_table(TABLE, recreate="auto") as batch:
        batch.add_column(sa.Column("model", sa.String(256), nullable=True))
        batch.add_column(sa.Column("version", sa.String(32), nullable=True))
        batch.add_column(sa.Column("canary_percent", sa.Integer, nullable=True))
        batch.add_column(sa.Column("digest", sa.String(80), nullable=True))
        batch.add_column(sa.Column("policy", sa.Text, nullable=True))
        batch.add_column(sa.Column("deploy_status", sa.String(16), nullable=True))
        batch.add_column(sa.Column("deploy_detail", sa.String(2000), nullable=True))
        batch.add_column(sa.Column("deploy_changed", sa.DateTime(timezone=True), nullable=True))
        batch.create_check_constraint("ck_gov_approval_requests_canary", CANARY_CHECK)
        batch.create_check_constraint("ck_gov_approval_requests_deploy", DEPLOY_CHECK)
        batch.create_index(f"ix_{TABLE}_model", ["model"])


def downgrade() -> None:
    """Drop the deploy columns again."""
    with op.batch_alter_table(TABLE, recreate="auto") as batch:
        batch.drop_index(f"ix_{TABLE}_model")
        batch.drop_constraint("ck_gov_approval_requests_deploy", type_="check")
        batch.drop_constraint("ck_gov_approval_requests_canary", type_="check")
        for column in ("deploy_changed", "deploy_detail", "deploy_status", "policy", "digest", "canary_percent",
                       "version", "model"):  # fmt: skip
            batch.drop_column(column)
