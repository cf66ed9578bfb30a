"""The platform config rendered into JupyterHub configuration (no hub started)."""

from __future__ import annotations

from pathlib import Path

import yaml
from oauthenticator.generic import GenericOAuthenticator
from traitlets.config import Config

from hubforge.config import load_config
from hubforge.hub.auth import AuditedLogins
from hubforge.hub.compat import service_timeouts
from hubforge.hub.hubconfig import Runtime, configure

RT = Runtime(
    hub_port=1001,
    proxy_api_port=1002,
    service_ports={
        "governance": 1003,
        "mlflow": 1004,
        "serving": 1005,
        "features": 1006,
        "apps": 1007,
        "scheduler": 1008,
    },
    proxy_command="/opt/chp",
    instance="/data",
)


def render(tmp_path: Path, data: dict | None = None) -> Config:
    path = tmp_path / "platform.yaml"
    path.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "data"), **(data or {})}))
    c = Config()
    configure(c, load_config(path, environ={}), RT)
    return c


def test_network_and_state(tmp_path: Path) -> None:
    c = render(tmp_path)
    assert (c.JupyterHub.ip, c.JupyterHub.port, c.JupyterHub.hub_port) == ("127.0.0.1", 8000, 1001)
    assert c.ConfigurableHTTPProxy.command == ["/opt/chp", "--default-target=http://127.0.0.1:1001"]
    assert c.ConfigurableHTTPProxy.api_url == "http://127.0.0.1:1002"
    assert c.JupyterHub.db_url == f"sqlite:///{tmp_path / 'data' / 'hub.sqlite'}"
    assert c.JupyterHub.cookie_secret_file.startswith(str(tmp_path / "data"))


def test_personas_become_roles_and_users_join_groups(tmp_path: Path) -> None:
    c = render(tmp_path)
    names = [r["name"] for r in c.JupyterHub.load_roles]
    assert {"data-scientist", "ml-engineer", "ml-lead", "data-steward", "platform-admin"} <= set(names)
    assert c.JupyterHub.load_groups["data-scientist"]["users"] == ["alice"]
    assert c.JupyterHub.load_groups["platform-admin"]["users"] == ["erin"]
    assert "custom:approve:production" in c.JupyterHub.custom_scopes
    service_role = next(r for r in c.JupyterHub.load_roles if r["name"] == "hubforge-services")
    assert service_role["services"] == ["governance", "mlflow", "serving", "features", "apps", "scheduler"]
    governance_role = next(r for r in c.JupyterHub.load_roles if r["name"] == "hubforge-governance")
    assert governance_role == {
        "name": "hubforge-governance",
        "scopes": ["access:services!service=mlflow", "access:services!service=serving", "custom:audit:read"],
        "services": ["governance"],
    }
    features_role = next(r for r in c.JupyterHub.load_roles if r["name"] == "hubforge-features")
    assert features_role == {
        "name": "hubforge-features",
        "scopes": ["access:services!service=governance", "custom:grants:read"],
        "services": ["features"],
    }
    assert "custom:grants:read" in c.JupyterHub.custom_scopes


def test_demo_users_in_an_admin_group_are_hub_admins(tmp_path: Path) -> None:
    """auth.admin_groups counts with the demo authenticator too (OAuth and LDAP have their own)."""
    c = render(tmp_path)
    assert c.Authenticator.admin_groups == {"platform-admin"}
    assert c.DemoAuthenticator.admin_users == {"erin"}


def test_group_mapping_grants_personas(tmp_path: Path) -> None:
    c = render(
        tmp_path,
        {
            "personas": {"data-scientist": {"groups": ["fraud-team", "data-scientist"]}},
            "users": {"zoe": {"groups": ["fraud-team"]}},
        },
    )
    role = next(r for r in c.JupyterHub.load_roles if r["name"] == "data-scientist")
    assert role["groups"] == ["fraud-team", "data-scientist"]
    assert c.JupyterHub.load_groups["fraud-team"]["users"] == ["zoe"]
    assert c.DemoAuthenticator.allowed_users == {"zoe"}


def test_services_are_hub_managed_behind_the_proxy(tmp_path: Path) -> None:
    c = render(tmp_path)
    services = {s["name"]: s for s in c.JupyterHub.services}
    assert services["governance"]["url"] == "http://127.0.0.1:1003"
    assert services["governance"]["command"][-1] == "hubforge.hub.governance"
    cmd = services["mlflow"]["command"]
    assert cmd[cmd.index("--app-name") + 1] == "hubforge"
    assert cmd[cmd.index("--port") + 1] == "1004"
    assert cmd[cmd.index("--static-prefix") + 1] == "/services/mlflow"
    assert services["governance"]["environment"]["HUBFORGE_INSTANCE"] == "/data"
    # MLflow's first start (its tables) takes more than JupyterHub's 30 s on a loaded machine.
    if service_timeouts():  # JupyterHub 6.0 added the field; 5.5 (the chart's) refuses it
        assert services["mlflow"]["timeout"] == services["governance"]["timeout"] == 180
    assert services["mlflow"]["environment"]["MLFLOW_DISABLE_TELEMETRY"] == "true"


