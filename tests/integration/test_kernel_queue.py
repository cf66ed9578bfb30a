"""The tracking queue against a real ``mlflow server``: outages, spool, disk bound, exactly-once,
pacing, runs named later, and pausing the sender."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.mlflow import MlflowServer, new_run, running_mlflow
from harness.platform import wait_for
from hubforge.server_extension.kernel.queue import TrackingQueue


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """A server of this module's own: its tests stop and start it."""
    yield from running_mlflow(tmp_path_factory.mktemp("mlflow"))


@pytest.fixture
def client(mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch):
    from mlflow import MlflowClient

    # Our queue retries; MLflow's own transport retries would only slow the outage tests. A
    # stopped server refuses at once, so no short timeout is needed: reading back thousands of
    # metrics right after a restart may take MLflow more than 5 s on a loaded machine.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    return MlflowClient(mlflow_server.url)


def test_batches_params_tags_and_metrics(client, tmp_path: Path) -> None:
    run = new_run(client, "basic")
    queue = TrackingQueue(lambda: client, spool_dir=tmp_path, flush_interval=0.05)
    for i in range(2500):
        queue.log_metric(run, "loss", i / 10, step=i)
    for i in range(150):
        queue.log_param(run, f"p{i}", i)
    queue.set_tag(run, "team", "blue")
    assert queue.close(30)
    data = client.get_run(run).data
    assert len(client.get_metric_history(run, "loss")) == 2500
    assert len(data.params) == 150 and data.tags["team"] == "blue"
    assert queue.dropped == 0 and queue.delivered == 2651


def test_outage_mid_stream_delivers_exactly_once(client, mlflow_server: MlflowServer, tmp_path: Path) -> None:
    run = new_run(client, "outage")
    queue = TrackingQueue(lambda: client, spool_dir=tmp_path, flush_interval=0.05, max_backoff=0.5)
    for i in range(1000):
        queue.log_metric(run, "acc", i, step=i)
    assert queue.flush(30)
    mlflow_server.stop()
    for i in range(1000, 3000):
        queue.log_metric(run, "acc", i, step=i)
    wait_for(lambda: queue.last_error is not None, 30, "the queue to notice the outage")
    assert queue.depth > 0
    mlflow_server.start()
    assert queue.close(60)
    steps = sorted(m.step for m in client.get_metric_history(run, "acc"))
    assert steps == list(range(3000)), "every metric exactly once"


def test_ambiguous_failure_is_not_sent_twice(client, tmp_path: Path) -> None:
    """A batch that committed but whose reply was lost is checked, not re-sent."""
    run = new_run(client, "ambiguous")

    class LostReply:
        calls = 0

        def __getattr__(self, name):
            return getattr(client, name)

        def log_batch(self, *args, **kwargs):
            client.log_batch(*args, **kwargs)
            LostReply.calls += 1
            if LostReply.calls == 1:
                raise TimeoutError("reply lost after commit")

    queue = TrackingQueue(LostReply, spool_dir=tmp_path, flush_interval=0.05, max_backoff=0.1)
    for i in range(10):
        queue.log_metric(run, "m", 1.0, timestamp=1000, step=i)
    assert queue.close(30)
    assert LostReply.calls == 1, "the committed batch was found in the history, not re-sent"
    assert len(client.get_metric_history(run, "m")) == 10


def test_memory_bound_spills_to_spool_and_replays(client, mlflow_server: MlflowServer, tmp_path: Path) -> None:
    run = new_run(client, "spool")
    mlflow_server.stop()
    try:
        queue = TrackingQueue(lambda: client, max_memory_items=100, spool_dir=tmp_path, max_backoff=0.3)
        for i in range(1050):
            queue.log_metric(run, "x", i, step=i)
        assert queue.spilled >= 900
        assert queue.spool_path.stat().st_size > 0
        assert len(queue._memory) < 100
    finally:
        mlflow_server.start()
    assert queue.close(60)
    steps = [m.step for m in client.get_metric_history(run, "x")]
    assert sorted(steps) == list(range(1050))
    assert queue.dropped == 0


