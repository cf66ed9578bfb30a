"""The MLflow UI behind the hub: it opens on model training and its console stays quiet.

alice (a data scientist) logs in through the hub's form in Debian's chromium and
opens ``/services/mlflow/``, one of her experiments and one of its runs. The UI
asks for features the platform refuses her (MLflow's accounts, the assistant, the
deployments proxy); the gate answers those GETs with MLflow's own "off" answer, so
the browser logs nothing, while anything that writes is still refused.

The gate's pure parts are in tests/unit/test_mlflow_ui.py.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from harness.platform import CHROMIUM, CHROMIUM_FLAGS, DEMO_PASSWORD, api
from hubforge.hub.mlflow.ui import FEATURE_OFF

UI = "/services/mlflow/"
REST = UI + "api/2.0/mlflow/"
AJAX = UI + "ajax-api/"
WORKFLOW_KEY = "mlflow.workflowType_v1"
SETTLE_SECONDS = 90


# --- the real platform -----------------------------------------------------------------


def experiment_with_run(client: httpx.Client, user: str) -> tuple[str, str, str]:
    """A new experiment of ``user``'s with one run that logged a metric: (experiment, run id, run name)."""
    name = f"/Users/{user}/ui-{uuid.uuid4().hex[:8]}"
    created = client.post(REST + "experiments/create", json={"name": name})
    assert created.status_code == 200, created.text
    experiment = created.json()["experiment_id"]
    run_name = f"ui-check-{uuid.uuid4().hex[:6]}"
    run = client.post(REST + "runs/create", json={"experiment_id": experiment, "run_name": run_name})
    assert run.status_code == 200, run.text
    run_id = run.json()["run"]["info"]["run_id"]
    metric = {"run_id": run_id, "key": "loss", "value": 0.25, "timestamp": 0, "step": 0}
    assert client.post(REST + "runs/log-metric", json=metric).status_code == 200
    return experiment, run_id, run_name


@pytest.fixture
def alice(platform: Any, session_for: Any) -> Iterator[tuple[httpx.Client, Any]]:
    """alice's MLflow REST client (her own hub token) and her logged-in hub session."""
    session, user = session_for("data-scientist")
    assert user == "alice"
    with api(platform.url, session.new_token(user, note="mlflow ui")) as client:
        yield client, session


@pytest.mark.parametrize("platform", ["sqlite"], indirect=True)
def test_refused_features_answer_off_and_writes_stay_refused(platform: Any, alice: Any, session_for: Any) -> None:
    client, session = alice
    off = client.get(AJAX + "3.0/mlflow/assistant/config")
    assert off.status_code == 200 and off.json() == FEATURE_OFF["mlflow/assistant/config"]
    assert client.get(AJAX + "2.0/mlflow/users/current").json() == {}
    proxy = client.get(AJAX + "2.0/mlflow/gateway-proxy", params={"gateway_path": "api/2.0/endpoints/"})
    assert proxy.status_code == 200 and proxy.json() == {"endpoints": []}
    for method, path in (
        ("PUT", "3.0/mlflow/assistant/config"),
        ("POST", "3.0/mlflow/assistant/message"),
        ("POST", "2.0/mlflow/gateway-proxy"),
    ):
        refused = client.request(method, AJAX + path, json={"providers": {}, "gateway_path": "x"})
        assert refused.status_code == 403, (method, path, refused.text)
        assert "platform admins" in refused.json()["message"]
    # Trace charts are hers to read for her own experiment, not for bob's.
    mine, _, _ = experiment_with_run(client, "alice")
    bob_session, _ = session_for("ml-engineer")
    with api(platform.url, bob_session.new_token("bob", note="mlflow ui")) as bob:
        theirs, _, _ = experiment_with_run(bob, "bob")
    query = {"view_type": "TRACES", "metric_name": "trace_count", "aggregations": [{"aggregation_type": "COUNT"}]}
    assert client.post(AJAX + "3.0/mlflow/traces/metrics", json={**query, "experiment_ids": [mine]}).status_code == 200
    other = client.post(AJAX + "3.0/mlflow/traces/metrics", json={**query, "experiment_ids": [theirs]})
    assert other.status_code == 403 and f"may not read experiment {theirs}" in other.json()["message"]
    # The UI's page sets the defaults, even for a browser that has it cached.
    page = session.follow(UI)
    assert page.status_code == 200 and b"mlflow.workflowType_v1" in page.content
    again = session.client.get(UI, headers={"If-None-Match": "*", "If-Modified-Since": "Fri, 01 Jan 2100 00:00:00 GMT"})
    assert again.status_code == 200 and again.content == page.content
    assert "etag" not in again.headers and int(again.headers["content-length"]) == len(again.content)


