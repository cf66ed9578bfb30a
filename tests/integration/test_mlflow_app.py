"""The hubforge MLflow app: a real ``mlflow server --app-name hubforge`` and a fake hub.

The fake hub (``harness.mlflow_app``) is faked at the transport: an HTTP server answering the hub endpoints
the gate calls (``GET /hub/api/user``, ``GET /hub/api/users/<name>`` with the
service's token, ``POST /hub/api/oauth2/token``). Permissions between real hub users
are tested against a real hub in tests/platform/test_mlflow_isolation.py.
"""

from __future__ import annotations

import asyncio
import http.client
import time
import uuid
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from harness.hub import FakeHub
from harness.mlflow_app import (
    ACCESS,
    CLIENT_ID,
    HOST,
    ORIGIN,
    PREFIX,
    SERVICE_TOKEN,
    api,
    create_experiment,
)
from hubforge.hub.mlflow.gate import (
    HubGate,
    HubUser,
    ambiguous,
    claim_run,
    decide_access,
    install_flask_hook,
    personas,
    same_origin,
)

SEARCH = "api/2.0/mlflow/experiments/search?max_results=1"


@pytest.fixture(scope="module")
def gate_workers() -> int:
    """Two workers: what one learns (a login, a token's owner) the other must not need."""
    return 2


def log_in(client: httpx.Client, hub: FakeHub, token: str, page: str = PREFIX + "?from=test") -> httpx.Response:
    """The OAuth round trip a browser makes, the hub's consent step stood in for."""
    start = client.get(page)
    assert start.status_code == 302, start.text
    query = parse_qs(urlsplit(start.headers["location"]).query)
    code = uuid.uuid4().hex
    hub.codes[code] = (token, query["code_challenge"][0])
    return client.get(f"{PREFIX}oauth_callback", params={"code": code, "state": query["state"][0]})


# --- pure logic -------------------------------------------------------------------


def test_same_origin_compares_origin_or_referer_with_host() -> None:
    assert same_origin({"host": HOST, "origin": ORIGIN})
    assert same_origin({"host": HOST, "referer": f"{ORIGIN}{PREFIX}#/experiments"})
    assert same_origin({"host": "127.0.0.1:9", "x-forwarded-host": HOST, "origin": ORIGIN})
    assert not same_origin({"host": HOST, "origin": "http://evil.test"})
    assert not same_origin({"host": HOST, "origin": "null"})
    assert not same_origin({"host": HOST})


def test_claim_run_fills_in_the_owner_and_keeps_other_tags() -> None:
    tags = [{"key": "team", "value": "x"}]
    claimed = claim_run({"experiment_id": "1", "tags": tags, "user_id": "root"}, "alice")
    assert claimed["user_id"] == "alice"
    assert claimed["tags"] == [*tags, {"key": "mlflow.user", "value": "alice"}]
    own = [{"key": "mlflow.user", "value": "alice"}]
    assert claim_run({"tags": own}, "alice")["tags"] == own


def test_decide_access_needs_the_scope_and_the_own_name() -> None:
    alice = HubUser("alice", frozenset({ACCESS}), frozenset(), via_cookie=False)
    assert decide_access(alice, "GET", PREFIX, None, {ACCESS}) is None
    assert decide_access(alice, "GET", PREFIX, None, {"access:services!service=other"})
    forged = {"tags": [{"key": "mlflow.user", "value": "bob"}]}
    assert "'bob'" in decide_access(alice, "POST", "/runs/create", forged, {ACCESS})
    own = {"tags": [{"key": "mlflow.user", "value": "alice"}]}
    assert decide_access(alice, "POST", "/runs/create", own, {ACCESS}) is None


# --- API clients ------------------------------------------------------------------


def test_health_answers_without_a_token(browser: httpx.Client) -> None:
    assert browser.get(f"{PREFIX}health").text == "OK"


def test_a_connection_kept_idle_past_uvicorns_default_still_answers(mlflow_url: str) -> None:
    """A client that reuses its connection after a pause of 5 s or more (a deployment's
    readiness wait, a person reading between cells) gets an answer, not "Remote end closed
    connection without response": the server keeps idle connections open for
    ``MLFLOW_KEEP_ALIVE_S``, not uvicorn's 5 s."""
    url = urlsplit(mlflow_url)
    connection = http.client.HTTPConnection(url.hostname or "", url.port, timeout=30)
    try:
        connection.request("GET", f"{PREFIX}health", headers={"Host": HOST})
        first = connection.getresponse()
        assert first.read() == b"OK" and first.getheader("connection", "keep-alive") != "close"
        kept = connection.sock
        time.sleep(6)
        connection.request("GET", f"{PREFIX}health", headers={"Host": HOST})
        assert connection.sock is kept, "the same connection"
        assert connection.getresponse().read() == b"OK"
    finally:
        connection.close()


