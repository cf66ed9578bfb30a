"""An emitter's durable spool of audit events: enqueue on the caller's thread, fsync in groups.

Every part of the platform that observes actions (the hub, the services, each
person's server) owns one :class:`EventSpool` in a folder of its own, with an emitter
id. :meth:`EventSpool.emit` only numbers the event and appends it to an in-memory
queue; a writer thread checks each event against its schema (:func:`~hubforge.events.refusal`),
makes its strings safe (:func:`~hubforge.events.clean`), and appends the lot to
``events.jsonl`` with one ``write`` and one ``fsync`` (a group commit: whatever arrived
while the last ``fsync`` ran goes in the next). An event is *acknowledged* once its
group is on disk (``durable_seq``); :meth:`EventSpool.emit_durable` waits for that and
raises :class:`EventNotDurable` when it cannot happen, so security-critical actions
fail closed.

A record is one JSON line in jupyter_events' form (``__timestamp__``, ``__schema__``,
``__schema_version__``, ``__metadata_version__``) plus ``__emitter__`` and ``__seq__``:
the emitter's sequence number, 1, 2, 3, ... continued across restarts, so that the
central store ingests each record once (emitter id + sequence). A number missing from
``events.jsonl`` is in ``rejected.jsonl`` (an event refused, with the reason), so a gap
elsewhere means a lost record. A
``kill -9`` can leave half a line at the end of the file; readers skip it and the
next spool opened on the folder cuts it off. Refused events go to ``rejected.jsonl``
with the reason, never silently away.
"""

from __future__ import annotations

import collections
import itertools
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hubforge.errors import Unavailable

from . import MAX_EVENT_BYTES, EventRefused, clean, event_schemas, refusal

__all__ = [
    "EVENTS_FILE",
    "INGESTED_FILE",
    "PLATFORM_SPOOLS",
    "REJECTED_FILE",
    "SPOOL_ID_FILE",
    "EventNotDurable",
    "EventSpool",
    "open_spool",
    "platform_spool_dir",
    "read_from",
    "read_spool",
]

log = logging.getLogger(__name__)

EVENTS_FILE = "events.jsonl"
REJECTED_FILE = "rejected.jsonl"
#: The spool's random id, made with it: its records carry it as ``__spool__``, so that a
#: spool made again in the same place (its folder deleted, a fresh home) numbers from 1
#: again without its records being taken for ones the trail already has.
SPOOL_ID_FILE = "spool.id"


class EventNotDurable(Unavailable):
    """An event that had to be on disk before the action goes on, and is not (503: the action
    is refused until the audit trail can record it)."""