def test_disk_bound_drops_and_counts(client, mlflow_server: MlflowServer, tmp_path: Path) -> None:
    run = new_run(client, "dropped")
    mlflow_server.stop()
    try:
        queue = TrackingQueue(
            lambda: client, max_memory_items=100, spool_dir=tmp_path, max_spool_bytes=20_000, max_backoff=0.3
        )
        for i in range(2000):
            queue.log_metric(run, "y", i, step=i)
        assert queue.dropped > 0
        assert queue.spool_path.stat().st_size <= 20_000
    finally:
        mlflow_server.start()
    assert queue.close(60)
    stored = len(client.get_metric_history(run, "y"))
    assert stored + queue.dropped == 2000


class Recording:
    """The real client, recording the steps each ``log_batch`` carried; ``gate`` can hold a request."""

    def __init__(self, client):
        self.client = client
        self.batches: list[list[int]] = []
        self.calls = 0
        self.gate = threading.Event()
        self.gate.set()

    def __getattr__(self, name):
        return getattr(self.client, name)

    def log_batch(self, run_id, metrics=(), **kwargs):
        self.calls += 1
        assert self.gate.wait(60)
        self.client.log_batch(run_id, metrics=metrics, **kwargs)
        self.batches.append([m.step for m in metrics])


def test_items_queued_before_the_run_is_named_go_to_it_in_order(client, tmp_path: Path) -> None:
    run = new_run(client, "held")
    rec = Recording(client)
    queue = TrackingQueue(lambda: rec, spool_dir=tmp_path, flush_interval=0.05)
    queue.hold("pending")
    for i in range(10):
        queue.log_metric("pending", "m", i, step=i)
    assert not queue.flush(0.3), "nothing goes out while the run has no name"
    assert rec.calls == 0
    queue.release("pending", run)
    for i in range(10, 20):
        queue.log_metric("pending" if i % 2 else run, "m", i, step=i)
    assert queue.close(30)
    assert [step for batch in rec.batches for step in batch] == list(range(20))
    assert sorted(m.step for m in client.get_metric_history(run, "m")) == list(range(20))


def test_trickling_items_go_out_once_per_interval(client, tmp_path: Path) -> None:
    """Not a request per few items: each costs the kernel's GIL and the server's CPU."""
    run = new_run(client, "paced")
    rec = Recording(client)
    queue = TrackingQueue(lambda: rec, spool_dir=tmp_path, flush_interval=1.0)
    for i in range(300):  # ~1.5 s of a busy notebook's cell metrics
        queue.log_metric(run, "p", i, step=i)
        time.sleep(0.005)
    assert rec.calls <= 2
    assert queue.close(30)
    assert rec.calls <= 3
    assert sorted(step for batch in rec.batches for step in batch) == list(range(300))


def test_cells_back_to_back_hold_partial_batches_until_a_pause(client, tmp_path: Path) -> None:
    """Cells run back to back (Run All) send nothing between them; a pause, or the most an
    item may wait, sends it; a long cell's own metrics still go out while it runs."""
    run = new_run(client, "quiet")
    rec = Recording(client)
    queue = TrackingQueue(lambda: rec, spool_dir=tmp_path, flush_interval=0.05, quiet=0.4, max_delay=60)
    for i in range(40):  # ~1.2 s of short cells, each queueing its metric
        queue.activity()
        queue.log_metric(run, "cell", i, step=i)
        time.sleep(0.03)
    assert rec.calls == 0, "no request between cells run back to back"
    wait_for(lambda: rec.batches, 10, "the pause to send the cells' metrics")
    assert rec.batches == [list(range(40))]

    queue.activity()  # a long cell starts, logging as it trains
    for i in range(40, 70):
        queue.log_metric(run, "cell", i, step=i)
        time.sleep(0.05)
    assert rec.calls >= 2, "a long cell's metrics flow while it runs"
    assert queue.close(30)

    busy = TrackingQueue(lambda: rec, spool_dir=tmp_path / "busy", flush_interval=0.05, quiet=10, max_delay=0.5)
    calls = rec.calls
    for i in range(70, 100):  # never quiet for 10 s: sent once items have waited max_delay
        busy.activity()
        busy.log_metric(run, "cell", i, step=i)
        time.sleep(0.05)
    assert rec.calls > calls, "items wait at most max_delay however busy the kernel is"
    assert busy.close(30)
    assert sorted(m.step for m in client.get_metric_history(run, "cell")) == list(range(100))


