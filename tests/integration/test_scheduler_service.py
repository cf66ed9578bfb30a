"""The scheduler as its people use it: alice schedules notebooks over the REST API and the
command line; the scheduler fires them on time, runs them through real papermill as alice
(a token of hers made for the run and revoked after it), retries, times out, skips, survives a
restart, tells a webhook of a failure, and tracks each run to a real MLflow as alice's.

The clock of the firing is the test's (``tick(now)``), so "every minute, twice" takes seconds;
the runs are real processes. The hub is the tests' fake hub, which also makes tokens.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import httpx
import nbformat
import psutil
import pytest

from harness.governance import LoopThread, close_hub_http_client, hub_user, serve
from harness.hub import FakeHub
from harness.mlflow import MlflowServer
from harness.platform import wait_for
from harness.tcpproxy import TcpProxy
from hubforge.cli import main as hubforge
from hubforge.events.spool import EventSpool, read_spool
from hubforge.hub.scheduler.app import Scheduler, make_app
from hubforge.hub.scheduler.runner import HubTokens
from hubforge.hub.scheduler.schedule import parse_schedule
from hubforge.hub.scheduler.store import Job, SchedulerStore
from hubforge.hub.service_app import make_hub_oauth

PREFIX = "/services/scheduler/"
ACCESS = "access:services!service=scheduler"
SERVICE_TOKEN = "scheduler-service-secret"


def user(name: str, groups: list[str]) -> dict[str, Any]:
    model = hub_user(name, groups)
    model["scopes"] = [ACCESS, *model["scopes"][1:]]
    return model


USERS = {
    "alice-token": user("alice", ["data-scientist", "scheduler"]),
    "bob-token": user("bob", ["ml-engineer", "scheduler"]),
    "frank-token": user("frank", ["analyst"]),
}


def notebook(body: str, params: str = "region = 'emea'\nweeks = 1") -> dict[str, Any]:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(params, metadata={"tags": ["parameters"]}), nbformat.v4.new_code_cell(body)]
    return json.loads(nbformat.writes(nb))


@dataclass
class Running:
    url: str
    hub: FakeHub
    loop: LoopThread
    store: SchedulerStore
    scheduler: Scheduler
    audit: EventSpool

    def events(self, **match: Any) -> list[dict[str, Any]]:
        """The scheduler's audit events so far whose fields equal ``match``."""
        self.audit.flush()
        found = [e for e in read_spool(self.audit.directory) if e["__schema__"].endswith("/scheduler/run/v1")]
        return [e for e in found if all(e.get(k) == v for k, v in match.items())]

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"token {token}"} if token else {}
        return httpx.Client(base_url=self.url + PREFIX, headers=headers, timeout=60)

    def tick(self, now: datetime) -> list[Any]:
        return self.loop.run(self.scheduler.tick(now))

    def settle(self, timeout: float = 120) -> None:
        """Wait until no run is going."""
        wait_for(lambda: not self.scheduler.tasks, timeout, "the runs to end")

    def job(self, owner: str, name: str, body: str, now: datetime, **changes: Any) -> Job:
        spec = {
            "parameters": {},
            "schedule": parse_schedule({"cron": "* * * * *"}),
            "tier": "interactive",
            "timeout_s": 120,
            "retries": 0,
            "backoff_s": 0,
            "concurrency": "skip",
            "catch_up": "none",
            "now": now,
            **changes,
        }
        return self.store.create_job(owner, name, json.dumps(notebook(body)).encode(), f"{name}.ipynb", **spec)


