"""People's system accounts on one machine: names, the decision to isolate, making and checking accounts."""

from __future__ import annotations

import dataclasses
import html
import os
import pwd
import signal
import stat
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from _platform import ACCOUNT_PREFIX, NO_ACCOUNTS, free_port
from hubforge.config import PlatformConfig, load_config, merge
from hubforge.spawner_profiles.accounts import (
    MAX_NAME,
    AccountError,
    IsolationRefused,
    account_name,
    decide,
    ensure_account,
    marker,
    probe_environment,
)

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="making accounts needs root")


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


@as_root
def test_an_account_is_made_once_with_a_private_home(tmp_path: Path) -> None:
    first = ensure_account(ACCOUNT_PREFIX, "zed", "/home")
    again = ensure_account(ACCOUNT_PREFIX, "zed", "/home")
    assert first.created and not again.created and first.uid == again.uid >= 1000
    entry = pwd.getpwnam(ACCOUNT_PREFIX + "zed")
    assert entry.pw_gecos == marker("zed") and entry.pw_dir == f"/home/{ACCOUNT_PREFIX}zed"
    home = os.stat(entry.pw_dir)
    assert (home.st_uid, stat.S_IMODE(home.st_mode)) == (entry.pw_uid, 0o700)
    os.chmod(entry.pw_dir, 0o755)  # loosened by hand: tightened again on the next spawn
    ensure_account(ACCOUNT_PREFIX, "zed", "/home")
    assert stat.S_IMODE(os.stat(entry.pw_dir).st_mode) == 0o700


@as_root
def test_an_account_the_platform_did_not_make_is_never_used() -> None:
    name = ACCOUNT_PREFIX + "yan"
    subprocess.run(["useradd", "--create-home", "--comment", "hubforge someone-else", name], check=True)
    with pytest.raises(AccountError, match=f"{name} exists and was not made by this platform for yan"):
        ensure_account(ACCOUNT_PREFIX, "yan", "/home")
    # A hub name crafted to equal another person's folded account name gets a refusal, not theirs.
    theirs = ensure_account(ACCOUNT_PREFIX, "xia@example.com", "/home")
    crafted = theirs.name.removeprefix(ACCOUNT_PREFIX)
    assert account_name(ACCOUNT_PREFIX, crafted) == theirs.name
    with pytest.raises(AccountError, match="was not made by this platform"):
        ensure_account(ACCOUNT_PREFIX, crafted, "/home")


@as_root
def test_a_system_account_is_never_used() -> None:
    # A prefix naming a system account (uid below 1000), even one whose comment looks right.
    entry = pwd.getpwnam("daemon")
    with pytest.raises(AccountError):
        ensure_account("daem", "on", "/home")
    assert pwd.getpwnam("daemon") == entry


@as_root
def test_a_python_the_account_cannot_run_refuses_the_spawn_with_the_reason(tmp_path: Path) -> None:
    account = ensure_account(ACCOUNT_PREFIX, "wen", "/home")
    if not NO_ACCOUNTS:  # the platform's own Python, where other accounts can reach it
        probe_environment(account, [str(Path(sys.executable).with_name("jupyterhub-singleuser"))])
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    python = private / "python3"
    python.symlink_to(os.path.realpath(sys.executable))
    script = private / "jupyterhub-singleuser"
    script.write_text(f"#!{python}\nprint('hi')\n")
    with pytest.raises(AccountError, match=rf"cannot run {python} .*Permission denied"):
        probe_environment(account, [str(script)])


def test_the_spawn_page_says_when_notebooks_are_not_isolated() -> None:
    from hubforge.spawner_profiles.spawn_page import render_options_form

    cfg = load_config(environ={})
    from hubforge.spawner_profiles.catalog import load_catalog

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


OAUTH = {
    "client_id": "hub",
    "authorize_url": "https://idp.example/auth",
    "token_url": "https://idp.example/token",
    "userdata_url": "https://idp.example/userinfo",
}


def _up_as(account: Any, folder: Path, config: dict[str, Any], seconds: float) -> tuple[int | None, str]:
    """``hubforge up`` run by ``account`` for up to ``seconds``: (exit status or None if still up, output)."""
    path = folder / "platform.yaml"
    path.write_text(yaml.safe_dump({"data_dir": str(folder / "data"), "hub": {"port": free_port()}, **config}))
    os.chown(folder, account.uid, account.gid)
    env = {"PATH": os.defpath, "HOME": account.home, "HUBFORGE_DEMO_PASSWORD": "not-a-secret-here"}
    up = subprocess.Popen(
        [str(Path(sys.executable).with_name("hubforge")), "up", "--config", str(path)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=folder,
        user=account.uid, group=account.gid, extra_groups=[], start_new_session=True,
    )  # fmt: skip
    try:
        out, _ = up.communicate(timeout=seconds)
        return up.returncode, out
    except subprocess.TimeoutExpired:
        os.killpg(up.pid, signal.SIGINT)
        out, _ = up.communicate(timeout=60)
        return None, out


@pytest.mark.skipif(bool(NO_ACCOUNTS), reason=f"another account cannot run the platform here: {NO_ACCOUNTS}")
def test_not_root_a_real_authenticator_refuses_and_the_demo_warns(tmp_path: Path) -> None:
    """Started by an ordinary account: one line and exit 2 with OAuth, one warning with the demo."""
    someone = ensure_account(ACCOUNT_PREFIX, "operator", "/home")
    folder = Path(someone.home) / "refused"
    folder.mkdir()
    status, out = _up_as(someone, folder, {"auth": {"type": "oauth", "demo": False, "oauth": OAUTH}}, 60)
    assert status == 2, out
    assert out.strip().splitlines() == [
        "hubforge: error: not running as root with auth.type oauth: people's notebooks could read each other's "
        "files and the platform's keys; run as root, or set spawner.local.isolation: none to accept that"
    ]
    assert not (folder / "data").exists()  # refused before anything was written

    folder = Path(someone.home) / "demo"
    folder.mkdir()
    status, out = _up_as(someone, folder, {}, 20)
    warnings = [line for line in out.splitlines() if "not isolated" in line]
    assert warnings == [
        "[hubforge] WARNING: not running as root, so notebooks are not isolated: every person's notebooks run as this "
        "account and can read each other's files and the platform's data"
    ], out
