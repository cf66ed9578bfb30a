"""Unit tests of the governance policy: pure functions, no hub, no database."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from hubforge.hub.governance.model import KINDS, ApprovalRequest
from hubforge.hub.governance.policy import (
    APPROVER_SCOPES,
    AUDIT_SCOPE,
    NOT_FOUND_MESSAGE,
    PolicyDenied,
    Visibility,
    approver_scope,
    can_view,
    check_decision,
    has_scope,
    visibility,
)
from hubforge.personas import PERSONAS


def make_request(kind: str = "deploy-production", requester: str = "alice", status: str = "pending"):
    return ApprovalRequest(
        id="abc",
        kind=kind,
        target="churn-model v3",
        justification="AUC up 4 points",
        requester=requester,
        status=status,
        created=datetime(2025, 1, 1, tzinfo=UTC),
    )


def persona_scopes(name: str) -> set[str]:
    return {"access:services!service=governance", *PERSONAS[name].custom_scopes}


def test_approver_scope_per_kind():
    assert approver_scope("deploy-production") == "custom:approve:production"
    assert approver_scope("data-access") == "custom:approve:data-access"
    assert approver_scope("deploy-staging") == "custom:deploy:staging"
    assert set(APPROVER_SCOPES) == set(KINDS)
    with pytest.raises(KeyError):
        approver_scope("deploy-moon")


def test_every_approver_scope_is_a_declared_custom_scope():
    from hubforge.personas import CUSTOM_SCOPES

    assert set(APPROVER_SCOPES.values()) <= set(CUSTOM_SCOPES)
    assert AUDIT_SCOPE in CUSTOM_SCOPES


@pytest.mark.parametrize(
    ("scopes", "granted"),
    [
        ({"custom:approve:production"}, True),
        (set(), False),
        ({"custom:approve:data-access"}, False),
        # a filter the service cannot resolve grants nothing (fail closed)
        ({"custom:approve:production!group=ml"}, False),
        ({"custom:approve:production!user=carol"}, False),
        # a malformed scope neither raises nor hides the valid one beside it
        ({"custom:approve:production!bogus", "custom:approve:production"}, True),
        ({"custom:approve:production!bogus"}, False),
    ],
)
def test_has_scope(scopes, granted):
    assert has_scope(scopes, "custom:approve:production") is granted


def test_requester_sees_own_request_only():
    scientist = persona_scopes("data-scientist")
    assert can_view("alice", scientist, make_request(requester="alice"))
    assert not can_view("alice", scientist, make_request(requester="bob"))


@pytest.mark.parametrize(
    ("persona", "kind", "visible"),
    [
        ("ml-lead", "deploy-production", True),
        ("ml-lead", "deploy-staging", True),  # leads are engineers too
        ("ml-lead", "data-access", True),  # through custom:audit:read
        ("data-steward", "data-access", True),
        ("data-steward", "deploy-production", True),  # through custom:audit:read
        ("ml-engineer", "deploy-staging", True),
        ("ml-engineer", "deploy-production", False),
        ("ml-engineer", "data-access", False),
        ("data-scientist", "deploy-staging", False),
        ("analyst", "data-access", False),
    ],
)
def test_visibility_of_others_requests(persona, kind, visible):
    request = make_request(kind=kind, requester="someone-else")
    assert can_view("viewer", persona_scopes(persona), request) is visible


def test_visibility_value_for_store_queries():
    assert visibility("bob", persona_scopes("ml-engineer")) == Visibility("bob", frozenset({"deploy-staging"}))
    assert visibility("erin", {AUDIT_SCOPE}).kinds == frozenset(KINDS)
    assert visibility("alice", persona_scopes("data-scientist")).kinds == frozenset()


def test_decision_by_approver_of_someone_elses_pending_request_is_allowed():
    check_decision("carol", persona_scopes("ml-lead"), make_request(requester="bob"))


def test_decision_on_own_request_is_separation_of_duties():
    with pytest.raises(PolicyDenied) as info:
        check_decision("carol", persona_scopes("ml-lead"), make_request(requester="carol"))
    assert info.value.status == 403
    assert info.value.message.startswith("separation of duties: ")


def test_decision_on_decided_request_conflicts():
    with pytest.raises(PolicyDenied) as info:
        check_decision("carol", persona_scopes("ml-lead"), make_request(status="approved"))
    assert info.value.status == 409


def test_decision_without_approver_scope_for_the_kind_is_forbidden():
    # the steward may see a production request (audit) but not decide it
    with pytest.raises(PolicyDenied) as info:
        check_decision(
            "dan",
            persona_scopes("data-steward"),
            make_request(kind="deploy-production"),
        )
    assert info.value.status == 403
    assert "custom:approve:production" in info.value.message


def test_decision_on_invisible_request_is_indistinguishable_from_missing():
    # an engineer approves staging only and cannot see a data-access request
    with pytest.raises(PolicyDenied) as info:
        check_decision("bob", persona_scopes("ml-engineer"), make_request(kind="data-access"))
    assert (info.value.status, info.value.message) == (404, NOT_FOUND_MESSAGE)


def test_visibility_is_checked_before_conflict_and_duties():
    # an invisible, decided request still answers 404, revealing nothing of its state
    with pytest.raises(PolicyDenied) as info:
        check_decision(
            "bob",
            persona_scopes("ml-engineer"),
            make_request(kind="data-access", status="approved"),
        )
    assert info.value.status == 404
