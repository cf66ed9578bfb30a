"""The governance service collects the platform's own spools into the audit trail.

The hub and the services run as the platform's account and keep their spools under
``<data folder>/events/<emitter>/`` (:func:`~hubforge.events.spool.platform_spool_dir`),
on the volume the governance service shares with them (one machine, or the hub pod
on Kubernetes). Every second the service reads what each spool gained since its
offset (``.ingested``), ingests it, and then moves the offset. A crash between the
two makes it read those records again, which the trail stores once: at least once
delivery, exactly once storage.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from hubforge.errors import StoreError
from hubforge.events.spool import INGESTED_FILE, PLATFORM_SPOOLS, read_from

from .audit import INSERT_BATCH, AuditLog

__all__ = ["SpoolCollector"]

log = logging.getLogger(__name__)


class SpoolCollector:
    """Ingests the spools under ``<data_dir>/events/`` into ``trail``."""

    def __init__(self, data_dir: str | os.PathLike[str], trail: AuditLog) -> None:
        self.root = Path(data_dir) / PLATFORM_SPOOLS
        self.trail = trail

    def collect(self) -> int:
        """Ingest what every spool gained; how many records were stored."""
        if not self.root.is_dir():
            return 0
        stored = 0
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir()):
            try:
                stored += self._collect(folder)
            except (StoreError, OSError, ValueError) as exc:  # kept in the spool: tried again next time
                log.warning("Audit events of %s not collected yet: %s", folder.name, exc)
        return stored

    def _collect(self, folder: Path) -> int:
        marker = folder / INGESTED_FILE
        offset = int(marker.read_text() or 0) if marker.exists() else 0
        stored = 0
        while True:
            records, after = read_from(folder, offset, INSERT_BATCH)
            if not records:
                return stored
            stored += self.trail.ingest(records).stored
            tmp = marker.with_suffix(".tmp")
            tmp.write_text(str(after))
            os.replace(tmp, marker)
            offset = after
