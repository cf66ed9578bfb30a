"""What every hub service shares: its hub auth from the hub's environment, and its address."""

from __future__ import annotations

import pytest

from hubforge.errors import ConfigError
from hubforge.hub.service_app import HubServiceApp, hub_auth_settings, make_hub_auth, make_hub_oauth

HUB = {
    "JUPYTERHUB_API_TOKEN": "secret-token",
    "JUPYTERHUB_CLIENT_ID": "service-features",
    "JUPYTERHUB_API_URL": "http://127.0.0.1:8081/hub/api",
    "JUPYTERHUB_BASE_URL": "/",
    "JUPYTERHUB_OAUTH_CALLBACK_URL": "/services/features/oauth_callback",
}


def test_access_needs_the_services_own_scope_unless_the_hub_names_others() -> None:
    settings = hub_auth_settings("features", "/services/features/", HUB)
    assert settings["access_scopes"] == {"access:services!service=features"}
    named = {**HUB, "JUPYTERHUB_OAUTH_ACCESS_SCOPES": '["access:services!service=features", "custom:x"]'}
    assert hub_auth_settings("features", "/p/", named)["access_scopes"] == {
        "access:services!service=features",
        "custom:x",
    }
    with pytest.raises(ConfigError, match="JUPYTERHUB_OAUTH_ACCESS_SCOPES is not a JSON list"):
        hub_auth_settings("features", "/p/", {**HUB, "JUPYTERHUB_OAUTH_ACCESS_SCOPES": "access:all"})


def test_token_only_and_browser_services_need_what_the_hub_gives_them() -> None:
    auth = make_hub_auth("features", "/services/features/", HUB)
    assert (auth.api_token, auth.api_url) == ("secret-token", "http://127.0.0.1:8081/hub/api")
    oauth = make_hub_oauth("features", "/services/features/", HUB)
    assert oauth.oauth_client_id == "service-features" and oauth.hub_prefix == "/hub/"
    with pytest.raises(ConfigError, match=r"^JUPYTERHUB_API_TOKEN not set: the features service runs as"):
        make_hub_auth("features", "/p/", {})
    with pytest.raises(ConfigError, match=r"^JUPYTERHUB_CLIENT_ID not set: the features service"):
        make_hub_oauth("features", "/p/", {"JUPYTERHUB_API_TOKEN": "t"})


class Features(HubServiceApp):
    service_name = "features"


def test_the_address_comes_from_the_service_url_and_the_bind_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JUPYTERHUB_SERVICE_PREFIX", raising=False)
    monkeypatch.delenv("HUBFORGE_BIND_IP", raising=False)
    app = Features(service_url="http://hub:10104")
    assert app.service_prefix == "/services/features/"
    app.init_address()
    assert (app.ip, app.port) == ("hub", 10104)
    app = Features(service_url="http://hub:10104", bind_ip="0.0.0.0")
    app.init_address()
    assert app.ip == "0.0.0.0"
    with pytest.raises(ConfigError, match="names no host and port: the features service runs as"):
        Features(service_url="http://hub").init_address()
