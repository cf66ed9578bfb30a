"""The widgets' logic without a platform: the card form, progress, metric differences, the client.

Pure functions first; then the client and the widgets against httpx's ``MockTransport``
(a fake at the transport: no socket is opened), as the governance service answers.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

import httpx
import pytest

from harness.cards import complete_card, partial_card
from hubforge import widgets as package
from hubforge.contract import GOVERNANCE_URL_ENV, MLFLOW_URL_ENV
from hubforge.hub.governance.policy import APPROVER_SCOPES as SERVICE_APPROVER_SCOPES
from hubforge.modelcard import CardError, completeness, validate_card
from hubforge.widgets.approval_queue import (
    APPROVER_SCOPES,
    ApprovalQueue,
    MetricChange,
    approvable_kinds,
    awaiting,
    facts_of,
    metric_diff,
    production_version,
    review_html,
)
from hubforge.widgets.card_form import (
    Field,
    ItemList,
    anchors,
    card_form,
    card_to_form,
    completeness_text,
    error_anchor,
    errors_by_anchor,
    form_to_card,
    sections,
)
from hubforge.widgets.client import Background, GovernanceClient, WidgetError, describe, mlflow_client
from hubforge.widgets.deploy_panel import DeployPanel, Progress, body_problems, deploy_body, deploy_progress
from hubforge.widgets.modelcard_editor import ModelCardEditor, preview_html

GOV = "http://hub.test/services/governance"
METRIC = "quantitative_analysis.performance_metrics"


# --- the card as a form -------------------------------------------------------------


def rich_card() -> dict[str, Any]:
    card = complete_card("churn")
    card["model_details"]["version"] = {"name": "v2", "date": "2024-02-28", "diff": "Recalibrated.\n\n- more data"}
    card["model_details"]["licenses"] = [{"identifier": "Apache-2.0"}, {"custom_text": "Internal use only"}]
    card["model_parameters"]["hyperparameters"] = [{"name": "C", "value": "1.0"}, {"name": "tol", "value": ""}]
    card["quantitative_analysis"]["performance_metrics"][0] |= {
        "slice": "new customers",
        "confidence_interval": {"lower_bound": 0.85, "upper_bound": 0.95},
    }
    card["quantitative_analysis"]["performance_metrics"].append({"type": "n", "value": 12000})
    card["training_data"]["datasets"][0] |= {"sensitive_data": ["personal data", "location"]}
    card["training_data"]["feature_views"] = [{"project": "crm", "name": "usage", "features": ["calls", "minutes"]}]
    return card


def test_the_form_has_an_input_for_every_leaf_of_the_schema():
    entries = {e.path: e for e in card_form()}
    assert entries["model_details.version.date"] == Field(
        "model_details.version.date", "date", "The release date, YYYY-MM-DD."
    )
    assert entries["risk_rating"].kind == "choice" and entries["risk_rating"].choices == ("low", "medium", "high")
    assert entries["intended_use"].kind == "markdown"
    metrics = entries[METRIC]
    assert isinstance(metrics, ItemList)
    kinds = {f.path: f.kind for f in metrics.fields}
    assert kinds == {
        "type": "line",
        "value": "number",
        "slice": "line",
        "dataset": "line",
        "confidence_interval.lower_bound": "number",
        "confidence_interval.upper_bound": "number",
    }
    assert "schema_version" not in entries
    titles = [title for title, _ in sections(card_form())]
    assert titles[0] == "Model details" and {"Metrics", "Intended use", "Risk", "Fairness"} <= set(titles)


def test_a_card_goes_to_the_form_and_back_unchanged():
    card = rich_card()
    values = card_to_form(card)
    assert values["model_details.version.date"] == "2024-02-28"
    assert values[METRIC][0]["value"] == "0.91" and values[METRIC][1]["value"] == "12000"
    assert values["training_data.datasets"][0]["sensitive_data"] == "personal data, location"
    assert form_to_card(values) == card
    assert form_to_card(card_to_form(partial_card("x"))) == partial_card("x")


def test_the_form_leaves_out_what_is_empty_and_keeps_what_it_cannot_read_for_validation():
    values = card_to_form(complete_card("churn"))
    values["model_details.overview"] = "   \n"
    values["risk_rating"] = ""
    values["fairness.evaluations"] = [{"group": " ", "metric": "", "value": ""}]
    values[METRIC] = [{"type": " accuracy ", "value": "high"}, {"type": "auc", "value": "7"}]
    values["model_details.version.date"] = "2024-02-30"
    card = form_to_card(values)
    assert "overview" not in card["model_details"] and "risk_rating" not in card and "fairness" not in card
    assert card["quantitative_analysis"]["performance_metrics"] == [
        {"type": "accuracy", "value": "high"},
        {"type": "auc", "value": 7},
    ]
    errors = {e.path: e.message for e in validate_card(card)}
    assert errors == {
        "model_details.version.date": "must be an ISO 8601 date YYYY-MM-DD that exists",
        f"{METRIC}[0].value": "must be a number, not a string",
    }
    assert completeness(card).missing == ["model_details.overview", "fairness.evaluations", "risk_rating"]


def test_a_filled_item_keeps_its_required_fields_that_may_be_blank():
    values = {"model_parameters.hyperparameters": [{"name": "tol", "value": ""}, {"name": "", "value": ""}]}
    card = form_to_card(values)
    assert card["model_parameters"]["hyperparameters"] == [{"name": "tol", "value": ""}]
    assert form_to_card({"model_details.name": "x"}) == {"schema_version": "1", "model_details": {"name": "x"}}
    empty = form_to_card({})
    assert empty == {"schema_version": "1", "model_details": {}}, "a required section stays, to name what it lacks"
    assert [e.path for e in validate_card(empty)] == ["model_details.name"]


def test_each_error_is_shown_at_the_deepest_input_above_it():
    values = card_to_form(rich_card())
    known = anchors(values)
    assert {f"{METRIC}[1]", f"{METRIC}[1].value", "model_details.licenses[1]"} <= known
    assert f"{METRIC}[2]" not in known
    assert error_anchor(f"{METRIC}[0].value", known) == f"{METRIC}[0].value"
    assert error_anchor(f"{METRIC}[0].confidence_interval", known) == f"{METRIC}[0]"
    assert error_anchor("model_details.ownr", known) == ""
    assert error_anchor("(card)", known) == ""
    errors = [
        CardError("model_details.licenses[1]", "a license has exactly one of identifier or custom_text"),
        CardError(f"{METRIC}[0].confidence_interval", "lower_bound 0.95 is above upper_bound 0.9"),
        CardError("model_details.ownr", "unknown field 'ownr'"),
    ]
    assert errors_by_anchor(errors, known) == {
        "model_details.licenses[1]": ["a license has exactly one of identifier or custom_text"],
        f"{METRIC}[0]": [f"{METRIC}[0].confidence_interval: lower_bound 0.95 is above upper_bound 0.9"],
        "": ["model_details.ownr: unknown field 'ownr'"],
    }


def test_completeness_in_words():
    assert completeness_text(completeness(complete_card("x"))) == "Complete: all 11 fields production needs are filled."
    assert completeness_text(completeness(partial_card("x"))) == (
        "9 of 11 fields production needs are filled; missing: fairness evaluations, risk rating."
    )


def test_the_preview_renders_only_a_valid_card_in_a_frame_that_runs_no_script():
    card = complete_card("x")
    card["intended_use"] = "<script>alert(1)</script> ranking"
    shown = preview_html(card, [])
    assert shown.startswith('<iframe sandbox="" srcdoc="') and "<script>" not in shown
    assert "ranking" in shown
    assert "<iframe" not in preview_html(card, [CardError("risk_rating", "must be one of: low")])


def test_the_editor_shows_completeness_errors_and_preview_as_fields_change():
    editor = ModelCardEditor(card=partial_card("churn"))
    assert editor.progress.value == pytest.approx(9 / 11) and "missing" in editor.completeness.value
    editor.input("risk_rating").value = "low"
    editor.lists["fairness.evaluations"].add({"group": "age_band", "metric": "recall", "value": "0.8"})
    assert editor.progress.value == 1.0 and editor.progress.bar_style == "success"
    editor.input("model_details.version.date").value = "2023-02-29"
    assert "ISO 8601" in editor.error_text("model_details.version.date")
    assert editor._error_boxes()["model_details.version.date"].layout.display == ""
    assert "<iframe" not in editor.preview.value
    editor.lists["fairness.evaluations"].remove(0)
    editor.input("model_details.version.date").value = ""
    assert editor.errors == [] and editor.progress.value == pytest.approx(10 / 11) and "<iframe" in editor.preview.value
    editor.save_button.click()
    assert "name the registered model" in editor.status.value


# --- deploy progress and requests ---------------------------------------------------


def request(status: str = "pending", **fields: Any) -> dict[str, Any]:
    return {"id": "r1", "kind": "deploy-production", "model": "churn", "version": "3", "status": status, **fields}


@pytest.mark.parametrize(
    ("found", "expected"),
    [
        (request(), Progress("submitted", 0.25, "Submitted; waiting for an ML lead to decide.")),
        (
            request(kind="deploy-staging"),
            Progress("submitted", 0.25, "Submitted; waiting for an ML engineer to decide."),
        ),
        (
            request("approved", decided_by="carol"),
            Progress("approved", 0.5, "Approved by carol; waiting for deployment."),
        ),
        (
            request("approved", decided_by="carol", deployment={"status": "deploying"}),
            Progress("deploying", 0.75, "Approved by carol; deploying…"),
        ),
        (
            request(
                "approved",
                deployment={"status": "deployed", "endpoint": "/services/serving/endpoints/churn/invocations"},
            ),
            Progress("deployed", 1.0, "Deployed: serving at /services/serving/endpoints/churn/invocations."),
        ),
        (request("approved", endpoint="https://x/e"), Progress("deployed", 1.0, "Deployed: serving at https://x/e.")),
        (
            request("approved", decided_by="carol", deployment_status="failed", deployment_error="digest\nchanged"),
            Progress("failed", 1.0, "Approved by carol, but the deployment failed: digest changed"),
        ),
        (
            request("rejected", decided_by="carol", comment="card incomplete"),
            Progress("rejected", 1.0, "Rejected by carol: card incomplete"),
        ),
        (request("rejected", decided_by="carol", comment=None), Progress("rejected", 1.0, "Rejected by carol.")),
    ],
)
def test_each_request_maps_to_its_step(found, expected):
    assert deploy_progress(found) == expected


def test_a_deploy_body_and_what_keeps_it_from_being_sent():
    body = deploy_body(" churn ", "3", "production", 20, "  AUC +4 ")
    assert body == {
        "kind": "deploy-production",
        "model": "churn",
        "version": "3",
        "canary_percent": 20,
        "justification": "AUC +4",
    }
    assert body_problems(body, submitting=True) == []
    empty = deploy_body("", "03", "prod", 101, "")
    assert body_problems(empty, submitting=False) == [
        "pick a model",
        "pick a version (1, 2, ...)",
        "pick a target: staging or production",
        "the canary percent is 0 to 100",
    ]
    assert body_problems({**body, "justification": ""}, submitting=True) == ["say why, for the approver"]


# --- the queue ----------------------------------------------------------------------


def test_the_widgets_name_the_approver_scopes_as_the_service_does():
    assert APPROVER_SCOPES == SERVICE_APPROVER_SCOPES


@pytest.mark.parametrize(
    ("whoami", "kinds"),
    [
        ({"personas": ["ml-lead"], "scopes": ["custom:requests:submit"]}, ("deploy-staging", "deploy-production")),
        ({"personas": ["data-steward"], "scopes": []}, ("data-access",)),
        ({"personas": ["data-scientist"], "scopes": ["custom:requests:submit"]}, ()),
        ({"personas": [], "scopes": ["custom:approve:data-access"]}, ("data-access",)),
        ({"personas": ["platform-admin"]}, ("deploy-staging", "deploy-production", "data-access")),
        ({"personas": ["unknown"]}, ()),
    ],
)
def test_the_kinds_a_person_decides(whoami, kinds):
    assert approvable_kinds(whoami) == kinds


def test_the_queue_holds_pending_requests_of_ones_kinds_not_ones_own_oldest_first():
    found = [
        request(id="new", created="2025-01-02T00:00:00Z", requester="alice"),
        request(id="old", created="2025-01-01T00:00:00Z", requester="bob"),
        request(id="mine", created="2025-01-01T00:00:00Z", requester="carol"),
        request("approved", id="done", created="2025-01-01T00:00:00Z", requester="alice"),
        request(id="data", kind="data-access", created="2025-01-01T00:00:00Z", requester="alice"),
    ]
    assert [r["id"] for r in awaiting(found, "carol", ("deploy-production",))] == ["old", "new"]


def test_metrics_against_production():
    changes = metric_diff({"accuracy": 0.93, "auc": 0.8}, {"accuracy": 0.88, "f1": 0.7})
    assert changes == [
        MetricChange("accuracy", 0.93, 0.88),
        MetricChange("auc", 0.8, None),
        MetricChange("f1", None, 0.7),
    ]
    assert changes[0].delta == pytest.approx(0.05) and changes[1].delta is None
    assert metric_diff({"accuracy": 0.9}, None) == [MetricChange("accuracy", 0.9, None)]


def test_what_is_in_production():
    approved = [{"version": "2", "decided": "2025-01-03T10:00:00Z", "decided_by": "carol"}, {"version": "1"}]
    assert production_version("4", approved) == ("4", "the registered model's alias")
    assert production_version(None, approved) == ("2", "approved 2025-01-03 by carol")
    assert production_version(None, []) is None


def test_a_review_escapes_what_people_typed():
    found = request(
        requester="<b>mallory</b>",
        justification='"><img src=x onerror=alert(1)>',
        canary_percent=10,
        created="2025-01-02T03:04:05Z",
    )
    candidate = facts_of("3", partial_card("x"), {"accuracy": 0.93})
    production = facts_of("2", complete_card("x"), {"accuracy": 0.88})
    shown = review_html(found, candidate, production, "approved 2025-01-01 by carol")
    assert "<img" not in shown and "&lt;b&gt;mallory" in shown
    assert "churn version 3 (canary 10%)" in shown and "2025-01-02 03:04" in shown
    assert "82% (missing: fairness.evaluations, risk_rating); risk: not rated" in shown
    assert "<td>accuracy</td><td>0.93</td><td>0.88</td><td>+0.05</td>" in shown
    assert "In production:</b> version 2 (approved 2025-01-01 by carol)" in shown
    assert "none saved" in review_html(found, facts_of("3", None, {}), None)


# --- the client ---------------------------------------------------------------------


def client_with(handler, **kwargs: Any) -> GovernanceClient:
    return GovernanceClient(GOV, "alice-token", transport=httpx.MockTransport(handler), **kwargs)


def test_the_client_sends_the_token_and_says_in_one_line_what_failed():
    seen: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        if req.url.path.endswith("/api/requests"):
            return httpx.Response(403, json={"status": 403, "message": "missing scope\ncustom:requests:submit"})
        if req.url.path.endswith("/api/whoami"):
            return httpx.Response(502, text="<html>Bad gateway</html>")
        raise httpx.ConnectError("connection refused")

    client = client_with(handler)
    with pytest.raises(WidgetError, match=r"^cannot submit the request: 403 missing scope custom:requests:submit$"):
        client.submit({"kind": "deploy-staging"})
    assert seen[0].headers["Authorization"] == "token alice-token"
    with pytest.raises(WidgetError, match=r"^cannot ask who you are: 502 <html>Bad gateway</html>$"):
        client.whoami()
    with pytest.raises(WidgetError, match=f"^cannot read request r1: cannot reach the governance service at {GOV}"):
        client.get_request("r1")


def test_the_client_gives_up_on_a_service_that_does_not_answer():
    def handler(req: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=req)

    with pytest.raises(WidgetError, match="did not answer in time"):
        client_with(handler).precheck({})


def test_a_listing_follows_the_cursor_up_to_its_limit():
    pages = {None: ([{"id": "a"}, {"id": "b"}], "c1"), "c1": ([{"id": "c"}], None)}
    asked: list[dict[str, str]] = []

    def handler(req: httpx.Request) -> httpx.Response:
        asked.append(dict(req.url.params))
        found, cursor = pages[req.url.params.get("cursor")]
        return httpx.Response(200, json=found, headers={"X-Next-Cursor": cursor} if cursor else {})

    client = client_with(handler)
    assert [r["id"] for r in client.list_requests(status="pending", kind=None)] == ["a", "b", "c"]
    assert asked == [{"status": "pending", "limit": "200"}, {"status": "pending", "limit": "198", "cursor": "c1"}]
    asked.clear()
    assert [r["id"] for r in client.list_requests(limit=2)] == ["a", "b"] and len(asked) == 1


def test_links_go_to_the_decision_page_as_the_browser_reaches_the_hub():
    assert client_with(lambda r: httpx.Response(200)).page_url("r 1") == f"{GOV}/requests/r%201"
    public = client_with(lambda r: httpx.Response(200), public_hub_url="https://hub.example.org/hub/")
    assert public.page_url("r1") == "https://hub.example.org/services/governance/requests/r1"


def test_scoring_sends_the_token_only_to_the_hub():
    seen: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        return httpx.Response(200, json={"predictions": [1]})

    client = client_with(handler)
    assert client.score("/services/serving/endpoints/churn/invocations", {"inputs": [[1]]}) == {"predictions": [1]}
    assert str(seen[0].url) == "http://hub.test/services/serving/endpoints/churn/invocations"
    assert seen[0].headers["Authorization"] == "token alice-token" and json.loads(seen[0].content) == {"inputs": [[1]]}
    client.score("https://models.example.org/churn", {})
    assert "Authorization" not in seen[1].headers
    with pytest.raises(WidgetError, match="not an http"):
        client.score("file:///etc/passwd", {})


def test_the_clients_come_from_the_kernels_environment(monkeypatch):
    with pytest.raises(WidgetError, match=f"^{GOVERNANCE_URL_ENV} is not set"):
        GovernanceClient.from_env({"JUPYTERHUB_API_TOKEN": "t"})
    with pytest.raises(WidgetError, match="JUPYTERHUB_API_TOKEN is not set"):
        GovernanceClient.from_env({GOVERNANCE_URL_ENV: GOV})
    assert GovernanceClient.from_env({GOVERNANCE_URL_ENV: GOV + "/", "JUPYTERHUB_API_TOKEN": "t"}).url == GOV
    with pytest.raises(WidgetError, match=f"{MLFLOW_URL_ENV} is not set"):
        mlflow_client({})
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "")
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN")
    found = mlflow_client({MLFLOW_URL_ENV: "http://hub.test/services/mlflow", "JUPYTERHUB_API_TOKEN": "server-token"})
    assert found.tracking_uri == "http://hub.test/services/mlflow"
    assert os.environ["MLFLOW_TRACKING_TOKEN"] == "server-token"
    mlflow_client({MLFLOW_URL_ENV: "http://hub.test/services/mlflow", "JUPYTERHUB_API_TOKEN": "other"})
    assert os.environ["MLFLOW_TRACKING_TOKEN"] == "server-token", "a token the kernel was given is kept"


def test_background_work_reports_one_line_and_only_the_latest_result():
    said: list[str] = []
    work = Background(said.append)
    gate = threading.Event()
    results: list[object] = []
    slow = work.run("slow", lambda: gate.wait(5) and "stale", results.append, results.append)
    work.run("fails", lambda: 1 / 0, results.append, results.append)
    assert work.wait(5)
    gate.set()
    slow.join(5)
    assert results == ["fails failed: ZeroDivisionError: division by zero"]
    assert said[:2] == ["slow", "fails"] and said[-1] == ""

    class Answer:
        status_code = 403

        def json(self) -> dict[str, str]:
            return {"error_code": "PERMISSION_DENIED", "message": "run r is alice's"}

    error = OSError("403 Client Error")
    error.response = Answer()  # type: ignore[attr-defined]
    assert describe(error) == "403 run r is alice's"


# --- the widgets against a fake service -------------------------------------------------


class FakeService:
    """The governance API's answers, at the transport; records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.state: dict[str, Any] = request(justification="j")

    def __call__(self, req: httpx.Request) -> httpx.Response:
        path = req.url.path.removeprefix("/services/governance/")
        self.calls.append((req.method, path))
        if path == "api/policy/deploy":
            return httpx.Response(
                200, json={"policy": "hubforge.deploy", "decision": "deny", "reasons": ["<b>no card</b>"]}
            )
        if path == "api/requests" and req.method == "POST":
            return httpx.Response(201, json=self.state | {"policy": {"decision": "allow", "reasons": []}})
        if path == "api/requests/r1":
            return httpx.Response(200, json=self.state)
        if path == "api/whoami":
            return httpx.Response(200, json={"name": "dan", "personas": ["data-steward"], "scopes": []})
        if path == "api/requests":
            return httpx.Response(
                200, json=[request(id="d1", kind="data-access", target="claims", requester="alice", model=None)]
            )
        if path.startswith("services/serving") or req.url.path.startswith("/services/serving"):
            return httpx.Response(200, json={"predictions": [0.7]})
        return httpx.Response(404, json={"status": 404, "message": "no such thing"})