def test_mlflow_can_be_disabled(tmp_path: Path) -> None:
    c = render(tmp_path, {"services": {"mlflow": {"enabled": False}}})
    assert [s["name"] for s in c.JupyterHub.services] == ["governance", "serving", "features", "apps", "scheduler"]


def test_oauth_maps_claims_to_persona_groups(tmp_path: Path) -> None:
    oauth = {
        "client_id": "hub",
        "authorize_url": "https://idp.example/auth",
        "token_url": "https://idp.example/token",
        "userdata_url": "https://idp.example/userinfo",
        "persona_claim": "groups",
        "persona_map": {"ml-team": ["data-scientist"]},
    }
    c = render(tmp_path, {"auth": {"type": "oauth", "demo": False, "oauth": oauth}})
    g = c.GenericOAuthenticator
    assert issubclass(c.JupyterHub.authenticator_class, GenericOAuthenticator)
    assert issubclass(c.JupyterHub.authenticator_class, AuditedLogins)  # logins reach the audit trail
    assert g.manage_groups is True
    assert g.auth_state_groups_key({"oauth_user": {"groups": ["ml-team"]}}) == ["data-scientist"]
    assert "ml-lead" in g.allowed_groups


def test_oauth_may_listen_beyond_loopback(tmp_path: Path) -> None:
    oauth = {
        "client_id": "hub",
        "authorize_url": "https://idp/a",
        "token_url": "https://idp/t",
        "userdata_url": "https://idp/u",
    }
    c = render(tmp_path, {"hub": {"ip": "0.0.0.0"}, "auth": {"type": "oauth", "demo": False, "oauth": oauth}})
    assert c.JupyterHub.ip == "0.0.0.0"


def test_ldap_is_configured_from_platform_yaml(tmp_path: Path) -> None:
    ldap = {"server_address": "ldap.example", "bind_dn_template": ["uid={username},ou=people,dc=example"]}
    c = render(tmp_path, {"auth": {"type": "ldap", "ldap": ldap}})
    assert c.JupyterHub.authenticator_class == "ldapauthenticator.LDAPAuthenticator"
    assert c.LDAPAuthenticator.server_address == "ldap.example"


def test_mlflow_accepts_the_public_address(tmp_path: Path) -> None:
    c = render(tmp_path, {"hub": {"public_url": "https://hub.example.org"}})
    cmd = next(s for s in c.JupyterHub.services if s["name"] == "mlflow")["command"]
    assert "hub.example.org" in cmd[cmd.index("--allowed-hosts") + 1].split(",")
    assert cmd[cmd.index("--cors-allowed-origins") + 1] == "https://hub.example.org"


def test_kubernetes_uses_kubespawner_with_the_tier_catalog(tmp_path: Path) -> None:
    c = render(tmp_path, {"spawner": {"type": "kubernetes"}})
    assert "HubforgeKubeSpawner" in str(c.JupyterHub.spawner_class)
    assert callable(c.KubeSpawner.profile_list) or callable(c.HubforgeKubeSpawner.profile_list)


def test_servers_reach_mlflow_as_their_user(tmp_path: Path) -> None:
    c = render(tmp_path)
    assert c.Spawner.environment["HUBFORGE_MLFLOW_URL"] == "http://127.0.0.1:8000/services/mlflow"
    assert "access:services!service=mlflow" in c.Spawner.server_token_scopes
    assert "custom:experiments:write" in c.Spawner.server_token_scopes


def test_without_mlflow_servers_get_no_mlflow_address_or_scope(tmp_path: Path) -> None:
    c = render(tmp_path, {"services": {"mlflow": {"enabled": False}}})
    assert "HUBFORGE_MLFLOW_URL" not in c.Spawner.environment
    assert not [s for s in c.Spawner.server_token_scopes if "mlflow" in s]
    assert "access:servers!server" in c.Spawner.server_token_scopes


def test_mlflow_job_workers_are_off_by_default(tmp_path: Path) -> None:
    env = lambda c: next(s for s in c.JupyterHub.services if s["name"] == "mlflow")["environment"]  # noqa: E731
    assert env(render(tmp_path))["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    on = render(tmp_path, {"services": {"mlflow": {"job_execution": True}}})
    assert env(on)["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "true"


def test_servers_read_the_feature_catalog_where_the_features_service_runs(tmp_path: Path) -> None:
    c = render(tmp_path)
    assert c.Spawner.environment["HUBFORGE_FEATURES_URL"] == "http://127.0.0.1:8000/services/features"
    assert "access:services!service=features" in c.Spawner.server_token_scopes
    off = render(tmp_path, {"services": {"features": {"enabled": False}}})
    assert "HUBFORGE_FEATURES_URL" not in off.Spawner.environment
    assert not [s for s in off.Spawner.server_token_scopes if "features" in s], "no scope for a service not running"
