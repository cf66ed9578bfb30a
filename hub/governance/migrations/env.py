"""Alembic environment of the governance store.

Configured in code (see :func:`hubforge.hub.governance.store.alembic_config`):
``config.attributes["connection"]`` is the connection to migrate, else
``sqlalchemy.url`` is. The version table has its own name and autogenerate
only looks at ``gov_`` tables, so a database shared with JupyterHub and
MLflow is left alone.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import context

from hubforge.hub.governance import audit  # noqa: F401 (its tables join Base.metadata)
from hubforge.hub.governance.store import TABLE_PREFIX, VERSION_TABLE, Base

__all__ = ["include_name", "run_migrations_offline", "run_migrations_online"]

config = context.config


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """Consider only the governance tables (and everything inside them)."""
    if type_ == "table":
        return name is not None and name.startswith(TABLE_PREFIX)
    return True


def _options() -> dict[str, Any]:
    return {
        "target_metadata": Base.metadata,
        "version_table": config.get_main_option("version_table", VERSION_TABLE),
        "include_name": include_name,
        # SQLite cannot ALTER most things; batch mode copies the table instead.
        "render_as_batch": True,
    }


def run_migrations_offline() -> None:
    """Emit SQL for ``sqlalchemy.url`` without connecting."""
    context.configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True, **_options())
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Migrate the given connection, or one opened on ``sqlalchemy.url``."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _migrate(connection)
        return
    engine = sa.create_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as conn:
        _migrate(conn)
    engine.dispose()


def _migrate(connection: sa.Connection) -> None:
    context.configure(connection=connection, **_options())
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
