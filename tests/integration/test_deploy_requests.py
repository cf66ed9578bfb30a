"""Deploy requests through the governance service: the policy's word, and decisions only by a person.

The service runs for real (``running``: SQLite and PostgreSQL) behind the tests' fake hub.
People decide on the decision pages in a browser session (the service's hub-login cookie
and its XSRF token, as :func:`harness.governance.cookie_client` holds them); a token,
whatever it holds, never decides. Model cards and metrics come from the harness's fixed
evidence source, which a test changes for the model versions it makes.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Iterator

import httpx
import jsonschema

from harness.governance import Running, cookie_client
from hubforge.hub.governance import schemas
from hubforge.hub.governance.approvals import TOKEN_DECISION
from hubforge.hub.governance.evidence import Evidence

DEPLOY = {"kind": "deploy-production", "model": "churn", "version": "3", "justification": "AUC +4"}


def submit(running: Running, token: str = "alice-token", **fields: object) -> dict:
    with running.client(token) as c:
        r = c.post("api/requests", json={**DEPLOY, **fields})
    assert r.status_code == 201, r.text
    jsonschema.validate(r.json(), schemas.APPROVAL_REQUEST)
    return r.json()


def status_of(running: Running, request_id: str) -> str:
    with running.client("erin-token") as c:
        return c.get(f"api/requests/{request_id}").json()["status"]


@contextlib.contextmanager
def page_session(running: Running, token: str, path: str) -> Iterator[tuple[httpx.Client, httpx.Response]]:
    """A browser session of ``token``'s person that has opened ``path`` (the _xsrf cookie set)."""
    with cookie_client(running, token) as client:
        yield client, client.get(path, headers={"Sec-Fetch-Mode": "navigate"})


def form_xsrf(page: str) -> str:
    match = re.search(r'name="_xsrf" value="([^"]+)"', page)
    assert match, "the decision form carries the XSRF token"
    return match.group(1)


def test_a_deploy_request_names_its_model_version_and_keeps_the_policys_pre_check(running):
    created = submit(running, canary_percent=20)
    assert (created["model"], created["version"], created["canary_percent"]) == ("churn", "3", 20)
    assert created["target"] == "models:/churn/3"
    assert created["policy"] == {"policy": "hubforge.deploy", "decision": "allow", "reasons": []}
    with running.client("carol-token") as c:
        listed = c.get("api/requests", params={"model": "churn", "status": "pending"}).json()
    assert created["id"] in [r["id"] for r in listed] and {r["model"] for r in listed} == {"churn"}


def test_no_token_decides_not_even_the_approvers_own(running):
    created = submit(running)
    with running.client("carol-token") as c:  # carol holds custom:approve:production: her kernel's token does not
        r = c.post(f"api/requests/{created['id']}/decision", json={"decision": "approve"})
    assert (r.status_code, r.json()["message"]) == (403, TOKEN_DECISION)
    # a cookie sent alongside a token does not help: the token is what authenticates
    with cookie_client(running, "carol-token") as c:
        r = c.post(
            f"api/requests/{created['id']}/decision",
            json={"decision": "approve"},
            headers={"Authorization": "token carol-token"},
        )
    assert r.status_code == 403
    assert status_of(running, created["id"]) == "pending"


def test_carol_approves_on_the_decision_page(running):
    created = submit(running, justification="<script>alert(1)</script> better AUC")
    with page_session(running, "carol-token", "requests") as (carol, listing):
        assert listing.status_code == 200 and listing.headers["content-type"].startswith("text/html")
        assert "awaiting your decision" in listing.text and created["id"] in listing.text
        assert re.search(r'<span class="badge">[1-9][0-9]*</span>', listing.text)
        page = carol.get(f"requests/{created['id']}", headers={"Sec-Fetch-Mode": "navigate"})
        assert "<script>" not in page.text and "&lt;script&gt;" in page.text
        assert "The policy now, if you approve" in page.text and "The policy allows." in page.text
        r = carol.post(
            f"requests/{created['id']}",
            data={"decision": "approve", "comment": "ship it", "_xsrf": form_xsrf(page.text)},
        )
    assert r.status_code == 200, r.text
    assert "You approved this request." in r.text and 'name="decision"' not in r.text
    with running.client("alice-token") as c:
        decided = c.get(f"api/requests/{created['id']}").json()
    assert (decided["status"], decided["decided_by"], decided["comment"]) == ("approved", "carol", "ship it")
    assert decided["policy"]["decision"] == "allow"


def test_the_page_offers_no_form_to_who_may_not_decide(running):
    created = submit(running)
    with page_session(running, "alice-token", f"requests/{created['id']}") as (_alice, page):  # her own request
        assert page.status_code == 200 and 'name="decision"' not in page.text
    with page_session(running, "bob-token", f"requests/{created['id']}") as (_bob, page):
        assert page.status_code == 404  # an engineer does not see production requests he did not make


def test_the_form_needs_its_xsrf_token(running):
    created = submit(running)
    with page_session(running, "carol-token", f"requests/{created['id']}") as (carol, _):
        r = carol.post(f"requests/{created['id']}", data={"decision": "approve"})
        assert r.status_code == 403 and "XSRF" in r.json()["message"]
        r = carol.post(f"requests/{created['id']}", data={"decision": "approve", "_xsrf": "forged"})
        assert r.status_code == 403
    assert status_of(running, created["id"]) == "pending"


