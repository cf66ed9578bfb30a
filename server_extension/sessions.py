"""Tell each kernel which notebook it runs, as notebooks are renamed and moved.

jupyter-server learns of a rename two ways: JupyterLab updates the notebook's
session (``PATCH /api/sessions/<id>`` with the new path) when it renames an open
document, and its contents manager emits a ``rename`` event
(``https://events.jupyter.org/jupyter_server/contents_service/v1``) for every
rename or move through the contents API, a whole folder included. On either,
the path of each affected kernel is written where the kernel looks (see
:mod:`hubforge.server_extension.notebook_paths`); when a session ends its file
goes. The session manager's own methods are wrapped on the server's instance,
as the kernel hook is (see :mod:`.app`).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from .notebook_paths import remove_path, write_path

__all__ = ["CONTENTS_EVENTS", "follow_notebooks", "moved_path"]

CONTENTS_EVENTS = "https://events.jupyter.org/jupyter_server/contents_service/v1"


def moved_path(path: str, source: str, target: str) -> str | None:
    """Where ``path`` is after ``source`` was renamed to ``target`` (itself or a folder above it)."""
    path, source, target = path.strip("/"), source.strip("/"), target.strip("/")
    if path == source:
        return target
    if source and path.startswith(source + "/"):
        return f"{target}/{path[len(source) + 1 :]}" if target else path[len(source) + 1 :]
    return None


def follow_notebooks(serverapp: Any, root: Path) -> None:
    """Keep ``<root>/kernels/<kernel id>.json`` naming each session's notebook (once per server)."""
    sessions = serverapp.session_manager
    log = serverapp.log
    if getattr(sessions, "_hubforge_follows", False):
        return
    sessions._hubforge_follows = True

    def record(model: Any) -> None:
        kernel = (model or {}).get("kernel") or {}
        if kernel.get("id") and model.get("path"):
            try:
                write_path(root, kernel["id"], model["path"])
            except (OSError, ValueError) as exc:
                log.warning("hubforge: cannot tell kernel %s its notebook: %s", kernel["id"], exc)

    create, update, delete = sessions.create_session, sessions.update_session, sessions.delete_session

    @functools.wraps(create)
    async def create_session(*args: Any, **kwargs: Any) -> Any:
        model = await create(*args, **kwargs)
        record(model)
        return model

    @functools.wraps(update)
    async def update_session(session_id: Any = None, **kwargs: Any) -> Any:
        result = await update(session_id, **kwargs)
        if "path" in kwargs:
            record(await sessions.get_session(session_id=session_id))
        return result

    @functools.wraps(delete)
    async def delete_session(session_id: Any) -> Any:
        model = await sessions.get_session(session_id=session_id)
        result = await delete(session_id)
        kernel_id = ((model or {}).get("kernel") or {}).get("id")
        if kernel_id:
            remove_path(root, kernel_id)
        return result

    sessions.create_session = create_session
    sessions.update_session = update_session
    sessions.delete_session = delete_session

    async def renamed(logger: Any, schema_id: str, data: dict[str, Any]) -> None:
        # jupyter_events calls listeners by keyword, for every contents event (get, save, ...).
        if data.get("action") != "rename" or not data.get("source_path") or data.get("path") is None:
            return
        try:
            for model in await sessions.list_sessions():
                new = moved_path(model.get("path") or "", data["source_path"], data["path"])
                if new is not None and new != model.get("path"):
                    await sessions.update_session(model["id"], path=new)
        except Exception:  # a listener must never break the contents API
            log.warning("hubforge: could not follow the rename of %s", data.get("source_path"), exc_info=True)

    event_logger = getattr(serverapp, "event_logger", None)
    if event_logger is not None:
        event_logger.add_listener(schema_id=CONTENTS_EVENTS, listener=renamed)
