"""The governance service's collector loop outlives a pass that fails in a way nobody planned
for: the spools keep what it missed, and the next pass collects it."""

from __future__ import annotations

import asyncio
import logging

import pytest

from hubforge.hub.governance import app
from hubforge.hub.governance.app import GovernanceService


class FlakyCollector:
    """Fails its first pass with an error no store raises; counts every pass."""

    def __init__(self, stop: asyncio.Event, loop: asyncio.AbstractEventLoop) -> None:
        self.passes = 0
        self.stop, self.loop = stop, loop

    def collect(self) -> int:
        self.passes += 1
        if self.passes == 1:
            raise RuntimeError("a pass nobody planned for")
        if self.passes == 3:
            self.loop.call_soon_threadsafe(self.stop.set)
        return 0


def test_a_failed_pass_is_logged_and_the_next_one_runs(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(app, "COLLECT_EVERY_S", 0.01)
    service = GovernanceService()

    async def run() -> FlakyCollector:
        stop = asyncio.Event()
        service.collector = FlakyCollector(stop, asyncio.get_running_loop())  # type: ignore[assignment]
        await asyncio.wait_for(service._collect_until(stop), 10)
        return service.collector  # type: ignore[return-value]

    service.log.propagate = True
    with caplog.at_level(logging.ERROR):
        collector = asyncio.run(run())
    assert collector.passes == 3, "the loop went on after the failed pass"
    failed = [r for r in caplog.records if "audit spools failed" in r.getMessage()]
    assert len(failed) == 1 and failed[0].exc_info is not None, "the failure is logged with its traceback"