def test_the_policy_refuses_an_incomplete_card_and_says_why(running):
    running.app.settings["evidence"].cards[("thin", "1")] = Evidence(
        available=True, card_present=True, completeness=0.6, missing=("owners", "risk_rating")
    )
    created = submit(running, model="thin", version="1")
    assert created["policy"]["decision"] == "deny"
    assert created["policy"]["reasons"] == ["the model card is incomplete (missing: owners, risk_rating)"]
    r = running.decide("carol-token", created["id"])
    assert r.status_code == 403
    assert (
        r.json()["message"] == "the deploy policy refuses: the model card is incomplete (missing: owners, risk_rating)"
    )
    assert status_of(running, created["id"]) == "pending"
    # rejecting needs no policy's allow
    assert running.decide("carol-token", created["id"], "reject", "finish the card").status_code == 200


def test_the_pre_check_says_what_an_approver_would_meet(running):
    running.app.settings["evidence"].cards[("bare", "2")] = Evidence(available=True)
    with running.client("alice-token") as c:
        r = c.post("api/policy/deploy", json={**DEPLOY, "model": "bare", "version": "2"})
        assert r.status_code == 200, r.text
        jsonschema.validate(r.json(), schemas.POLICY_RESULT)
        assert r.json() == {
            "policy": "hubforge.deploy",
            "decision": "deny",
            "reasons": ["production needs a model card for bare version 2"],
        }
        staging = c.post(
            "api/policy/deploy", json={**DEPLOY, "kind": "deploy-staging", "model": "bare", "version": "2"}
        )
        assert staging.json()["decision"] == "allow"
        r = c.post("api/policy/deploy", json={"kind": "data-access", "target": "x", "justification": "y"})
        assert r.status_code == 400 and "unknown field 'target'" in r.text
    with running.client("ana-token") as c:  # analysts submit nothing
        assert c.post("api/policy/deploy", json=DEPLOY).status_code == 403


def test_bad_deploy_fields_are_400_naming_them(running):
    cases = [
        ({"version": "03"}, "'version'"),
        ({"version": "1.2"}, "'version'"),
        ({"model": "../etc"}, "'model'"),
        ({"model": "a\nb"}, "'model'"),
        ({"canary_percent": 101}, "'canary_percent'"),
        ({"canary_percent": -1}, "'canary_percent'"),
        ({"canary_percent": True}, "'canary_percent'"),
        ({"canary_percent": 2.5}, "'canary_percent'"),
        ({"target": "models:/x/1"}, "field 'target' is not sent with deploy requests"),
    ]
    with running.client("alice-token") as c:
        for fields, needle in cases:
            r = c.post("api/requests", json={**DEPLOY, **fields})
            assert r.status_code == 400 and needle in r.json()["message"], (fields, r.text)
        r = c.post("api/requests", json={"kind": "deploy-staging", "version": "1", "justification": "j"})
        assert r.status_code == 400 and "missing field 'model'" in r.json()["message"]


def test_the_list_pages_with_a_cursor(running):
    made = [submit(running, "max-token", kind="deploy-staging", model="pager", version=str(n))["id"] for n in (1, 2, 3)]
    seen: list[str] = []
    with running.client("max-token") as c:
        r = c.get("api/requests", params={"model": "pager", "limit": 2})
        assert r.status_code == 200 and len(r.json()) == 2
        seen += [x["id"] for x in r.json()]
        assert 'rel="next"' in r.headers["link"]
        r = c.get("api/requests", params={"model": "pager", "limit": 2, "cursor": r.headers["x-next-cursor"]})
        seen += [x["id"] for x in r.json()]
        assert "link" not in r.headers
        for bad in ({"limit": 0}, {"limit": 501}, {"limit": "x"}, {"cursor": "not-a-cursor"}):
            assert c.get("api/requests", params=bad).status_code == 400, bad
    assert seen == made[::-1]


def test_a_request_one_may_not_see_is_the_same_404_page_as_a_missing_one(running):
    with running.client("alice-token") as c:
        secret = c.post("api/requests", json={"kind": "data-access", "target": "pii", "justification": "j"}).json()
    for path in (f"requests/{secret['id']}", "requests/0000000000000000000000"):
        with page_session(running, "bob-token", path) as (_bob, page):
            assert (page.status_code, page.json()["message"]) == (404, "no such approval request")


def test_an_approval_binds_the_digest_of_governances_copy(running):
    created = submit(running, model="bound", version="4")
    r = running.decide("carol-token", created["id"])
    assert r.status_code == 200, r.text
    expected = "sha256:" + hashlib.sha256(b"bound/4").hexdigest()
    assert r.json()["digest"] == expected
    with page_session(running, "alice-token", f"requests/{created['id']}") as (_alice, page):
        assert expected in page.text  # the requester sees what was approved


def test_no_copy_no_approval(running):
    running.app.settings["snapshots"].failing.add(("away", "1"))
    created = submit(running, model="away", version="1")
    r = running.decide("carol-token", created["id"])
    assert r.status_code == 503
    assert r.json()["message"] == (
        "cannot copy model 'away' version 1 from MLflow: it is away; the request stays pending"
    )
    assert status_of(running, created["id"]) == "pending"
