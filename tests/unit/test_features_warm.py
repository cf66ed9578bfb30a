"""The features service opens its feature store ahead of the first read once somebody uses
the features: the catalog browsed, a read asked for. Importing Feast takes seconds (a minute
on a busy machine), which the first value read would otherwise wait for."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from hubforge.hub.features.online import StoreReader


class Reader(StoreReader):
    function = "online_values"
    thread_name = "warm-test"

    def __init__(self, fail: bool = False) -> None:
        super().__init__(Path("."))
        self.fail = fail
        self.opened = 0
        self.release = threading.Event()

    def _open(self) -> Any:  # what the real one does, with a store that takes its time
        with self._lock:
            if self._store is None:
                self.release.wait(10)
                self.opened += 1
                if self.fail:
                    raise OSError("the registry is not there")
                self._store = object()
            return self._store


def test_warming_returns_at_once_and_opens_the_store_once() -> None:
    reader = Reader()
    began = time.monotonic()
    reader.warm()
    reader.warm()  # a second browser: nothing more
    assert time.monotonic() - began < 1, "the request that warms does not wait for Feast"
    (opening,) = [t for t in threading.enumerate() if t.name == "warm-test-open"]
    assert opening.daemon, "a service stopping meanwhile does not wait for the import"
    reader.release.set()
    store = reader._thread.submit(reader._open).result(10)  # a read, queued behind the warm-up
    assert reader.opened == 1 and reader._open() is store
    reader.warm()
    assert reader.opened == 1, "an open store is not opened again"
    reader.close()


def test_a_store_that_fails_to_open_is_left_to_the_first_read() -> None:
    reader = Reader(fail=True)
    reader.release.set()
    reader.warm()
    deadline = time.monotonic() + 10
    while reader.opened == 0 and time.monotonic() < deadline:  # the warm-up runs
        time.sleep(0.01)
    assert reader.opened == 1 and reader._store is None
    try:
        reader._open()
    except OSError as exc:
        assert "registry" in str(exc)  # the read reports it as a read does
    else:
        raise AssertionError("the read should fail as the warm-up did")
    reader.close()
