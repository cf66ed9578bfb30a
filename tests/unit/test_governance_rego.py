"""The Rego policy engine and the shipped deploy policy: compiled at start, judged per request."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from hubforge.errors import ConfigError
from hubforge.hub.governance.deploy_policy import grants, policy_input, submission
from hubforge.hub.governance.evidence import Evidence, NoEvidence
from hubforge.hub.governance.rego import (
    DEPLOY_PACKAGE,
    SAMPLE_INPUT,
    PolicyEngine,
    default_policy_files,
    rego_error_line,
)
from hubforge.hub.governance.schemas import NEW_REQUEST_BODY, describe, first_error
from hubforge.personas import PERSONAS

THRESHOLDS = {"accuracy": {"min": 0.8}, "latency_ms": {"max": 50}}
COMPLETE = Evidence(True, True, 1.0, (), "low", {"accuracy": 0.91, "latency_ms": 12})


@pytest.fixture(scope="module")
def engine() -> PolicyEngine:
    return PolicyEngine(default_policy_files(), {"thresholds": THRESHOLDS})


def persona(name: str, who: str) -> tuple[dict[str, Any], list[str]]:
    return {"name": who, "groups": [name]}, list(PERSONAS[name].custom_scopes)


def judge(engine: PolicyEngine, stage: str, actor: str, evidence: Evidence = COMPLETE, action: str = "approve"):
    kind = f"deploy-{stage}"
    request = {"id": "r1", "kind": kind, "model": "churn", "version": "3", "requester": "alice"}
    who = {"ml-lead": "carol", "ml-engineer": "bob", "data-scientist": "alice", "data-steward": "dan"}[actor]
    user, scopes = persona(actor, who)
    return engine.evaluate(DEPLOY_PACKAGE, policy_input(action, request, user, scopes, evidence))


def test_an_ml_lead_may_approve_production_with_complete_evidence(engine):
    result = judge(engine, "production", "ml-lead")
    assert (result.allow, result.reasons) == (True, ())
    assert result.to_json() == {"policy": DEPLOY_PACKAGE, "decision": "allow", "reasons": []}


def test_an_ml_engineer_may_not_approve_production_but_may_approve_staging(engine):
    result = judge(engine, "production", "ml-engineer")
    assert not result.allow
    assert result.reasons == ("production deployments are approved by an ML lead (custom:approve:production)",)
    assert judge(engine, "staging", "ml-engineer").allow


def test_a_data_scientist_approves_neither_stage(engine):
    reasons = judge(engine, "staging", "data-scientist").reasons  # alice is also the requester
    assert "staging deployments are approved by an ML engineer (custom:deploy:staging)" in reasons
    assert not judge(engine, "production", "data-scientist").allow


def test_nobody_approves_their_own_request(engine):
    request = {"id": "r1", "kind": "deploy-staging", "model": "m", "version": "1", "requester": "bob"}
    user, scopes = persona("ml-engineer", "bob")
    result = engine.evaluate(DEPLOY_PACKAGE, policy_input("approve", request, user, scopes, COMPLETE))
    assert result.reasons == ("separation of duties: nobody approves their own request",)


def test_production_needs_a_card_a_complete_card_and_the_thresholds(engine):
    no_card = Evidence(True, False, 0.0, (), None, {"accuracy": 0.91, "latency_ms": 1})
    assert judge(engine, "production", "ml-lead", no_card).reasons == (
        "production needs a model card for churn version 3",
    )
    partial = Evidence(True, True, 0.5, ("intended_use", "risk_rating"), None, {"accuracy": 0.91, "latency_ms": 1})
    assert judge(engine, "production", "ml-lead", partial).reasons == (
        "the model card is incomplete (missing: intended_use, risk_rating)",
    )
    weak = Evidence(True, True, 1.0, (), "low", {"accuracy": 0.5, "latency_ms": 80})
    assert judge(engine, "production", "ml-lead", weak).reasons == (
        "metric accuracy is 0.5, below the required 0.8",
        "metric latency_ms is 80, above the allowed 50",
    )
    unlogged = Evidence(True, True, 1.0, (), "low", {"accuracy": 0.9})
    assert judge(engine, "production", "ml-lead", unlogged).reasons == (
        "metric latency_ms has a threshold but the model version's run did not log it",
    )


def test_evidence_that_cannot_be_read_refuses_production_but_not_staging(engine):
    missing = NoEvidence().evidence("churn", "3")
    result = judge(engine, "production", "ml-lead", missing)
    assert not result.allow
    assert result.reasons[0].startswith("the model version's evidence could not be read: ")
    assert judge(engine, "staging", "ml-engineer", missing).allow


def test_the_submit_pre_check_tells_the_requester_what_an_approver_will_meet(engine):
    partial = Evidence(True, True, 0.5, ("owners",), None, {"accuracy": 0.91, "latency_ms": 1})
    result = judge(engine, "production", "data-scientist", partial, action="submit")
    assert result.reasons == ("the model card is incomplete (missing: owners)",)  # no approver rule on submit


def test_grants_resolve_filters_as_the_hub_does():
    assert grants(["custom:approve:production!group=ml", "custom:deploy:staging"]) == ["custom:deploy:staging"]


# --- compiling: a broken policy stops the start with one line ------------------------------------


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_syntax_error_names_the_file_and_line(tmp_path):
    good = default_policy_files()
    bad = write(tmp_path, "broken.rego", "package hubforge.deploy\n\nallow if {{ input.x > \n")
    with pytest.raises(ConfigError) as caught:
        PolicyEngine([*good, bad])
    message = str(caught.value)
    assert message.startswith(f"policy {bad}: line 3:")
    assert "unclosed" in message and "\n" not in message


def test_a_policy_without_allow_or_with_a_wrong_deny_is_refused(tmp_path):
    no_allow = write(tmp_path, "a.rego", "package hubforge.deploy\nimport rego.v1\ndeny contains 1 if true\n")
    with pytest.raises(ConfigError, match=r"allow must be defined as a boolean"):
        PolicyEngine([no_allow])
    bad_deny = write(tmp_path, "b.rego", "package hubforge.deploy\nimport rego.v1\nallow := true\ndeny := 3\n")
    with pytest.raises(ConfigError, match=r"deny must be a set of strings"):
        PolicyEngine([bad_deny])


def test_a_policy_that_fails_to_evaluate_names_its_file(tmp_path):
    conflict = write(tmp_path, "c.rego", "package hubforge.deploy\nimport rego.v1\nallow := true\nallow := false\n")
    with pytest.raises(ConfigError, match=rf"^policy {conflict}: evaluating data.hubforge.deploy failed"):
        PolicyEngine([conflict])


def test_missing_and_unreadable_files_and_no_files(tmp_path):
    with pytest.raises(ConfigError, match=r"cannot read it"):
        PolicyEngine([tmp_path / "nope.rego"])
    with pytest.raises(ConfigError, match=r"names no policy file"):
        PolicyEngine([])


def test_a_custom_policy_replaces_the_default(tmp_path):
    strict = write(
        tmp_path,
        "strict.rego",
        "package hubforge.deploy\nimport rego.v1\ndefault allow := false\nallow if count(deny) == 0\n"
        'deny contains "no canaries here" if input.request.canary_percent > 0\n',
    )
    engine = PolicyEngine([strict])
    document = copy.deepcopy(SAMPLE_INPUT)
    assert engine.evaluate(DEPLOY_PACKAGE, document).allow
    document["request"]["canary_percent"] = 20
    assert engine.evaluate(DEPLOY_PACKAGE, document).reasons == ("no canaries here",)


def test_a_policy_that_allows_while_it_denies_denies(tmp_path):
    both = write(
        tmp_path, "d.rego", 'package hubforge.deploy\nimport rego.v1\nallow := true\ndeny contains "no" if true\n'
    )
    result = PolicyEngine([both]).evaluate(DEPLOY_PACKAGE, SAMPLE_INPUT)
    assert (result.allow, result.reasons) == (False, ("no",))


def test_rego_error_line_reads_regopys_length_prefixed_errors():
    error = "(rego-errorseq\n  (error 6:f.rego|20|1\n    (errormsg 16:this is unclosed)\n    (errorast |20|1)))"
    source = "package p\nallow if {{ input.x > \n"
    assert rego_error_line(error, source) == "line 2:11: this is unclosed"
    assert rego_error_line("plain failure\nmore", "") == "plain failure"


# --- submissions ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"kind": "deploy-production", "version": "1"}, "missing field 'model'"),
        ({"kind": "deploy-staging", "model": "m"}, "missing field 'version'"),
        ({"kind": "deploy-staging", "model": "m", "version": "1", "target": "x"}, "field 'target' is not sent"),
        ({"kind": "data-access"}, "missing field 'target'"),
        ({"kind": "data-access", "target": "t", "model": "m"}, "field 'model' belongs to deploy requests"),
        ({"kind": "data-access", "target": "t", "canary_percent": 5}, "field 'canary_percent' belongs"),
    ],
)
def test_the_body_schema_names_what_each_kind_needs(body, message):
    # what submission() never sees: the service answers 400 with this line first
    error = first_error(NEW_REQUEST_BODY, {"justification": "why", **body})
    assert error is not None and message in describe(error)


def test_a_deploy_submission_derives_its_target_and_defaults_the_canary():
    new = submission({"kind": "deploy-production", "model": "churn", "version": "3", "justification": "why"})
    assert (new.target, new.stage, new.canary_percent) == ("models:/churn/3", "production", 0)
    assert submission({"kind": "data-access", "target": "t", "justification": "j"}).stage is None
