"""kill -9 of an emitter in the middle of a burst loses no acknowledged audit event.

A real emitter process bursts events into its spool and prints each sequence
number the spool acknowledged (on disk). The test kills it with SIGKILL mid-burst,
twice, restarting it on the same folder in between, and then reads the folder: every
acknowledged event is there, no number twice, none missing, in order.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from hubforge.events.spool import read_spool

EMITTER = r"""
import sys, time
from hubforge.events.spool import EventSpool
spool = EventSpool(sys.argv[1], "server:alice/")
event = {"user": "alice", "action": "save", "resource": {"type": "file", "id": "a.ipynb"},
         "outcome": "success", "origin": {"observer": "server", "server": "alice/"}, "path": "a.ipynb"}
schema = "https://events.hubforge.dev/server/contents/v1"
print("start", spool.durable_seq, flush=True)
while True:
    for _ in range(200):
        spool.emit(schema, event)
    seq = spool.emit(schema, event)
    if spool.wait_durable(seq, 10):
        print("acked", seq, flush=True)
"""


def burst_then_kill(folder: Path, acks_before_kill: int) -> tuple[int, int]:
    """Run the emitter until it acknowledged ``acks_before_kill`` groups, SIGKILL it; (first
    sequence number it would give, the last one it acknowledged)."""
    proc = subprocess.Popen([sys.executable, "-c", EMITTER, str(folder)], stdout=subprocess.PIPE, text=True, bufsize=1)
    try:
        assert proc.stdout is not None
        start = int(proc.stdout.readline().split()[1])
        acked, deadline = 0, time.monotonic() + 60
        for line in proc.stdout:
            acked = int(line.split()[1])
            acks_before_kill -= 1
            if acks_before_kill <= 0 or time.monotonic() > deadline:
                break
        proc.send_signal(signal.SIGKILL)  # mid-burst: the next group is being queued or written
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert acked > start
    return start, acked


def test_kill_9_mid_burst_loses_no_acknowledged_event_and_stores_none_twice(tmp_path: Path) -> None:
    folder = tmp_path / "spool"
    start1, acked1 = burst_then_kill(folder, acks_before_kill=5)
    after_first = [r["__seq__"] for r in read_spool(folder)]
    start2, acked2 = burst_then_kill(folder, acks_before_kill=5)
    seqs = [r["__seq__"] for r in read_spool(folder)]
    assert start1 == 0 and start2 == len(after_first), "the restart continues after the last kept event"
    assert acked1 <= len(after_first), "every event acknowledged before the first kill is kept"
    assert acked2 <= len(seqs)
    assert seqs == list(range(1, len(seqs) + 1)), "no number twice, none missing, in order"
    assert {r["__emitter__"] for r in read_spool(folder)} == {"server:alice/"}
