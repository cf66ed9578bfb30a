"""The feature browser's access panel against a governance that answers as the service does:
where one stands with each restricted view, and one request per view lacking access."""

from __future__ import annotations

from typing import Any

from harness.features import catalog, view
from hubforge.features.catalog import Catalog
from hubforge.widgets.client import WidgetError
from hubforge.widgets.feature_access import AccessPanel, AccessState, access_html, target_of
from hubforge.widgets.feature_browser import FeatureBrowser, restricted_of


class Governance:
    """Grants, pending requests and submissions, as the governance API keeps them for alice."""

    def __init__(self) -> None:
        self.granted: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.fail: str | None = None

    def grants(self, target: str | None = None) -> list[dict[str, Any]]:
        if self.fail:
            raise WidgetError(self.fail)
        return [g for g in self.granted if target in (None, g["target"])]

    def list_requests(self, *, limit: int = 200, **filters: str | None) -> list[dict[str, Any]]:
        assert filters == {"kind": "data-access", "status": "pending"}
        return [r for r in self.requests if r["status"] == "pending"]

    def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        request = {"id": f"r{len(self.requests) + 1}", "status": "pending", **body}
        self.requests.append(request)
        return request

    def page_url(self, request_id: str) -> str:
        return f"https://hub.example.org/services/governance/requests/{request_id}"


def shown(gov: Governance, views: list[str]) -> AccessPanel:
    panel = AccessPanel(lambda: gov)
    panel.show("payments", views)
    assert panel.wait(10)
    return panel


def test_nothing_restricted_hides_the_panel() -> None:
    panel = AccessPanel(lambda: Governance())
    panel.show("payments", [])
    assert panel.layout.display == "none" and panel.state is None


def test_without_access_the_form_is_offered_and_one_request_per_view_is_sent() -> None:
    gov = Governance()
    gov.granted.append({"target": target_of("payments", "b"), "expires": "2026-12-10T09:00:00Z", "approved_by": "dan"})
    panel = shown(gov, ["a", "b", "c"])
    assert panel.layout.display == "" and panel.form.layout.display == ""
    assert panel.state is not None and panel.state.missing == ["a", "c"]
    assert "🔒 <code>a</code>" in panel.status.value
    assert "until 2026-12-10 09:00 UTC (approved by dan)" in panel.status.value
    panel.purpose.value = "Churn model retraining for Q1 (customer plans)."
    panel.duration.value = 7
    panel.request()
    assert panel.wait(10)
    assert [(r["target"], r["duration_days"], r["kind"]) for r in gov.requests] == [
        ("feature_view:payments/a", 7, "data-access"),
        ("feature_view:payments/c", 7, "data-access"),
    ]
    assert gov.requests[0]["justification"] == "Churn model retraining for Q1 (customer plans)."
    assert "Sent: request r1, r2" in panel.message.value
    assert panel.state.missing == [] and panel.form.layout.display == "none"
    assert "awaits a data steward" in panel.status.value and "/requests/r1" in panel.status.value


def test_a_purpose_too_short_to_judge_sends_nothing() -> None:
    gov = Governance()
    panel = shown(gov, ["a"])
    panel.purpose.value = "  need  "
    panel.request()
    assert gov.requests == [] and "at least 10 characters" in panel.message.value


def test_an_approval_shows_on_check_again() -> None:
    gov = Governance()
    panel = shown(gov, ["a"])
    gov.granted.append({"target": target_of("payments", "a"), "expires": "2027-01-02T00:00:00Z", "approved_by": "dan"})
    panel.check()
    assert panel.wait(10)
    assert "✅ <code>a</code>: you hold access until 2027-01-02 00:00 UTC" in panel.status.value
    assert panel.request_button.disabled


def test_governance_unreachable_is_one_line() -> None:
    gov = Governance()
    gov.fail = "cannot read your data-access grants: cannot reach the governance service at http://x"
    panel = shown(gov, ["a"])
    assert panel.message.value.startswith('<span style="color:#cf222e">cannot read your data-access grants')


def test_text_from_people_is_escaped() -> None:
    state = AccessState("p", ["<b>v</b>"], pending={"<b>v</b>": {"id": "<i>1</i>"}},
                        links={"<b>v</b>": 'x" onmouseover="y'})  # fmt: skip
    text = access_html(state)
    assert "<b>v</b>" not in text and "<i>1</i>" not in text and 'x" onmouseover' not in text


def test_the_browser_shows_the_panel_for_restricted_views_and_services_using_them() -> None:
    cat = Catalog(catalog([view("plain"), view("profile", sensitivity="confidential")]))
    assert restricted_of(cat, cat.get("feature_view", "profile")) == ["profile"]
    assert restricted_of(cat, cat.get("feature_view", "plain")) == []
    assert restricted_of(cat, cat.get("feature_service", "churn_model_v1")) == ["profile"]
    assert restricted_of(cat, cat.get("entity", "customer")) == []

    class Source:
        def catalog(self) -> Catalog:
            return cat

    gov = Governance()
    browser = FeatureBrowser(Source(), governance=lambda: gov)
    assert browser.wait(10)
    browser.select("feature_view", "profile")
    assert browser.access.wait(10)
    assert browser.access.layout.display == "" and browser.access.state.missing == ["profile"]
    browser.select("feature_view", "plain")
    assert browser.access.layout.display == "none"