@pytest.mark.parametrize("auth", [None, "token wrong", "Bearer wrong", "Basic YTpi", "token a\tb"])
@pytest.mark.parametrize("root", ["api/", "ajax-api/", "graphql"])
def test_api_without_a_valid_token_is_401(browser: httpx.Client, auth: str | None, root: str) -> None:
    resp = browser.get(
        PREFIX + SEARCH.replace("api/", root, 1),
        headers={"Authorization": auth} if auth else {},
    )
    assert resp.status_code == 401, resp.text
    assert resp.json()["error_code"] == "UNAUTHENTICATED"
    assert ACCESS in resp.json()["message"]


def test_token_without_the_access_scope_is_403(browser: httpx.Client) -> None:
    resp = browser.get(PREFIX + SEARCH, headers=api("mallory-token"))
    assert resp.status_code == 403
    assert resp.json()["error_code"] == "PERMISSION_DENIED"


def test_hub_failure_is_502_not_500(browser: httpx.Client) -> None:
    resp = browser.get(PREFIX + SEARCH, headers=api("explode-token"))
    assert resp.status_code == 502
    assert resp.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"


@pytest.mark.parametrize("scheme", ["token", "Bearer"])
def test_runs_carry_the_hub_user(browser: httpx.Client, scheme: str) -> None:
    headers = api("alice-token", scheme)
    experiment = create_experiment(browser, headers)
    tags = [{"key": "team", "value": "vision"}]
    resp = browser.post(
        f"{PREFIX}api/2.0/mlflow/runs/create",
        json={"experiment_id": experiment, "tags": tags},
        headers=headers,
    )
    assert resp.status_code == 200, resp.text
    run_id = resp.json()["run"]["info"]["run_id"]
    stored = browser.get(f"{PREFIX}api/2.0/mlflow/runs/get", params={"run_id": run_id}, headers=headers).json()
    stored_tags = {tag["key"]: tag["value"] for tag in stored["run"]["data"]["tags"]}
    assert stored_tags["mlflow.user"] == "alice"
    assert stored_tags["team"] == "vision"
    assert stored["run"]["info"]["user_id"] == "alice"


def test_a_run_naming_somebody_else_is_refused(browser: httpx.Client) -> None:
    headers = api("alice-token")
    experiment = create_experiment(browser, headers)
    url = f"{PREFIX}api/2.0/mlflow/runs/create"

    def create(owner: str) -> httpx.Response:
        return browser.post(
            url,
            json={
                "experiment_id": experiment,
                "tags": [{"key": "mlflow.user", "value": owner}],
            },
            headers=headers,
        )

    forged = create("bob")
    assert forged.status_code == 400, forged.text
    assert forged.json()["error_code"] == "INVALID_PARAMETER_VALUE" and "'bob'" in forged.json()["message"]
    search = browser.post(
        f"{PREFIX}api/2.0/mlflow/runs/search",
        json={"experiment_ids": [experiment]},
        headers=headers,
    )
    assert search.json().get("runs", []) == []
    assert create("alice").status_code == 200


def test_server_and_tier_tags_follow_the_hubs_record(browser: httpx.Client, fake_hub: FakeHub) -> None:
    """A run says it ran on a server and tier only as the hub runs them; a server started
    since the hub was last asked is asked about again, not refused from the cache."""
    experiment = create_experiment(browser, api("alice-token"))
    create = f"{PREFIX}api/2.0/mlflow/runs/create"

    def run(server: str, tier: str) -> httpx.Response:
        tags = [{"key": "hubforge.server", "value": server}, {"key": "hubforge.tier", "value": tier}]
        return browser.post(create, json={"experiment_id": experiment, "tags": tags}, headers=api("alice-token"))

    fake_hub.servers.pop("alice", None)
    refused = run("default", "training")
    assert refused.status_code == 400 and "running: none" in refused.json()["message"], refused.text
    fake_hub.servers["alice"] = {"": "training", "big": "finetune"}  # she starts two servers
    placed = run("default", "training")
    assert placed.status_code == 200, placed.text
    tags = {t["key"]: t["value"] for t in placed.json()["run"]["data"]["tags"]}
    assert (tags["hubforge.server"], tags["hubforge.tier"], tags["mlflow.user"]) == ("default", "training", "alice")
    assert run("big", "finetune").status_code == 200
    forged = run("default", "finetune")
    assert forged.status_code == 400, forged.text
    assert forged.json()["message"] == (
        "hubforge.tier 'finetune' is not the tier the hub runs it on (running: big (finetune), default (training))"
    )
    run_id = placed.json()["run"]["info"]["run_id"]
    moved = browser.post(
        f"{PREFIX}api/2.0/mlflow/runs/set-tag",
        json={"run_id": run_id, "key": "hubforge.tier", "value": "interactive"},  # none of hers runs on it
        headers=api("alice-token"),
    )
    assert moved.status_code == 400, moved.text
    fake_hub.servers.pop("alice")