@pytest.fixture(scope="module")
def mlflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory, mlflow: MlflowServer) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("scheduler")
    loop = LoopThread()
    hub = FakeHub(USERS, SERVICE_TOKEN).start()
    for model in USERS.values():
        hub.groups[model["name"]] = list(model["groups"])
    env = {
        "JUPYTERHUB_API_TOKEN": SERVICE_TOKEN,
        "JUPYTERHUB_API_URL": hub.api_url,
        "JUPYTERHUB_CLIENT_ID": "service-scheduler",
        "JUPYTERHUB_SERVICE_PREFIX": PREFIX,
        "JUPYTERHUB_SERVICE_NAME": "scheduler",
        "JUPYTERHUB_OAUTH_CALLBACK_URL": PREFIX + "oauth_callback",
        "JUPYTERHUB_OAUTH_ACCESS_SCOPES": json.dumps([ACCESS]),
    }
    store = SchedulerStore(f"sqlite:///{tmp / 'scheduler.sqlite'}", tmp / "files")
    tokens = HubTokens(hub.api_url, SERVICE_TOKEN)
    # The tests' webhook listens on loopback, which the service refuses to tell.
    audit = EventSpool(tmp / "events", "scheduler")
    scheduler = Scheduler(store, tokens, {"HUBFORGE_MLFLOW_URL": mlflow.url}, trust_webhooks=True, audit=audit)
    open_tiers = {"data-scientist": {"interactive", "training"}, "ml-engineer": {"interactive"}}
    app = make_app(
        store,
        PREFIX,
        hub_auth=make_hub_oauth("scheduler", PREFIX, env),
        kernels=["python3"],
        tiers_for_groups=lambda groups: set().union(*(open_tiers.get(g, set()) for g in groups)),
        audit=audit,
    )
    server, port = loop.run(serve(app))
    try:
        yield Running(f"http://127.0.0.1:{port}", hub, loop, store, scheduler, audit)
    finally:
        server.stop()
        loop.run(scheduler.close())
        hub.shutdown()
        hub.server_close()
        store.dispose()
        audit.close()
        loop.run(close_hub_http_client())
        loop.stop()


@pytest.fixture(autouse=True)
def one_test_at_a_time(running: Running) -> Iterator[None]:
    """Each test's jobs are its own: whatever it defined is deleted (and its runs over) after it."""
    yield
    running.settle()
    for job in running.store.jobs():
        running.store.delete_job(job.id, job.owner)


def minute(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0) + timedelta(minutes=1)


def test_a_job_every_minute_runs_twice_on_time_as_its_owner(running: Running, mlflow: MlflowServer) -> None:
    now = datetime.now(UTC)
    body = "import os\nprint('sales for', region, 'over', weeks, 'weeks as', os.environ['JUPYTERHUB_USER'])"
    job = running.job("alice", "every-minute", body, now, parameters={"region": "apac", "weeks": 6})
    first = minute(now)
    assert job.next_due == first
    assert running.tick(first - timedelta(seconds=1)) == []  # not yet
    (run1,) = running.tick(first + timedelta(seconds=2))
    running.settle()
    (run2,) = running.tick(first + timedelta(minutes=1, seconds=1))
    running.settle()
    history = running.store.runs(job.id)
    assert [(r.id, r.state, r.scheduled_for) for r in history] == [
        (run2.id, "succeeded", first + timedelta(minutes=1)),
        (run1.id, "succeeded", first),
    ], [r.error for r in history]
    assert running.store.job(job.id).next_due == first + timedelta(minutes=2)
    # Each run had a token of alice's of its own, for its timeout and a margin, revoked after it.
    issued = [entry for entry in running.hub.issued.values() if entry[3].startswith("scheduler run")]
    assert {entry[3] for entry in issued} >= {f"scheduler run {run1.id}", f"scheduler run {run2.id}"}
    assert all(owner == "alice" and expires == 120 + 300 for _, owner, expires, _ in issued)
    assert not [entry for entry in issued if entry[0] in running.hub.tokens]
    # Each run started and ended in the audit trail, as alice's.
    for run in (run1, run2):
        started, ended = running.events(run=run.id, action="start"), running.events(run=run.id, action="end")
        assert [(e["user"], e["outcome"], e["job"]) for e in started] == [("alice", "success", job.id)]
        assert [(e["state"], e["outcome"], e["origin"]["observer"]) for e in ended] == [
            ("succeeded", "success", "scheduler")
        ]
    output = nbformat.read(history[0].output, as_version=4)
    assert "sales for apac over 6 weeks as alice" in json.dumps(output)
    # Tracked in MLflow as alice's, with the job and the run, and the parameters.
    from mlflow import MlflowClient

    client = MlflowClient(mlflow.url)
    found = wait_for(
        lambda: client.search_runs(
            [e.experiment_id for e in client.search_experiments()], f"tags.`hubforge.job_run` = '{run2.id}'"
        ),
        60,
        "the scheduled run in MLflow",
    )
    tags, params = found[0].data.tags, found[0].data.params
    assert (tags["hubforge.origin"], tags["hubforge.job"], tags["mlflow.user"]) == ("scheduler", job.id, "alice")
    assert (params["region"], params["weeks"]) == ("apac", "6")


