"""A background, batching, spooling sender of run data to MLflow.

Callers append metrics, params and tags in O(1) without touching the network;
a daemon thread drains them into ``MlflowClient.log_batch`` within MLflow's
per-request limits. When MLflow is down or slow the thread retries with
backoff; when the memory buffer is full it is spilled to an append-only JSON
lines spool on disk (one fsync per spill), replayed in order when MLflow is
back; past the disk bound items are dropped and counted, never silently.
What MLflow refuses (a param changing value, a key it does not accept, a run
deleted meanwhile) is handed, with MLflow's reason, to ``on_refused``: the
tracker keeps it on disk and tells the person (see :func:`refused`).

Exactly-once, from the caller's view: an item leaves the queue only when a
``log_batch`` carrying it was acknowledged. A failure is *ambiguous* (the
server may have committed before the connection broke), so before a failed
batch is sent again its metrics are checked against
``get_metric_history`` and those already stored are skipped. Params (same
value) and tags (overwrite) are idempotent and are simply re-sent. The
trade-off: a metric identical in key, value, timestamp and step to one already
stored in the run is taken as delivered (MLflow's SQL store would merge it as
a duplicate primary key anyway), and recovery costs one history read per
metric key of the failed batch.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hubforge.contract import (
    KEY,
    KIND,
    METRIC,
    PARAM,
    RUN,
    STEP,
    TAG,
    TIMESTAMP,
    VALUE,
    Item,
    metric_item,
    param_item,
    tag_item,
)
from hubforge.server_extension.kernel.rest import rest_log_batch

__all__ = ["MAX_BATCH_BYTES", "MAX_METRICS", "MAX_PARAMS", "MAX_TAGS", "TrackingQueue", "reason", "refused"]

log = logging.getLogger(__name__)

MAX_METRICS = 1000
MAX_PARAMS = 100
MAX_TAGS = 100
#: Below MLflow's 1 MB request limit, leaving room for the JSON framing.
MAX_BATCH_BYTES = 900_000
#: Refusals about the run itself (deleted, not the caller's): every item of the batch shares them.
_RUN_REFUSALS = {"RESOURCE_DOES_NOT_EXIST", "INVALID_STATE", "PERMISSION_DENIED"}
#: 4xx answers that say "not now" rather than "no": timeouts, rate limits, a credential
#: the hub does not know at this moment. Waiting can change these.
_NOT_NOW = {401, 408, 425, 429}


def refused(exc: BaseException) -> bool:
    """Whether MLflow itself answered with a refusal (a 4xx that waiting will not change)."""
    code = getattr(exc, "get_http_status_code", lambda: 500)()
    return isinstance(code, int) and 400 <= code < 500 and code not in _NOT_NOW


def reason(exc: BaseException) -> str:
    """MLflow's answer in one line: its error code and the first line of its message."""
    code = getattr(exc, "error_code", None) or type(exc).__name__
    message = str(getattr(exc, "message", "") or exc).strip().splitlines()
    text = message[0] if message else ""
    return f"{code}: {text}"[:300] if not text.startswith(code) else text[:300]


@dataclass
class _Batch:
    """Items of one run, sent in one ``log_batch``; ``ambiguous`` after a failed try."""

    run_id: str
    items: list[Item] = field(default_factory=list)
    ambiguous: bool = False


