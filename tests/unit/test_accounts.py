"""People's system accounts on one machine: names, the decision to isolate, what the spawn page says.

Making and checking real accounts (as root), and `hubforge up` run by an ordinary
account, are in tests/platform/test_accounts.py.
"""

from __future__ import annotations

import dataclasses
import html
from types import SimpleNamespace
from typing import Any

import pytest

from hubforge.config import PlatformConfig, load_config, merge
from hubforge.spawner_profiles.local.accounts import (
    MAX_NAME,
    IsolationRefused,
    account_name,
    decide,
)


def config(overrides: dict[str, Any] | None = None, **spawner_local: Any) -> PlatformConfig:
    """The default config with ``spawner.local`` settings and other ``overrides`` merged in."""
    cfg = load_config(environ={})
    data = merge(cfg.data, {"spawner": {"local": spawner_local}, **(overrides or {})})
    return dataclasses.replace(cfg, data=data)


def test_plain_names_keep_their_name_and_others_get_a_digest() -> None:
    assert account_name("hubforge-", "alice") == "hubforge-alice"
    assert account_name("hubforge-", "root") == "hubforge-root"  # never the system's root
    odd = ["Alice", "alice@example.com", "a" * 40, "ünïcode", "-", "alice smith", "ALICE"]
    names = [account_name("hubforge-", n) for n in odd]
    assert len(set(names)) == len(odd), names
    for name in names:
        assert len(name) <= MAX_NAME and name.startswith("hubforge-")
        assert all(c.islower() or c.isdigit() or c in "-_" for c in name), name
        assert "--" not in name and not name.endswith("-"), name
    assert account_name("hubforge-", "Alice.Smith").startswith("hubforge-alice-smith-")


@pytest.mark.parametrize(
    ("spawner", "auth", "euid", "mode"),
    [
        ({}, "demo", 0, "users"),
        ({"isolation": "users"}, "demo", 0, "users"),
        ({"isolation": "none"}, "demo", 0, "none"),
        ({"isolation": "none"}, "oauth", 1000, "none"),
        ({}, "demo", 1000, "none"),
    ],
)
def test_isolation_follows_root_and_the_config(spawner: dict[str, Any], auth: str, euid: int, mode: str) -> None:
    cfg = config({"auth": {"type": auth}}, **spawner)
    decided = decide(cfg, euid)
    assert decided.mode == mode
    # One clear warning exactly when people are not isolated and nobody chose that.
    assert bool(decided.warning) == (mode == "none" and "isolation" not in spawner)
    assert decided.warning.count("\n") == 0


def test_a_database_on_this_machine_without_a_password_is_warned_about() -> None:
    backends = {
        "hub_db_url": "postgresql://postgres@127.0.0.1:5432/hub",
        "governance_db_url": "postgresql://gov:secret@127.0.0.1/gov",  # a password: fine
        "mlflow_db_url": "postgresql://mlflow@db.internal/mlflow",  # another machine: not a local account's
        "redis_url": "redis://localhost:6379/0",
    }
    cfg = config({"backends": backends})
    warning = decide(cfg, 0).warning
    assert warning.startswith("WARNING: backends.hub_db_url, backends.redis_url on this machine without a password")
    assert "\n" not in warning
    assert decide(config(), 0).warning == ""  # SQLite files in the private data folder


def test_a_real_authenticator_without_root_refuses_unless_told() -> None:
    cfg = config({"auth": {"type": "oauth"}})
    with pytest.raises(IsolationRefused, match=r"spawner\.local\.isolation: none"):
        decide(cfg, 1000)
    with pytest.raises(IsolationRefused, match="needs `hubforge up` to run as root"):
        decide(config(isolation="users"), 1000)
    kube = config({"spawner": {"type": "kubernetes"}})
    assert decide(kube, 1000).mode == "pods"


def test_the_prefix_is_never_empty() -> None:
    from hubforge.config import ConfigError, validate

    data = load_config(environ={}).data
    data["spawner"]["local"]["account_prefix"] = ""
    with pytest.raises(ConfigError, match="account_prefix"):
        validate(data)


def test_the_spawn_page_says_when_notebooks_are_not_isolated() -> None:
    from hubforge.spawner_profiles.local.spawn_page import render_options_form

    cfg = load_config(environ={})
    from hubforge.catalog import load_catalog

    catalog = load_catalog(cfg)
    snapshot = SimpleNamespace(tiers={})
    allocator = SimpleNamespace(snapshot=lambda _selectors: snapshot)

    def page(isolation: str) -> str:
        spawner = SimpleNamespace(
            catalog=catalog,
            isolation=isolation,
            allocator=allocator,
            reconcile_allocations=lambda: [],
            user_groups=lambda: ["data-scientist"],
            user_personas=lambda: set(cfg.group_personas()["data-scientist"]),
        )
        return html.unescape(render_options_form(spawner))

    assert "Notebooks are not isolated: every person's notebooks run as the platform's own" in page("none")
    assert "hubforge-isolation" not in page("users")
