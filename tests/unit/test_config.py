"""The platform config: defaults, merging, and one-line errors naming the key.

The ``hubforge`` command run on a config is in tests/integration/test_config.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness.config import write
from hubforge.config import load_config, merge
from hubforge.errors import ConfigError
from hubforge.personas import persona_names


def test_default_config_is_valid_and_complete(tmp_path: Path) -> None:
    cfg = load_config(environ={"HUBFORGE_DATA": str(tmp_path)})
    assert cfg.source == "default platform.yaml"
    assert cfg.data_dir == tmp_path.resolve()
    assert set(cfg.data["personas"]) == set(persona_names())
    assert set(cfg.data["users"]) == {"alice", "bob", "carol", "dan", "erin", "frank"}
    assert cfg.db_url("governance") == f"sqlite:///{tmp_path.resolve() / 'governance.sqlite'}"
    assert cfg.public_url == "http://127.0.0.1:8000/"


def test_user_file_merges_over_default(tmp_path: Path) -> None:
    path = write(tmp_path, {"hub": {"port": 9000}, "users": {"zoe": {"groups": ["ml-lead"]}}})
    cfg = load_config(path, environ={})
    assert cfg.hub.port == 9000
    assert cfg.hub.ip == "127.0.0.1"  # merged, not replaced
    assert list(cfg.users) == ["zoe"]  # users replace the demo users whole
    assert cfg.user_groups("zoe") == ["ml-lead"] and cfg.user_groups("alice") == []
    assert cfg.group_personas()["ml-lead"] == ["ml-lead"]


def test_the_typed_sections_are_the_merged_files_and_frozen(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "services": {"mlflow": {"enabled": False}},
            "spawner": {"local": {"isolation": "none", "environments": {"gpu": "/opt/venvs/gpu"}}},
            "backends": {"redis_url": "redis://127.0.0.1:6379/0"},
        },
    )
    cfg = load_config(path, environ={})
    assert cfg.services.mlflow.enabled is False and cfg.services.mlflow.job_execution is False
    assert cfg.services.governance.port == 0
    local = cfg.spawner.local
    assert local.isolation == "none" and local.account_prefix == "hubforge-"
    assert dict(local.environments) == {"scipy": "platform", "gpu": "/opt/venvs/gpu"}  # merged key by key
    assert cfg.backends.redis_url == "redis://127.0.0.1:6379/0" and cfg.backends.hub_db_url == ""
    assert cfg.auth.type == "demo" and cfg.auth.oauth is None and "platform-admin" in cfg.auth.admin_groups
    assert cfg.spawner.kubernetes.namespace == "hubforge" and not cfg.spawner.on_kubernetes
    with pytest.raises(AttributeError):
        cfg.services.mlflow.enabled = True  # type: ignore[misc]
    with pytest.raises(TypeError):
        local.environments["x"] = "platform"  # type: ignore[index]


def test_every_section_key_the_default_names_is_typed() -> None:
    """A key added to the shipped default and the schema must reach its typed section."""
    import dataclasses

    cfg = load_config(environ={})
    sections = {
        "hub": cfg.hub,
        "auth": cfg.auth,
        "backends": cfg.backends,
        "spawner": cfg.spawner,
        "spawner.local": cfg.spawner.local,
        "spawner.kubernetes": cfg.spawner.kubernetes,
        "services.mlflow": cfg.services.mlflow,
        "services.governance": cfg.services.governance,
    }
    for dotted, section in sections.items():
        raw = cfg.data
        for part in dotted.split("."):
            raw = raw[part]
        typed = {f.name for f in dataclasses.fields(section)}
        assert set(raw) <= typed, f"{dotted}: {sorted(set(raw) - typed)} not in {type(section).__name__}"


def test_only_the_config_module_digs_into_the_raw_mapping() -> None:
    """Components read the typed sections; ``cfg.data[...]`` outside the config is a second parser."""
    import re

    root = Path(__file__).resolve().parents[2]
    digging = re.compile(r"\b(?:cfg|config|self\.cfg|platform)\.data\s*(?:\[|\.get\()")
    found = [
        f"{path.relative_to(root)}:{number}"
        for folder in ("hubforge", "hub", "server_extension", "spawner_profiles", "widgets")
        for path in sorted((root / folder).rglob("*.py"))
        if path.name != "config.py" or path.parent.name != "hubforge"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if digging.search(line)
    ]
    assert not found, found


def test_config_env_and_data_env(tmp_path: Path) -> None:
    path = write(tmp_path, {"data_dir": "relative-data"})
    cfg = load_config(environ={"HUBFORGE_CONFIG": str(path)})
    assert cfg.source == str(path)
    assert cfg.data_dir == (Path.cwd() / "relative-data").resolve()
    cfg = load_config(environ={"HUBFORGE_CONFIG": str(path), "HUBFORGE_DATA": str(tmp_path / "d")})
    assert cfg.data_dir == tmp_path / "d"


def test_backend_urls_are_used_when_configured(tmp_path: Path) -> None:
    url = "postgresql://postgres@127.0.0.1:5432/hub"
    cfg = load_config(write(tmp_path, {"backends": {"hub_db_url": url}}), environ={})
    assert cfg.db_url("hub") == "postgresql+psycopg2://postgres@127.0.0.1:5432/hub"
    assert cfg.db_url("mlflow").startswith("sqlite:///")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"hub": {"prot": 8000}}, "hub.prot: unknown key"),
        ({"colour": "blue"}, "colour: unknown key"),
        ({"hub": {"port": "eighty"}}, "hub.port: 'eighty' is not of type 'integer'"),
        ({"hub": {"port": 70000}}, "hub.port: 70000 is greater than the maximum of 65535"),
        ({"personas": {"data-scienist": {"groups": ["x"]}}}, "personas.data-scienist: unknown persona 'data-scienist'"),
        (
            {
                "auth": {
                    "oauth": {
                        "client_id": "x",
                        "authorize_url": "https://idp/a",
                        "token_url": "https://idp/t",
                        "userdata_url": "https://idp/u",
                        "persona_map": {"ds": ["wizard"]},
                    }
                }
            },
            "auth.oauth.persona_map.ds.0: unknown persona 'wizard'",
        ),
        ({"auth": {"type": "sso"}}, "auth.type: 'sso' is not one of"),
        ({"auth": {"type": "oauth"}}, "auth.oauth: required when auth.type is 'oauth'"),
        ({"auth": {"demo": False}}, "auth.type: the demo authenticator needs auth.demo: true"),
        ({"hub": {"ip": "0.0.0.0"}}, "hub.ip: the demo authenticator only binds to loopback"),
        ({"users": {"Alice Smith": {"groups": []}}}, "users.Alice Smith: invalid name 'Alice Smith'"),
        ({"hub": {"hub_port": 8000}}, "hub.hub_port: 8000 is already hub.port"),
        ("hub: [unclosed", "invalid YAML at line 1"),
        ("- a\n- b\n", "the config must be a mapping of keys, not list"),
    ],
)
def test_config_errors_are_one_line_naming_the_key(tmp_path: Path, data: object, expected: str) -> None:
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert expected in message


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.yaml", environ={})


def test_merge_replaces_lists_and_scalars() -> None:
    assert merge({"a": {"b": [1], "c": 1}}, {"a": {"b": [2]}}) == {"a": {"b": [2], "c": 1}}


def test_tier_cross_checks_run_at_load(tmp_path: Path) -> None:
    tiers = yaml.safe_load(load_config(environ={}).dump())["tiers"]
    tiers["training"]["images"]["default"] = "nope"
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, {"tiers": tiers}), environ={})
    assert "tiers.training.images.default: 'nope' is not among the image choices" in str(info.value)