def wait_for(check, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not within the time"
        time.sleep(0.01)


def test_the_panel_follows_a_request_until_it_serves_then_scores_a_sample():
    service = FakeService()
    governance = client_with(service)
    panel = DeployPanel("churn", "3", target="production", governance=governance, mlflow=None, poll_interval=0.01)
    assert panel.wait(5)
    assert "&lt;b&gt;no card&lt;/b&gt;" in panel.policy.value and "denies" in panel.policy.value
    panel.justification.value = "AUC +4"
    panel.submit_button.click()
    assert panel.wait(5) and panel.submit_button.disabled
    wait_for(lambda: panel.step is not None and panel.step.step == "submitted")
    assert 'href="http://hub.test/services/governance/requests/r1"' in panel.request_link.value
    service.state = request("approved", decided_by="carol", deployment={"status": "deploying"})
    wait_for(lambda: panel.step is not None and panel.step.step == "deploying")
    assert panel.scoring.layout.display == "none"
    endpoint = "/services/serving/endpoints/churn/invocations"
    service.state = request("approved", deployment={"status": "deployed", "endpoint": endpoint})
    wait_for(lambda: panel.step is not None and panel.step.step == "deployed")
    assert panel.progress.value == 1.0 and panel.progress.bar_style == "success"
    assert panel.scoring.layout.display == "" and "http://hub.test" + endpoint in panel.endpoint.value
    calls = len(service.calls)
    panel.sample.value = "not json"
    panel.score_button.click()
    assert "no JSON" in panel.score_result.value and len(service.calls) == calls
    panel.sample.value = '{"inputs": [[1, 2]]}'
    panel.score_button.click()
    assert panel.wait(5) and "0.7" in panel.score_result.value
    assert [c for c in service.calls if c[1].endswith("decision")] == []
    assert service.calls.count(("POST", "api/requests")) == 1
    panel.close()


def test_the_queue_lists_a_stewards_data_requests_with_links_and_decides_nothing():
    service = FakeService()
    queue = ApprovalQueue(governance=client_with(service), mlflow=None)
    assert queue.wait(5), queue.status.value
    row = queue.row("d1")
    assert "claims" in row.details.value and "requested by <b>alice</b>" in row.details.value
    assert f'href="{GOV}/requests/d1"' in row.approve.value and "Reject" in row.reject.value
    assert {method for method, _ in service.calls} == {"GET"}


def test_a_widget_without_the_platform_says_so_in_one_line(monkeypatch):
    monkeypatch.delenv(GOVERNANCE_URL_ENV, raising=False)
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "alice-token")
    queue = ApprovalQueue(mlflow=None)
    assert queue.wait(5)
    assert f"{GOVERNANCE_URL_ENV} is not set" in queue.status.value and queue.rows == []


# --- the package --------------------------------------------------------------------


def test_the_package_exports_its_public_names():
    assert sorted(package.__all__) == package.__all__
    for name in package.__all__:
        # metric_diff is the shared layer's, which the governance service's decision page uses too
        assert getattr(package, name).__module__.startswith(("hubforge.widgets.", "hubforge.modelcard.")), name
    assert set(package.__all__) <= set(dir(package))
    with pytest.raises(AttributeError):
        package.NoSuchWidget  # noqa: B018


def test_a_data_access_request_shows_its_duration_and_once_approved_until_when():
    request = {"kind": "data-access", "requester": "alice", "created": "2026-12-03T10:00:00Z",
               "target": "feature_view:hubforge_demo/customer_profile", "justification": "Q1 churn",
               "duration_days": 7}  # fmt: skip
    assert "feature_view:hubforge_demo/customer_profile for 7 days, requested by" in review_html(request)
    approved = review_html({**request, "expires": "2026-12-10T10:05:00Z"})
    assert "for 7 days (access until 2026-12-10 10:05 UTC)" in approved
