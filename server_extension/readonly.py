"""A contents manager that reads and never writes: the server of an apps-only tier.

Analysts' servers (a tier with ``interface: apps``) render published apps with Voila
and nothing else: no JupyterLab, no terminals, and this contents manager, which
serves the server's files to Voila but refuses every save, upload, rename, copy,
new file, new folder and delete with 403. Opening an app keeps its frozen copy on
disk directly (:mod:`.apps`), not through the contents API.
"""

from __future__ import annotations

from typing import Any

from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager
from tornado import web

__all__ = ["ReadOnlyContentsManager"]

REFUSAL = "this server only runs apps: its files cannot be changed"


class ReadOnlyContentsManager(AsyncLargeFileManager):
    """``AsyncLargeFileManager`` for reading; 403 for every change."""

    async def save(self, model: Any, path: str = "") -> Any:
        raise web.HTTPError(403, REFUSAL)

    async def delete_file(self, path: str) -> None:
        raise web.HTTPError(403, REFUSAL)

    async def rename_file(self, old_path: str, new_path: str) -> None:
        raise web.HTTPError(403, REFUSAL)

    async def new_untitled(self, path: str = "", type: str = "", ext: str = "") -> Any:
        raise web.HTTPError(403, REFUSAL)

    async def new(self, model: Any = None, path: str = "") -> Any:
        raise web.HTTPError(403, REFUSAL)

    async def copy(self, from_path: str, to_path: str | None = None) -> Any:
        raise web.HTTPError(403, REFUSAL)

    async def create_checkpoint(self, path: str) -> Any:
        raise web.HTTPError(403, REFUSAL)

    async def restore_checkpoint(self, checkpoint_id: str, path: str) -> None:
        raise web.HTTPError(403, REFUSAL)

    async def delete_checkpoint(self, checkpoint_id: str, path: str) -> None:
        raise web.HTTPError(403, REFUSAL)
