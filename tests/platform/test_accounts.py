"""People's system accounts for real: making and checking them, and `hubforge up` run by an ordinary account.

The accounts are this run's (``ACCOUNT_PREFIX``), removed when the run ends (the
``test_accounts`` fixture of tests/platform/conftest.py). Names and the decision to
isolate, in process, are in tests/unit/test_accounts.py.
"""

from __future__ import annotations

import os
import pwd
import signal
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.platform import ACCOUNT_PREFIX, NO_ACCOUNTS, free_port
from hubforge.spawner_profiles.local.accounts import (
    AccountError,
    account_name,
    ensure_account,
    marker,
    probe_environment,
)
from hubforge.spawner_profiles.local.spawner import singleuser_command

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="making accounts needs root")


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
        probe_environment(account, singleuser_command())
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    python = private / "python3"
    python.symlink_to(os.path.realpath(sys.executable))
    script = private / "jupyterhub-singleuser"
    script.write_text(f"#!{python}\nprint('hi')\n")
    with pytest.raises(AccountError, match=rf"cannot run {python} .*Permission denied"):
        probe_environment(account, [str(script)])


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