def read_spool(directory: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """The records of a spool folder, in order; a torn last line (a crash mid-write) is skipped."""
    path = Path(directory) / EVENTS_FILE
    if not path.exists():
        return
    with path.open("rb") as f:
        for line in f:
            if not line.endswith(b"\n"):
                return  # the tail of a write a crash cut short: never acknowledged
            yield json.loads(line)


def _recover(path: Path) -> int:
    """Cut a torn last line off ``path``; the last sequence number written (0 if none)."""
    if not path.exists():
        return 0
    with path.open("r+b") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        tail = b""
        position = size
        while position > 0 and tail.count(b"\n") < 2:
            step = min(65536, position)
            position -= step
            f.seek(position)
            tail = f.read(step) + tail
        if not tail.endswith(b"\n"):
            keep = tail.rfind(b"\n") + 1
            f.truncate(position + keep)
            tail = tail[:keep]
        lines = tail.splitlines()
        return int(json.loads(lines[-1])["__seq__"]) if lines else 0


def _spool_id(directory: Path, new: bool) -> str:
    """The spool's id (:data:`SPOOL_ID_FILE`), made for a new spool; '' for one older than ids."""
    path = directory / SPOOL_ID_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        if not new:
            return ""
    spool_id = secrets.token_hex(8)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w") as f:
        f.write(spool_id)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return spool_id


class EventSpool:
    """The durable spool of one emitter in ``directory`` (made 0700 if missing).

    ``emitter``: this emitter's id, unique on the platform (``hub``, ``governance``,
    ``server:alice/``). ``fsync``: False only for tests that measure without the disk.
    ``linger``: seconds the writer waits after the first event of a group before writing
    it, so that the events of a burst share one write and one ``fsync`` (a kernel's cells,
    milliseconds apart in a Run All); whoever waits for the disk (:meth:`flush`,
    :meth:`emit_durable`, :meth:`close`) cuts the wait short.
    """

    def __init__(
        self, directory: str | os.PathLike[str], emitter: str, *, fsync: bool = True, linger: float = 0.0
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.emitter = emitter
        self._fsync = fsync
        path = self.directory / EVENTS_FILE
        self._rejected_path = self.directory / REJECTED_FILE
        last = max(_recover(path), _recover(self._rejected_path))
        self.spool_id = _spool_id(self.directory, new=last == 0)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._queue: collections.deque[tuple[int, int, str, Any]] = collections.deque()
        self._next = itertools.count(last + 1).__next__  # one call: atomic under the GIL
        self._lock = threading.Lock()  # numbering and enqueueing happen together, in order
        self._wake = threading.Event()
        self._linger = linger
        self._hurry = threading.Event()  # someone waits for the disk: no lingering
        self._done = threading.Condition()
        self.durable_seq = last  #: the highest sequence number on disk (acknowledged)
        self.emitted_seq = last  #: the highest sequence number handed out
        self.rejected = 0  #: events refused (kept in rejected.jsonl with the reason)
        self.failure: BaseException | None = None  #: why the spool stopped writing, if it did
        self._closing = False
        self._writer = threading.Thread(target=self._run, name=f"hubforge-events-{emitter}", daemon=True)
        self._writer.start()

    # -- the caller's side -------------------------------------------------------------------

    def emit(self, schema_id: str, event: Mapping[str, Any]) -> int:
        """Queue ``event`` (of schema ``schema_id``); its sequence number. Never blocks on disk.

        The event is copied (one level): change nested values after this at your peril.
        """
        when = time.time_ns()
        event = dict(event)
        with self._lock:
            seq = self._next()
            self._queue.append((seq, when, schema_id, event))
            self.emitted_seq = seq
        if not self._wake.is_set():
            self._wake.set()
        return seq

    def emit_durable(self, schema_id: str, event: Mapping[str, Any], timeout: float = 5.0) -> int:
        """``emit``, checked first and then waited for until on disk: for actions that must
        not happen unrecorded. EventRefused for an event its schema refuses, EventNotDurable
        when it is not on disk within ``timeout`` seconds."""
        self.check(schema_id, event)
        seq = self.emit(schema_id, event)
        if not self.wait_durable(seq, timeout):
            raise EventNotDurable(
                f"audit event {seq} of {self.emitter} is not on disk"
                + (f": {self.failure}" if self.failure else f" after {timeout:g} s")
            )
        return seq

    def check(self, schema_id: str, event: Mapping[str, Any]) -> dict[str, Any]:
        """``event`` cleaned and checked against its schema; EventRefused (one line) if refused."""
        cleaned = clean(dict(event), event_schemas().get(schema_id, {}))
        if why := refusal(schema_id)(cleaned):
            raise EventRefused(why)
        return cleaned

    def wait_durable(self, seq: int, timeout: float) -> bool:
        """Whether event ``seq`` is on disk within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        if self.durable_seq < seq and self._linger:
            self._hurry.set()
        with self._done:
            while self.durable_seq < seq:
                left = deadline - time.monotonic()
                if left <= 0 or self.failure is not None:
                    return self.durable_seq >= seq
                self._done.wait(left)
        return True

    def writable(self, timeout: float = 5.0) -> bool:
        """Whether the spool takes events now: what was emitted so far reached the disk
        within ``timeout`` seconds and the writer has not failed (a full or lost disk)."""
        return self.flush(timeout) and self.failure is None

    def flush(self, timeout: float = 10.0) -> bool:
        """Whether everything emitted so far is on disk within ``timeout`` seconds."""
        return self.wait_durable(self.emitted_seq, timeout)

    def close(self, timeout: float = 10.0) -> bool:
        """Write what is queued, stop the writer, close the file; whether all of it got there."""
        done = self.flush(timeout)
        self._closing = True
        self._wake.set()
        self._writer.join(timeout)
        os.close(self._fd)
        return done

    # -- the writer thread -------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wake.wait()
            if self._linger and not self._closing:
                # What is emitted meanwhile finds the wake already set and joins this group.
                self._hurry.wait(self._linger)
            self._wake.clear()
            self._hurry.clear()
            if not self._queue:
                if self._closing:
                    return
                continue
            lines: list[bytes] = []
            rejected: list[bytes] = []
            last = self.durable_seq
            while self._queue:
                seq, when, schema_id, event = self._queue.popleft()
                last = seq
                line, why = self._record(seq, when, schema_id, event)
                if why is None:
                    lines.append(line)
                else:
                    rejected.append(line)
            try:
                self._append(lines, rejected)
            except OSError as exc:  # the disk is full or gone: nothing after this is acknowledged
                with self._done:
                    self.failure = exc
                    self._done.notify_all()
                return
            with self._done:
                self.durable_seq = last
                self._done.notify_all()

    def _record(self, seq: int, when: int, schema_id: str, event: Any) -> tuple[bytes, str | None]:
        """The JSON line of one event, or of its refusal (with the reason)."""
        stamp = datetime.fromtimestamp(when / 1e9, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        head: dict[str, Any] = {"__timestamp__": stamp, "__emitter__": self.emitter, "__seq__": seq}
        if self.spool_id:
            head["__spool__"] = self.spool_id
        try:
            cleaned = self.check(schema_id, event)  # EventRefused for an unknown schema too
            record = {
                **head,
                "__schema__": schema_id,
                "__schema_version__": event_schemas()[schema_id]["version"],
                "__metadata_version__": 1,
                **cleaned,
            }
            line = json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
            if len(line) > MAX_EVENT_BYTES:
                raise EventRefused(f"the event is {len(line)} bytes, over {MAX_EVENT_BYTES}")
            return line, None
        except (EventRefused, TypeError, ValueError) as exc:  # ValueError: unserialisable numbers
            self.rejected += 1
            refused = {**head, "__schema__": str(schema_id)[:200], "reason": str(exc)[:500]}
            return json.dumps(refused).encode() + b"\n", str(exc)

    def _append(self, lines: list[bytes], rejected: list[bytes]) -> None:
        if rejected:
            with self._rejected_path.open("ab") as f:
                f.write(b"".join(rejected))
        if lines:
            data = memoryview(b"".join(lines))
            while data:
                written = os.write(self._fd, data)
                data = data[written:]
        if self._fsync and (lines or rejected):
            os.fsync(self._fd)


#: The folder under the data folder where the platform's own emitters (the hub, the
#: services) keep their spools, one subfolder per emitter, for the governance service to collect.
PLATFORM_SPOOLS = "events"
#: In a spool folder: how far the collector has ingested ``events.jsonl`` (bytes).
INGESTED_FILE = ".ingested"


def platform_spool_dir(data_dir: str | os.PathLike[str], emitter: str) -> Path:
    """The spool folder of the platform's own emitter ``emitter`` (``hub``, ``governance``)."""
    return Path(data_dir) / PLATFORM_SPOOLS / emitter


_OPEN: dict[tuple[str, str], EventSpool] = {}
_OPEN_LOCK = threading.Lock()


def open_spool(folder: str | os.PathLike[str], emitter: str) -> EventSpool | None:
    """This process's spool of ``emitter`` in ``folder``, opened on first use; None (logged) when
    the folder cannot be written, so that a part that records events never fails for it."""
    key = (str(folder), emitter)
    with _OPEN_LOCK:
        if key not in _OPEN:
            try:
                _OPEN[key] = EventSpool(folder, emitter)
            except OSError as exc:
                log.error("Audit events of %s cannot be spooled in %s: %s", emitter, folder, exc)
                return None
        return _OPEN[key]


def read_from(
    directory: str | os.PathLike[str], offset: int, limit: int, max_bytes: int | None = None
) -> tuple[list[dict[str, Any]], int]:
    """Up to ``limit`` whole records of a spool after byte ``offset`` (and, past the first, no
    more than ``max_bytes`` of them), and the offset after them."""
    path = Path(directory) / EVENTS_FILE
    if not path.exists():
        return [], offset
    found: list[dict[str, Any]] = []
    size = 0
    with path.open("rb") as f:
        f.seek(offset)
        while len(found) < limit:
            line = f.readline()
            if not line.endswith(b"\n"):  # the end, or a write still in progress
                break
            size += len(line)
            if found and max_bytes is not None and size > max_bytes:
                break
            found.append(json.loads(line))
            offset += len(line)
    return found, offset
