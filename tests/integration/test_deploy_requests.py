"""Deploy requests through the governance service: the policy's word, and decisions only by a person.

The service runs for real (``running``: SQLite and PostgreSQL) behind the tests' fake hub.
People decide on the decision pages in a browser session (the service's hub-login cookie
and its XSRF token, as :func:`harness.governance.cookie_client` holds them); a token,
whatever it holds, never decides. Model cards and metrics come from the harness's fixed
evidence source, which a test changes for the model versions it makes (and the aliases
that say what is in production); one test points the service at an MLflow nobody serves.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Iterator

import httpx
import jsonschema
import pytest

from harness.cards import complete_card
from harness.governance import Running, cookie_client
from harness.platform import free_port
from hubforge.hub.governance import schemas
from hubforge.hub.governance.approvals import TOKEN_DECISION
from hubforge.hub.governance.evidence import Evidence
from hubforge.hub.governance.rego import PolicyEngine, default_policy_files

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


# --- what the decision page weighs ---------------------------------------------------------------


def card_evidence(metrics: dict[str, float], card: dict | None = None) -> Evidence:
    return Evidence(available=True, card_present=True, completeness=1.0, risk="medium", metrics=metrics, card=card)


def test_the_page_shows_the_card_and_the_metrics_against_production(running, monkeypatch):
    evidence = running.app.settings["evidence"]
    monkeypatch.setitem(evidence.cards, ("fraud", "5"), card_evidence({"accuracy": 0.93, "auc": 0.81},
                                                                       complete_card("fraud")))  # fmt: skip
    monkeypatch.setitem(evidence.cards, ("fraud", "4"), card_evidence({"accuracy": 0.88, "latency_ms": 12.0}))
    monkeypatch.setitem(evidence.aliases, ("fraud", "production"), "4")
    created = submit(running, model="fraud", version="5")
    thresholds = {"auc": {"min": 0.85}, "recall": {"min": 0.5}, "accuracy": {"min": 0.9}}
    monkeypatch.setitem(running.app.settings, "policies", PolicyEngine(default_policy_files(),
                                                                       {"thresholds": thresholds}))  # fmt: skip
    with page_session(running, "carol-token", f"requests/{created['id']}") as (_carol, page):
        text = page.text
    assert page.status_code == 200
    assert "<th>Owners</th><td>alice (alice@example.com)</td>" in text
    assert "<th>Intended use</th><td><p>Ranking customers for retention offers.</p>" in text
    assert "100% filled for production (complete); risk: medium." in text
    assert "In production: version 4 (the registered model&#x27;s alias)." in text
    assert "<th>Metric</th><th>This version</th><th>Production</th><th>Change</th><th>Threshold</th>" in text
    assert "<tr><td>accuracy</td><td>0.93</td><td>0.88</td><td>+0.05</td><td>≥ 0.9 met</td></tr>" in text
    assert ('<tr class="breach"><td>auc</td><td>0.81</td><td>—</td><td>—</td>'
            "<td>≥ 0.85 <strong>fails: below the required 0.85</strong></td></tr>") in text  # fmt: skip
    assert "<tr><td>latency_ms</td><td>—</td><td>12</td><td>—</td><td></td></tr>" in text
    assert '<tr class="breach"><td>recall</td><td>—</td><td>—</td><td>—</td>' in text
    # the policy now weighs the same thresholds, and says so beside the table
    assert "metric recall has a threshold but the model version&#x27;s run did not log it" in text
    assert "The policy denies." in text and 'name="decision"' in text


def test_without_an_alias_production_is_the_newest_deployed_request(running):
    first = submit(running, model="legacy", version="1")
    assert running.decide("carol-token", first["id"]).status_code == 200
    running.app.settings["store"].set_deployment(first["id"], "deployed", "http://serving.test/legacy")
    second = submit(running, model="legacy", version="2")
    with page_session(running, "cathy-token", f"requests/{second['id']}") as (_cathy, page):
        assert page.status_code == 200
    decided = first_decided_day(running, first["id"])
    assert f"In production: version 1 (approved {decided} by carol)." in page.text
    assert "<tr><td>accuracy</td><td>0.9</td><td>0.9</td><td>+0</td></tr>" in page.text


def first_decided_day(running: Running, request_id: str) -> str:
    with running.client("erin-token") as c:
        return c.get(f"api/requests/{request_id}").json()["decided"][:10]


def test_a_card_people_wrote_is_shown_harmlessly(running, monkeypatch):
    card = complete_card("xss")
    card["intended_use"] = "<script>alert(1)</script> See [the runbook](javascript:alert(1))."
    card["model_details"]["overview"] = "<img src=x onerror=alert(1)>"
    card["model_details"]["owners"] = [{"name": "<b onmouseover=alert(1)>eve</b>", "contact": '"><script>x</script>'}]
    card["considerations"]["limitations"] = [{"description": "<script>alert(2)</script>"}]
    metrics = {'<img src=x onerror="alert(3)">': 1.0}
    monkeypatch.setitem(running.app.settings["evidence"].cards, ("xss", "1"), card_evidence(metrics, card))
    created = submit(running, model="xss", version="1")
    with page_session(running, "carol-token", f"requests/{created['id']}") as (_carol, page):
        text = page.text
    assert page.status_code == 200 and "<th>Intended use</th>" in text
    for harmful in ("<script", "<img", "<b ", 'href="javascript'):
        assert harmful not in text, harmful
    assert "&lt;script&gt;alert(1)&lt;/script&gt; See [the runbook](javascript:alert(1))." in text
    assert "&lt;img src=x onerror=alert(1)&gt;" in text and "&lt;b onmouseover=alert(1)&gt;eve" in text
    assert "<td>&lt;img src=x onerror=&quot;alert(3)&quot;&gt;</td>" in text


@pytest.fixture
def mlflow_away(running: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    """The service reads an MLflow that nobody serves, failing at once rather than retrying."""
    from hubforge.hub.governance.mlflow_evidence import MlflowEvidence

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    monkeypatch.setitem(running.app.settings, "evidence", MlflowEvidence(f"http://127.0.0.1:{free_port()}/mlflow"))


def test_an_unreachable_mlflow_is_a_note_and_people_still_decide(running, mlflow_away):
    production = submit(running, model="offline", version="1")
    with page_session(running, "carol-token", f"requests/{production['id']}") as (carol, page):
        assert page.status_code == 200
        note = re.search(r'<p class="meta">They could not be read: ([^<]*)\.</p>', page.text)
        assert note and "cannot read model &#x27;offline&#x27; version 1" in note.group(1)
        assert "The policy now, if you approve" in page.text and "The policy denies." in page.text
        form = {"decision": "reject", "comment": "no evidence", "_xsrf": form_xsrf(page.text)}
        r = carol.post(f"requests/{production['id']}", data=form)
    assert r.status_code == 200 and "You rejected this request." in r.text and "They could not be read" in r.text
    staging = submit(running, kind="deploy-staging", model="offline", version="1")
    assert staging["policy"]["decision"] == "allow"  # staging weighs no evidence
    with page_session(running, "bob-token", f"requests/{staging['id']}") as (bob, page):
        r = bob.post(f"requests/{staging['id']}", data={"decision": "approve", "_xsrf": form_xsrf(page.text)})
    assert r.status_code == 200 and "You approved this request." in r.text
    assert status_of(running, staging["id"]) == "approved"
