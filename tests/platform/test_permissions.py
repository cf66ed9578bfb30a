"""The permission matrix: five personas x every governance endpoint and the relevant hub APIs.

Allowed -> 2xx, denied -> 403, and another user's object -> 404 with the same
body as a missing one. Runs on SQLite and on PostgreSQL (the ``platform``
fixture is parametrised over both).
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from mlflow import MlflowClient

from harness.cards import complete_card
from harness.models import as_person, register_model
from harness.platform import PERSONA_USERS, HubSession, api
from hubforge.hub.governance.approvals import TOKEN_DECISION
from hubforge.modelcard.mlflow_store import save_card

GOV = "/services/governance/api"
PERSONAS = list(PERSONA_USERS)


@pytest.fixture(scope="session")
def clients(platform) -> Iterator[dict[str, httpx.Client]]:
    """One token-authenticated API client per persona, each token made through the hub after login."""
    made: dict[str, httpx.Client] = {}
    for persona, user in PERSONA_USERS.items():
        session = HubSession(platform.url)
        assert session.login(user).status_code == 302
        made[persona] = api(platform.url, session.new_token(user, note="permission matrix"))
        session.close()
    yield made
    for client in made.values():
        client.close()


@pytest.fixture(scope="session")
def browsers(platform) -> Iterator[dict[str, HubSession]]:
    """One logged-in browser session per persona: where people decide requests."""
    made = {}
    for persona, user in PERSONA_USERS.items():
        made[persona] = HubSession(platform.url)
        assert made[persona].login(user).status_code == 302
    yield made
    for session in made.values():
        session.close()


@pytest.fixture(scope="session")
def deployable(platform, clients) -> tuple[str, str]:
    """A model version of alice's in the platform's MLflow, with a complete card: what
    production approvals need (the governance service reads it and copies it as itself)."""
    token = clients["data-scientist"].headers["Authorization"].split()[1]
    tracking = platform.url + "/services/mlflow"
    model = register_model(tracking, token, "alice", prefix="matrix")
    with as_person(tracking, token):
        save_card(MlflowClient(tracking, registry_uri=tracking), model.name, model.version, complete_card(model.name))
    return model.name, model.version


def submit(client: httpx.Client, kind: str, model: tuple[str, str] = ("churn", "3")) -> dict:
    body = {"kind": kind, "justification": "matrix"}
    body |= {"target": "datasets/churn"} if kind == "data-access" else {"model": model[0], "version": model[1]}
    resp = client.post(f"{GOV}/requests", json=body)
    assert resp.status_code == 201, resp.text
    return resp.json()


# Who may do what: persona -> expected status.
READ_ANYONE = dict.fromkeys(PERSONAS, 200)


@pytest.mark.parametrize("path", ["/whoami", "/openapi.json", "/requests"])
@pytest.mark.parametrize("persona", PERSONAS)
def test_reads_every_persona_may_make(clients, persona: str, path: str) -> None:
    assert clients[persona].get(f"{GOV}{path}").status_code == READ_ANYONE[persona]


@pytest.mark.parametrize("persona", PERSONAS)
def test_every_persona_may_submit_a_request(clients, persona: str) -> None:
    body = submit(clients[persona], "deploy-staging")
    assert body["requester"] == PERSONA_USERS[persona]
    assert body["status"] == "pending"


VIEW_ALICES_PRODUCTION_REQUEST = {
    "data-scientist": 200,  # her own
    "ml-engineer": 404,  # neither hers nor his to approve: looks missing
    "ml-lead": 200,  # approves production
    "data-steward": 200,  # reads the audit trail
    "platform-admin": 200,
}

DECIDE_PRODUCTION = {
    "data-scientist": 403,  # holds no approver scope at all
    "ml-engineer": 404,  # approves staging only, and may not even see it: looks missing
    "ml-lead": 200,
    "data-steward": 403,  # approves data access, not production
    "platform-admin": 200,
}

DECIDE_DATA_ACCESS = {
    "data-scientist": 403,
    "ml-engineer": 404,
    "ml-lead": 403,  # sees it (audit), approves production, not data access
    "data-steward": 200,
    "platform-admin": 200,
}


@pytest.mark.parametrize("persona", PERSONAS)
def test_viewing_another_users_request(clients, persona: str) -> None:
    request = submit(clients["data-scientist"], "deploy-production")
    resp = clients[persona].get(f"{GOV}/requests/{request['id']}")
    assert resp.status_code == VIEW_ALICES_PRODUCTION_REQUEST[persona], resp.text
    if resp.status_code == 404:
        missing = clients[persona].get(f"{GOV}/requests/no-such-request-id")
        assert missing.status_code == 404
        assert resp.content == missing.content
    listed = [r["id"] for r in clients[persona].get(f"{GOV}/requests").json()]
    assert (request["id"] in listed) == (resp.status_code == 200)


@pytest.mark.parametrize(
    ("kind", "expected"), [("deploy-production", DECIDE_PRODUCTION), ("data-access", DECIDE_DATA_ACCESS)]
)
@pytest.mark.parametrize("persona", PERSONAS)
def test_deciding_a_request(clients, browsers, deployable, persona: str, kind: str, expected: dict[str, int]) -> None:
    request = submit(clients["data-scientist"], kind, deployable)
    resp = browsers[persona].decide(request["id"], "approve", "ok")
    assert resp.status_code == expected[persona], resp.text
    if resp.status_code == 200:
        assert resp.json()["status"] == "approved"
        assert resp.json()["decided_by"] == PERSONA_USERS[persona]
        if kind == "deploy-production":  # the policy read alice's card and metrics from MLflow
            assert resp.json()["policy"] == {"policy": "hubforge.deploy", "decision": "allow", "reasons": []}
        again = browsers[persona].decide(request["id"], "reject")
        assert again.status_code == 409


def test_a_token_never_decides_even_the_approvers_own(clients, deployable) -> None:
    request = submit(clients["data-scientist"], "deploy-production", deployable)
    resp = clients["ml-lead"].post(f"{GOV}/requests/{request['id']}/decision", json={"decision": "approve"})
    assert (resp.status_code, resp.json()["message"]) == (403, TOKEN_DECISION)


def test_production_without_a_model_card_is_refused_with_the_policys_reasons(clients, browsers) -> None:
    request = submit(clients["data-scientist"], "deploy-production", ("no-such-model", "1"))
    assert request["policy"]["decision"] == "deny"
    resp = browsers["ml-lead"].decide(request["id"])
    assert resp.status_code == 403
    assert resp.json()["message"].startswith(
        "the deploy policy refuses: the model version's evidence could not be read"
    )


@pytest.mark.parametrize(
    ("persona", "kind"),
    [("ml-lead", "deploy-production"), ("data-steward", "data-access"), ("platform-admin", "deploy-production")],
)
def test_nobody_decides_their_own_request(clients, browsers, persona: str, kind: str) -> None:
    request = submit(clients[persona], kind)
    resp = browsers[persona].decide(request["id"])
    assert resp.status_code == 403
    assert "separation of duties" in resp.json()["message"]
    assert clients[persona].get(f"{GOV}/requests/{request['id']}").json()["status"] == "pending"


def test_undecidable_requests_the_decider_cannot_see_look_missing(clients, browsers) -> None:
    request = submit(clients["data-scientist"], "deploy-production")
    resp = browsers["ml-engineer"].decide(request["id"])
    missing = browsers["ml-engineer"].decide("nope")
    assert resp.status_code == missing.status_code
    assert resp.content == missing.content


HUB_LIST_USERS = {"data-scientist": 403, "ml-engineer": 403, "ml-lead": 200, "data-steward": 403, "platform-admin": 200}


@pytest.mark.parametrize("persona", PERSONAS)
def test_hub_apis(clients, persona: str) -> None:
    client, me = clients[persona], PERSONA_USERS[persona]
    assert client.get("/hub/api/user").json()["name"] == me
    assert client.get(f"/hub/api/users/{me}").status_code == 200
    assert client.get("/hub/api/users").status_code == HUB_LIST_USERS[persona]
    assert client.get("/hub/api/groups").status_code == HUB_LIST_USERS[persona]
    other = client.get("/hub/api/users/alice" if me != "alice" else "/hub/api/users/bob")
    missing = client.get("/hub/api/users/nobody-here")
    if HUB_LIST_USERS[persona] == 200:
        assert other.status_code == 200
    else:
        assert other.status_code == missing.status_code == 404
        assert other.content == missing.content
    # Starting somebody else's server: only the platform admin may.
    stranger = client.post("/hub/api/users/dan/server" if me != "dan" else "/hub/api/users/alice/server")
    if persona == "platform-admin":
        assert stranger.status_code in (201, 202)
        client.delete("/hub/api/users/dan/server")
    else:
        assert stranger.status_code in (403, 404)
    # Admin-only hub operations.
    admin_only = client.post("/hub/api/users", json={"usernames": ["intruder"]})
    assert admin_only.status_code == (201 if persona == "platform-admin" else 403)


def test_cookie_writes_need_xsrf(platform) -> None:
    session = HubSession(platform.url)
    try:
        assert session.login("alice").status_code == 302
        assert session.follow(f"{GOV}/whoami").status_code == 200
        body = {"kind": "data-access", "target": "datasets/customers", "justification": "churn model"}
        bare = session.client.post(f"{GOV}/requests", json=body)
        assert bare.status_code == 403 and "XSRF" in bare.json()["message"]
        xsrf = next(
            c.value
            for c in session.client.cookies.jar
            if c.name == "_xsrf" and c.path.startswith("/services/governance")
        )
        ok = session.client.post(f"{GOV}/requests", json=body, headers={"X-XSRFToken": xsrf})
        assert ok.status_code == 201, ok.text
    finally:
        session.close()


@pytest.mark.parametrize(
    ("body", "content_type", "status", "needle"),
    [
        (b"{not json", "application/json", 400, "malformed JSON"),
        (b'{"kind": "deploy-staging"}', "text/plain", 415, "application/json"),
        (
            b'{"kind": "data-access", "target": "m", "justification": "j", "extra": 1}',
            "application/json",
            400,
            "extra",
        ),
        (b'{"kind": "teleport", "target": "m", "justification": "j"}', "application/json", 400, "kind"),
        (b"[]", "application/json", 400, ""),
    ],
)
def test_bad_bodies_are_4xx_never_500(clients, body: bytes, content_type: str, status: int, needle: str) -> None:
    resp = clients["data-scientist"].post(f"{GOV}/requests", content=body, headers={"Content-Type": content_type})
    assert resp.status_code == status, resp.text
    assert needle in resp.json()["message"]