class _Spool:
    """An append-only JSON lines file: one line per spilled chunk, read back in order."""

    def __init__(self, directory: Path, max_bytes: int):
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"spool-{os.getpid()}-{id(self):x}.jsonl"
        self.max_bytes = max_bytes
        self._writer = open(self.path, "ab")  # noqa: SIM115 - held for the queue's life
        self._offset = 0
        self.items = 0

    def append(self, items: list[Item]) -> bool:
        """Write one chunk and fsync it; False (nothing written) when it would pass the bound."""
        line = (json.dumps(items, separators=(",", ":")) + "\n").encode()
        if self._writer.tell() + len(line) > self.max_bytes:
            return False
        self._writer.write(line)
        self._writer.flush()
        os.fsync(self._writer.fileno())
        self.items += len(items)
        return True

    def read_raw(self) -> bytes | None:
        """The oldest unread chunk as raw bytes (parse it outside any lock), or None."""
        if self._offset >= self._writer.tell():
            return None
        with open(self.path, "rb") as reader:
            reader.seek(self._offset)
            line = reader.readline()
        self._offset += len(line)
        if self._offset >= self._writer.tell():
            self._writer.truncate(0)
            self._writer.seek(0)
            self._offset = 0
        return line

    def close(self) -> None:
        """Close the file; remove it when nothing is left in it."""
        empty = self._writer.tell() == 0
        self._writer.close()
        if empty:
            self.path.unlink(missing_ok=True)


