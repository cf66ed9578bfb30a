"""A scheduled notebook on the running platform (SQLite and PostgreSQL), as alice schedules it.

alice (a data scientist who also holds the scheduler persona) schedules a notebook from the
command line with her own hub token, to run once a few seconds later with a parameter. The
scheduler asks the real hub for a short-lived token of hers, runs papermill as her (her
system account when the platform runs as root), keeps the output notebook and records the
run; the run is in MLflow as hers, with origin ``scheduler`` and the job's tags, found through
the MLflow gate with her token. bob, who holds no scheduler persona, is refused the scheduler.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import nbformat

from harness.platform import MLFLOW_API, HubSession, api, wait_for

SCHEDULER = "/services/scheduler"


def job_notebook() -> dict[str, Any]:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_code_cell("region = 'emea'", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(
            "import os, pwd\n"
            "print('report for', region, 'as', os.environ['JUPYTERHUB_USER'], pwd.getpwuid(os.getuid()).pw_name)\n"
            "secret = [k for k in os.environ if 'DB_URL' in k or k in ('JUPYTERHUB_SERVICE_NAME', 'HUBFORGE_DATA')]\n"
            "print('platform secrets:', sorted(secret))"
        ),
    ]
    return json.loads(nbformat.writes(nb))


def test_alice_schedules_a_notebook_that_runs_as_her(platform: Any, tmp_path: Path) -> None:
    alice, bob = HubSession(platform.url), HubSession(platform.url)
    try:
        assert alice.login("alice").status_code == 302 and bob.login("bob").status_code == 302
        token = alice.new_token("alice", note="schedule")
        wait_for(lambda: httpx.get(f"{platform.url}{SCHEDULER}/api/health").status_code == 200, 60, "the scheduler")
        path = tmp_path / "weekly report.ipynb"
        path.write_text(json.dumps(job_notebook()))
        when = (datetime.now(UTC) + timedelta(seconds=5)).isoformat()
        env = {**os.environ, "HUBFORGE_SCHEDULER_URL": platform.url + SCHEDULER, "JUPYTERHUB_API_TOKEN": token}
        hubforge = Path(sys.executable).with_name("hubforge")
        command = [str(hubforge), "schedule", "create", str(path), "--name", "weekly-report", "--once", when,
                   "--param", "region=apac", "--timeout", "300"]  # fmt: skip
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        job_id = done.stdout.split()[1]
        with api(platform.url, token) as as_alice:
            runs = wait_for(
                lambda: [
                    r for r in as_alice.get(f"{SCHEDULER}/api/jobs/{job_id}/runs").json() if r["state"] != "running"
                ],
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
