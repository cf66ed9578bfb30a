"""Each cell a kernel runs, recorded in the audit trail: who, which notebook and cell, what code.

The kernel keeps its own spool, ``kernel-<id>/`` under the server's audit dir
(``HUBFORGE_AUDIT_DIR``), with its process id in ``owner.pid`` so that the server's
forwarder removes the spool once the kernel has ended and all of it is delivered.
A cell's record names the notebook (as it is now, renames followed), the cell's id,
the sha256 of its source and whether it raised; the source itself only when the
platform asks for it (``HUBFORGE_AUDIT_CELL_SOURCE=on``). On the cell's path this is
one hash and one enqueue: the spool writes on its own thread, the cells of a burst (a Run
All, a loop of short cells) together, within :data:`LINGER_S` of the first; one write and
one ``fsync`` per cell cost a trivial cell about a tenth of its time. Every ending of the
kernel writes what is queued before it leaves.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hubforge.contract import AUDIT_CELL_SOURCE_ENV, AUDIT_DIR_ENV, ORIGIN_ENV, switched_off

__all__ = ["CELL_SCHEMA", "CellAudit", "cell_audit"]

CELL_SCHEMA = "https://events.hubforge.dev/kernel/cell/v1"
OWNER_FILE = "owner.pid"  # the forwarder's OWNER_FILE: the kernel does not import the server side
#: Seconds the spool's writer gathers cells before writing them (see :class:`EventSpool`).
LINGER_S = 0.25


class CellAudit:
    """Records the cells of a kernel of ``user`` into a spool in ``folder``, opened on the first cell.

    ``notebook()``: the notebook's path now; ``observer``: ``kernel``, or ``papermill`` for a
    kernel papermill started.
    """

    def __init__(self, folder: Path, user: str, notebook: Callable[[], str], *,
                 observer: str = "kernel", with_source: bool = False) -> None:  # fmt: skip
        self.folder = folder
        self.user = user
        self.notebook = notebook
        self.origin = {"observer": observer}
        self.with_source = with_source
        self.spool: Any = None
        self._cell: tuple[str, str] = ("", "")

    def _open(self) -> Any:
        from hubforge.events.spool import EventSpool

        spool = EventSpool(self.folder, self.folder.name, linger=LINGER_S)
        (self.folder / OWNER_FILE).write_text(str(os.getpid()))
        return spool

    def pre_run_cell(self, info: Any) -> None:
        """Keep the cell's id and source for its record."""
        self._cell = (str(getattr(info, "cell_id", None) or ""), info.raw_cell or "")

    def post_run_cell(self, result: Any) -> None:
        """Spool the cell's record, with how it ended."""
        if self.spool is None:
            self.spool = self._open()
        cell_id, source = self._cell
        notebook = self.notebook()
        event: dict[str, Any] = {
            "user": self.user,
            "action": "execute",
            "resource": {"type": "cell", "id": f"{notebook}#{cell_id}" if cell_id else notebook},
            "outcome": "success" if result.success else "failure",
            "origin": self.origin,
            "notebook": notebook,
            "source_sha256": hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest(),
        }
        if cell_id:
            event["cell_id"] = cell_id
        if result.execution_count is not None:
            event["execution_count"] = result.execution_count
        if self.with_source:
            event["source"] = source
        self.spool.emit(CELL_SCHEMA, event)

    def close(self) -> None:
        """Write what is queued (the kernel is ending)."""
        if self.spool is not None:
            self.spool.close(timeout=2.0)


def cell_audit(env: dict[str, str] | os._Environ[str], kernel_id: str, user: str,
               notebook: Callable[[], str]) -> CellAudit | None:  # fmt: skip
    """The kernel's cell audit when its server set an audit dir (``HUBFORGE_AUDIT_DIR``), else None."""
    root = env.get(AUDIT_DIR_ENV)
    if not root:
        return None
    folder = Path(root) / f"kernel-{kernel_id or os.getpid()}"
    observer = "papermill" if env.get(ORIGIN_ENV) in ("papermill", "scheduler") else "kernel"
    source = env.get(AUDIT_CELL_SOURCE_ENV)
    return CellAudit(folder, user, notebook, observer=observer, with_source=bool(source) and not switched_off(source))
