"""hubforge on the hub image's JupyterHub: the Zero to JupyterHub chart's line (5.5 in chart
4.4.0), at the patch release the image installs. The platform starts though MLflow takes
longer than JupyterHub 5.5's ten seconds to answer, every persona logs in and reaches the
services through hub OAuth, the MLflow UI's login works without PKCE, a person's server
spawns and tracks a notebook's run to MLflow under her identity, and the scheduler runs a
notebook as her with a token the hub makes for it.

``make install`` puts that JupyterHub in ``.venv/chart-hub``; the platform runs with it first
on its path (the hub, its services and the servers it spawns).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from harness.faults import alices_server, ended, ran, run_info, session_run
from harness.platform import MLFLOW_API, PERSONA_USERS, HubSession, PlatformProcess, api, running, wait_for
from harness.scheduler import SCHEDULER, ended_runs, job_notebook, schedule, soon
from harness.server import notebook_session
from hubforge.spawner_profiles.kubernetes.chart import CHART_APP_VERSION

CHART_HUB = Path(sys.executable).parents[1] / "chart-hub"


@pytest.fixture(scope="module")
def chart_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformProcess]:
    assert (CHART_HUB / "jupyterhub").is_dir(), "make install puts the chart's JupyterHub in .venv/chart-hub"
    environment = {"PYTHONPATH": str(CHART_HUB)}
    yield from running(PlatformProcess(tmp_path_factory.mktemp("chart-hub") / "data", environment=environment))


def test_the_platform_starts_on_the_charts_jupyterhub(chart_hub: PlatformProcess) -> None:
    version = httpx.get(f"{chart_hub.url}/hub/api/").json()["version"]
    assert version.split(".")[:2] == CHART_APP_VERSION.split(".")[:2], "the chart's JupyterHub line"
    lines = chart_hub.log_path.read_text(errors="replace").splitlines()
    # The services started together, and the hub waited for each (5.5 alone gives a service
    # ten one-second tries, and MLflow takes longer), then said which answered.
    starts = [i for i, line in enumerate(lines) if "Starting managed service" in line]
    answers = [i for i, line in enumerate(lines) if re.search(r"Service \w+ answers at", line)]
    assert len(starts) == len(answers) >= 6 and max(starts) < min(answers)
    assert any("Service mlflow answers at" in lines[i] for i in answers)


def test_every_persona_logs_in_and_reaches_the_services(chart_hub: PlatformProcess) -> None:
    for persona, user in PERSONA_USERS.items():
        session = HubSession(chart_hub.url)
        try:
            assert session.login(user).status_code == 302
            who = session.follow("/services/governance/api/whoami")
            assert who.status_code == 200, who.text
            assert who.json()["name"] == user and persona in who.json()["personas"]
        finally:
            session.close()


def test_the_mlflow_ui_logs_in_without_pkce(chart_hub: PlatformProcess) -> None:
    session = HubSession(chart_hub.url)
    try:
        assert session.login("alice").status_code == 302
        asked = session.client.get("/services/mlflow/")
        assert asked.status_code == 302
        query = parse_qs(urlsplit(asked.headers["location"]).query)
        assert "state" in query and "code_challenge" not in query, "JupyterHub 5.5 knows no PKCE"
        ui = session.follow("/services/mlflow/")
        assert ui.status_code == 200 and "<html" in ui.text.lower()
        # The session cookie the login left works for the UI's own calls (which send Origin).
        ajax = "/services/mlflow/ajax-api/2.0/mlflow/experiments/search"
        searched = session.client.post(ajax, json={}, headers={"Origin": chart_hub.url})
        assert searched.status_code == 200, searched.text
    finally:
        session.close()


def test_a_notebook_run_is_tracked_under_its_person(chart_hub: PlatformProcess) -> None:
    with alices_server(chart_hub.url) as http:
        with notebook_session(http, "/user/alice", "chart-hub.ipynb") as kernel:
            ran(kernel, "import mlflow\nmlflow.log_metric('accuracy', 0.93)")
            run_id = session_run(kernel)
        # Leaving the notebook shut its kernel down: the run ends, as its person's.
        assert wait_for(lambda: ended(http, run_id), 30, "the run to end") == "FINISHED"
        assert run_info(http, run_id)["user_id"] == "alice"
        data = http.get(f"{MLFLOW_API}/runs/get", params={"run_id": run_id}).json()["run"]["data"]
        assert {metric["key"]: metric["value"] for metric in data["metrics"]}["accuracy"] == 0.93


def test_the_scheduler_runs_a_notebook_as_its_person(chart_hub: PlatformProcess, tmp_path: Path) -> None:
    """The scheduler asks the hub for a short-lived token of alice's for each run."""
    session = HubSession(chart_hub.url)
    try:
        assert session.login("alice").status_code == 302
        token = session.new_token("alice", note="schedule")
        path = tmp_path / "report.ipynb"
        path.write_text(json.dumps(job_notebook("print('report for', region)")))
        job_id = schedule(chart_hub, token, path, "--name", "report", "--once", soon(), "--param", "region=apac")
        with api(chart_hub.url, token) as as_alice:
            (run,) = wait_for(lambda: ended_runs(as_alice, job_id), 180, "the scheduled run to end")
            assert run["state"] == "succeeded", run
            assert "report for apac" in as_alice.get(f"{SCHEDULER}/api/runs/{run['id']}/output").text
    finally:
        session.close()