class TrackingQueue:
    """Buffer run data and deliver it to MLflow from a daemon thread.

    ``client_factory`` returns an ``MlflowClient`` (anything with ``log_batch``
    and ``get_metric_history``); it is called on the sender thread, so the
    caller never pays for importing mlflow. ``max_memory_items`` bounds the
    caller-side buffer (the sender holds at most one more chunk),
    ``max_spool_bytes`` the disk spool in ``spool_dir``. A partial batch goes
    out at most once per ``flush_interval`` seconds, and only once the caller has
    been ``quiet`` seconds without :meth:`activity` or its oldest item has waited
    ``max_delay`` seconds (so a kernel running cells back to back does not pay for
    requests between them); a full one, a backlog, and anything ``flush()`` or
    ``close()`` waits for go out at once. ``on_refused(items,
    reason)`` receives what MLflow refused (called on the sender thread); without
    one, refusals are logged. Either way they are counted in ``refused``.
    """

    def __init__(
        self,
        client_factory: Callable[[], Any],
        max_memory_items: int = 100_000,
        spool_dir: str | os.PathLike[str] | None = None,
        flush_interval: float = 1.0,
        max_spool_bytes: int = 256 * 1024 * 1024,
        max_backoff: float = 10.0,
        on_refused: Callable[[list[Item], str], None] | None = None,
        quiet: float = 0.0,
        max_delay: float = 10.0,
    ):
        self._factory = client_factory
        self._on_refused = on_refused
        self._client: Any = None
        self._rest: Any = None  # the REST fast path for log_batch; False when the store has none
        self.max_memory_items = max_memory_items
        self.flush_interval = flush_interval
        self.max_backoff = max_backoff
        self.quiet = quiet
        self.max_delay = max_delay
        self._active_at = 0.0  # monotonic time of the caller's last activity()
        self._oldest_at = 0.0  # monotonic time the oldest item now in memory was queued
        directory = Path(spool_dir) if spool_dir else Path(tempfile.mkdtemp(prefix="hubforge-spool-"))
        self._spool = _Spool(directory, max_spool_bytes)
        self._memory: deque[Item] = deque()
        self._staged: deque[Item] = deque()
        self._retries: deque[_Batch] = deque()
        self._folds: deque[tuple[str, Callable[[Any], Mapping[str, str]], Any]] = deque()
        self._cond = threading.Condition()
        self._outstanding = 0
        self.dropped = 0
        self.refused = 0
        self.delivered = 0
        self.spilled = 0
        self.last_error: str | None = None
        self._closing = False
        self._flushing = 0
        self._next_send = 0.0
        self._held: set[str] = set()
        self._aliases: dict[str, str] = {}
        self._inflight: _Batch | None = None  # the batch being sent, while it is in no deque
        self._detached = False
        self._thread = threading.Thread(target=self._run, name="hubforge-tracking", daemon=True)
        self._thread.start()

    # -- the caller's side: O(1), no network -------------------------------------------

    def log_metric(self, run_id: str, key: str, value: float, timestamp: int | None = None, step: int | None = None):
        """Queue one metric; ``timestamp`` in ms since the epoch (now when None)."""
        ts = int(time.time() * 1000) if timestamp is None else int(timestamp)
        self._put(metric_item(run_id, key, float(value), ts, int(step or 0)))

    def log_param(self, run_id: str, key: str, value: Any) -> None:
        """Queue one param (stored as a string, like MLflow does)."""
        self._put(param_item(run_id, key, str(value)))

    def set_tag(self, run_id: str, key: str, value: Any) -> None:
        """Queue one tag."""
        self._put(tag_item(run_id, key, str(value)))

    def fold(self, run_id: str, merge: Callable[[Any], Mapping[str, str]], value: Any) -> None:
        """Queue ``value`` for ``merge`` to fold into the run's tags on the sender thread; O(1), no network.

        For what accumulates over a session (the feature views a notebook read): the caller
        pays one append; ``merge(value)`` runs on the sender thread and returns the tags its
        value changed, which then go out like :meth:`set_tag`'s, the last value of each key
        once per round. A ``merge`` that raises costs its own value only.
        """
        with self._cond:
            if not self._admit_locked():
                return
            self._folds.append((run_id, merge, value))
            self._outstanding += 1

    def activity(self) -> None:
        """The caller is busy now (a cell starts or ends): hold partial batches for ``quiet`` seconds.

        A plain store, no lock: called twice per cell on the kernel's main thread.
        """
        self._active_at = time.monotonic()

    def _admit_locked(self) -> bool:
        """Whether something may still be queued (False: it is counted dropped); the first one
        waiting starts the age of the next batch."""
        if self._closing and not self._thread.is_alive():
            self.dropped += 1
            return False
        if not self._memory and not self._folds:
            self._oldest_at = time.monotonic()
        return True

    def _put(self, item: Item) -> None:
        with self._cond:
            if not self._admit_locked():
                return
            self._memory.append(item)
            self._outstanding += 1
            if len(self._memory) >= self.max_memory_items:
                self._spill_locked()
            elif len(self._memory) == MAX_METRICS:
                self._cond.notify()

    def _spill_locked(self) -> None:
        items = list(self._memory)
        self._memory.clear()
        if self._spool.append(items):
            self.spilled += len(items)
        else:
            self._count_dropped_locked(len(items))
        self._cond.notify()

    def _count_dropped_locked(self, n: int) -> None:
        if n and not self.dropped:
            log.warning("hubforge tracking: buffer and spool full, dropping run data (counted)")
        self.dropped += n
        self._outstanding -= n
        self._cond.notify_all()

    def resend(self, items: list[Item]) -> None:
        """Queue items whose delivery is unknown (a previous process accepted them, then ended).

        They go out first, in order, each batch checked against what the run already holds,
        as after an ambiguous failure; so items that did arrive are not stored twice.
        """
        staged = deque(items)
        with self._cond:
            while staged:
                batch = _take_batch(staged, self._aliases)
                batch.ambiguous = True
                self._retries.append(batch)
            self._outstanding += len(items)
            self._cond.notify_all()

    def detach(self, timeout: float = 0.5) -> list[Item]:
        """Stop the sender; hand back every item neither delivered nor dropped, oldest first.

        For a process that ends while MLflow is away: it keeps the items elsewhere and a
        later process :meth:`resend` s them. A request still in flight after ``timeout``
        seconds is abandoned and its items are handed back too (they may have arrived:
        that is what :meth:`resend` checks). Placeholder run ids are resolved where known.
        """
        with self._cond:
            self._closing = self._detached = True
            self._cond.notify_all()
        # Wait until the sender has returned, or is inside a request (its batch is then
        # ``_inflight``); between the two it moves items between deques.
        deadline = time.monotonic() + timeout
        while self._thread.is_alive() and time.monotonic() < deadline + 5:
            self._thread.join(0.01)
            if self._inflight is not None and time.monotonic() >= deadline:
                break
        with self._cond:
            batches = list(self._retries)
            if self._inflight is not None and all(b is not self._inflight for b in batches):
                batches.insert(0, self._inflight)
            items = [item for batch in batches for item in batch.items]
            items.extend(self._staged)
            while (raw := self._spool.read_raw()) is not None:
                items.extend(json.loads(raw))
            items.extend(self._memory)
            items.extend(self._merged_locked())
            self._retries.clear()
            self._staged.clear()
            self._memory.clear()
            self._spool.items = 0
            self._inflight = None
            self._outstanding = 0
            self._cond.notify_all()
            aliases = dict(self._aliases)
        if not self._thread.is_alive():
            self._spool.close()
        return [[i[KIND], aliases.get(i[RUN], i[RUN]), *i[KEY:]] for i in items]

    def hold(self, alias: str) -> None:
        """Accept items for the placeholder run id ``alias`` but send nothing until :meth:`release`.

        Lets a caller queue run data before MLflow has created the run (and named
        it); held items count against the same memory and spool bounds.
        """
        with self._cond:
            self._held.add(alias)

    def release(self, alias: str, run_id: str) -> None:
        """Items queued under ``alias``, before or after this call, belong to ``run_id``; send them."""
        with self._cond:
            self._aliases[alias] = run_id
            self._held.discard(alias)
            self._cond.notify_all()

    # -- state ---------------------------------------------------------------------

    @property
    def depth(self) -> int:
        """Items accepted and neither delivered, refused nor dropped yet."""
        return self._outstanding

    @property
    def failing(self) -> bool:
        """Whether the last request failed and its batch waits to be sent again."""
        return bool(self._retries)

    @property
    def spool_path(self) -> Path:
        """The spool file (exists while the queue is open)."""
        return self._spool.path

    def flush(self, timeout: float) -> bool:
        """Wait until everything accepted so far is delivered or dropped; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._flushing += 1
            self._cond.notify_all()
            try:
                while self._outstanding > 0:
                    left = deadline - time.monotonic()
                    if left <= 0 or not self._thread.is_alive():
                        return False
                    self._cond.wait(min(left, 0.05))
            finally:
                self._flushing -= 1
        return True

    def close(self, timeout: float = 10.0) -> bool:
        """Flush for up to ``timeout`` seconds, then stop the sender; True when all was delivered."""
        done = self.flush(timeout)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(max(0.1, min(timeout, 1.0)))
        if not self._thread.is_alive():
            self._spool.close()
        return done

    # -- the sender thread -----------------------------------------------------------

    def _run(self) -> None:
        backoff = 0.0
        while True:
            with self._cond:
                while not self._due_locked():
                    if self._closing:
                        return
                    self._cond.wait(self._until_due_locked())
            batch = self._next_batch()
            if batch is None:
                with self._cond:
                    self._cond.wait(self.flush_interval)
                continue
            with self._cond:
                if self._detached:
                    if not any(b is batch for b in self._retries):
                        self._staged.extendleft(reversed(batch.items))  # for detach() to find
                    return
                self._inflight = batch
            settled = self._deliver(batch)
            with self._cond:
                self._inflight = None
                if self._detached:
                    return
            if settled:
                backoff = 0.0
                continue
            backoff = min(self.max_backoff, max(0.05, backoff * 2))
            with self._cond:
                if self._closing:
                    return
                self._cond.wait(backoff)

    def _due_locked(self) -> bool:
        """Send now? A backlog or a full batch at once; a partial batch once per ``flush_interval``
        when the caller is quiet, or once its oldest item has waited ``max_delay``.

        Sending every few items as they come costs each request's fixed price (ours in
        the kernel's GIL, the server's in CPU) over and over; pacing keeps it to one
        request per interval, waiting for a pause keeps it off cells run back to back
        (Run All, a person's quick re-runs) while a long cell's own metrics still go out
        as it runs, and ``flush()``/``close()`` skip the wait.
        """
        if self._held:
            return False
        if self._retries or self._staged or self._spool.items:
            return True
        if not self._memory and not self._folds:
            return False
        if self._flushing or self._closing or len(self._memory) >= MAX_METRICS:
            return True
        return time.monotonic() >= self._send_at_locked()

    def _send_at_locked(self) -> float:
        """When a partial batch in memory is due (monotonic time)."""
        ready = min(self._active_at + self.quiet, self._oldest_at + self.max_delay)
        return max(self._next_send, ready)

    def _until_due_locked(self) -> float:
        if self._held or not (self._memory or self._folds):
            return self.flush_interval  # release(), a full batch and flush() notify
        return max(0.001, self._send_at_locked() - time.monotonic())

    def _next_batch(self) -> _Batch | None:
        """The batch to send: a failed one first, then staged, spooled, in-memory items."""
        if self._retries:
            return self._retries[0]
        if not self._staged:
            self._stage()
        if not self._staged:
            return None
        return self._take_batch()

    def _stage(self) -> None:
        """Move the oldest items (a spooled chunk, else up to one batch of memory) to staged."""
        with self._cond:
            if self._folds:  # into memory, counted there instead
                folds = len(self._folds)
                merged = self._merged_locked()
                self._memory.extend(merged)
                self._outstanding += len(merged) - folds
                self._cond.notify_all()
            raw = self._spool.read_raw()
            if raw is None:
                for _ in range(min(len(self._memory), MAX_METRICS)):
                    self._staged.append(self._memory.popleft())
                return
        chunk = json.loads(raw)
        with self._cond:
            self._spool.items -= len(chunk)
        self._staged.extend(chunk)

    def _merged_locked(self) -> list[Item]:
        """The tags the queued folds return, the last value of each (run, key); the folds are gone."""
        tags: dict[tuple[str, str], str] = {}
        while self._folds:
            run_id, merge, value = self._folds.popleft()
            try:
                for key, text in merge(value).items():
                    tags[(self._aliases.get(run_id, run_id), str(key))] = str(text)
            except Exception as exc:
                log.warning("hubforge tracking: could not merge %s into run tags: %s", type(value).__name__, exc)
        return [tag_item(run_id, key, text) for (run_id, key), text in tags.items()]

    def _take_batch(self) -> _Batch:
        """Pop staged items of one run up to MLflow's per-request limits."""
        self._next_send = time.monotonic() + self.flush_interval
        return _take_batch(self._staged, self._aliases)

    def _deliver(self, batch: _Batch) -> bool:
        """Send one batch; True when it is settled (acknowledged or definitively rejected)."""
        try:
            if self._client is None:
                self._client = self._factory()
            items = self._unsent(batch) if batch.ambiguous else batch.items
            if items:
                self._send(batch.run_id, items)
        except Exception as exc:
            return self._failed(batch, exc)
        self._settle(batch, delivered=len(batch.items))
        return True

    def _send(self, run_id: str, items: list[Item]) -> None:
        if self._rest is None:
            self._rest = rest_log_batch(self._client) or False
        if self._rest and self._rest(run_id, items):
            return
        from mlflow.entities import Metric, Param, RunTag

        metrics = [Metric(i[KEY], i[VALUE], i[TIMESTAMP], i[STEP]) for i in items if i[KIND] == METRIC]
        params = [Param(i[KEY], i[VALUE]) for i in items if i[KIND] == PARAM]
        tags = [RunTag(i[KEY], i[VALUE]) for i in items if i[KIND] == TAG]
        self._client.log_batch(run_id, metrics=metrics, params=params, tags=tags)

    def _unsent(self, batch: _Batch) -> list[Item]:
        """The items of a batch that failed ambiguously and are not stored yet."""
        stored: Counter[tuple] = Counter()
        for key in {i[KEY] for i in batch.items if i[KIND] == METRIC}:
            for m in self._client.get_metric_history(batch.run_id, key):
                stored[(m.key, _norm(m.value), m.timestamp, m.step)] += 1
        unsent = []
        for item in batch.items:
            if item[KIND] == METRIC:
                ident = (item[KEY], _norm(item[VALUE]), item[TIMESTAMP], item[STEP])
                if stored[ident] > 0:
                    stored[ident] -= 1
                    continue
            unsent.append(item)
        return unsent

    def _failed(self, batch: _Batch, exc: Exception) -> bool:
        self.last_error = f"{type(exc).__name__}: {exc}"[:300]
        if self._retries and self._retries[0] is batch:
            self._retries.popleft()
        if refused(exc):
            if len(batch.items) == 1 or getattr(exc, "error_code", None) in _RUN_REFUSALS or self._run_gone(batch):
                self._refuse(batch, reason(exc))
                return True
            # Bisect so one bad item (a param changing value) costs only itself; the store
            # may have committed part of the request, so both halves are checked first.
            half = len(batch.items) // 2
            self._retries.extendleft(
                [_Batch(batch.run_id, batch.items[half:], True), _Batch(batch.run_id, batch.items[:half], True)]
            )
            return True
        batch.ambiguous = True
        self._retries.appendleft(batch)
        return False

    def _run_gone(self, batch: _Batch) -> bool:
        """Whether the run itself takes no more data (deleted): then no item of it can pass."""
        try:
            return bool(self._client.get_run(batch.run_id).info.lifecycle_stage == "deleted")
        except Exception as exc:
            return refused(exc)

    def _refuse(self, batch: _Batch, why: str) -> None:
        """MLflow said no to ``batch``: hand it to ``on_refused`` (never raises), count it."""
        items = [[i[KIND], batch.run_id, *i[KEY:]] for i in batch.items]
        try:
            if self._on_refused is None:
                raise LookupError("no on_refused")
            self._on_refused(items, why)
        except Exception:
            log.warning("hubforge tracking: MLflow refused %d record(s) of run %s: %s", len(items), batch.run_id, why)
        with self._cond:
            self.refused += len(items)
            self._outstanding -= len(items)
            self._cond.notify_all()

    def _settle(self, batch: _Batch, delivered: int = 0, dropped: int = 0) -> None:
        if self._retries and self._retries[0] is batch:
            self._retries.popleft()
        with self._cond:
            self.delivered += delivered
            self._outstanding -= delivered
            if dropped:
                self._count_dropped_locked(dropped)
            self._cond.notify_all()


def _take_batch(staged: deque[Item], aliases: dict[str, str]) -> _Batch:
    """Pop the oldest items of one run from ``staged`` up to MLflow's per-request limits."""
    first: str = staged[0][RUN]
    batch = _Batch(run_id=aliases.get(first, first))
    counts = {METRIC: 0, PARAM: 0, TAG: 0}
    limits = {METRIC: MAX_METRICS, PARAM: MAX_PARAMS, TAG: MAX_TAGS}
    keys: set[tuple[str, str]] = set()
    size = 0
    while staged:
        item = staged[0]
        kind, run, key = item[KIND], aliases.get(item[RUN], item[RUN]), item[KEY]
        cost = len(key) + len(str(item[VALUE])) + 64
        if run != batch.run_id or counts[kind] >= limits[kind] or size + cost > MAX_BATCH_BYTES:
            break
        if kind != METRIC and (kind, key) in keys:
            break  # MLflow rejects a param key twice in one request
        keys.add((kind, key))
        counts[kind] += 1
        size += cost
        batch.items.append(staged.popleft())
    return batch


def _norm(value: float) -> Any:
    """NaN never equals itself; give it one identity for matching stored metrics."""
    return "nan" if value != value else float(value)
