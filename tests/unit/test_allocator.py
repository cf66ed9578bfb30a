"""The one-machine GPU allocator on a real SQLite file: allocation, fair-share queue, quotas, restarts."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import aclosing
from pathlib import Path
from typing import TypeVar

import pytest

from hubforge.errors import HubforgeError
from hubforge.spawner_profiles.local.gpus import (
    NO_QUOTAS,
    Allocation,
    AllocationConflict,
    GpuAllocator,
    GpuRequest,
    NoSuchGpu,
    Pool,
    QueueStatus,
    QuotaExceeded,
    Quotas,
    TierState,
    cuda_visible_devices,
    gpu_env,
)
from hubforge.spawner_profiles.local.gpus.devices import Gpu, Selector, declared

A100 = "nvidia-a100-80gb"
T4 = "nvidia-t4"
HOUR = 3600.0
T = TypeVar("T")


class Clock:
    """A settable clock: usage and arrivals in these tests are exact."""

    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def machine() -> list[Gpu]:
    """Four A100s (indices 0-3) and one T4 (index 4)."""
    return declared([{"model": A100, "count": 4}, {"model": T4, "count": 1}])


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "gpus.sqlite"


@pytest.fixture
def allocator(machine: list[Gpu], db: Path, clock: Clock) -> Iterator[GpuAllocator]:
    alloc = GpuAllocator(machine, db, clock=clock)
    yield alloc
    alloc.close()


def req(user: str, gpus: int = 1, model: str | None = A100, group: str = "ds", tier: str = "training") -> GpuRequest:
    return GpuRequest(f"{user}/", user, group, tier, gpus, model)


def held_rows(db: Path) -> list[tuple[str, str]]:
    """What the database itself records as held: (device uuid, server key)."""
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT uuid, server_key FROM held_devices ORDER BY uuid").fetchall()


async def until(condition: Callable[[], bool], what: str, deadline_s: float = 5.0) -> None:
    """Let the loop run until ``condition`` holds (no fixed sleeps)."""
    deadline = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0)


async def first_status(
    allocator: GpuAllocator, request: GpuRequest, quotas: Quotas = NO_QUOTAS, resume: str | None = None
) -> asyncio.Task:
    """Start acquiring in a task (``resume``: what asks for it again) and return it once the request is queued."""

    async def run() -> Allocation:
        async with aclosing(allocator.acquire(request, quotas, resume)) as steps:
            async for step in steps:
                if isinstance(step, Allocation):
                    return step
        raise AssertionError("acquire ended without an allocation")

    task = asyncio.create_task(run())
    await until(lambda: any(s.server_key == request.server_key for s in allocator.queue()), "the request to queue")
    return task


def run(main: Callable[[], Awaitable[T]], deadline_s: float = 20.0) -> T:
    """Run a test's async body; a regression that leaves something waiting fails instead of hanging."""

    async def bounded() -> T:
        return await asyncio.wait_for(main(), deadline_s)

    return asyncio.run(bounded())


# -- allocate and release ---------------------------------------------------------------------