def test_what_a_run_kept_while_mlflow_was_away_arrives_with_the_owners_next_run(
    running: Running, mlflow: MlflowServer
) -> None:
    """MLflow is down overnight: the run still succeeds and its kernel keeps the run's data
    in alice's spool; the scheduler's try to send it after the run finds MLflow away and
    leaves it. Once MLflow is back, her next run delivers both runs, each whole."""
    from mlflow import MlflowClient

    proxy = TcpProxy(("127.0.0.1", mlflow.port))
    services = running.scheduler.services
    running.scheduler.services = {**services, "HUBFORGE_MLFLOW_URL": f"http://127.0.0.1:{proxy.port}"}
    spool = running.store.root / "spool" / "u-alice" / "pending"
    try:
        proxy.cut()
        now = datetime.now(UTC)
        body = "print('sales for', region)"
        job = running.job("alice", "overnight", body, now, parameters={"region": "apac"})
        (away,) = running.tick(minute(now) + timedelta(seconds=1))
        running.settle()
        assert running.store.runs(job.id)[0].state == "succeeded"
        kept = [p for p in spool.iterdir() if not p.name.startswith(".")]
        assert len(kept) == 1 and "MLflow" in running.store.output_path(away.id).with_suffix(".log").read_text()
        proxy.restore()
        (back,) = running.tick(minute(now) + timedelta(minutes=1, seconds=1))
        running.settle()
        assert [p for p in spool.iterdir() if not p.name.startswith(".")] == []
        client = MlflowClient(mlflow.url)
        experiments = [e.experiment_id for e in client.search_experiments()]
        for run in (away, back):
            (found,) = client.search_runs(experiments, f"tags.`hubforge.job_run` = '{run.id}'")
            assert (found.info.status, found.data.tags["mlflow.user"], found.data.params["region"]) == (
                "FINISHED",
                "alice",
                "apac",
            ), run.id
    finally:
        running.scheduler.services = services
        proxy.close()


