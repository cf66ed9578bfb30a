"""What JupyterHub keeps of a spawn request, and putting it back when hubforge refuses the request.

JupyterHub saves a request's options as the server's defaults (``orm_spawner.user_options``,
shown on the admin page and reused by the next start without options) *before* the
spawner sees them. A request the catalog refuses must leave no trace there: a data
steward's forged request for the fine-tuning tier must not show them on that tier.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import object_session

__all__ = ["restore_saved_options"]


def restore_saved_options(spawner: Any, accepted: dict[str, Any]) -> None:
    """Put ``accepted`` (the options of the last request not refused) back in the spawner and the hub's db."""
    spawner.user_options = dict(accepted)
    orm_spawner = getattr(spawner, "orm_spawner", None)
    if orm_spawner is None:
        return
    orm_spawner.user_options = dict(accepted)
    session = object_session(orm_spawner)
    if session is not None:
        session.commit()
