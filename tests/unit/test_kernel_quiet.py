"""What hubforge's background threads print goes to the kernel's log; the cells' own output is untouched."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest

from hubforge.server_extension.kernel.quiet import QuietStream, quiet_thread


class _Stream:
    """The parts of ipykernel's ``OutStream`` that a cell's output goes through."""

    def __init__(self) -> None:
        self.written: list[str] = []
        self.flushes = 0
        self.parent: Any = None
        self.encoding = "utf-8"

    def write(self, text: str) -> int:
        self.written.append(text)
        return len(text)

    def flush(self) -> None:
        self.flushes += 1

    def set_parent(self, parent: Any) -> None:
        self.parent = parent


def _in_thread(name: str, target: Any, mark: bool = False) -> None:
    def run() -> None:
        if mark:
            quiet_thread()
        target()

    thread = threading.Thread(target=run, name=name)
    thread.start()
    thread.join()


def test_the_cells_thread_writes_through_and_background_threads_go_to_the_log(caplog) -> None:
    stream = _Stream()
    quiet = QuietStream(stream, "stdout")
    caplog.set_level(logging.INFO, logger="hubforge.tracking.output")
    assert quiet.write("from the cell\n") == len("from the cell\n")
    _in_thread("hubforge-open-run", lambda: quiet.write("run link\n"))
    _in_thread("MLflowAsyncLogging", lambda: quiet.write("progress\n"))
    _in_thread("worker", lambda: quiet.write("marked\n"), mark=True)
    _in_thread("the person's thread", lambda: quiet.write("theirs\n"))
    assert stream.written == ["from the cell\n", "theirs\n"]
    assert [r.getMessage() for r in caplog.records] == ["stdout: run link", "stdout: progress", "stdout: marked"]


def test_a_mark_ends_with_its_thread() -> None:
    """The next thread may get the id of one that was marked and has ended (Linux reuses
    them at once): the person's thread writes into the cell all the same."""
    stream = _Stream()
    quiet = QuietStream(stream, "stdout")
    for i in range(20):
        _in_thread("worker", lambda: quiet.write("marked\n"), mark=True)
        _in_thread("the person's thread", lambda i=i: quiet.write(f"theirs {i}\n"))
    assert stream.written == [f"theirs {i}\n" for i in range(20)]


def test_what_ipykernel_calls_in_every_cell_is_the_streams_own_method() -> None:
    """No frame of ours on the flushes and set_parent calls every cell makes: they are the
    stream's bound methods themselves."""
    stream = _Stream()
    quiet = QuietStream(stream, "stderr")
    assert quiet.flush == stream.flush and quiet.set_parent == stream.set_parent
    quiet.flush()
    quiet.set_parent({"msg_id": "1"})
    assert (stream.flushes, stream.parent) == (1, {"msg_id": "1"})
    assert quiet.encoding == "utf-8"  # everything else is the stream's too


def test_a_plain_stream_without_set_parent_keeps_its_own_attributes() -> None:
    class Plain:
        def __init__(self) -> None:
            self.flushes = 0

        def write(self, text: str) -> int:
            return len(text)

        def flush(self) -> None:
            self.flushes += 1

    plain = Plain()
    quiet = QuietStream(plain, "stdout")
    quiet.flush()
    assert plain.flushes == 1
    with pytest.raises(AttributeError):
        quiet.set_parent  # noqa: B018 - the stream has none, so neither does its stand-in