def test_a_failing_notebook_is_retried_then_reported_to_the_webhook(running: Running) -> None:
    told: list[dict[str, Any]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            told.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    hook = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    try:
        now = datetime.now(UTC)
        job = running.job(
            "alice", "flaky", "1 / 0", now, retries=1, backoff_s=0,
            notify_url=f"http://127.0.0.1:{hook.server_address[1]}/hook",  # the API allows https only
        )  # fmt: skip
        running.tick(minute(now) + timedelta(seconds=1))
        running.settle()
        # The retry, its backoff over: due from when the first try ended, by the real clock.
        running.tick(max(minute(now) + timedelta(seconds=2), datetime.now(UTC) + timedelta(seconds=1)))
        running.settle()
        history = running.store.runs(job.id)
        assert [(r.attempt, r.state) for r in history] == [(2, "failed"), (1, "failed")]
        assert "ZeroDivisionError" in history[0].error
        wait_for(lambda: told, 30, "the webhook")
        (event,) = told
        assert (event["event"], event["job"]["id"], event["run"]["attempt"]) == ("scheduled_run.failed", job.id, 2)
    finally:
        hook.shutdown()


def test_a_run_past_its_timeout_is_stopped_and_a_run_due_meanwhile_is_skipped(running: Running) -> None:
    now = datetime.now(UTC)
    body = "import os, time\nopen('kernel.pid', 'w').write(str(os.getpid()))\ntime.sleep(600)"
    job = running.job("alice", "slow", body, now, timeout_s=12)
    (run,) = running.tick(minute(now) + timedelta(seconds=1))
    pid_file = running.store.root / "work" / run.id / "kernel.pid"  # the run works there (no accounts here)
    wait_for(pid_file.exists, 60, "the kernel to start")
    assert running.tick(minute(now) + timedelta(minutes=1, seconds=1)) == []  # still going: skip
    running.settle()
    history = running.store.runs(job.id)
    assert [(r.state, r.error) for r in history] == [
        ("skipped", "the job's previous run was still going (concurrency: skip)"),
        ("timed_out", "stopped after its timeout of 12 s"),
    ]
    kernel = int(pid_file.read_text())
    assert not psutil.pid_exists(kernel) or psutil.Process(kernel).status() == psutil.STATUS_ZOMBIE


def test_a_run_going_when_the_scheduler_stopped_is_interrupted_and_retried(running: Running) -> None:
    now = datetime.now(UTC)
    job = running.job("alice", "restarted", "print('done')", now, retries=1)
    (run,) = running.store.fire(job, [minute(now)], None, now)
    assert running.store.start(run.id, now)  # going, when the process died
    again = Scheduler(running.store, running.scheduler.tokens, {})
    assert [r.id for r in again.recover(now)] == [run.id]
    (retry,) = running.tick(now + timedelta(seconds=1))
    running.settle()
    history = running.store.runs(job.id)
    assert [(r.attempt, r.state) for r in history] == [(2, "succeeded"), (1, "interrupted")]
    assert retry.attempt == 2


def test_the_api_and_the_command_line(
    running: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "report.ipynb"
    path.write_text(json.dumps(notebook("print('report', region)")))
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "bob-token")
    monkeypatch.setenv("HUBFORGE_SCHEDULER_URL", running.url + PREFIX)
    args = ["schedule", "create", str(path), "--name", "nightly", "--cron", "0 2 * * *", "--timezone", "Europe/Berlin",
            "--param", "region=emea", "--param", "weeks=6", "--retries", "2", "--catch-up", "latest"]  # fmt: skip
    assert hubforge(args) == 0
    job_id = capsys.readouterr().out.split()[1]
    with running.client("bob-token") as bob:
        job = bob.get(f"api/jobs/{job_id}").json()
        assert job["schedule"] == {"cron": "0 2 * * *", "timezone": "Europe/Berlin"}
        assert job["parameters"] == {"region": "emea", "weeks": 6} and job["catch_up"] == "latest"
        assert job["next_run"].endswith("+00:00") and job["next_run"][11:13] in ("00", "01")  # 02:00 in Berlin
        assert bob.post(f"api/jobs/{job_id}/pause").json()["paused"] is True
    assert hubforge(["schedule", "list"]) == 0
    assert f"{job_id}  nightly  0 2 * * * (Europe/Berlin)  paused" in capsys.readouterr().out
    assert hubforge(["schedule", "resume", job_id]) == 0 and "next 20" in capsys.readouterr().out
    with running.client("alice-token") as alice:
        assert alice.get(f"api/jobs/{job_id}").status_code == 404  # bob's job is no job of hers
        assert alice.delete(f"api/jobs/{job_id}").status_code == 404
    for bad, why in [
        (["--cron", "61 * * * *"], "is not a cron expression"),
        (["--cron", "* * * * *", "--timezone", "Mars/Base"], "is no time zone"),
        (["--once", "2020-01-01T00:00:00+00:00"], "in the past"),
        (["--cron", "* * * * *", "--tier", "training"], "tier 'training' is not one of the tiers open to you"),
        (["--cron", "* * * * *", "--notify", "http://example.com/hook"], "notify_url must be an https:// URL"),
        (["--cron", "* * * * *", "--notify", "https://127.0.0.1/hook"], "outside the platform's own network"),
        (["--cron", "* * * * *", "--timeout", "0"], "timeout"),
    ]:
        assert hubforge(["schedule", "create", str(path), "--name", "bad", *bad]) == 2
        err = capsys.readouterr().err
        assert why in err and err.count("\n") == 1, err
    with running.client("frank-token") as frank:  # an analyst schedules nothing
        refused = frank.get("api/jobs")
        assert refused.status_code == 403 and "custom:schedules:run" in refused.json()["message"]
    assert hubforge(["schedule", "delete", job_id]) == 0
    actions = [e["action"] for e in running.events(job=job_id) if e["resource"]["type"] == "job"]
    assert actions == ["define", "pause", "resume", "delete"]
    assert {e["user"] for e in running.events(job=job_id)} == {"bob"}
    with running.client("bob-token") as bob:
        assert bob.get(f"api/jobs/{job_id}").status_code == 404
        assert bob.get("api/jobs").json() == []


def test_a_runs_output_is_a_sandboxed_page_for_its_owner_only(running: Running) -> None:
    now = datetime.now(UTC)
    job = running.job("alice", "page", "from IPython.display import HTML\nHTML('<script>alert(1)</script>ok')", now)
    (run,) = running.tick(minute(now) + timedelta(seconds=1))
    running.settle()
    with running.client("alice-token") as alice:
        page = alice.get(f"api/runs/{run.id}/output")
        assert page.status_code == 200 and "sandbox" in page.headers["Content-Security-Policy"]
        runs = alice.get(f"api/jobs/{job.id}/runs").json()
        assert runs[0]["state"] == "succeeded" and runs[0]["output"] is True and runs[0]["duration"] > 0
        listing = alice.get("")  # the scheduler's page: her jobs, their next runs, their history
        assert listing.status_code == 200 and "script-src" not in listing.headers["Content-Security-Policy"]
        assert f'data-job="{job.id}"' in listing.text and f'data-run="{run.id}"' in listing.text
        assert f"api/runs/{run.id}/output" in listing.text and 'class="succeeded"' in listing.text
    with running.client() as anonymous:
        assert anonymous.get("", follow_redirects=False).status_code == 302  # to the hub's login
    with running.client("bob-token") as bob:
        assert bob.get(f"api/runs/{run.id}/output").status_code == 404
        assert bob.get(f"api/jobs/{job.id}/runs").status_code == 404
        assert f'data-job="{job.id}"' not in bob.get("").text


def test_a_run_in_its_kubernetes_pod_fetches_its_notebook_and_hands_its_output_back(
    running: Running, mlflow: MlflowServer, tmp_path: Path
) -> None:
    """What a run's Job pod does, here: the pod's container (command and environment) from the
    rendered Job, its token from the Secret, its home a folder of the test's. The notebook
    comes from the scheduler, runs through papermill as alice's, is tracked to MLflow with
    the job's tags, and its output goes back to the scheduler; a failing notebook fails
    the pod. Only a going run of one's own takes an output, and only a notebook."""
    import asyncio
    import os
    import subprocess
    import sys

    import yaml

    from hubforge.config import PlatformConfig, default_config_text
    from hubforge.hub.scheduler.kube import run_manifests

    cfg = PlatformConfig(data=yaml.safe_load(default_config_text()), source="platform.yaml", data_dir=tmp_path)
    services = {"HUBFORGE_MLFLOW_URL": mlflow.url, "HUBFORGE_SCHEDULER_URL": running.url + PREFIX}
    now = datetime.now(UTC)

    def pod_run(body: str) -> tuple[Job, Any, subprocess.CompletedProcess[str]]:
        job = running.job("alice", f"in-pod-{len(body)}", body, now, parameters={"region": "apac"})
        (run,) = running.store.fire(job, [minute(now)], None, now)
        assert running.store.start(run.id, now)
        secret, manifest = asyncio.run(
            run_manifests(cfg, job, run, ["data-scientist", "scheduler"], services, "alice-token")
        )
        (container,) = manifest["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
        env["JUPYTERHUB_API_TOKEN"] = secret["stringData"]["token"]
        home = tmp_path / run.id
        env.update(HOME=str(home), HUBFORGE_SPOOL_DIR=str(home / "spool"), PATH=os.environ["PATH"])
        command = [str(Path(sys.executable).with_name(container["command"][0])), *container["command"][1:-1]]
        done = subprocess.run([*command, str(home / "work")], env=env, capture_output=True, text=True, timeout=300)
        return job, run, done

    job, run, done = pod_run("print('sales for', region)")
    assert done.returncode == 0, done.stderr[-2000:]
    output = nbformat.read(running.store.output_path(run.id), as_version=4)
    assert "sales for apac" in json.dumps(output)
    from mlflow import MlflowClient

    client = MlflowClient(mlflow.url)
    found = wait_for(
        lambda: client.search_runs(
            [e.experiment_id for e in client.search_experiments()], f"tags.`hubforge.job_run` = '{run.id}'"
        ),
        60,
        "the pod's run in MLflow",
    )
    assert (found[0].data.tags["hubforge.job"], found[0].data.tags["mlflow.user"]) == (job.id, "alice")
    assert found[0].data.params["region"] == "apac"

    _, failing, done = pod_run("raise ValueError('no sales data for ' + region)")
    assert done.returncode != 0 and "no sales data for apac" in done.stderr
    assert "no sales data for apac" in json.dumps(nbformat.read(running.store.output_path(failing.id), as_version=4))

    kept = json.dumps(output)
    with running.client("bob-token") as bob:  # not his run: no such run, for reading or for writing
        assert bob.get(f"api/runs/{run.id}/notebook").status_code == 404
        assert (
            bob.put(f"api/runs/{run.id}/output", content=kept, headers={"Content-Type": "application/json"}).status_code
            == 404
        )
    with running.client("alice-token") as alice:
        assert (
            "".join(alice.get(f"api/runs/{run.id}/notebook").json()["cells"][1]["source"])
            == "print('sales for', region)"
        )
        put = alice.put(
            f"api/runs/{run.id}/output", content='{"cells": 1}', headers={"Content-Type": "application/json"}
        )
        assert put.status_code == 400 and "\n" not in put.json()["message"]
        running.store.finish(running.store.run(run.id), "succeeded", datetime.now(UTC))
        late = alice.put(f"api/runs/{run.id}/output", content=kept, headers={"Content-Type": "application/json"})
        assert late.status_code == 409 and "succeeded" in late.json()["message"]
    running.store.finish(running.store.run(failing.id), "failed", datetime.now(UTC))
