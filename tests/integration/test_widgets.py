"""The model-governance widgets, driven headlessly against the real governance service and MLflow.

A widget runs as it does in a person's kernel: the environment holds the server's hub
token (``JUPYTERHUB_API_TOKEN``), the governance service's URL and the hub's MLflow URL,
nothing else. The tests set inputs' ``value`` and click buttons (``button.click()``), as
the front end would, and wait for the widgets' background calls. The governance service
(``running``) weighs the harness's fixed evidence; MLflow (``mlflow_url``) is gated behind
its fake hub, where alice shares her experiment and model with her group (everyone's, in
that hub), so that carol may read them as an ML lead reads them on the platform.
"""

from __future__ import annotations

import html
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from mlflow import MlflowClient

from harness.cards import complete_card, partial_card
from harness.governance import PREFIX as GOVERNANCE_PREFIX
from harness.governance import Running, cookie_client
from harness.mlflow_app import PREFIX as MLFLOW_PREFIX
from hubforge.contract import GOVERNANCE_URL_ENV, MLFLOW_URL_ENV
from hubforge.hub.governance.evidence import Evidence
from hubforge.modelcard.mlflow_store import load_card, save_card
from hubforge.widgets import ApprovalQueue, DeployPanel, ModelCardEditor
from hubforge.widgets.client import PUBLIC_HUB_ENV

SHARED = "hubforge.shared_with"
#: The calls a widget may make: reading and submitting, never deciding.
WIDGET_CALLS = {
    ("GET", "api/whoami"),
    ("GET", "api/requests"),
    ("GET", "api/requests/{id}"),
    ("POST", "api/requests"),
    ("POST", "api/policy/deploy"),
}


@pytest.fixture
def tracking(mlflow_url: str) -> str:
    return mlflow_url + MLFLOW_PREFIX.rstrip("/")


@pytest.fixture
def served(running: Running, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, str]]:
    """(method, path under the prefix, Authorization) of every request the service answers."""
    seen: list[tuple[str, str, str]] = []
    original = running.app.settings.get("log_function")

    def record(handler) -> None:
        request = handler.request
        seen.append(
            (request.method, request.path.removeprefix(GOVERNANCE_PREFIX), request.headers.get("Authorization", ""))
        )
        if original is not None:
            original(handler)

    monkeypatch.setitem(running.app.settings, "log_function", record)
    return seen


def template(path: str) -> str:
    parts = path.split("/")
    return "api/requests/{id}" if len(parts) == 3 and parts[:2] == ["api", "requests"] else path


def assert_only_widget_calls(seen: list[tuple[str, str, str]], token: str) -> None:
    calls = {(method, template(path)) for method, path, auth in seen if auth == f"token {token}"}
    assert calls and calls <= WIDGET_CALLS, calls - WIDGET_CALLS
    assert not [path for _, path, _ in seen if path.endswith("/decision")]


@contextmanager
def kernel_of(
    monkeypatch: pytest.MonkeyPatch, token: str, tracking: str, running: Running | None = None
) -> Iterator[None]:
    """The environment of ``token``'s person's kernel on the platform."""
    with monkeypatch.context() as m:
        m.setenv("JUPYTERHUB_API_TOKEN", token)
        m.setenv(MLFLOW_URL_ENV, tracking)
        if running is not None:
            m.setenv(GOVERNANCE_URL_ENV, running.url + GOVERNANCE_PREFIX.rstrip("/"))
        for name in ("MLFLOW_TRACKING_URI", PUBLIC_HUB_ENV):
            m.delenv(name, raising=False)
        # recorded, then removed: the widgets' MLflow client sets it from the server's token
        m.setenv("MLFLOW_TRACKING_TOKEN", "")
        m.delenv("MLFLOW_TRACKING_TOKEN")
        m.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        yield


def wait_until(check: Callable[[], object], timeout: float = 30, what: str = "the widget") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.05)


def alices_model(
    tracking: str, monkeypatch: pytest.MonkeyPatch, accuracies: tuple[float, ...] = (0.91,)
) -> tuple[str, list[str], list[str]]:
    """A registered model of alice's, a version per accuracy (each from its own run), shared with
    her group: (name, versions, run ids)."""
    name = f"churn-{uuid.uuid4().hex[:8]}"
    with monkeypatch.context() as m:
        m.setenv("MLFLOW_TRACKING_TOKEN", "alice-token")
        client = MlflowClient(tracking, registry_uri=tracking)
        experiment = client.create_experiment(f"/Users/alice/{name}", tags={SHARED: "data-science"})
        client.create_registered_model(name, tags={SHARED: "data-science"})
        versions, runs = [], []
        for accuracy in accuracies:
            run = client.create_run(experiment).info.run_id
            client.log_metric(run, "accuracy", accuracy)
            client.log_param(run, "model_type", "LogisticRegression")
            client.log_text(run, "weights", "model/weights.txt")
            versions.append(str(client.create_model_version(name, f"runs:/{run}/model", run_id=run).version))
            runs.append(run)
    return name, versions, runs


