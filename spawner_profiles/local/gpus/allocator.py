"""The one-machine GPU allocator: specific GPUs per server, a fair-share queue, quotas.

Every mutating method runs to completion without awaiting, so that within the
hub's one asyncio loop each change of state is atomic; each change is written
to SQLite (:class:`~.store.GpuStore`) before memory is updated, so that a
hub restart finds the same GPUs held and the same usage. Waiting requests live
only in memory: they belong to spawns in progress, which a restart ends.

Serving rule: whenever GPUs are released or a request arrives or leaves, the
waiting requests are walked in fair-share order (:func:`.fairshare.order`); a
request is served if its group is under quota and enough matching GPUs are
free. A request that waits for GPUs reserves the devices it could use, so that
smaller requests behind it cannot take them one by one and starve it.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping
from pathlib import Path
from typing import NamedTuple

from . import fairshare
from .allocation import (
    NO_QUOTAS,
    Allocation,
    AllocationConflict,
    GpuRequest,
    NoSuchGpu,
    Pool,
    QueueStatus,
    QuotaExceeded,
    Quotas,
    Snapshot,
    TierState,
)
from .devices import Gpu, Selector, describe_inventory
from .store import GpuStore, WaitingRow

__all__ = ["WEEK", "GpuAllocator"]

#: The default fair-share window: GPU-hours of the last seven days count.
WEEK = 7 * 24 * 3600


class _Place(NamedTuple):
    """Where a waiter stands; the status a person reads is rendered from it only when shown."""

    position: int
    ahead: int
    hours: float
    quota_held: int | None  # GPUs its group holds on the tier when the quota is what it waits for


class _Waiter:
    """A request in the queue: what ``acquire`` waits on."""

    __slots__ = ("allocation", "arrival", "changed", "place", "pool", "quotas", "request")

    def __init__(self, request: GpuRequest, quotas: Quotas, arrival: float, pool: frozenset[str]):
        self.request = request
        self.quotas = quotas
        self.arrival = arrival
        self.pool = pool  # the devices it can use, looked up once: the queue is walked on every release
        self.place: _Place | None = None
        self.allocation: Allocation | None = None
        self.changed = asyncio.Event()

    @property
    def group(self) -> str:
        return self.request.group


class _Usage:
    """One usage interval in memory (``end`` is set on release)."""

    __slots__ = ("end", "gpus", "group", "start")

    def __init__(self, group: str, start: float, end: float | None, gpus: int):
        self.group, self.start, self.end, self.gpus = group, start, end, gpus


def _pick(candidates: list[Gpu], count: int) -> tuple[Gpu, ...] | None:
    """``count`` devices of one kind, from the smallest pool that has enough (keeps big pools whole)."""
    pools: dict[str, list[Gpu]] = {}
    for gpu in candidates:
        pools.setdefault(gpu.kind, []).append(gpu)
    fitting = [pool for pool in pools.values() if len(pool) >= count]
    if not fitting:
        return None
    return tuple(min(fitting, key=len)[:count])


class GpuAllocator:
    """Allocate this machine's GPUs to notebook servers, queueing fairly when they run out."""

    def __init__(
        self,
        inventory: Iterable[Gpu],
        db_path: str | Path,
        window_s: float = WEEK,
        clock: Callable[[], float] = time.time,
    ):
        self.inventory: tuple[Gpu, ...] = tuple(inventory)
        if len({g.uuid for g in self.inventory}) != len(self.inventory):
            raise ValueError("GPU inventory lists a device twice")
        self.window_s = window_s
        self._clock = clock
        self._store = GpuStore(db_path)
        self._allocs = {a.server_key: a for a in self._store.allocations()}
        self._held = {g.uuid: a.server_key for a in self._allocs.values() for g in a.gpus}
        self._usage: list[_Usage] = []
        self._open: dict[str, _Usage] = {}
        for row in self._store.usage_since(clock() - window_s):
            use = _Usage(row.group, row.start, row.end, row.gpus)
            self._usage.append(use)
            if row.end is None:
                self._open[row.server_key] = use
        self._waiting: dict[str, _Waiter] = {}
        self._order: list[_Waiter] = []
        self._pools: dict[Selector, frozenset[str]] = {}

    # -- reading ---------------------------------------------------------------------------

    def allocations(self) -> dict[str, Allocation]:
        """Current allocations by server key."""
        return dict(self._allocs)

    def queue(self) -> list[QueueStatus]:
        """The waiting requests' statuses, in the order they will be served."""
        return [self._status(w) for w in self._order if w.place is not None]

    def usage(self) -> dict[str, float]:
        """GPU-hours per group in the window ending now."""
        now = self._clock()
        self._usage = [u for u in self._usage if u.end is None or u.end > now - self.window_s]
        rows = ((u.group, u.start, u.end, u.gpus) for u in self._usage)
        return fairshare.group_hours(rows, now, self.window_s)

    def snapshot(self, tiers: Mapping[str, Selector | None] | None = None) -> Snapshot:
        """Free/total per device kind, and per tier given each tier's selector (None: no GPUs)."""
        tiers = tiers or {}
        models: dict[str, list[int]] = {}
        for gpu in self.inventory:
            pool = models.setdefault(gpu.kind, [0, 0])
            pool[0] += gpu.uuid not in self._held
            pool[1] += 1
        held, queued = Counter[str](), Counter[str]()
        for a in self._allocs.values():
            held[a.tier] += len(a.gpus)
        for w in self._waiting.values():
            queued[w.request.tier] += 1
        states = {}
        for tier in sorted({*tiers, *held, *queued}):
            selector = tiers.get(tier)
            pool_uuids = self._pool(selector) if selector else frozenset()
            free = len(pool_uuids - self._held.keys())
            states[tier] = TierState(free, len(pool_uuids), held[tier], queued[tier])
        return Snapshot({kind: Pool(*counts) for kind, counts in models.items()}, states)

    def _pool(self, selector: Selector) -> frozenset[str]:
        """UUIDs of every device that ``selector`` matches (cached: the inventory is fixed)."""
        if selector not in self._pools:
            self._pools[selector] = frozenset(g.uuid for g in self.inventory if selector.matches(g))
        return self._pools[selector]

    # -- admission ---------------------------------------------------------------------------

    def check(self, request: GpuRequest, quotas: Quotas = NO_QUOTAS) -> None:
        """Refuse at once what can never be served; raise a HubforgeError with one line."""
        key = request.server_key
        if key in self._allocs or key in self._waiting:
            held = "holds GPUs" if key in self._allocs else "is already waiting for GPUs"
            raise AllocationConflict(f"server {key!r} {held}; stop it before starting it again")
        running = sum(a.user == request.user for a in self._allocs.values())
        running += sum(w.request.user == request.user for w in self._waiting.values())
        if quotas.user_servers is not None and running >= quotas.user_servers:
            raise QuotaExceeded(
                f"{request.user} already runs {running} of the {quotas.user_servers} servers allowed; "
                "stop one to start another"
            )
        if request.gpus == 0:
            return
        if quotas.group_gpus is not None and request.gpus > quotas.group_gpus:
            raise QuotaExceeded(
                f"{request.tier} allows group {request.group} {quotas.group_gpus} GPUs at once; "
                f"ask for {quotas.group_gpus} or fewer (asked for {request.gpus})"
            )
        selector = request.selector
        kinds = Counter(g.kind for g in self.inventory if selector.matches(g))
        if max(kinds.values(), default=0) < request.gpus:
            raise NoSuchGpu(
                f"{request.tier} asks for {selector.describe(request.gpus)} but this machine has "
                f"{describe_inventory(self.inventory)}; ask for fewer or another tier"
            )

    def allocate_now(self, request: GpuRequest, quotas: Quotas = NO_QUOTAS) -> Allocation | None:
        """Allocate at once if fair share would serve the request now; else None (nothing queued)."""
        self.check(request, quotas)
        if request.gpus == 0:
            return self._grant_cpu(request)
        waiter = self._enqueue(request, quotas)
        if waiter.allocation is None:
            self._leave(waiter)
        return waiter.allocation

    async def acquire(
        self, request: GpuRequest, quotas: Quotas = NO_QUOTAS, resume: str | None = None
    ) -> AsyncGenerator[QueueStatus | Allocation, None]:
        """Wait for GPUs: yield a :class:`QueueStatus` whenever it changes, then the Allocation.

        Raises :class:`QuotaExceeded`, :class:`NoSuchGpu` or
        :class:`AllocationConflict` on the first step for a request that can
        never be served. Cancelling the task or closing the generator before
        the Allocation is yielded leaves the request neither queued nor
        allocated (use ``contextlib.aclosing`` so that closing is immediate).

        A request that has to wait is recorded with ``resume`` (what its caller needs
        to ask for it again) until it is served or withdrawn: if the process dies
        meanwhile, :meth:`interrupted` names it, and asked for again it keeps its
        place (its first arrival).
        """
        self.check(request, quotas)
        if request.gpus == 0:
            yield self._grant_cpu(request)
            return
        earlier = self._store.waiting().get(request.server_key)
        waiter = self._enqueue(request, quotas, earlier.arrival if earlier else None)
        recorded = earlier is not None
        if waiter.allocation is None and resume is not None:
            self._store.wait(WaitingRow(request.server_key, request.user, waiter.arrival, resume))
            recorded = True
        delivered = False
        try:
            shown: _Place | None = None
            while waiter.allocation is None:
                if waiter.place is not None and waiter.place != shown:
                    shown = waiter.place
                    yield self._status(waiter)
                    continue  # the state may have moved while the caller held the status
                waiter.changed.clear()
                await waiter.changed.wait()
            delivered = True
            yield waiter.allocation
        finally:
            if not delivered:
                self._leave(waiter)
            if recorded:
                self._store.done_waiting(request.server_key)

    def interrupted(self, server_key: str) -> WaitingRow | None:
        """The request of ``server_key`` recorded as waiting when no one waits for it here:
        the process that waited for it died (a hub crash)."""
        if server_key in self._waiting:
            return None
        return self._store.waiting().get(server_key)

    def forget_interrupted(self, server_key: str) -> None:
        """Drop an interrupted request that will not be asked for again."""
        if server_key not in self._waiting:
            self._store.done_waiting(server_key)

    # -- mutation (each method runs without awaiting) -----------------------------------------

    def release(self, server_key: str) -> Allocation | None:
        """Free a server's GPUs, close its usage interval and serve the queue; None if it held none."""
        allocation = self._allocs.get(server_key)
        if allocation is None:
            return None
        self._forget([server_key])
        self._dispatch()
        return allocation

    def reconcile(self, alive_server_keys: Iterable[str]) -> list[str]:
        """Free every allocation whose server is not in ``alive_server_keys``; return their keys.

        ``alive_server_keys`` must include servers still starting (they hold
        their GPUs before they answer).
        """
        alive = set(alive_server_keys)
        dead = sorted(key for key in self._allocs if key not in alive)
        if dead:
            self._forget(dead)
            self._dispatch()
        return dead

    def close(self) -> None:
        """Close the database; waiting requests are left to their callers' cancellation."""
        self._store.close()

    def _forget(self, keys: list[str]) -> None:
        now = self._clock()
        self._store.remove(keys, now)
        for key in keys:
            allocation = self._allocs.pop(key)
            for gpu in allocation.gpus:
                self._held.pop(gpu.uuid, None)
            use = self._open.pop(key, None)
            if use is not None:
                use.end = max(use.start, now)

    def _grant_cpu(self, request: GpuRequest) -> Allocation:
        # Recorded like any allocation so that per-user server counts survive a restart.
        allocation = Allocation(request.server_key, request.user, request.group, request.tier, (), self._clock())
        self._commit([allocation])
        return allocation

    def _enqueue(self, request: GpuRequest, quotas: Quotas, arrival: float | None = None) -> _Waiter:
        waiter = _Waiter(request, quotas, self._clock() if arrival is None else arrival, self._pool(request.selector))
        self._waiting[request.server_key] = waiter
        self._dispatch()
        return waiter

    def _leave(self, waiter: _Waiter) -> None:
        """A waiter gave up: take it out of the queue, or give back what it was granted."""
        key = waiter.request.server_key
        if self._waiting.get(key) is waiter:
            del self._waiting[key]
            self._dispatch()  # the devices it reserved may serve someone else now
        elif waiter.allocation is not None and self._allocs.get(key) is waiter.allocation:
            self.release(key)

    def _commit(self, allocations: list[Allocation]) -> None:
        # The database first: if it refuses, memory still matches it.
        self._store.record(allocations)
        for a in allocations:
            self._allocs[a.server_key] = a
            self._held.update((g.uuid, a.server_key) for g in a.gpus)
            if a.gpus:
                use = _Usage(a.group, a.started, None, len(a.gpus))
                self._usage.append(use)
                self._open[a.server_key] = use

    def _dispatch(self) -> None:
        """Serve what can be served in fair-share order, then refresh every waiter's status."""
        if not self._waiting:
            self._order = []
            return
        usage = self.usage()
        now = self._clock()
        ordered = fairshare.order(self._waiting.values(), usage)
        granted = self._serve(ordered, now)
        if granted:
            self._commit([a for _, a in granted])
            for waiter, allocation in granted:
                del self._waiting[waiter.request.server_key]
                waiter.allocation = allocation
                waiter.changed.set()
        self._order = [w for w in ordered if w.allocation is None]
        self._refresh(usage)

    def _serve(self, ordered: list[_Waiter], now: float) -> list[tuple[_Waiter, Allocation]]:
        free = [g for g in self.inventory if g.uuid not in self._held]
        held = Counter[tuple[str, str]]()
        for a in self._allocs.values():
            held[a.group, a.tier] += len(a.gpus)
        reserved: set[str] = set()
        granted = []
        for waiter in ordered:
            if not free:
                break  # nothing left to hand out; statuses are refreshed by the caller
            req, quota = waiter.request, waiter.quotas.group_gpus
            if quota is not None and held[req.group, req.tier] + req.gpus > quota:
                continue  # over its group's quota: waits without holding others back
            matching = [g for g in free if g.uuid in waiter.pool and g.uuid not in reserved]
            picked = _pick(matching, req.gpus)
            if picked is None:
                reserved |= waiter.pool
                continue
            free = [g for g in free if g not in picked]
            held[req.group, req.tier] += req.gpus
            granted.append((waiter, Allocation(req.server_key, req.user, req.group, req.tier, picked, now)))
        return granted

    def _refresh(self, usage: Mapping[str, float]) -> None:
        """Recompute every waiter's place in line; wake those whose place changed."""
        held = Counter[tuple[str, str]]()
        for a in self._allocs.values():
            held[a.group, a.tier] += len(a.gpus)
        in_tier = Counter[str]()
        per_pool = Counter[frozenset[str]]()  # waiters seen so far, by the devices they want
        for waiter in self._order:
            req, quota = waiter.request, waiter.quotas.group_gpus
            in_tier[req.tier] += 1
            ahead = sum(n for pool, n in per_pool.items() if not waiter.pool.isdisjoint(pool))
            per_pool[waiter.pool] += 1
            group_held = held[req.group, req.tier]
            over = quota is not None and group_held + req.gpus > quota
            # Rounded as the message shows it, so that time passing alone wakes nobody.
            place = _Place(in_tier[req.tier], ahead, round(usage.get(req.group, 0.0), 1), group_held if over else None)
            if place != waiter.place:
                waiter.place = place
                waiter.changed.set()

    def _status(self, waiter: _Waiter) -> QueueStatus:
        """The status a person reads, rendered from the waiter's place."""
        req, place = waiter.request, waiter.place
        assert place is not None, "rendered before the first dispatch"
        reason = None
        if place.quota_held is not None:
            reason = (
                f"waiting for your group's {req.tier} quota "
                f"({place.quota_held} of {waiter.quotas.group_gpus} GPUs in use)"
            )
        message = fairshare.status_line(place.position, req.tier, place.hours, self.window_s, reason)
        waiting_for = "quota" if reason else "gpus"
        return QueueStatus(
            req.server_key,
            req.tier,
            place.position,
            place.ahead,
            req.group,
            place.hours,
            self.window_s,
            waiting_for,
            message,
        )