def test_allocate_gives_specific_gpus_of_the_model_asked(allocator: GpuAllocator, db: Path) -> None:
    two = allocator.allocate_now(req("alice", 2))
    t4 = allocator.allocate_now(req("bob", 1, T4))
    assert two is not None and t4 is not None
    assert [g.index for g in two.gpus] == [0, 1] and {g.model for g in two.gpus} == {A100}
    assert cuda_visible_devices(two) == "0,1"
    assert gpu_env(t4) == {"CUDA_VISIBLE_DEVICES": "4", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    assert held_rows(db) == sorted([(g.uuid, "alice/") for g in two.gpus] + [(t4.gpus[0].uuid, "bob/")])
    assert allocator.release("alice/") == two
    assert allocator.release("alice/") is None  # releasing twice is harmless
    assert held_rows(db) == [(t4.gpus[0].uuid, "bob/")]
    again = allocator.allocate_now(req("carol", 4))
    assert again is not None and cuda_visible_devices(again) == "0,1,2,3"


def test_any_model_means_one_model_from_the_smallest_pool_that_fits(allocator: GpuAllocator) -> None:
    one = allocator.allocate_now(req("alice", 1, model=None))
    two = allocator.allocate_now(req("bob", 2, model=None))
    assert one is not None and [g.model for g in one.gpus] == [T4]  # leaves the A100s whole
    assert two is not None and [g.model for g in two.gpus] == [A100, A100]


def test_zero_gpus_are_granted_at_once_without_touching_gpus(allocator: GpuAllocator, db: Path) -> None:
    for user in ("a", "b", "c", "d"):
        assert allocator.allocate_now(req(user, 1, A100)) is not None  # the A100s are all taken
    cpu = allocator.allocate_now(req("eve", 0, tier="interactive"))
    assert cpu is not None and cpu.gpus == ()
    assert cuda_visible_devices(cpu) == ""  # hides every GPU from a CPU-only server
    assert len(held_rows(db)) == 4
    assert allocator.snapshot().models[A100] == Pool(free=0, total=4)

    async def main() -> None:
        steps = [s async for s in allocator.acquire(req("fay", 0, tier="interactive"))]
        assert len(steps) == 1 and isinstance(steps[0], Allocation) and steps[0].gpus == ()

    run(main)


def test_mig_slices_are_given_by_uuid(db: Path, clock: Clock) -> None:
    slices = [Gpu(0, f"MIG-{i}", "nvidia-a100-40gb", 4864, "1g.5gb") for i in range(3)]
    allocator = GpuAllocator([*slices, Gpu(1, "GPU-1", "nvidia-a100-40gb", 40960)], db, clock=clock)
    got = allocator.allocate_now(GpuRequest("alice/", "alice", "ds", "interactive", 2, mig_profile="1g.5gb"))
    assert got is not None and cuda_visible_devices(got) == "MIG-0,MIG-1"
    whole = allocator.allocate_now(GpuRequest("bob/", "bob", "ds", "training", 1, "nvidia-a100-40gb"))
    assert whole is not None and cuda_visible_devices(whole) == "1"  # a whole-GPU request never gets a slice
    allocator.close()


def test_snapshot_counts_per_model_and_tier(allocator: GpuAllocator) -> None:
    tiers = {"training": Selector(A100), "interactive": Selector(T4), "cpu": None}
    allocator.allocate_now(req("alice", 3))
    allocator.allocate_now(req("bob", 1, T4, tier="interactive"))
    allocator.allocate_now(req("carol", 0, tier="cpu"))

    async def main() -> None:
        task = await first_status(allocator, req("dave", 2))
        snap = allocator.snapshot(tiers)
        assert snap.models == {A100: Pool(free=1, total=4), T4: Pool(free=0, total=1)}
        assert snap.tiers == {
            "cpu": TierState(free=0, total=0, held=0, queued=0),
            "interactive": TierState(free=0, total=1, held=1, queued=0),
            "training": TierState(free=1, total=4, held=3, queued=1),
        }
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(main)


# -- refusals and quotas ----------------------------------------------------------------------


def _refused(allocator: GpuAllocator, request: GpuRequest, quotas: Quotas, error: type[HubforgeError]) -> str:
    before = allocator.allocations()
    with pytest.raises(error) as info:
        allocator.allocate_now(request, quotas)

    async def main() -> None:
        with pytest.raises(error):
            await anext(allocator.acquire(request, quotas))

    run(main)
    message = str(info.value)
    assert "\n" not in message and message
    assert allocator.queue() == [] and allocator.allocations() == before  # nothing queued or allocated
    return message


def test_more_gpus_than_the_group_quota_is_refused_at_once(allocator: GpuAllocator) -> None:
    message = _refused(allocator, req("alice", 3), Quotas(group_gpus=2), QuotaExceeded)
    assert message == "training allows group ds 2 GPUs at once; ask for 2 or fewer (asked for 3)"


def test_more_gpus_than_the_machine_has_is_refused_at_once(allocator: GpuAllocator) -> None:
    message = _refused(allocator, req("alice", 5), Quotas(), NoSuchGpu)
    assert message == (
        "training asks for 5 nvidia-a100-80gb GPUs but this machine has 4 nvidia-a100-80gb, 1 nvidia-t4; "
        "ask for fewer or another tier"
    )
    assert "nvidia-h100-80gb" in _refused(allocator, req("bob", 1, "nvidia-h100-80gb"), Quotas(), NoSuchGpu)
    # Four A100s and a T4 are five GPUs, but no one server gets two models.
    _refused(allocator, req("carol", 5, model=None), Quotas(), NoSuchGpu)


def test_user_server_limit_is_refused_at_once(allocator: GpuAllocator) -> None:
    quotas = Quotas(user_servers=2)
    assert allocator.allocate_now(req("alice", 0, tier="interactive"), quotas) is not None
    assert allocator.allocate_now(GpuRequest("alice/big", "alice", "ds", "training", 1, A100), quotas) is not None
    message = _refused(allocator, GpuRequest("alice/third", "alice", "ds", "training", 1, A100), quotas, QuotaExceeded)
    assert message == "alice already runs 2 of the 2 servers allowed; stop one to start another"
    assert allocator.allocate_now(req("bob", 1), quotas) is not None  # the limit is per user


def test_the_same_server_cannot_hold_twice(allocator: GpuAllocator) -> None:
    allocator.allocate_now(req("alice", 1))
    assert "'alice/' holds GPUs" in _refused(allocator, req("alice", 1), Quotas(), AllocationConflict)


def test_over_the_current_group_quota_waits_without_holding_others_back(allocator: GpuAllocator) -> None:
    quotas = Quotas(group_gpus=2)

    async def main() -> None:
        assert allocator.allocate_now(req("alice", 2, group="ds"), quotas) is not None
        waiting = await first_status(allocator, req("bob", 1, group="ds"), quotas)
        [status] = allocator.queue()
        assert status.waiting_for == "quota"
        assert status.message.endswith("waiting for your group's training quota (2 of 2 GPUs in use)")
        # Another group, arriving later, is served: GPUs are free, only ds is at its quota.
        assert allocator.allocate_now(req("carol", 1, group="ml"), quotas) is not None
        assert not waiting.done()
        allocator.release("alice/")
        got = await waiting
        assert got.server_key == "bob/" and allocator.queue() == []

    run(main)


# -- the fair-share queue ---------------------------------------------------------------------


def _use(allocator: GpuAllocator, clock: Clock, group: str, gpu_hours: float) -> None:
    """Give ``group`` a usage history of ``gpu_hours`` on one GPU, ending now."""
    key = f"history-{group}"
    assert allocator.allocate_now(GpuRequest(key, key, group, "training", 1, A100)) is not None
    clock.advance(gpu_hours * HOUR)
    allocator.release(key)


def test_fifty_concurrent_acquires_share_four_gpus_in_fair_share_order(
    allocator: GpuAllocator, clock: Clock, db: Path
) -> None:
    usage = {"g0": 30.0, "g1": 0.0, "g2": 12.0, "g3": 5.0, "g4": 20.0}
    for group, hours in usage.items():
        if hours:
            _use(allocator, clock, group, hours)
    assert allocator.usage() == pytest.approx({g: h for g, h in usage.items() if h})
    requests = [req(f"u{i:02d}", 1, group=f"g{i % 5}") for i in range(50)]
    received: dict[str, list[QueueStatus | Allocation]] = {r.server_key: [] for r in requests}
    violations: list[str] = []

    def check_invariant() -> None:
        devices = [g.uuid for a in allocator.allocations().values() for g in a.gpus]
        if len(devices) > 4 or len(set(devices)) != len(devices) or len(held_rows(db)) > 4:
            violations.append(f"{len(devices)} devices held: {devices}")

    async def spawn(request: GpuRequest) -> None:
        async with aclosing(allocator.acquire(request)) as steps:
            async for step in steps:
                check_invariant()
                received[request.server_key].append(step)

    async def main() -> list[str]:
        tasks = [asyncio.create_task(spawn(r)) for r in requests]
        await until(lambda: len(allocator.queue()) == 46, "46 requests to queue")
        served = list(allocator.allocations())
        while len(served) < 50:
            head = allocator.queue()[0].server_key
            allocator.release(served[len(served) - 4])  # the oldest still running
            check_invariant()
            [new] = [k for k in allocator.allocations() if k not in served]
            assert new == head  # the next one served is the one the queue showed first
            served.append(new)
        await asyncio.gather(*tasks)
        return served

    served = run(main)
    assert violations == []
    # The first four found free GPUs; the rest were served by group usage, then arrival.
    rest = sorted(requests[4:], key=lambda r: usage[r.group])
    assert served == [r.server_key for r in requests[:4] + rest]
    for key, steps in received.items():
        allocations = [s for s in steps if isinstance(s, Allocation)]
        assert len(allocations) == 1 and steps[-1] is allocations[0], key  # served exactly once, last
        positions = [s.position for s in steps if isinstance(s, QueueStatus)]
        assert positions == sorted(positions, reverse=True)  # only ever moves forward


def test_queue_status_says_where_and_why(allocator: GpuAllocator, clock: Clock) -> None:
    _use(allocator, clock, "ds", 12)

    async def main() -> None:
        for user in ("a", "b", "c", "d"):
            allocator.allocate_now(req(user, 1, group="ml"))
        tasks = [await first_status(allocator, req(user, 1, group="ds")) for user in ("x", "y", "z")]
        hpo = await first_status(allocator, req("w", 1, group="ds", tier="hpo"))
        third, hpo_status = allocator.queue()[2], allocator.queue()[3]
        assert third.message == "3rd in line for training; your group used 12 GPU-hours in the last 7 days"
        assert (third.position, third.ahead, third.group_gpu_hours, third.waiting_for) == (3, 2, 12.0, "gpus")
        # hpo has its own line, but the same GPUs: three training requests are ahead of it.
        assert (hpo_status.tier, hpo_status.position, hpo_status.ahead) == ("hpo", 1, 3)
        for task in [*tasks, hpo]:
            task.cancel()
        await asyncio.gather(*tasks, hpo, return_exceptions=True)
        assert allocator.queue() == []

    run(main)


def test_the_lighter_group_goes_first_even_when_it_arrives_later(allocator: GpuAllocator, clock: Clock) -> None:
    async def main() -> None:
        for user in ("a", "b", "c"):
            allocator.allocate_now(req(user, 1, group="heavy"))
        allocator.allocate_now(req("d", 1, group="light"))
        clock.advance(10 * HOUR)  # heavy has used 30 GPU-hours since, light 10
        heavy = await first_status(allocator, req("e", 1, group="heavy"))
        clock.advance(60)
        light = await first_status(allocator, req("f", 1, group="light"))
        assert [s.server_key for s in allocator.queue()] == ["f/", "e/"]
        allocator.release("a/")
        assert (await light).server_key == "f/" and not heavy.done()
        allocator.release("b/")
        assert (await heavy).server_key == "e/"

    run(main)


def test_a_big_request_is_not_starved_by_small_ones_behind_it(allocator: GpuAllocator) -> None:
    async def main() -> None:
        for user in ("a", "b", "c"):
            allocator.allocate_now(req(user, 1))
        big = await first_status(allocator, req("big", 2))
        # One A100 is free, but the 2-GPU request ahead has reserved it.
        assert allocator.allocate_now(req("small", 1)) is None
        small = await first_status(allocator, req("small", 1))
        allocator.release("a/")
        assert [g.index for g in (await big).gpus] == [0, 3]
        assert not small.done()
        allocator.release("b/")
        assert (await small).server_key == "small/"

    run(main)


# -- cancellation -----------------------------------------------------------------------------


def _fill(allocator: GpuAllocator) -> None:
    for user in ("a", "b", "c", "d"):
        assert allocator.allocate_now(req(user, 1)) is not None


def test_cancelling_a_waiting_acquire_leaves_nothing(allocator: GpuAllocator, db: Path) -> None:
    _fill(allocator)

    async def main() -> None:
        task = await first_status(allocator, req("alice", 1))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert allocator.queue() == []
        allocator.release("a/")  # the freed GPU goes to nobody: alice left
        assert "alice/" not in allocator.allocations() and allocator.snapshot().models[A100].free == 1

    run(main)
    assert "alice/" not in {key for _, key in held_rows(db)}


def test_closing_the_generator_leaves_nothing(allocator: GpuAllocator) -> None:
    _fill(allocator)

    async def main() -> None:
        steps = allocator.acquire(req("alice", 1))
        assert isinstance(await anext(steps), QueueStatus)
        await steps.aclose()
        assert allocator.queue() == []

    run(main)


def test_cancelled_after_being_granted_but_before_receiving_gives_the_gpus_back(allocator: GpuAllocator) -> None:
    _fill(allocator)

    async def main() -> None:
        task = await first_status(allocator, req("alice", 1))
        allocator.release("a/")
        assert "alice/" in allocator.allocations()  # granted while the task has not run yet
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert "alice/" not in allocator.allocations()
        assert allocator.snapshot().models[A100].free == 1

    run(main)


def test_cancelling_a_reserving_request_serves_the_one_behind(allocator: GpuAllocator) -> None:
    async def main() -> None:
        for user in ("a", "b", "c"):
            allocator.allocate_now(req(user, 1))
        big = await first_status(allocator, req("big", 2))
        small = await first_status(allocator, req("small", 1))
        big.cancel()
        assert (await small).server_key == "small/"
        with pytest.raises(asyncio.CancelledError):
            await big

    run(main)


# -- restarts ---------------------------------------------------------------------------------


def test_allocations_and_usage_survive_a_restart(machine: list[Gpu], db: Path, clock: Clock) -> None:
    first = GpuAllocator(machine, db, clock=clock)
    running = first.allocate_now(req("alice", 2, group="ds"))
    first.allocate_now(req("bob", 1, group="ml"))
    clock.advance(2 * HOUR)
    first.release("bob/")
    first.close()

    clock.advance(HOUR)
    second = GpuAllocator(machine, db, clock=clock)
    assert second.allocations() == {"alice/": running}
    assert second.usage() == pytest.approx({"ds": 6.0, "ml": 2.0})  # alice's 2 GPUs still count
    assert second.snapshot().models[A100] == Pool(free=2, total=4)
    got = second.allocate_now(req("carol", 2))
    assert got is not None and {g.index for g in got.gpus}.isdisjoint({g.index for g in running.gpus})
    assert second.allocate_now(req("dave", 1)) is None  # alice's GPUs are still hers
    second.release("alice/")
    second.close()

    clock.advance(HOUR)
    third = GpuAllocator(machine, db, clock=clock)
    assert third.usage() == pytest.approx({"ds": 6.0 + 2.0, "ml": 2.0})  # alice's interval closed, carol's runs
    third.close()


def test_a_request_waiting_when_the_process_dies_is_named_and_keeps_its_place(
    machine: list[Gpu], db: Path, clock: Clock
) -> None:
    """The hub dies while alice and then bob wait: the next process names both, with what to
    ask for again; asked for again (bob first), alice still goes first; served, nothing is left."""
    first = GpuAllocator(machine, db, clock=clock)
    _fill(first)

    async def before_the_crash() -> None:
        alice = await first_status(first, req("alice", 1), NO_QUOTAS, '{"profile": "training"}')
        clock.advance(60)
        bob = await first_status(first, req("bob", 1), NO_QUOTAS, '{"profile": "training", "gpus": 1}')
        assert first.interrupted("alice/") is None, "alice's request is waited for here"
        for task in (alice, bob):  # the process dies: nobody waits any more, the record stays
            task.cancel()

    run(before_the_crash)
    # Cancelling is what a *living* process does when a spawn is stopped: it forgets the record.
    assert first.interrupted("alice/") is None
    first.close()

    # Now a crash for real: a process records both waits and dies without withdrawing them.
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            crashed = GpuAllocator(machine, db, clock=clock)
            _fill_again(crashed)

            async def crash() -> None:
                await first_status(crashed, req("alice", 1), NO_QUOTAS, '{"profile": "training"}')
                clock.advance(60)
                await first_status(crashed, req("bob", 1), NO_QUOTAS, '{"profile": "training", "gpus": 1}')
                os._exit(0)

            asyncio.run(crash())
        finally:
            os._exit(1)
    assert os.waitpid(pid, 0)[1] == 0

    clock.advance(600)
    after = GpuAllocator(machine, db, clock=clock)
    alice, bob = after.interrupted("alice/"), after.interrupted("bob/")
    assert alice is not None and alice.resume == '{"profile": "training"}'
    assert bob is not None and bob.arrival == alice.arrival + 60

    async def asked_again() -> None:
        bob_task = await first_status(after, req("bob", 1), NO_QUOTAS, "{}")
        alice_task = await first_status(after, req("alice", 1), NO_QUOTAS, "{}")
        assert [s.server_key for s in after.queue()] == ["alice/", "bob/"], "arrival order kept"
        after.release("a/")
        assert (await alice_task).server_key == "alice/" and not bob_task.done()
        after.release("b/")
        assert (await bob_task).server_key == "bob/"

    run(asked_again)
    assert after.interrupted("alice/") is None and after.interrupted("bob/") is None
    after.forget_interrupted("carol/")  # nothing to forget: no error
    after.close()


def _fill_again(allocator: GpuAllocator) -> None:
    for key in list(allocator.allocations()):
        allocator.release(key)
    _fill(allocator)


def test_usage_older_than_the_window_stops_counting(machine: list[Gpu], db: Path, clock: Clock) -> None:
    allocator = GpuAllocator(machine, db, window_s=24 * HOUR, clock=clock)
    _use(allocator, clock, "ds", 10)
    clock.advance(20 * HOUR)
    assert allocator.usage() == pytest.approx({"ds": 4.0})
    clock.advance(5 * HOUR)
    assert allocator.usage() == {}
    allocator.close()


def test_reconcile_frees_servers_that_are_gone(machine: list[Gpu], db: Path, clock: Clock) -> None:
    first = GpuAllocator(machine, db, clock=clock)
    first.allocate_now(req("alice", 2))
    first.allocate_now(req("bob", 1))
    first.allocate_now(req("carol", 0, tier="cpu"))
    first.close()

    # After a restart the hub finds only bob's server alive (alice's was killed with -9).
    clock.advance(HOUR)
    second = GpuAllocator(machine, db, clock=clock)
    assert second.reconcile({"bob/"}) == ["alice/", "carol/"]
    assert list(second.allocations()) == ["bob/"]
    assert second.snapshot().models[A100] == Pool(free=3, total=4)
    assert [key for _, key in held_rows(db)] == ["bob/"]
    hours = second.usage()["ds"]
    clock.advance(HOUR)
    assert second.usage()["ds"] == pytest.approx(hours + 1.0)  # only bob's GPU still counts
    assert second.reconcile({"bob/"}) == []
    second.close()


def test_reconcile_serves_the_queue(allocator: GpuAllocator) -> None:
    _fill(allocator)

    async def main() -> None:
        waiting = await first_status(allocator, req("alice", 2))
        allocator.reconcile({"a/", "b/"})
        assert [g.index for g in (await waiting).gpus] == [2, 3]

    run(main)


def test_public_api_is_explicit_and_documented() -> None:
    from hubforge.spawner_profiles.local import gpus
    from hubforge.spawner_profiles.local.gpus import allocation, allocator, devices, fairshare, store

    for module in (gpus, allocation, allocator, devices, fairshare, store):
        assert module.__doc__ and module.__all__, module.__name__
        for name in module.__all__:
            value = getattr(module, name)
            if callable(value):
                assert value.__doc__, f"{module.__name__}.{name} has no docstring"