class Console:
    """What one page logged: console errors, page errors and MLflow's answers."""

    def __init__(self, page: Any) -> None:
        self.errors: list[str] = []
        self.answers: list[tuple[int, str, str]] = []
        self.start, self.last = 0, time.monotonic()
        page.on(
            "console", lambda msg: self.errors.append(f"{msg.text} ({msg.location})") if msg.type == "error" else None
        )
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        page.on("response", self._answered)

    def _answered(self, response: Any) -> None:
        path = httpx.URL(response.url).path
        if path.startswith(UI):
            self.answers.append((response.status, response.request.method, path[len(UI) :]))
            self.last = time.monotonic()

    @property
    def failed(self) -> list[tuple[int, str, str]]:
        """MLflow's 4xx and 5xx answers."""
        return [answer for answer in self.answers if answer[0] >= 400]

    def goto(self, page: Any, url: str) -> None:
        """Open ``url``; :meth:`settle` then waits for what this page asks."""
        self.start = len(self.answers)
        page.goto(url)

    def settle(self, page: Any, *paths: str, quiet: float = 2.0) -> None:
        """Wait until this page has asked for each of ``paths``, then asked nothing for ``quiet`` seconds."""
        deadline = time.monotonic() + SETTLE_SECONDS
        while time.monotonic() < deadline:
            recent = self.answers[self.start :]
            asked = {path for path in paths if any(answer[2].endswith(path) for answer in recent)}
            if asked == set(paths) and time.monotonic() - self.last >= quiet:
                return
            page.wait_for_timeout(100)
        raise TimeoutError(f"the UI did not settle: asked {sorted(asked)} of {sorted(paths)}")


@pytest.mark.parametrize("platform", ["sqlite"], indirect=True)
def test_the_ui_opens_on_model_training_with_a_quiet_console(platform: Any, alice: Any, artifacts: Any) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    client, _ = alice
    experiment, run_id, run_name = experiment_with_run(client, "alice")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            console = Console(page)
            page.goto(f"{platform.url}/hub/login")
            page.fill("#username_input", "alice")
            page.fill("#password_input", DEMO_PASSWORD)
            page.click("#login_submit")
            page.wait_for_url(lambda url: "/hub/login" not in url)

            # Home: model training (its sidebar lists the registry; GenAI's does not), no assistant.
            console.goto(page, platform.url + UI)
            page.get_by_text("Model registry", exact=True).first.wait_for(timeout=60_000)
            console.settle(page, "mlflow/users/current", "mlflow/assistant/config", "mlflow/assistant/providers")
            assert page.evaluate(f"localStorage.getItem('{WORKFLOW_KEY}')") == '"machine_learning"'
            assert page.get_by_text("Welcome to MLflow Assistant").count() == 0

            # Her experiment opens on its runs, in model-training mode.
            console.goto(page, f"{platform.url}{UI}#/experiments/{experiment}")
            page.wait_for_url(re.compile(rf"/experiments/{experiment}/runs\?.*workflowType=machine_learning"))
            page.get_by_text(run_name).first.wait_for(timeout=60_000)
            console.settle(page, "mlflow/runs/search", "mlflow/gateway-proxy")
            page.screenshot(path=str(artifacts / "mlflow-ui-alice.png"))

            # The run's own page.
            console.goto(page, f"{platform.url}{UI}#/experiments/{experiment}/runs/{run_id}")
            page.get_by_text("Created by").first.wait_for(timeout=60_000)
            console.settle(page, "graphql", "mlflow/model-versions/search")
            assert console.errors == [], console.errors
            assert console.failed == [], console.failed
            assert any(answer[2] == "ajax-api/2.0/mlflow/gateway-proxy" for answer in console.answers)

            # A person's own choice stands: GenAI stays GenAI after a reload.
            page.evaluate(f"""localStorage.setItem('{WORKFLOW_KEY}', '"genai"')""")
            page.goto(platform.url + UI)
            page.reload()
            page.get_by_text("Experiments", exact=True).first.wait_for(timeout=60_000)
            assert page.evaluate(f"localStorage.getItem('{WORKFLOW_KEY}')") == '"genai"'
            assert page.get_by_text("Model registry", exact=True).count() == 0
        finally:
            browser.close()
