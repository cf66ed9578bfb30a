"""One audit event in the envelope every schema shares, from a service's own spool.

``record(spool, "scheduler/run", observer, user=..., action=..., resource=(type, id), ...)``
fills the envelope (``user``, ``action``, ``resource``, ``outcome``, ``origin``) and queues
the event; the spool writes it (:mod:`.spool`). Without a spool (a service started
outside the platform, or whose folder cannot be written) nothing is recorded.
"""

from __future__ import annotations

from typing import Any

from .spool import EventSpool

__all__ = ["EVENT_IDS", "record"]

#: The prefix of the platform's event schema ids.
EVENT_IDS = "https://events.hubforge.dev/"


def record(
    spool: EventSpool | None,
    schema: str,
    observer: str,
    *,
    user: str,
    action: str,
    resource: tuple[str, str],
    outcome: str = "success",
    **fields: Any,
) -> None:
    """Queue an event of ``schema`` (``area/name``, version 1) seen by ``observer``."""
    if spool is None:
        return
    event = {
        "user": user,
        "action": action,
        "resource": {"type": resource[0], "id": resource[1]},
        "outcome": outcome,
        "origin": {"observer": observer},
        **{key: value for key, value in fields.items() if value not in (None, "")},
    }
    spool.emit(f"{EVENT_IDS}{schema}/v1", event)
