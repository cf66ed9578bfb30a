"""The scheduler (issue 14): how late 500 jobs due in the same minute start, and what it costs idle.

Both in this process, on the real store (SQLite in a temporary folder) and the real
:class:`~hubforge.hub.scheduler.app.Scheduler`; what a run executes is left out (a
run's start is what is timed: papermill's own start is the same for any scheduler).

- **trigger delay**: 500 jobs whose next occurrence is the same moment; from that moment
  to each run's start, p50 and p99, against the same number of ``loop.call_at`` timers
  set for one moment in a bare asyncio loop (the least any asyncio scheduler can do).
- **idle CPU**: the scheduler's loop for ``IDLE_S`` seconds with 500 jobs none of which is
  due (ticking every second, as in service), against a bare loop waking every second;
  CPU seconds, and per idle hour.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.report import Result
from harness.apps import notebook
from hubforge.hub.scheduler.app import Scheduler
from hubforge.hub.scheduler.schedule import parse_schedule
from hubforge.hub.scheduler.store import Job, Run, SchedulerStore, jobs

__all__ = ["run"]

JOBS = 500
IDLE_S = 30


class _Timed(Scheduler):
    """The scheduler with each run's start timed instead of executed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.started: list[float] = []

    async def _run(self, job: Job, run: Run) -> None:
        self.started.append(time.time())
        self.tasks.pop(job.id, None)


def _store(root: Path, due: datetime) -> SchedulerStore:
    store = SchedulerStore(f"sqlite:///{root / 'scheduler.sqlite'}", root / "files")
    body = json.dumps(notebook("Bench")).encode()
    schedule = parse_schedule({"cron": "* * * * *"})
    for index in range(JOBS):
        store.create_job(
            f"user{index % 50}", f"job-{index}", body, "bench.ipynb", parameters={}, schedule=schedule,
            tier="interactive", timeout_s=600, retries=0, backoff_s=0, concurrency="skip", catch_up="none",
            now=due - timedelta(seconds=30),
        )  # fmt: skip
    return store


async def _ours(store: SchedulerStore, due: datetime) -> list[float]:
    """The service's own loop, started before the moment; ms from the moment to each start."""
    scheduler = _Timed(store, tokens=None, services={})  # type: ignore[arg-type]
    stop = asyncio.Event()
    loop = asyncio.create_task(scheduler.run_forever(stop))
    while len(scheduler.started) < JOBS:
        await asyncio.sleep(0.05)
    stop.set()
    await loop
    await scheduler.close()
    return [(moment - due.timestamp()) * 1000 for moment in scheduler.started]


async def _bare(count: int) -> list[float]:
    loop = asyncio.get_running_loop()
    due = loop.time() + 0.5
    fired: list[float] = []
    done = asyncio.Event()

    def fire() -> None:
        fired.append((loop.time() - due) * 1000)
        if len(fired) == count:
            done.set()

    for _ in range(count):
        loop.call_at(due, fire)
    await done.wait()
    return fired


async def _idle_cpu(store: SchedulerStore | None) -> float:
    started = time.process_time()
    stop = asyncio.Event()
    if store is not None:
        scheduler = Scheduler(store, tokens=None, services={})  # type: ignore[arg-type]
        task = asyncio.create_task(scheduler.run_forever(stop))
    else:

        async def tick_idle() -> None:
            while not stop.is_set():
                await asyncio.sleep(1.0)

        task = asyncio.create_task(tick_idle())
    await asyncio.sleep(IDLE_S)
    stop.set()
    await task
    return time.process_time() - started


def _p99(samples: list[float]) -> float:
    return sorted(samples)[int(len(samples) * 0.99) - 1]


def run(repeat: int) -> list[Result]:
    """Trigger delay p50/p99 and idle CPU, ``repeat`` rounds each."""
    ours_p50, ours_p99, bare_p50, bare_p99, idle, bare_idle = [], [], [], [], [], []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory(prefix="hubforge-bench-scheduler-") as tmp:
            due = (datetime.now(UTC) + timedelta(seconds=5)).replace(microsecond=0)
            store = _store(Path(tmp), due)
            # The jobs' first occurrence is the next whole minute: move them all to ``due``.
            with store.engine.begin() as conn:
                conn.execute(jobs.update().values(next_due=due))
            delays = asyncio.run(_ours(store, due))
            baseline = asyncio.run(_bare(JOBS))
            ours_p50.append(statistics.median(delays))
            ours_p99.append(_p99(delays))
            bare_p50.append(statistics.median(baseline))
            bare_p99.append(_p99(baseline))
            # Idle: every job's next occurrence an hour away.
            with store.engine.begin() as conn:
                conn.execute(jobs.update().values(next_due=datetime.now(UTC) + timedelta(hours=1)))
            idle.append(asyncio.run(_idle_cpu(store)) * 3600 / IDLE_S)
            bare_idle.append(max(asyncio.run(_idle_cpu(None)) * 3600 / IDLE_S, 0.001))
            store.dispose()
    per_hour = "CPU s per idle hour"
    return [
        Result("scheduler: 500 due, delay p50", "ms", ours_p50, bare_p50, "500 asyncio timers, one moment"),
        Result("scheduler: 500 due, delay p99", "ms", ours_p99, bare_p99, "500 asyncio timers, one moment"),
        Result(f"scheduler idle, 500 jobs ({per_hour})", "s", idle, bare_idle, "a bare loop waking every second"),
    ]