def test_refusals_reach_on_refused_with_mlflows_reason_and_cost_only_themselves(client, tmp_path: Path) -> None:
    """A param changing value is refused by MLflow; the rest of its batch still arrives."""
    run = new_run(client, "refused")
    client.log_param(run, "alpha", "1")
    refusals: list[tuple[list, str]] = []
    queue = TrackingQueue(
        lambda: client, spool_dir=tmp_path, flush_interval=0.05, on_refused=lambda i, r: refusals.append((i, r))
    )
    for i in range(20):
        queue.log_metric(run, "loss", i, step=i)
    queue.log_param(run, "alpha", "2")  # MLflow: params may not change within a run
    queue.log_param(run, "beta", "3")
    assert queue.close(30)
    assert [items for items, _ in refusals] == [[["p", run, "alpha", "2"]]]
    assert refusals[0][1].startswith("INVALID_PARAMETER_VALUE: Changing param values is not allowed")
    assert "\n" not in refusals[0][1] and len(refusals[0][1]) <= 300
    assert (queue.refused, queue.dropped, queue.depth) == (1, 0, 0)
    data = client.get_run(run).data
    assert data.params == {"alpha": "1", "beta": "3"}
    assert len(client.get_metric_history(run, "loss")) == 20


def test_a_run_mlflow_no_longer_takes_refuses_the_whole_batch_at_once(client, tmp_path: Path) -> None:
    run = new_run(client, "deleted")
    client.delete_run(run)
    refusals: list[tuple[list, str]] = []
    queue = TrackingQueue(
        lambda: client, spool_dir=tmp_path, flush_interval=0.05, on_refused=lambda i, r: refusals.append((i, r))
    )
    for i in range(300):
        queue.log_metric(run, "loss", i, step=i)
    assert queue.close(30)
    assert len(refusals) == 1 and len(refusals[0][0]) == 300, "not bisected item by item"
    assert queue.refused == 300 and queue.dropped == 0


def test_without_on_refused_a_refusal_is_logged_and_counted(client, tmp_path: Path, caplog) -> None:
    run = new_run(client, "logged")
    client.log_param(run, "alpha", "1")
    queue = TrackingQueue(lambda: client, spool_dir=tmp_path, flush_interval=0.05)
    queue.log_param(run, "alpha", "2")
    with caplog.at_level("WARNING", logger="hubforge.server_extension.kernel.queue"):
        assert queue.close(30)
    assert queue.refused == 1
    assert "MLflow refused 1 record(s)" in caplog.text and "INVALID_PARAMETER_VALUE" in caplog.text


def test_values_json_cannot_carry_still_arrive(client, tmp_path: Path) -> None:
    """The REST fast path sends plain JSON; NaN and infinities take MLflow's own path."""
    run = new_run(client, "nan")
    queue = TrackingQueue(lambda: client, spool_dir=tmp_path, flush_interval=0.01)
    for step, value in enumerate([0.5, float("nan"), float("inf"), -1.0]):
        queue.log_metric(run, "odd", value, step=step)
    queue.log_param(run, "note", "ünïcode ✓")
    queue.set_tag(run, "team", "blue")
    assert queue.close(30)
    values = [m.value for m in sorted(client.get_metric_history(run, "odd"), key=lambda m: m.step)]
    assert values[0] == 0.5 and values[1] != values[1] and values[3] == -1.0
    assert values[2] >= 1.7e308, "MLflow stores infinity as the largest float"
    data = client.get_run(run).data
    assert data.params["note"] == "ünïcode ✓" and data.tags["team"] == "blue"
    assert queue._rest, "an http:// tracking URI takes the REST fast path"
