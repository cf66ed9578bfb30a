"""Deliver a server's audit spools to the governance service, at least once.

A person's server keeps its audit events in spools under one root (see
:mod:`.audit`): ``server/`` for what the server itself sees (files, kernels) and one
``kernel-<id>/`` per kernel (cells). The :class:`AuditForwarder` thread reads what each
spool gained since its offset (``.ingested``) and posts it to the governance service's
audit API with the server's hub token; only when the service answers that it holds
the records does the offset move. A crash between the two sends them again, which the
trail stores once (the emitter and ``__seq__``): at least once delivery, exactly once
storage. While the service or its store is away the records wait in the spool, and go
when it is back, oldest first.

A batch the service refuses (400, 413, or 403 for a record naming another user) will
be refused again: it is set aside in ``refused.jsonl`` with the answer, never lost and
never retried forever. A spool of a kernel that has ended (its ``owner.pid`` names no
process), once delivered, is removed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hubforge.events.spool import EVENTS_FILE, INGESTED_FILE, read_from

__all__ = ["OWNER_FILE", "REFUSED_FILE", "AuditForwarder", "owner_alive"]

log = logging.getLogger(__name__)

#: In a spool folder: batches the service refused, with its answer.
REFUSED_FILE = "refused.jsonl"
#: In a kernel's spool folder: the kernel's process id. A spool without one (the server's) stays.
OWNER_FILE = "owner.pid"
#: Records per request, and bytes (the service reads at most 4 MiB).
BATCH_RECORDS = 500
BATCH_BYTES = 1024 * 1024
#: Statuses that say the batch itself is refused: sending it again would not help.
REFUSED = frozenset({400, 403, 413, 422})
#: Seconds to wait after a failed delivery, doubling up to the most.
BACKOFF_S, BACKOFF_MAX_S = 1.0, 30.0


class Unsent(Exception):
    """A batch not delivered now; it stays in the spool for the next try."""


class AuditForwarder:
    """Forwards every spool under ``root`` to ``url`` as ``token``'s server ``server``.

    ``alive(folder)``: whether a spool may still grow (default: the process named in its
    ``owner.pid`` runs); a spool that may not, once delivered, is removed. ``interval``:
    seconds between passes.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        url: str,
        token: str,
        server: str,
        *,
        interval: float = 1.0,
        alive: Callable[[Path], bool] | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.root = Path(root)
        self.url, self.token, self.server = url, token, server
        self.interval, self.timeout = interval, timeout
        self.backoff_max = BACKOFF_MAX_S  #: the longest wait after failed deliveries
        self.alive = alive or owner_alive
        self.delivered = 0  #: records the service took (stored or already held)
        self.failure: str | None = None  #: why the last pass left records behind, if it did
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Forward in a daemon thread until :meth:`stop`."""
        self._thread = threading.Thread(target=self._loop, name="hubforge-audit-forwarder", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """One last pass (what the server recorded as it stopped; what the service does not
        take within ``timeout`` seconds waits for the server's next start), then stop."""
        self.timeout = min(self.timeout, timeout)
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout + 1)

    def soon(self) -> None:
        """Forward now rather than at the next interval."""
        self._wake.set()

    def _loop(self) -> None:
        wait = self.interval
        while True:
            done = self.forward_all()
            if self._stop.is_set():
                return
            wait = self.interval if done else min(max(wait * 2, BACKOFF_S), self.backoff_max)
            self._wake.wait(wait)
            self._wake.clear()

    def forward_all(self) -> bool:
        """One pass over every spool; whether everything was delivered."""
        if not self.root.is_dir():
            return True
        failure = None
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir()):
            try:
                if self._forward(folder):
                    self._remove_if_ended(folder)
            except Unsent as exc:
                failure = str(exc)
                log.warning("hubforge: audit events of %s wait in their spool: %s", folder.name, exc)
                break  # the service is away: the other spools would fail alike
            except (OSError, ValueError) as exc:
                failure = str(exc)
                log.error("hubforge: audit spool %s unreadable: %s", folder, exc)
        self.failure = failure  # what the last whole pass found
        return failure is None

    def _forward(self, folder: Path) -> bool:
        """Deliver what ``folder`` gained; whether all of it is delivered (Unsent if not)."""
        marker = folder / INGESTED_FILE
        offset = int(marker.read_text() or 0) if marker.exists() else 0
        while True:
            records, after = read_from(folder, offset, BATCH_RECORDS, BATCH_BYTES)
            if not records:
                return offset == _size(folder / EVENTS_FILE)
            self._send(folder, records)
            tmp = marker.with_suffix(".tmp")
            tmp.write_text(str(after))
            os.replace(tmp, marker)
            offset = after

    def _send(self, folder: Path, records: list[dict[str, Any]]) -> None:
        body = json.dumps({"server": self.server, "source": folder.name, "records": records}).encode()
        request = urllib.request.Request(
            self.url,
            data=body,
            method="POST",
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            answer = _message(exc)
            # A 403 about the records (one names someone else) refuses them; any other 403
            # (the token may not use the service yet) is the platform's to fix: try later.
            if exc.code not in REFUSED or (exc.code == 403 and not answer.startswith("records[")):
                raise Unsent(f"{exc.code} {answer}") from None
            self._set_aside(folder, records, exc.code, answer)
            return
        except (urllib.error.URLError, OSError) as exc:
            raise Unsent(str(getattr(exc, "reason", exc))) from None
        self.delivered += len(records)

    def _set_aside(self, folder: Path, records: list[dict[str, Any]], status: int, answer: str) -> None:
        log.error("hubforge: the audit service refused %d events of %s (%d %s); kept in %s",
                  len(records), folder.name, status, answer, REFUSED_FILE)  # fmt: skip
        line = json.dumps({"status": status, "message": answer, "records": records}) + "\n"
        with (folder / REFUSED_FILE).open("a") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def _remove_if_ended(self, folder: Path) -> None:
        if not (folder / OWNER_FILE).exists() or self.alive(folder) or (folder / REFUSED_FILE).exists():
            return
        shutil.rmtree(folder, ignore_errors=True)


def owner_alive(folder: Path) -> bool:
    """Whether the process that writes the spool ``folder`` (its ``owner.pid``) still runs."""
    try:
        pid = int((folder / OWNER_FILE).read_text())
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, ValueError):  # unreadable, or another account's process: assume it runs
        return True
    return True


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _message(error: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(error.read()).get("message", ""))[:300]
    except (ValueError, AttributeError, OSError):
        return str(error.reason)[:300]
