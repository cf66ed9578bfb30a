"""GPU allocator decision time with 1,000 queued requests: fair share against plain FIFO.

A decision is what happens when a server stops and one GPU frees: record the
release, pick the next request, allocate it a GPU and record that. Ours also
totals each group's GPU-hours over a week of history, orders the queue and
refreshes every waiter's status; the baseline pops the head of a FIFO list
and writes the same rows through the same SQLite store. Both sides run in
the same process, alternating, on fresh database files.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
from collections import deque
from contextlib import aclosing
from pathlib import Path

from bench.report import Result
from hubforge.spawner_profiles.local.gpus import Allocation, GpuAllocator, GpuRequest
from hubforge.spawner_profiles.local.gpus.devices import Gpu, declared
from hubforge.spawner_profiles.local.gpus.store import GpuStore

QUEUED = 1000
GPUS = 8
GROUPS = 20
HISTORY = 2000  # closed usage intervals in the fair-share window
DECISIONS = 30  # timed decisions per side per repeat
MODEL = "nvidia-a100-80gb"


def _request(n: int) -> GpuRequest:
    return GpuRequest(f"user{n}/", f"user{n}", f"group{n % GROUPS}", "training", 1, MODEL)


def _seed_history(path: Path, gpus: list[Gpu], now: float) -> None:
    """A week of finished servers across the groups, so that usage totals have work to do."""
    store = GpuStore(path)
    rng = random.Random(7)
    for i in range(HISTORY):
        start = now - rng.uniform(0, 6.5 * 86400)
        key = f"past{i}/"
        used = tuple(gpus[: rng.randint(1, 4)])
        store.record([Allocation(key, key, f"group{i % GROUPS}", "training", used, start)])
        store.remove([key], start + rng.uniform(600, 8 * 3600))
    store.close()


async def _settle(allocator: GpuAllocator, queued: int) -> None:
    deadline = time.monotonic() + 60
    while len(allocator.queue()) < queued:
        if time.monotonic() > deadline:
            raise RuntimeError("the benchmark's requests did not queue")
        await asyncio.sleep(0)


async def _wait(allocator: GpuAllocator, request: GpuRequest) -> None:
    async with aclosing(allocator.acquire(request)) as steps:
        async for step in steps:
            if isinstance(step, Allocation):
                return


async def _fair_share(root: Path, gpus: list[Gpu]) -> list[float]:
    """Seconds per decision of the fair-share allocator with QUEUED requests waiting."""
    _seed_history(root / "fair.sqlite", gpus, time.time())
    allocator = GpuAllocator(gpus, root / "fair.sqlite")
    holders = deque(a.server_key for n in range(GPUS) if (a := allocator.allocate_now(_request(-1 - n))))
    tasks = [asyncio.create_task(_wait(allocator, _request(n))) for n in range(QUEUED)]
    await _settle(allocator, QUEUED)
    samples = []
    for n in range(QUEUED, QUEUED + DECISIONS):
        before = set(allocator.allocations())
        start = time.perf_counter()
        allocator.release(holders.popleft())
        samples.append(time.perf_counter() - start)
        holders.extend(set(allocator.allocations()) - before)
        tasks.append(asyncio.create_task(_wait(allocator, _request(n))))  # keep QUEUED waiting
        await _settle(allocator, QUEUED)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    allocator.close()
    return samples


async def _fifo(root: Path, gpus: list[Gpu]) -> list[float]:
    """Seconds per decision of a FIFO list pop writing the same rows through the same store."""
    _seed_history(root / "fifo.sqlite", gpus, time.time())
    store = GpuStore(root / "fifo.sqlite")
    loop = asyncio.get_running_loop()
    free = list(gpus)
    holders: deque[Allocation] = deque()
    for n in range(GPUS):
        r = _request(-1 - n)
        holders.append(Allocation(r.server_key, r.user, r.group, r.tier, (free.pop(0),), time.time()))
    store.record(list(holders))
    queue = deque((_request(n), loop.create_future()) for n in range(QUEUED))
    samples = []
    for n in range(QUEUED, QUEUED + DECISIONS):
        start = time.perf_counter()
        done = holders.popleft()
        store.remove([done.server_key], time.time())
        free.extend(done.gpus)
        request, waiter = queue.popleft()
        picked = next(g for g in free if g.model == request.model)
        free.remove(picked)
        allocation = Allocation(request.server_key, request.user, request.group, request.tier, (picked,), time.time())
        store.record([allocation])
        waiter.set_result(allocation)
        samples.append(time.perf_counter() - start)
        holders.append(allocation)
        queue.append((_request(n), loop.create_future()))
    store.close()
    return samples


def run(repeat: int) -> list[Result]:
    """Decision time with 1,000 queued requests, fair share against FIFO, alternating sides."""
    gpus = declared([{"model": MODEL, "count": GPUS}])
    ours: list[float] = []
    fifo: list[float] = []
    with tempfile.TemporaryDirectory(prefix="hubforge-bench-alloc-") as tmp:
        for i in range(repeat):
            root = Path(tmp) / str(i)
            root.mkdir()
            ours.extend(asyncio.run(_fair_share(root, gpus)))
            fifo.extend(asyncio.run(_fifo(root, gpus)))
    ms = 1000.0
    return [
        Result(
            f"GPU decision, {QUEUED:,} queued",
            "ms",
            [s * ms for s in ours],
            [s * ms for s in fifo],
            "FIFO list pop, same SQLite store",
        )
    ]