@contextmanager
def alice_client(tracking: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[MlflowClient]:
    with monkeypatch.context() as m:
        m.setenv("MLFLOW_TRACKING_TOKEN", "alice-token")
        yield MlflowClient(tracking, registry_uri=tracking)


def submit(running: Running, token: str, **body: object) -> dict:
    with running.client(token) as c:
        r = c.post("api/requests", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def status_of(running: Running, request_id: str) -> str:
    with running.client("erin-token") as c:
        return c.get(f"api/requests/{request_id}").json()["status"]


# --- ModelCardEditor ----------------------------------------------------------------


def fill_for_production(editor: ModelCardEditor) -> None:
    editor.input("model_details.overview").value = "Predicts churn within 30 days."
    editor.input("intended_use").value = "Ranking customers for retention offers."
    editor.input("out_of_scope_use").value = "Credit decisions."
    editor.input("risk_rating").value = "medium"
    for path, row in (
        ("training_data.datasets", {"name": "churn-train", "split": "training"}),
        ("fairness.evaluations", {"group": "age_band", "metric": "recall", "value": "0.8"}),
        ("considerations.limitations", {"description": "Not calibrated for new customers"}),
        ("considerations.ethical_considerations", {"name": "Age bias", "mitigation_strategy": "Monitored monthly"}),
    ):
        editor.lists[path].add(row)


def test_the_card_editor_prefills_from_the_run_checks_each_field_and_saves(tracking, monkeypatch):
    name, (version,), (run,) = alices_model(tracking, monkeypatch)
    with kernel_of(monkeypatch, "alice-token", tracking):
        editor = ModelCardEditor(name, version)
        assert editor.wait(60), "loading the card"
        assert "prefilled from run" in editor.status.value and editor.run_id.value == run
        assert editor.card["model_details"]["owners"] == [{"name": "alice"}]
        assert editor.input("model_parameters.model_architecture").value == "LogisticRegression"
        metric = editor.input("quantitative_analysis.performance_metrics[0].value")
        assert metric.value == "0.91" and editor.errors == []
        prefilled = editor.progress.value
        assert 0 < prefilled < 1 and "missing: model details overview" in editor.completeness.value

        fill_for_production(editor)
        assert editor.progress.value == 1.0 and "Complete" in editor.completeness.value
        assert "<iframe" in editor.preview.value and "Ranking customers" in editor.preview.value

        editor.input("model_details.version.date").value = "2024-02-30"
        metric.value = "high"
        assert "ISO 8601" in editor.error_text("model_details.version.date")
        assert "must be a number" in editor.error_text("quantitative_analysis.performance_metrics[0].value")
        assert "<iframe" not in editor.preview.value
        editor.save_button.click()  # refused here: nothing is sent
        assert "Fix 2 problem(s)" in editor.status.value and editor.saved is None

        editor.input("model_details.version.date").value = "2024-02-28"
        metric.value = "0.93"
        assert editor.error_text("model_details.version.date") == "" and editor.errors == []
        editor.save_button.click()
        assert editor.wait(60), "saving the card"
        assert "Saved with" in editor.status.value, editor.status.value
        assert editor.saved is not None and editor.saved.completeness == 1.0
        card = editor.card

        again = ModelCardEditor(name, version)
        assert again.wait(60)
        assert "Loaded the card" in again.status.value and again.card == card
        assert again.input("quantitative_analysis.performance_metrics[0].value").value == "0.93"
    with alice_client(tracking, monkeypatch) as client:
        assert load_card(client, name, version) == card


def test_the_card_editor_says_in_one_line_what_mlflow_refused(tracking, monkeypatch):
    name, (version,), _ = alices_model(tracking, monkeypatch)
    with kernel_of(monkeypatch, "carol-token", tracking):  # carol may read alice's model, not write her run
        editor = ModelCardEditor(name, version)
        assert editor.wait(60)
        fill_for_production(editor)
        editor.save_button.click()
        assert editor.wait(60)
    said = html.unescape(editor.status.value)
    assert "Saving the card of" in said and "failed: 403" in said, said
    assert "nobody writes into another person's run" in said and "\n" not in said and "Traceback" not in said
    assert editor.saved is None


# --- DeployPanel --------------------------------------------------------------------


def test_the_deploy_panel_prechecks_submits_once_and_follows_the_decision(running, tracking, monkeypatch, served):
    name, (version,), _ = alices_model(tracking, monkeypatch)
    evidence = running.app.settings["evidence"]
    missing = ("fairness.evaluations", "risk_rating")
    evidence.cards[(name, version)] = Evidence(True, True, 9 / 11, missing, None, {"accuracy": 0.91})
    with kernel_of(monkeypatch, "alice-token", tracking, running):
        panel = DeployPanel(target="production", poll_interval=0.1)
        assert panel.wait(60)
        assert name in panel.model.options, "the models alice may see are listed"
        panel.model.value = name
        assert panel.wait(60) and panel.version.value == version
        panel.canary.value = 20
        assert panel.wait(60)
        assert "the model card is incomplete (missing: fairness.evaluations, risk_rating)" in panel.policy.value

        panel.submit_button.click()
        assert "say why" in panel.status.value and panel.request is None
        panel.justification.value = "Recall +4 points on the holdout"
        panel.submit_button.click()
        assert panel.wait(60) and panel.request is not None, panel.status.value
        assert panel.submit_button.disabled
        request_id = panel.request["id"]
        wait_until(lambda: panel.step is not None and panel.step.step == "submitted")
        assert panel.progress.value == 0.25 and "waiting for an ML lead" in panel.progress_text.value
        assert panel.scoring.layout.display == "none"
    with running.client("erin-token") as c:
        found = c.get("api/requests", params={"model": name}).json()
    assert [(r["id"], r["status"], r["requester"], r["canary_percent"]) for r in found] == [
        (request_id, "pending", "alice", 20)
    ]
    assert found[0]["policy"]["decision"] == "deny"
    assert_only_widget_calls(served, "alice-token")

    del evidence.cards[(name, version)]  # alice completed the card; carol decides in her browser
    assert running.decide("carol-token", request_id, comment="fine").status_code == 200
    wait_until(lambda: panel.step is not None and panel.step.step == "approved", what="the panel following")
    assert "Approved by carol; waiting for deployment" in panel.progress_text.value
    assert panel.progress.value == 0.5 and panel.scoring.layout.display == "none"
    panel.close()


# --- ApprovalQueue ------------------------------------------------------------------


def test_the_queue_shows_carol_what_to_weigh_and_links_to_the_decision_page(running, tracking, monkeypatch, served):
    name, (v1, v2), _ = alices_model(tracking, monkeypatch, (0.88, 0.93))
    with alice_client(tracking, monkeypatch) as client:
        save_card(client, name, v1, complete_card(name, 0.88))
        save_card(client, name, v2, partial_card(name))
    deploy = {"kind": "deploy-production", "model": name, "justification": "Better recall\n<script>x</script>"}
    first = submit(running, "alice-token", **deploy, version=v1)
    assert running.decide("carol-token", first["id"]).status_code == 200
    second = submit(running, "alice-token", **deploy, version=v2, canary_percent=10)
    own = submit(running, "carol-token", **deploy, version=v2)
    data = submit(running, "alice-token", kind="data-access", target="customers-pii", justification="churn features")
    served.clear()

    with kernel_of(monkeypatch, "carol-token", tracking, running):
        queue = ApprovalQueue()
        assert queue.wait(60), queue.status.value
    ids = [row.request["id"] for row in queue.rows]
    assert second["id"] in ids and not {first["id"], own["id"], data["id"]} & set(ids)
    row = queue.row(second["id"])
    details = row.details.value
    assert "82%" in details and "missing: fairness.evaluations, risk_rating" in details
    assert "version 1 (approved" in details and "by carol" in details
    assert "<td>accuracy</td><td>0.93</td><td>0.88</td><td>+0.05</td>" in details
    assert "&lt;script&gt;" in details and "<script>" not in details

    page = f"{running.url}{GOVERNANCE_PREFIX}requests/{second['id']}"
    assert row.page_url == page
    assert f'href="{page}"' in row.approve.value and f'href="{page}"' in row.reject.value
    with cookie_client(running, "carol-token") as browser:  # carol's browser opens the link
        opened = browser.get(page, headers={"Sec-Fetch-Mode": "navigate"})
    assert opened.status_code == 200 and 'value="approve"' in opened.text
    assert status_of(running, second["id"]) == "pending"
    assert_only_widget_calls(served, "carol-token")
    assert {method for method, _, auth in served if auth == "token carol-token"} == {"GET"}


def test_a_data_steward_sees_the_data_requests_only(running, tracking, monkeypatch):
    data = submit(running, "alice-token", kind="data-access", target="claims", justification="fraud model")
    with kernel_of(monkeypatch, "dan-token", tracking, running):
        queue = ApprovalQueue()
        assert queue.wait(60), queue.status.value
    assert data["id"] in [row.request["id"] for row in queue.rows]
    assert {row.request["kind"] for row in queue.rows} == {"data-access"}
    assert "claims" in queue.row(data["id"]).details.value
