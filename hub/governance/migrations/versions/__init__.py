"""Alembic revisions of the governance store."""

__all__: list[str] = []
