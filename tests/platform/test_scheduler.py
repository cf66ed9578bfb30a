"""A scheduled notebook on the running platform (SQLite and PostgreSQL), as alice schedules it.

alice (a data scientist who also holds the scheduler persona) schedules a notebook from the
command line with her own hub token, to run once a few seconds later with a parameter. The
scheduler asks the real hub for a short-lived token of hers, runs papermill as her (her
system account when the platform runs as root), keeps the output notebook and records the
run; the run is in MLflow as hers, with origin ``scheduler`` and the job's tags, found through
the MLflow gate with her token. bob, who holds no scheduler persona, is refused the scheduler.

Then the scheduler's process is killed (SIGKILL) in the middle of a run: the run's papermill
and kernel end with it, the hub starts the service again, and the new process marks the run
interrupted and retries it by the job's policy; the job's definition is still there.
"""

from __future__ import annotations

import json
import os
import pwd
from pathlib import Path
from typing import Any

import httpx
import psutil

from harness.platform import MLFLOW_API, PROBE, HubSession, api, wait_for
from harness.scheduler import SCHEDULER, ended_runs, job_notebook, schedule, soon


def test_alice_schedules_a_notebook_that_runs_as_her(platform: Any, tmp_path: Path) -> None:
    alice, bob = HubSession(platform.url), HubSession(platform.url)
    try:
        assert alice.login("alice").status_code == 302 and bob.login("bob").status_code == 302
        token = alice.new_token("alice", note="schedule")
        wait_for(lambda: PROBE.get(f"{platform.url}{SCHEDULER}/api/health").status_code == 200, 60, "the scheduler")
        path = tmp_path / "weekly report.ipynb"
        path.write_text(json.dumps(job_notebook()))
        when = soon()
        job_id = schedule(platform, token, path, "--name", "weekly-report", "--once", when,
                          "--param", "region=apac", "--timeout", "300")  # fmt: skip
        with api(platform.url, token) as as_alice:
            runs = wait_for(
                lambda: ended_runs(as_alice, job_id),
                240,
                "the scheduled run to end",
            )
            (run,) = runs
            assert run["state"] == "succeeded", run
            page = as_alice.get(f"{SCHEDULER}/api/runs/{run['id']}/output")
            assert page.status_code == 200
            account = platform.account("alice")
            who = account.pw_name if account else pwd.getpwuid(os.getuid()).pw_name
            assert f"report for apac as alice {who}" in page.text
            assert "platform secrets: []" in page.text
            found = wait_for(
                lambda: (
                    as_alice.post(
                        f"{MLFLOW_API}/runs/search",
                        json={
                            "experiment_ids": _alice_experiments(as_alice),
                            "filter": f"tags.`hubforge.job_run` = '{run['id']}'",
                        },
                    )
                    .json()
                    .get("runs")
                ),
                60,
                "the run in MLflow",
            )
            tags = {t["key"]: t["value"] for t in found[0]["data"]["tags"]}
            assert (tags["hubforge.origin"], tags["hubforge.job"], tags["mlflow.user"]) == (
                "scheduler",
                job_id,
                "alice",
            )
        with api(platform.url, bob.new_token("bob", note="schedule")) as as_bob:  # no scheduler persona
            refused = as_bob.get(f"{SCHEDULER}/api/jobs/{job_id}")
            assert refused.status_code == 403 and "custom:schedules:run" in refused.json()["message"]
    finally:
        alice.close()
        bob.close()


def _alice_experiments(client: httpx.Client) -> list[str]:
    found = client.post(f"{MLFLOW_API}/experiments/search", json={"max_results": 1000}).json()
    return [e["experiment_id"] for e in found.get("experiments", []) if e["name"].startswith("/Users/alice/")]


def _scheduler_process(platform: Any) -> psutil.Process | None:
    """The scheduler service's process, of this platform's (None while there is none)."""
    for proc in psutil.Process(platform.proc.pid).children(recursive=True):
        try:
            if "hubforge.hub.scheduler" in " ".join(proc.cmdline()):
                return proc
        except psutil.NoSuchProcess:
            continue
    return None


def test_the_scheduler_killed_mid_run_leaves_no_orphan_and_retries_the_run(platform: Any, tmp_path: Path) -> None:
    alice = HubSession(platform.url)
    marker = Path("/tmp") / f"hubforge-first-try-{os.getpid()}-{tmp_path.name}"
    try:
        assert alice.login("alice").status_code == 302
        token = alice.new_token("alice", note="schedule")
        wait_for(lambda: PROBE.get(f"{platform.url}{SCHEDULER}/api/health").status_code == 200, 60, "the scheduler")
        # The first try marks itself and then works for ten minutes; the retry finds the mark and ends.
        body = (
            "import os, time\n"
            "if not os.path.exists(marker):\n"
            "    open(marker, 'w').close()\n"
            "    time.sleep(600)\n"
            "print('second try done')"
        )
        path = tmp_path / "long.ipynb"
        path.write_text(json.dumps(job_notebook(body)))
        when = soon()
        job_id = schedule(platform, token, path, "--name", "long-report", "--once", when, "--param",
                          f"marker={marker}", "--retries", "1", "--backoff", "1", "--timeout", "900")  # fmt: skip
        with api(platform.url, token) as as_alice:
            wait_for(marker.exists, 120, "the first try to start working")
            scheduler = _scheduler_process(platform)
            assert scheduler is not None
            family = scheduler.children(recursive=True)
            assert [p for p in family if "papermill" in " ".join(p.cmdline())], "the run is not the scheduler's"
            scheduler.kill()
            # Nothing of the run outlives the process that started it.
            _, alive = psutil.wait_procs(family, timeout=30)
            assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE], alive
            # The hub starts the service again; the new process retries the run by the job's policy.
            wait_for(
                lambda: getattr(_scheduler_process(platform), "pid", scheduler.pid) != scheduler.pid,
                60,
                "the hub to start the scheduler",
            )

            def history() -> list[dict[str, Any]]:  # the proxy answers 503 while the service is away
                answer = as_alice.get(f"{SCHEDULER}/api/jobs/{job_id}/runs")
                return answer.json() if answer.status_code == 200 else []

            runs = wait_for(
                lambda: (found := history()) and found[0]["state"] == "succeeded" and found, 240, "the retry to succeed"
            )
            assert [(r["attempt"], r["state"]) for r in runs] == [(2, "succeeded"), (1, "interrupted")], runs
            assert as_alice.get(f"{SCHEDULER}/api/jobs/{job_id}").json()["name"] == "long-report"
            page = as_alice.get(f"{SCHEDULER}/api/runs/{runs[0]['id']}/output")
            assert "second try done" in page.text
    finally:
        marker.unlink(missing_ok=True)
        alice.close()
