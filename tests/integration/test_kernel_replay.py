"""Run data kept by kernels that ended while MLflow was away, replayed when it is back.

Real ``mlflow server`` processes (stopped and restarted on the same port and
database), real ipykernel kernels, a real ``jupyter-server`` that starts the
replay itself, and the ``python -m hubforge.server_extension.replay`` command.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.kernel import Kernel, kernel_env, write_notebook
from harness.mlflow import MlflowServer, new_run
from harness.platform import free_port, wait_for
from hubforge.server_extension.kernel.queue import TrackingQueue
from hubforge.server_extension.kernel.tracker import PENDING
from hubforge.server_extension.pending import (
    PendingRun,
    list_pending,
    read_items,
    read_pending,
    write_pending,
)
from hubforge.server_extension.replay import EX_TEMPFAIL, replay

REPLAY = [sys.executable, "-m", "hubforge.server_extension.replay"]


@pytest.fixture
def client(mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch):
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    return MlflowClient(mlflow_server.url)


#: MLflow's client fails at once while its server is down; hubforge's own retries are what is tested.
OUTAGE = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}


def tracked_kernel(url: str, root: Path, notebook: str) -> Kernel:
    return Kernel(kernel_env(url, root, "yuki", notebook, **OUTAGE), root)


def run_replay(url: str, spool: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    base.update(MLFLOW_TRACKING_URI=url, **OUTAGE, **env)
    return subprocess.run(
        [*REPLAY, "--spool", str(spool), "--timeout", "30"], env=base, capture_output=True, text=True, timeout=180
    )


def steps(client, run_id: str, key: str = "hubforge.cell.duration_s") -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


# -- the queue hands back what it holds, and re-sends without doubles --------------------------------------


def test_detach_hands_back_everything_in_order_while_mlflow_is_away(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    away = f"http://127.0.0.1:{free_port()}"
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    try:
        queue = TrackingQueue(lambda: MlflowClient(away), spool_dir=tmp_path, max_memory_items=100, max_backoff=0.2)
        queue.hold(PENDING)
        for i in range(250):  # past the memory bound: part of it is in the disk spool
            queue.log_metric(PENDING, "loss", i, step=i)
        queue.release(PENDING, "abc123")
        queue.log_param("abc123", "alpha", 0.5)
        wait_for(lambda: queue.last_error is not None, 30, "the queue to meet the outage")
        items = queue.detach()
    finally:
        del os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]
    assert queue.spilled > 0
    assert [i[5] for i in items if i[0] == "m"] == list(range(250)), "each once, oldest first"
    assert items[-1] == ["p", "abc123", "alpha", "0.5"]
    assert {i[1] for i in items} == {"abc123"}, "the placeholder resolved to the run"
    assert queue.depth == 0


def test_resend_stores_each_item_once(client, tmp_path: Path) -> None:
    run = new_run(client, "resend")
    first = TrackingQueue(lambda: client, spool_dir=tmp_path / "a", flush_interval=0.01)
    for i in range(600):
        first.log_metric(run, "acc", i, timestamp=1_000 + i, step=i)
    assert first.close(30)
    # A later process holds the same 600 (it cannot know they arrived) and 400 more.
    items = [["m", run, "acc", float(i), 1_000 + i, i] for i in range(1000)] + [["p", run, "alpha", "0.5"]]
    again = TrackingQueue(lambda: client, spool_dir=tmp_path / "b", flush_interval=0.01)
    again.resend(items)
    assert again.close(30)
    assert steps(client, run, "acc") == list(range(1000))
    assert client.get_run(run).data.params == {"alpha": "0.5"}


# -- the on-disk format is checked before anything is sent --------------------------------------------------


def test_pending_entries_round_trip_and_bad_ones_are_set_aside(client, mlflow_server, tmp_path: Path) -> None:
    good = write_pending(
        tmp_path,
        PendingRun(tracking_uri=mlflow_server.url, run_id=None, experiment_name="/Users/zoe/a.ipynb"),
        [["m", PENDING, "x", float("nan"), 5, 1], ["t", PENDING, "k", "v"]],
    )
    assert read_pending(good).experiment_name == "/Users/zoe/a.ipynb"
    items = read_items(good)
    assert items[0][3] != items[0][3] and items[1] == ["t", PENDING, "k", "v"]
    bad_json = write_pending(tmp_path, PendingRun(tracking_uri=mlflow_server.url, run_id="abc"), [])
    (bad_json / "run.json").write_text("{not json")
    bad_item = write_pending(tmp_path, PendingRun(tracking_uri=mlflow_server.url, run_id="abc"), [])
    (bad_item / "items.jsonl").write_text('["m","abc","x",1,2,3]\n["m","abc","x","one",2,3]\n')
    bad_run_id = write_pending(tmp_path, PendingRun(tracking_uri=mlflow_server.url, run_id="abc"), [])
    (bad_run_id / "run.json").write_text(json.dumps({"version": 1, "tracking_uri": "x", "run_id": "../../etc"}))
    (tmp_path / "pending" / ".half-written").mkdir()  # a writer that died before its rename
    with pytest.raises(ValueError, match="leaves the entry"):
        write_pending(tmp_path, PendingRun(tracking_uri="x", run_id="a"), [], [(good / "run.json", "../up")])

    report = replay(tmp_path, mlflow_server.url, client=client)
    assert report.left == [] and len(report.delivered) == 1
    assert sorted(report.rejected) == sorted(p.name for p in (bad_json, bad_item, bad_run_id))
    reasons = {p.name: (tmp_path / "rejected" / p.name / "reason.txt").read_text() for p in (bad_json, bad_item)}
    assert reasons[bad_item.name].startswith("items.jsonl line 2:")
    assert reasons[bad_json.name].startswith("run.json:")
    assert list_pending(tmp_path) == []
    (run,) = client.search_runs([client.get_experiment_by_name("/Users/zoe/a.ipynb").experiment_id])
    assert run.data.tags["k"] == "v" and run.info.status == "FINISHED"


def test_entries_for_another_mlflow_are_left_alone(client, mlflow_server, tmp_path: Path) -> None:
    other = write_pending(tmp_path, PendingRun(tracking_uri="http://elsewhere:5000", run_id="abc"), [])
    report = replay(tmp_path, mlflow_server.url, client=client)
    assert report.skipped == [other.name] and other.is_dir()


# -- kernels that end while MLflow is away, replayed by the command ----------------------------------------


def test_a_notebook_run_entirely_without_mlflow_arrives_later(own_mlflow: MlflowServer, tmp_path: Path) -> None:
    """MLflow is down from the first cell to kernel shutdown: nothing is lost, and replaying twice
    stores nothing twice."""
    from mlflow import MlflowClient

    server = own_mlflow  # not started yet
    write_notebook(tmp_path, "work/offline.ipynb", ["x = 1"])
    kernel = tracked_kernel(server.url, tmp_path, "work/offline.ipynb")
    try:
        for i in range(1, 6):
            kernel.run(f"x = {i}")
        kernel.run("import mlflow\nmlflow.log_metric('mine', 7.5)")
    finally:
        kernel.shutdown()
    spool = tmp_path / ".spool"
    (entry,) = list_pending(spool)
    kept = read_pending(entry)
    assert kept.run_id is None and kept.experiment_name == "/Users/yuki/work/offline.ipynb"
    assert kept.tags["mlflow.user"] == "yuki" and kept.tags["mlflow.source.name"] == "work/offline.ipynb"
    assert (entry / "artifacts" / "notebook" / "offline.ipynb").is_file()

    still_away = run_replay(server.url, spool)
    assert still_away.returncode == EX_TEMPFAIL, still_away.stderr
    assert f"waiting: {entry.name}" in still_away.stdout and entry.is_dir()

    server.start()
    done = run_replay(server.url, spool)
    assert done.returncode == 0, done.stderr
    assert list_pending(spool) == []
    again = run_replay(server.url, spool)
    assert again.returncode == 0 and "delivered" not in again.stdout
    client = MlflowClient(server.url)
    exp = client.get_experiment_by_name("/Users/yuki/work/offline.ipynb")
    (run,) = client.search_runs([exp.experiment_id])
    rid = run.info.run_id
    assert f"delivered: run {rid}" in done.stdout
    assert steps(client, rid) == list(range(1, 7)), "every cell exactly once"
    assert [m.value for m in client.get_metric_history(rid, "mine")] == [7.5], "the person's own metric"
    assert run.info.status == "FINISHED"
    assert run.info.start_time == kept.start_time, "the run starts when the notebook did"
    assert run.data.tags["mlflow.user"] == "yuki"
    arts = {a.path for a in client.list_artifacts(rid, "notebook")} | {
        a.path for a in client.list_artifacts(rid, "environment")
    }
    assert arts == {"notebook/offline.ipynb", "notebook/executed_cells.py", "environment/requirements.txt"}


def test_mlflow_killed_before_the_kernel_ends_loses_nothing(own_mlflow: MlflowServer, tmp_path: Path) -> None:
    """The run is open, MLflow dies, the notebook goes on and ends on an error: the run gets every
    cell once, the artifacts, and FAILED, after MLflow comes back."""
    from mlflow import MlflowClient

    server = own_mlflow
    server.start()
    client = MlflowClient(server.url)
    write_notebook(tmp_path, "killed.ipynb", ["x = 1"])
    kernel = tracked_kernel(server.url, tmp_path, "killed.ipynb")
    try:
        for i in range(1, 4):
            kernel.run(f"x = {i}")
        exp = wait_for(lambda: client.get_experiment_by_name("/Users/yuki/killed.ipynb"), 60, "the run")
        (run,) = wait_for(lambda: client.search_runs([exp.experiment_id]), 30, "the run")
        wait_for(lambda: len(steps(client, run.info.run_id)) >= 2, 30, "the first cells to arrive")
        server.stop()
        for i in range(4, 9):
            kernel.run(f"x = {i}")
        kernel.run("raise RuntimeError('the last cell fails')")
    finally:
        kernel.shutdown()
    spool = tmp_path / ".spool"
    assert live_files(spool) == [], "a kernel that ended keeps a pending entry, not a live file"
    (entry,) = list_pending(spool)
    assert read_pending(entry).run_id == run.info.run_id
    assert read_pending(entry).status == "FAILED"
    server.start()
    done = run_replay(server.url, spool)
    assert done.returncode == 0, done.stderr
    rid = run.info.run_id
    assert steps(client, rid) == list(range(1, 10)), "before and after the outage, each once"
    assert client.get_run(rid).info.status == "FAILED"
    assert [a.path for a in client.list_artifacts(rid, "notebook")] == [
        "notebook/executed_cells.py",
        "notebook/killed.ipynb",
    ]


# -- the user's server replays by itself -------------------------------------------------------------------


def test_the_server_replays_kept_run_data_when_mlflow_is_back(own_mlflow: MlflowServer, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from harness.server import Server

    mlflow = own_mlflow
    spool = tmp_path / "spool"
    entry = write_pending(
        spool,
        PendingRun(
            tracking_uri=mlflow.url,
            run_id=None,
            experiment_name="/Users/alice/left-behind.ipynb",
            tags={"mlflow.user": "alice"},
            status="FINISHED",
        ),
        [["m", PENDING, "hubforge.cell.duration_s", float(i), 1_000 + i, i] for i in range(1, 4)],
    )
    env = {
        "HUBFORGE_MLFLOW_URL": mlflow.url,
        "JUPYTERHUB_API_TOKEN": "hub-token",
        "JUPYTERHUB_USER": "alice",
        "HUBFORGE_SPOOL_DIR": str(spool),
    }
    server = Server(tmp_path / "server", env, ("--HubforgeTracking.replay_interval=0.5",))
    try:
        wait_for(lambda: "replay of kept run data exited 75" in server.log, 60, "a replay that finds MLflow away")
        assert entry.is_dir()
        mlflow.start()
        wait_for(lambda: not entry.exists(), 90, "the server to replay the entry")
        client = MlflowClient(mlflow.url)
        exp = client.get_experiment_by_name("/Users/alice/left-behind.ipynb")
        (run,) = client.search_runs([exp.experiment_id])
        assert steps(client, run.info.run_id) == [1, 2, 3]
        said = f"delivered: run {run.info.run_id}"
        wait_for(lambda: said in server.log, 30, "the server to log what the replay did")
        env_of_kernel = server.kernel_process(server.start_session(server.notebook())).environ()
        assert env_of_kernel["HUBFORGE_SPOOL_DIR"] == str(spool), "kernels keep their data where the server looks"
    finally:
        server.stop()


def test_papermill_output_notebook_is_kept_when_mlflow_is_away(
    own_mlflow: MlflowServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import nbformat
    from mlflow import MlflowClient

    from hubforge.server_extension.papermill_engine import log_output_notebook

    server = own_mlflow
    server.start()
    client = MlflowClient(server.url)
    run_id = new_run(client, "papermill")
    server.stop()
    spool = tmp_path / "spool"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("alpha = 0.5")])
    env = {"MLFLOW_TRACKING_URI": server.url, "HUBFORGE_SPOOL_DIR": str(spool)}
    with monkeypatch.context() as patched:
        patched.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        log_output_notebook(run_id, nb, str(tmp_path / "out.ipynb"), env, {"alpha": 0.5})
    (entry,) = list_pending(spool)
    assert read_pending(entry).run_id == run_id and read_pending(entry).status is None
    server.start()
    done = run_replay(server.url, spool)
    assert done.returncode == 0, done.stderr
    assert [a.path for a in client.list_artifacts(run_id)] == ["out.ipynb"]
    run = client.get_run(run_id)
    assert run.data.params == {"alpha": "0.5"}
    assert run.info.status == "RUNNING", "the kernel's own record ends the run, not this one"


# -- kernels that die without ending their run --------------------------------------------------------------


def live_files(spool: Path) -> list[Path]:
    return sorted((spool / "live").glob("*.json")) if (spool / "live").is_dir() else []


def test_a_killed_kernels_run_ends_killed_instead_of_running_forever(own_mlflow: MlflowServer, tmp_path: Path) -> None:
    import signal

    from mlflow import MlflowClient

    server = own_mlflow
    server.start()
    spool = tmp_path / ".spool"
    client = MlflowClient(server.url)
    write_notebook(tmp_path, "oom.ipynb", ["x = 1"])
    kernel = tracked_kernel(server.url, tmp_path, "oom.ipynb")
    try:
        for i in range(1, 4):
            kernel.run(f"x = {i}")
        exp = wait_for(lambda: client.get_experiment_by_name("/Users/yuki/oom.ipynb"), 60, "the run")
        (run,) = wait_for(lambda: client.search_runs([exp.experiment_id]), 30, "the run")
        wait_for(lambda: len(steps(client, run.info.run_id)) >= 2, 30, "the first cells to arrive")
        (live,) = wait_for(lambda: live_files(spool), 30, "the kernel's live file")
        assert json.loads(live.read_text())["run_id"] == run.info.run_id
        os.kill(kernel.km.provisioner.pid, signal.SIGKILL)  # what the OOM killer does
        wait_for(lambda: not kernel.km.is_alive(), 30, "the kernel to die")
    finally:
        kernel.kc.stop_channels()
        kernel.km.cleanup_resources()
    assert client.get_run(run.info.run_id).info.status == "RUNNING", "MLflow alone would leave it so"
    done = run_replay(server.url, spool)
    assert done.returncode == 0, done.stderr
    assert client.get_run(run.info.run_id).info.status == "KILLED"
    assert live_files(spool) == [] and list_pending(spool) == []
    assert not list(spool.glob("spool-*.jsonl")), "the dead kernel's spool file is cleaned up"


def test_adoption_keeps_what_a_dead_kernel_spilled_and_leaves_living_ones_alone(
    client, mlflow_server, tmp_path
) -> None:
    from hubforge.server_extension.pending import adopt_dead, write_live

    spool = tmp_path / "spool"
    dead_pid = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_pid.wait()
    spilled = spool / "spool-dead.jsonl"
    spool.mkdir()
    chunks = [
        [["m", PENDING, "hubforge.cell.duration_s", float(i), 1_000 + i, i] for i in range(1, 4)],
        [["t", PENDING, "k", "v"]],
    ]
    spilled.write_text("".join(json.dumps(c) + "\n" for c in chunks) + '[["m","hubforge-pending-run","x",1')
    name = "/Users/yuki/spilled.ipynb"
    record = PendingRun(tracking_uri=mlflow_server.url, run_id=None, experiment_name=name, tags={"mlflow.user": "yuki"})
    dead = write_live(spool, record, spilled)
    dead.write_text(json.dumps({**json.loads(dead.read_text()), "pid": dead_pid.pid}))
    mine = write_live(spool, PendingRun(tracking_uri=mlflow_server.url, run_id="abc"), spool / "spool-mine.jsonl")
    elsewhere = write_live(spool, PendingRun(tracking_uri=mlflow_server.url, run_id="def"), spool / "x.jsonl")
    elsewhere.write_text(json.dumps({**json.loads(elsewhere.read_text()), "pid": dead_pid.pid, "host": "other-pod"}))

    (entry,) = adopt_dead(spool)

    assert live_files(spool) == sorted([mine, elsewhere]), "a living kernel's and another host's are left"
    assert not spilled.exists()
    kept = read_pending(entry)
    assert (kept.status, kept.run_id, kept.experiment_name) == ("KILLED", None, name)
    assert len(read_items(entry)) == 4, "whole chunks only; the one cut short by the kill is not guessed at"
    report = replay(spool, mlflow_server.url, client=client)
    assert len(report.delivered) == 1
    (run,) = client.search_runs([client.get_experiment_by_name(name).experiment_id])
    assert run.info.status == "KILLED" and run.data.tags["k"] == "v"
    assert steps(client, run.info.run_id) == [1, 2, 3]


def test_only_answers_that_waiting_cannot_change_count_as_refusals() -> None:
    from mlflow.exceptions import RestException

    from hubforge.server_extension.kernel.queue import refused as _refused

    def answer(code: str) -> RestException:  # what MlflowClient raises for an error response
        return RestException({"error_code": code, "message": "x"})

    assert _refused(answer("PERMISSION_DENIED")) and _refused(answer("RESOURCE_DOES_NOT_EXIST"))
    assert not _refused(answer("RESOURCE_EXHAUSTED")), "429: rate limited, try later"
    assert not _refused(answer("UNAUTHENTICATED")), "401: the hub may know the token again"
    assert not _refused(answer("INTERNAL_ERROR")) and not _refused(ConnectionError("refused"))


def test_the_replay_command_says_in_one_line_what_is_missing(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    out = subprocess.run([*REPLAY, "--spool", str(tmp_path)], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert (
        out.stderr.strip()
        .splitlines()[-1]
        .endswith("MLFLOW_TRACKING_URI is not set: where should the kept run data go?")
    )
    bad = subprocess.run([*REPLAY, "--timeout", "soon"], env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--timeout: invalid float value: 'soon'" in bad.stderr


def test_a_run_replayed_after_its_server_moved_goes_without_server_and_tier(client) -> None:
    """The hub's MLflow takes ``hubforge.server``/``hubforge.tier`` only while the hub runs that
    server on that tier: a run replayed later opens without them rather than being rejected."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    from hubforge.server_extension.pending import PendingRun
    from hubforge.server_extension.replay import _open_run

    class HubMlflow:
        """The real client, refusing placement tags as MLflow behind the hub does for a stopped server."""

        def __getattr__(self, name: str):
            return getattr(client, name)

        def create_run(self, experiment_id, start_time=None, tags=None, **kwargs):
            if "hubforge.tier" in (tags or {}):
                message = "hubforge.server 'default' is not a running server of yuki's (running: none)"
                raise MlflowException(message, error_code=INVALID_PARAMETER_VALUE)
            return client.create_run(experiment_id, start_time=start_time, tags=tags, **kwargs)

    tags = {"mlflow.user": "yuki", "hubforge.server": "default", "hubforge.tier": "training", "hubforge.notebook": "a"}
    pending = PendingRun("http://unused", None, "/Users/yuki/moved.ipynb", tags, 1_000, id="entry-1")
    run_id = _open_run(HubMlflow(), pending)
    kept = client.get_run(run_id).data.tags
    assert "hubforge.tier" not in kept and "hubforge.server" not in kept
    assert (kept["hubforge.notebook"], kept["hubforge.replay_id"]) == ("a", "entry-1")


def test_a_stopping_server_starts_a_last_replay_of_what_its_ended_kernels_kept(tmp_path: Path) -> None:
    """A server stopping (its kernels ended, their kept fits waiting) starts one more replay,
    which goes on after the server; it starts none while one runs, and none for nothing."""
    import logging

    from hubforge.contract import REPLAY_MODULE
    from hubforge.server_extension.app import Replayer

    spool = tmp_path / "spool"
    spool.mkdir()
    env = {**os.environ, "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}
    replayer = Replayer(spool, env, 60.0, logging.getLogger("test"))
    replayer.finish()
    assert replayer.child is None, "nothing waits: no replay"

    replayer = Replayer(spool, env, 60.0, logging.getLogger("test"))
    replayer.waiting = lambda: True  # type: ignore[method-assign]  # as a kernel's kept fit makes it
    replayer.finish()
    child = replayer.child
    assert child is not None and child.args[1:3] == ["-m", REPLAY_MODULE]
    replayer.finish()
    assert replayer.child is child or child.poll() is not None, "not a second one beside a running one"
    child.wait(120)
    assert replayer.runs >= 1 and replayer._stop.is_set()
