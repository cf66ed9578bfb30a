"""What the decision page weighs: a deploy request's version against what is in production.

Pure parts and :func:`~hubforge.hub.governance.compare.compare` over an in-memory evidence
source; the page itself, served, is tested in tests/integration/test_deploy_requests.py.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime

from harness.cards import complete_card
from hubforge.errors import Unavailable
from hubforge.hub.governance.compare import Comparison, compare, metric_rows, threshold_problem
from hubforge.hub.governance.decision_pages import render_evidence
from hubforge.hub.governance.evidence import Evidence, unavailable
from hubforge.hub.governance.model import ApprovalRequest
from hubforge.modelcard.compare import MetricChange


def request(kind: str = "deploy-production", version: str = "5") -> ApprovalRequest:
    created = datetime(2025, 1, 2, tzinfo=UTC)
    return ApprovalRequest(
        "r1", kind, f"models:/churn/{version}", "j", "alice", "pending", created, model="churn", version=version
    )


def seen(metrics: dict[str, float]) -> Evidence:
    return Evidence(available=True, card_present=True, completeness=1.0, metrics=metrics)


class Registry:
    """An evidence source over dicts, recording what it was asked."""

    def __init__(self, versions: dict[str, Evidence], aliases: dict[str, str], down: bool = False) -> None:
        self.versions, self.aliases, self.down, self.asked = versions, aliases, down, []

    def evidence(self, model: str, version: str) -> Evidence:
        self.asked.append(version)
        return self.versions.get(version) or unavailable(f"no version {version}")

    def alias_version(self, model: str, alias: str) -> str | None:
        if self.down:
            raise Unavailable("MLflow cannot say which version of 'churn' is production: it is away")
        return self.aliases.get(alias)


def run_compare(source: Registry, req: ApprovalRequest, deployed: list[ApprovalRequest] | None = None):
    asked: list[bool] = []

    async def listing() -> list[ApprovalRequest]:
        asked.append(True)
        return deployed or []

    return asyncio.run(compare(source, req, listing)), bool(asked)


def test_thresholds_are_judged_as_the_deploy_policy_does():
    assert threshold_problem(0.8, {"min": 0.85}) == "below the required 0.85"
    assert threshold_problem(0.2, {"max": 0.1}) == "above the allowed 0.1"
    assert threshold_problem(None, {"min": 0.5}) == "not logged"
    assert threshold_problem(0.85, {"min": 0.85, "max": 0.9}) == ""


def test_the_rows_hold_both_versions_metrics_and_every_threshold():
    found = Comparison(seen({"auc": 0.81, "accuracy": 0.93}), seen({"accuracy": 0.88}), "4", "alias")
    rows = metric_rows(found, {"auc": {"min": 0.85}, "recall": {"min": 0.5}, "accuracy": {"min": 0.9}})
    assert [(r.change.name, r.problem) for r in rows] == [
        ("accuracy", ""),
        ("auc", "below the required 0.85"),
        ("recall", "not logged"),
    ]
    assert rows[0].change == MetricChange("accuracy", 0.93, 0.88)
    # production's metrics that could not be read are not shown as numbers
    away = Comparison(seen({"auc": 0.81}), unavailable("gone"), "4", "alias")
    assert [r.change for r in metric_rows(away, {})] == [MetricChange("auc", 0.81, None)]


def test_production_is_what_the_stages_alias_names():
    source = Registry({"5": seen({"auc": 0.9}), "4": seen({"auc": 0.8})}, {"production": "4", "staging": "5"})
    found, listed = run_compare(source, request())
    assert (found.version, found.source, found.production) == ("4", "the registered model's alias", seen({"auc": 0.8}))
    assert not listed  # the store is not asked when the alias says
    staged, _ = run_compare(source, request("deploy-staging"))
    assert staged.version == "5" and staged.production is staged.candidate and source.asked[-1] == "5"


def test_without_an_alias_production_is_the_newest_deployed_request():
    source = Registry({"5": seen({}), "3": seen({"auc": 0.7})}, {})
    decided = datetime(2025, 1, 1, tzinfo=UTC)
    older = replace(request(version="3"), status="approved", decided_by="carol", decided=decided)
    found, listed = run_compare(source, request(), [older])
    assert listed and (found.version, found.source) == ("3", "approved 2025-01-01 by carol")
    nothing, _ = run_compare(source, request(), [])
    assert (nothing.production, nothing.version, nothing.problem) == (None, None, "")


def test_what_cannot_be_read_is_a_problem_not_a_failure():
    source = Registry({"5": seen({"auc": 0.9})}, {}, down=True)
    found, listed = run_compare(source, request())
    assert found.problem.startswith("what is in production could not be read: MLflow cannot say")
    assert found.production is None and not listed
    # without the version's own evidence, production is not looked up at all
    missing = Registry({}, {"production": "4"})
    found, _ = run_compare(missing, request())
    assert not found.candidate.available and missing.asked == ["5"] and found.version is None


def test_the_evidence_escapes_what_people_wrote_and_marks_missed_thresholds():
    card = complete_card("churn")
    card["intended_use"] = "<script>alert(1)</script> See [the runbook](javascript:alert(1))."
    card["model_details"]["owners"] = [{"name": "<b onmouseover=alert(1)>eve</b>"}]
    candidate = Evidence(available=True, card_present=True, completeness=1.0, metrics={"<i>auc</i>": 0.8}, card=card)
    shown = render_evidence(request(), Comparison(candidate), {"<i>auc</i>": {"min": 0.9}})
    assert "<script" not in shown and "<b " not in shown and "<i>" not in shown and 'href="javascript' not in shown
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in shown and "&lt;b onmouseover=alert(1)&gt;eve" in shown
    assert "Nothing is in production yet." in shown
    assert '<tr class="breach"><td>&lt;i&gt;auc&lt;/i&gt;</td><td>0.8</td><td>—</td><td>—</td>' in shown
    assert "≥ 0.9 <strong>fails: below the required 0.9</strong>" in shown


def test_a_card_off_the_schema_shows_its_score_not_its_text():
    card = {"model_details": "<script>"}
    candidate = Evidence(available=True, card_present=True, completeness=0.1, missing=("owners",), card=card)
    shown = render_evidence(request("deploy-staging"), Comparison(candidate), {})
    assert "10% filled for production (missing: owners); risk: not rated." in shown
    assert "does not follow the model card schema" in shown and "<script" not in shown
    assert "Metrics against staging" in shown and "logged no metrics" in shown


def test_unreadable_evidence_is_one_note():
    shown = render_evidence(request(), Comparison(unavailable("cannot read model 'churn' version 5: <away>")), {})
    assert shown.count("<p") == 1 and "They could not be read: cannot read model &#x27;churn&#x27;" in shown
    assert "&lt;away&gt;" in shown and "Metrics" not in shown
