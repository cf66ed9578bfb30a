"""Alembic migrations of the governance store."""

__all__: list[str] = []