@pytest.mark.parametrize(
    "body",
    [
        '{"tags": "mlflow.user"}',
        '{"tags": [{"key": "mlflow.user", "value": 1}]}',
        "[1]",
        "{",
    ],
)
def test_a_malformed_create_run_is_400(browser: httpx.Client, body: str) -> None:
    headers = {**api("alice-token"), "Content-Type": "application/json"}
    resp = browser.post(f"{PREFIX}api/2.0/mlflow/runs/create", content=body, headers=headers)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error_code"] == "INVALID_PARAMETER_VALUE"


def test_personas_come_from_roles_and_from_groups() -> None:
    group_personas = {"platform-admin": ["platform-admin"], "leads": ["ml-lead", "ml-engineer"]}
    assert personas(["data-scientist"], ["leads"], group_personas) == {"data-scientist", "ml-lead", "ml-engineer"}
    assert personas([], ["platform-admin", "unknown"], group_personas) == {"platform-admin"}
    assert personas([], [], group_personas) == frozenset()


def test_ambiguous_names_one_parameter_twice_with_different_values() -> None:
    assert ambiguous({"run_id": "a"}, {"run_uuid": "b"}) == (
        "ambiguous request: run_id (query) and run_uuid (body) give different values"
    )
    assert ambiguous({}, {"run_id": "a", "runId": "b"})
    assert ambiguous({"experiment_ids": ["1", "2"]}, {"experimentIds": ["1"]})
    assert ambiguous({}, {"trace_id": "t", "request_id": "u"})
    # MLflow's own client sends run_id and run_uuid alike; the same value is not ambiguous.
    assert ambiguous({}, {"run_id": "a", "run_uuid": "a", "key": "m"}) is None
    assert ambiguous({"run_id": "a"}, None) is None


@pytest.mark.parametrize(
    ("query", "body"),
    [
        ({"run_id": "mine"}, {"run_uuid": "theirs"}),
        ({}, {"run_id": "mine", "runId": "theirs"}),
        ({"run_id": "mine"}, {"run_id": "theirs"}),
    ],
)
def test_a_parameter_given_twice_differently_is_400(browser: httpx.Client, query: dict, body: dict) -> None:
    payload = {**body, "key": "m", "value": 1, "timestamp": 1}
    resp = browser.post(
        f"{PREFIX}api/2.0/mlflow/runs/log-metric", params=query, json=payload, headers=api("alice-token")
    )
    assert resp.status_code == 400, resp.text
    assert resp.json()["error_code"] == "INVALID_PARAMETER_VALUE" and "ambiguous" in resp.json()["message"]


def test_a_get_with_a_body_is_400(browser: httpx.Client) -> None:
    """MLflow reads a GET's JSON body when the query string is empty; the gate reads the query."""
    resp = browser.request(
        "GET", f"{PREFIX}api/2.0/mlflow/runs/get", content=b'{"run_id": "x"}', headers=api("alice-token")
    )
    assert resp.status_code == 400, resp.text
    assert "carries no body" in resp.json()["message"]


def test_mlflows_own_client_passes_the_gate(mlflow_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """MlflowClient sends run_id and run_uuid together: the same value twice is no ambiguity."""
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "alice-token")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    client = MlflowClient(mlflow_url + PREFIX.rstrip("/"))
    run = client.create_run(client.create_experiment(f"/Users/alice/client-{uuid.uuid4().hex[:8]}"))
    client.log_metric(run.info.run_id, "loss", 0.5)
    client.log_param(run.info.run_id, "C", "1")
    client.set_tag(run.info.run_id, "team", "vision")
    client.set_terminated(run.info.run_id)
    ended = client.get_run(run.info.run_id)
    assert (ended.info.status, ended.data.metrics, ended.data.params["C"]) == ("FINISHED", {"loss": 0.5}, "1")


