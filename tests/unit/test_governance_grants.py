"""Unit tests of data-access grants: what a request may ask for, when access ends, who reads grants.

Pure functions and schemas: no hub, no database (tests/integration/test_data_access_grants.py
runs the service).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import jsonschema
import pytest

from hubforge.hub.governance import schemas
from hubforge.hub.governance.decision_pages import render_request
from hubforge.hub.governance.deploy_policy import submission
from hubforge.hub.governance.model import DEFAULT_GRANT_DAYS, MAX_GRANT_DAYS, ApprovalRequest, access_expires
from hubforge.hub.governance.policy import AUDIT_SCOPE, GRANTS_SCOPE, PolicyDenied, grants_subject
from hubforge.personas import CUSTOM_SCOPES, PERSONAS

ACCESS = {"kind": "data-access", "target": "feature_view:payments/card_risk", "justification": "fraud model"}
DEPLOY = {"kind": "deploy-staging", "model": "churn", "version": "3", "justification": "AUC +4"}
DECIDED = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)


def problem(body: dict) -> str | None:
    """The 400 message the service gives for ``body``, None when it is valid."""
    error = schemas.first_error(schemas.NEW_REQUEST_BODY, body)
    return None if error is None else schemas.describe(error)


def test_a_data_access_request_may_say_how_many_days_access_lasts():
    assert problem({**ACCESS, "duration_days": 7}) is None
    assert submission({**ACCESS, "duration_days": 7}).store_fields()["duration_days"] == 7
    assert problem({**ACCESS, "duration_days": MAX_GRANT_DAYS}) is None


def test_a_data_access_request_that_does_not_say_lasts_the_default():
    assert problem(ACCESS) is None
    new = submission(ACCESS)
    assert new.duration_days == DEFAULT_GRANT_DAYS == 30
    assert new.store_fields()["duration_days"] == 30


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, "field 'duration_days' must be at least 1"),
        (91, "field 'duration_days' must be at most 90"),
        (-3, "field 'duration_days' must be at least 1"),
        ("x", "field 'duration_days' must be of type integer"),
        ("7", "field 'duration_days' must be of type integer"),
        (7.5, "field 'duration_days' must be of type integer"),
        (True, "field 'duration_days' must be of type integer"),
        (None, "field 'duration_days' must be of type integer"),
    ],
)
def test_a_duration_out_of_range_or_not_a_whole_number_is_refused_naming_the_field(value, message):
    assert problem({**ACCESS, "duration_days": value}) == message


@pytest.mark.parametrize("kind", ["deploy-staging", "deploy-production"])
def test_a_deploy_request_takes_no_duration(kind):
    assert problem({**DEPLOY, "kind": kind, "duration_days": 7}) == (
        "field 'duration_days' belongs to data-access requests, not deploy requests"
    )
    assert submission({**DEPLOY, "kind": kind}).store_fields()["duration_days"] is None
    # nor does the deploy policy's pre-check
    error = schemas.first_error(schemas.DEPLOY_REQUEST_BODY, {**DEPLOY, "duration_days": 7})
    assert error is not None and schemas.describe(error) == "unknown field 'duration_days'"


def test_access_ends_the_requested_days_after_the_approval():
    assert access_expires(DECIDED, 7) == DECIDED + timedelta(days=7)
    # requests made before they said how long: the default
    assert access_expires(DECIDED, None) == DECIDED + timedelta(days=30)


def grant(**fields) -> ApprovalRequest:
    base = {
        "id": "r1",
        "kind": "data-access",
        "target": "feature_view:payments/card_risk",
        "justification": "fraud model",
        "requester": "alice",
        "status": "approved",
        "created": DECIDED - timedelta(hours=1),
        "decided": DECIDED,
        "decided_by": "dan",
        "duration_days": 7,
        "expires": DECIDED + timedelta(days=7),
    }
    return ApprovalRequest(**{**base, **fields})


def test_a_request_and_its_grant_as_the_api_gives_them():
    request = grant()
    jsonschema.validate(request.to_json(), schemas.APPROVAL_REQUEST)
    assert (request.to_json()["duration_days"], request.to_json()["expires"]) == (7, "2026-03-08T12:30:00Z")
    assert request.grant_json() == {
        "request_id": "r1",
        "user": "alice",
        "target": "feature_view:payments/card_risk",
        "granted": "2026-03-01T12:30:00Z",
        "expires": "2026-03-08T12:30:00Z",
        "approved_by": "dan",
    }
    jsonschema.validate(request.grant_json(), schemas.GRANT)
    assert schemas.COMPONENTS["Grant"] is schemas.GRANT
    pending = grant(status="pending", decided=None, decided_by=None, expires=None).to_json()
    jsonschema.validate(pending, schemas.APPROVAL_REQUEST)
    assert pending["expires"] is None


def persona_scopes(name: str) -> set[str]:
    return {"access:services!service=governance", *PERSONAS[name].custom_scopes}


def test_a_person_reads_their_own_grants():
    scientist = persona_scopes("data-scientist")
    assert grants_subject("alice", "user", scientist, None) == "alice"
    assert grants_subject("alice", "user", scientist, "alice") == "alice"


@pytest.mark.parametrize("caller_kind", ["user", "service"])
def test_another_users_grants_need_the_grants_or_audit_scope(caller_kind):
    with pytest.raises(PolicyDenied) as refused:
        grants_subject("bob", caller_kind, persona_scopes("ml-engineer"), "alice")
    assert refused.value.status == 403
    assert GRANTS_SCOPE in refused.value.message and AUDIT_SCOPE in refused.value.message
    assert grants_subject("features", caller_kind, {GRANTS_SCOPE}, "alice") == "alice"
    assert grants_subject("dan", caller_kind, persona_scopes("data-steward"), "alice") == "alice"  # audit:read
    # a filtered scope the service cannot resolve grants nothing
    with pytest.raises(PolicyDenied):
        grants_subject("bob", caller_kind, {GRANTS_SCOPE + "!user=alice"}, "alice")


def test_a_service_has_no_grants_of_its_own_and_is_not_the_person_it_is_named_like():
    assert grants_subject("alice", "service", set(), None) is None
    with pytest.raises(PolicyDenied):
        grants_subject("alice", "service", set(), "alice")


def test_the_grants_scope_is_a_platform_scope_no_persona_but_the_admin_holds():
    assert GRANTS_SCOPE in CUSTOM_SCOPES
    holders = [name for name, persona in PERSONAS.items() if GRANTS_SCOPE in persona.custom_scopes]
    assert holders == ["platform-admin"]


def test_the_decision_page_shows_the_duration_and_once_approved_until_when():
    pending = render_request("/p/", grant(status="pending", decided=None, decided_by=None, expires=None),
                             may_decide=True, xsrf="x")  # fmt: skip
    assert "<th>Access for</th><td>7 days</td>" in pending and "Access until" not in pending
    approved = render_request("/p/", grant(), may_decide=False, xsrf="x")
    assert "<th>Access until</th><td>2026-03-08 12:30 UTC</td>" in approved
    older = render_request("/p/", grant(duration_days=None, expires=None, status="rejected"), may_decide=False,
                           xsrf="x")  # fmt: skip
    assert "<th>Access for</th><td>30 days (the default)</td>" in older and "Access until" not in older
    deploy = render_request("/p/", grant(kind="deploy-staging", duration_days=None, expires=None), may_decide=False,
                            xsrf="x")  # fmt: skip
    assert "Access for" not in deploy
