"""The audit trail keeps no index on its records' hashes.

Only :func:`~hubforge.hub.governance.audit.verify` reads a record by its hash, and only once
it has found a broken link, to say what broke it: one scan of the table, beside the walk of
the whole chain it has just made. The index cost every ingest a write at a random place in
a tree as large as the trail (and, after each checkpoint, a whole page in the WAL).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 16:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

__all__ = [
    "branch_labels",
    "depends_on",
    "down_revision",
    "downgrade",
    "revision",
    "upgrade",
]

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EVENTS = "gov_audit_events"
INDEX = f"ix_{EVENTS}_hash"


def upgrade() -> None:
    """Drop ``ix_gov_audit_events_hash``."""
    op.drop_index(INDEX, table_name=EVENTS)


def downgrade() -> None:
    """Index the records' hashes again."""
    op.create_index(INDEX, EVENTS, ["hash"])