def test_token_lookups_are_cached(browser: httpx.Client, fake_hub: FakeHub) -> None:
    for _ in range(8):
        assert browser.get(PREFIX + SEARCH, headers=api("carol-token")).status_code == 200
    # One lookup per uvicorn worker at most, each cached for a minute.
    assert 1 <= fake_hub.lookups["carol-token"] <= 2


# --- browsers ---------------------------------------------------------------------


def test_a_browser_without_a_cookie_goes_to_the_hub(browser: httpx.Client) -> None:
    resp = browser.get(PREFIX)
    assert resp.status_code == 302
    location = urlsplit(resp.headers["location"])
    query = parse_qs(location.query)
    assert location.path == "/hub/api/oauth2/authorize"
    assert query["client_id"] == [CLIENT_ID] and query["response_type"] == ["code"]
    assert query["redirect_uri"] == [PREFIX + "oauth_callback"]
    assert query["state"][0] and query["code_challenge_method"] == ["S256"]
    state_cookie = next(c for c in resp.headers.get_list("set-cookie") if "oauth-state" in c)
    assert "HttpOnly" in state_cookie and f"Path={PREFIX}" in state_cookie


def test_oauth_callback_sets_the_cookie_and_the_ui_answers(browser: httpx.Client, fake_hub: FakeHub) -> None:
    done = log_in(browser, fake_hub, "alice-token")
    assert done.status_code == 302, done.text
    assert done.headers["location"] == PREFIX + "?from=test"
    session = next(c for c in done.headers.get_list("set-cookie") if c.startswith("hubforge-mlflow-session="))
    assert "HttpOnly" in session and f"Path={PREFIX}" in session and "SameSite=lax" in session
    ui = browser.get(PREFIX)
    assert ui.status_code == 200 and "<title>MLflow</title>" in ui.text
    assert browser.get(PREFIX + SEARCH.replace("api/", "ajax-api/")).status_code == 200


def test_cookie_writes_must_come_from_the_same_origin(browser: httpx.Client, fake_hub: FakeHub) -> None:
    assert log_in(browser, fake_hub, "alice-token").status_code == 302
    url = f"{PREFIX}ajax-api/2.0/mlflow/experiments/create"

    def create(**headers: str) -> httpx.Response:
        return browser.post(url, json={"name": f"ui-{uuid.uuid4().hex[:8]}"}, headers=headers)

    assert create(Origin=ORIGIN).status_code == 200
    assert create(Referer=f"{ORIGIN}{PREFIX}").status_code == 200
    assert create().status_code == 403
    assert create(Origin="http://evil.test").status_code == 403


def test_a_bad_oauth_state_is_400(browser: httpx.Client, fake_hub: FakeHub) -> None:
    callback = f"{PREFIX}oauth_callback"
    assert browser.get(callback, params={"code": "c", "state": "s"}).status_code == 400  # no cookie
    start = browser.get(PREFIX)
    state = parse_qs(urlsplit(start.headers["location"]).query)["state"][0]
    assert browser.get(callback, params={"code": "c", "state": "wrong"}).status_code == 400
    assert browser.get(callback, params={"code": "unknown", "state": state}).status_code == 400
    forged = {"Cookie": "hubforge-mlflow-oauth-state=forged.cookie"}
    assert browser.get(callback, params={"code": "c", "state": state}, headers=forged).status_code == 400


def test_a_user_without_access_gets_no_cookie(browser: httpx.Client, fake_hub: FakeHub) -> None:
    done = log_in(browser, fake_hub, "mallory-token")
    assert done.status_code == 403
    assert not any("session=" in c for c in done.headers.get_list("set-cookie"))


@pytest.mark.parametrize("cookie", ["garbage", "a.b.c", "x" * 5000])
def test_a_bad_session_cookie_is_like_none(browser: httpx.Client, cookie: str) -> None:
    headers = {"Cookie": f"hubforge-mlflow-session={cookie}"}
    assert browser.get(PREFIX + SEARCH, headers=headers).status_code == 401
    assert browser.get(PREFIX, headers=headers).status_code == 302


