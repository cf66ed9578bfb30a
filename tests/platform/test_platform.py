"""The real platform: log in through the hub's form, spawn, reach JupyterLab and MLflow."""

from __future__ import annotations

import pytest

from harness.platform import PERSONA_USERS, HubSession, PlatformProcess, api, up_in_foreground, wait_for


@pytest.mark.parametrize("persona", list(PERSONA_USERS))
def test_each_persona_logs_in_and_governance_knows_them(session_for, persona: str) -> None:
    session, user = session_for(persona)
    home = session.follow("/hub/home")
    assert home.status_code == 200 and user in home.text
    # The governance service, reached in the browser through hub OAuth.
    who = session.follow("/services/governance/api/whoami")
    assert who.status_code == 200, who.text
    body = who.json()
    assert body["name"] == user
    assert persona in body["personas"]
    assert all(scope.startswith("custom:") for scope in body["scopes"])


def test_wrong_password_is_refused(platform) -> None:
    session = HubSession(platform.url)
    try:
        resp = session.login("alice", "not-the-password")
        assert resp.status_code == 403
        assert session.client.get("/hub/api/user").status_code == 403
    finally:
        session.close()


def test_a_second_up_for_the_same_data_is_refused(platform: PlatformProcess) -> None:
    """On the running platform the other tests use: refused, and it runs on untouched."""
    second = up_in_foreground(platform)
    assert second.returncode == 2
    assert second.stderr.strip().startswith("hubforge: error: hubforge is already running")
    assert platform.ready()


def test_unknown_user_is_refused(platform) -> None:
    session = HubSession(platform.url)
    try:
        assert session.login("mallory").status_code == 403
    finally:
        session.close()


def test_services_need_hub_login(platform) -> None:
    session = HubSession(platform.url)
    try:
        assert session.client.get("/services/governance/api/whoami").status_code == 401
        browser = session.client.get("/services/mlflow/")
        assert browser.status_code == 302 and "/hub/api/oauth2/authorize" in browser.headers["location"]
        assert session.client.get("/services/mlflow/api/2.0/mlflow/experiments/search").status_code == 401
    finally:
        session.close()


def test_spawn_and_reach_jupyterlab_through_the_proxy(platform, session_for) -> None:
    session, user = session_for("data-scientist")
    token = session.new_token(user)
    with api(platform.url, token) as client:
        started = client.post(f"/hub/api/users/{user}/server")
        assert started.status_code in (201, 202), started.text

        def ready() -> bool:
            model = client.get(f"/hub/api/users/{user}").json()
            return bool(model["servers"].get("", {}).get("ready"))

        wait_for(ready, 120, f"{user}'s server")
        lab = session.follow(f"/user/{user}/lab")
        assert lab.status_code == 200, lab.text[:500]
        assert "JupyterLab" in lab.text
        # The server's own API answers through the proxy with the user's token.
        assert client.get(f"/user/{user}/api/status").status_code == 200
        stopped = client.delete(f"/hub/api/users/{user}/server")
        assert stopped.status_code in (202, 204)
        wait_for(lambda: not client.get(f"/hub/api/users/{user}").json()["servers"], 60, "the server to stop")


def test_mlflow_ui_behind_hub_login(session_for) -> None:
    session, _ = session_for("data-scientist")
    ui = session.follow("/services/mlflow/")
    assert ui.status_code == 200
    assert "<html" in ui.text.lower()


@pytest.mark.parametrize("platform", ["sqlite"], indirect=True)
def test_the_recovery_benchmark_finds_each_component_it_kills(platform: PlatformProcess) -> None:
    """``python -m bench recovery`` kills the hub, the proxy, governance and MLflow by what their
    command lines say; one it no longer recognises stops ``make bench``, which no test runs."""
    from bench.recovery import COMPONENTS, _process

    for name, (match, _check) in COMPONENTS.items():
        assert _process(platform, match).is_running(), name