def test_flask_sees_the_hub_user_as_g_hubforge_user(fake_hub: FakeHub) -> None:
    """In process: the gate before MLflow's FastAPI wrapper, a Flask route behind it."""
    from flask import Flask, g
    from jupyterhub.services.auth import HubOAuth
    from mlflow.server.fastapi_app import create_fastapi_app

    flask_app = Flask("probe")
    # A path every hub user may GET (MLflow serves its version there).
    flask_app.add_url_rule(f"{PREFIX}version", "whoami", lambda: str(g.hubforge_user))
    install_flask_hook(flask_app, set())
    hub_auth = HubOAuth(
        api_token=SERVICE_TOKEN, oauth_client_id=CLIENT_ID, api_url=fake_hub.api_url,
        base_url=PREFIX, access_scopes={ACCESS},
    )  # fmt: skip
    transport = httpx.ASGITransport(HubGate(create_fastapi_app(flask_app), hub_auth))

    async def whoami(**headers: str) -> httpx.Response:
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            return await c.get(f"{PREFIX}version", headers=headers)

    assert asyncio.run(whoami(**api("alice-token"))).text == "alice"
    assert asyncio.run(whoami()).status_code == 302
    # A request that never passed the gate finds no user and is refused.
    assert flask_app.test_client().get(f"{PREFIX}version").status_code == 401


def test_the_gate_asks_the_hub_again_once_its_answer_is_old(fake_hub: FakeHub) -> None:
    """The gate keeps who a token is for HubAuth's cache age, not longer: then the hub is
    asked again (a revoked token stops working); a token the hub denies is never kept."""
    from flask import Flask
    from jupyterhub.services.auth import HubOAuth
    from mlflow.server.fastapi_app import create_fastapi_app

    flask_app = Flask("probe")
    flask_app.add_url_rule(f"{PREFIX}version", "version", lambda: "3")
    install_flask_hook(flask_app, set())
    hub_auth = HubOAuth(
        api_token=SERVICE_TOKEN, oauth_client_id=CLIENT_ID, api_url=fake_hub.api_url,
        base_url=PREFIX, access_scopes={ACCESS}, cache_max_age=1,
    )  # fmt: skip
    transport = httpx.ASGITransport(HubGate(create_fastapi_app(flask_app), hub_auth))

    async def version(token: str, times: int) -> list[int]:
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            return [(await c.get(f"{PREFIX}version", headers=api(token))).status_code for _ in range(times)]

    before = dict(fake_hub.lookups)
    assert asyncio.run(version("alice-token", 5)) == [200] * 5
    assert fake_hub.lookups["alice-token"] - before.get("alice-token", 0) == 1
    time.sleep(1.1)
    assert asyncio.run(version("alice-token", 2)) == [200] * 2
    assert fake_hub.lookups["alice-token"] - before.get("alice-token", 0) == 2
    assert asyncio.run(version("nobodys-token", 3)) == [302] * 3  # to the hub's login, as with no token
    assert fake_hub.lookups["nobodys-token"] - before.get("nobodys-token", 0) == 3


def test_a_person_registers_a_logged_model_in_one_call(mlflow_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``log_model(registered_model_name=...)``: the version, then MLflow's own tags on the
    logged model (set_model_versions_tags), both as the person; nobody else's model gains it."""
    import mlflow
    from mlflow import MlflowClient
    from sklearn.linear_model import LinearRegression

    tracking = mlflow_url + PREFIX.rstrip("/")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "alice-token")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    # this test's server, for this test only (monkeypatch puts MLflow's process-wide URIs back)
    monkeypatch.setattr(mlflow.tracking._tracking_service.utils, "_tracking_uri", tracking)
    monkeypatch.setattr(mlflow.tracking._model_registry.utils, "_registry_uri", tracking)
    name = f"reg-{uuid.uuid4().hex[:8]}"
    mlflow.set_experiment(f"/Users/alice/{name}")
    with mlflow.start_run(tags={"mlflow.user": "alice"}):
        info = mlflow.sklearn.log_model(
            LinearRegression().fit([[0], [1]], [0, 1]), name="m", registered_model_name=name
        )
    assert str(info.registered_model_version) == "1"
    client = MlflowClient(tracking, registry_uri=tracking)
    assert name in client.get_logged_model(info.model_id).tags.get("mlflow.modelVersions", "")
    # carol may not add alice's logged model to a model of her own: she cannot read it
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "carol-token")
    client.create_registered_model(name + "-carol")
    with pytest.raises(mlflow.exceptions.MlflowException, match="may not read"):
        client.create_model_version(name + "-carol", info.model_uri, model_id=info.model_id)
