"""One system account per person on one machine (the way The Littlest JupyterHub does it).

When the platform runs as root, each person's server and kernels run as their
own unprivileged account, ``<prefix><hub name>``, created on their first spawn
with a private (0700) home. The account's comment field carries a digest of the
hub name it was made for: an account of that name that the platform did not make
for that person (a system account, another person's, one made by hand) is never
used. Without root nothing can be isolated, and :func:`decide` says what the
platform does then: with the demo authenticator on loopback it runs everyone as
the platform's own account with one warning; with a real authenticator it refuses
unless the operator chose ``spawner.local.isolation: none``.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import re
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from hubforge.config import PlatformConfig
from hubforge.errors import HubforgeError

__all__ = [
    "Account",
    "AccountError",
    "Isolation",
    "IsolationRefused",
    "account_name",
    "decide",
    "ensure_account",
    "interpreter",
    "open_backends",
    "probe_environment",
]

#: Linux's limit on a user name (useradd refuses longer ones).
MAX_NAME = 32
#: Hub names used as they are after the prefix; any other name is folded and given a digest.
_PLAIN = re.compile(r"[a-z][a-z0-9_-]*\Z")
#: Lowest uid a person's account may have (login.defs' UID_MIN on Debian and most others).
UID_MIN = 1000

#: What each isolation mode means, in the words whoami and the spawn page use.
WORDS = {
    "users": "each person's notebooks run as their own system account",
    "none": "notebooks are not isolated: every person's notebooks run as the platform's own system account",
    "pods": "each person's notebooks run in their own pod",
}

_LOCK = threading.Lock()
_PROBED: set[tuple[int, str]] = set()


class AccountError(HubforgeError):
    """A person's system account cannot be made or used."""


class IsolationRefused(HubforgeError):
    """The platform cannot isolate people here and was not told it may run without."""


@dataclass(frozen=True)
class Isolation:
    """What the platform does about people's processes, and the one warning to print."""

    mode: str  # users | none | pods
    warning: str = ""

    @property
    def words(self) -> str:
        """One sentence a person reads on whoami and the spawn page."""
        return WORDS[self.mode]


def decide(cfg: PlatformConfig, euid: int) -> Isolation:
    """The isolation the platform runs with, given its config and the effective uid.

    Raises :class:`IsolationRefused` (one line) where running would not be safe.
    """
    if cfg.spawner.on_kubernetes:
        return Isolation("pods")
    wanted = cfg.spawner.local.isolation
    if wanted == "none":
        return Isolation("none")
    if euid == 0:
        unguarded = open_backends(cfg)
        if unguarded:
            return Isolation(
                "users",
                f"WARNING: {', '.join(unguarded)} on this machine without a password: if it trusts local "
                "connections, every person's notebook can connect to it; give it a password",
            )
        return Isolation("users")
    if wanted == "users":
        raise IsolationRefused(
            "spawner.local.isolation: users needs `hubforge up` to run as root (it creates an account per person)"
        )
    if cfg.auth.type == "demo":
        return Isolation(
            "none",
            "WARNING: not running as root, so notebooks are not isolated: every person's notebooks "
            "run as this account and can read each other's files and the platform's data",
        )
    raise IsolationRefused(
        f"not running as root with auth.type {cfg.auth.type}: people's notebooks could read each other's "
        "files and the platform's keys; run as root, or set spawner.local.isolation: none to accept that"
    )


#: Backends a person's process could reach over loopback, in the config.
_BACKENDS = ("hub_db_url", "governance_db_url", "mlflow_db_url", "apps_db_url", "scheduler_db_url", "redis_url")


def open_backends(cfg: PlatformConfig) -> list[str]:
    """Backends on this machine reached without a password: a database that trusts local
    connections (PostgreSQL's ``trust``, Redis without ``requirepass``) lets every person's
    notebook in, whatever their account."""
    found = []
    for key in _BACKENDS:
        url = getattr(cfg.backends, key)
        if not url or url.startswith("sqlite"):
            continue
        parts = urlsplit(url)
        if parts.password is None and (parts.hostname or "localhost") in {"localhost", "127.0.0.1", "::1"}:
            found.append(f"backends.{key}")
    return found


def account_name(prefix: str, hub_name: str) -> str:
    """The system account of hub user ``hub_name``: the prefix and the name, or, for a name
    a system account cannot have (capitals, ``@``, too long), a folded name and a digest."""
    name = prefix + hub_name
    if _PLAIN.match(hub_name) and len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(hub_name.encode()).hexdigest()[:8]
    folded = re.sub(r"[^a-z0-9_-]+", "-", hub_name.lower()).strip("-")
    room = MAX_NAME - len(prefix) - len(digest) - 1
    folded = folded[: max(room, 0)].rstrip("-")
    return f"{prefix}{folded}-{digest}" if folded else f"{prefix}{digest}"


def marker(hub_name: str) -> str:
    """The comment of an account made for ``hub_name`` (no ``:`` or newline can reach /etc/passwd)."""
    return "hubforge " + hashlib.sha256(hub_name.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Account:
    """A person's system account, checked."""

    name: str
    uid: int
    gid: int
    home: str
    shell: str
    created: bool

    @property
    def groups(self) -> list[int]:
        """The account's groups: its own, and any it was added to since."""
        return os.getgrouplist(self.name, self.gid)


def ensure_account(prefix: str, hub_name: str, home_root: str) -> Account:
    """The account of ``hub_name``, created with a 0700 home if missing; AccountError if unusable."""
    name = account_name(prefix, hub_name)
    with _LOCK:  # two servers of one person starting together create it once
        created = False
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            _useradd(name, hub_name, home_root)
            entry = pwd.getpwnam(name)
            created = True
        if entry.pw_gecos != marker(hub_name):
            raise AccountError(f"the system account {name} exists and was not made by this platform for {hub_name}")
        if entry.pw_uid < UID_MIN or entry.pw_gid == 0:
            raise AccountError(f"the system account {name} is a system account (uid {entry.pw_uid})")
        _private_home(entry)
    return Account(name, entry.pw_uid, entry.pw_gid, entry.pw_dir, entry.pw_shell, created)


def _useradd(name: str, hub_name: str, home_root: str) -> None:
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    home = os.path.join(home_root, name)
    cmd = [useradd, "--create-home", "--home-dir", home, "--shell", "/bin/bash"]
    cmd += ["--comment", marker(hub_name), "--user-group", "--key", "UMASK=077", name]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    except OSError as exc:
        raise AccountError(f"cannot create the system account {name}: {exc}") from exc
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or [f"useradd exited with {done.returncode}"])[-1]
        raise AccountError(f"cannot create the system account {name}: {why}")


def _private_home(entry: pwd.struct_passwd) -> None:
    home = Path(entry.pw_dir)
    if not home.exists():
        home.mkdir(mode=0o700, parents=True)
        os.chown(home, entry.pw_uid, entry.pw_gid)
    info = home.lstat()
    if home.is_symlink() or info.st_uid != entry.pw_uid:
        raise AccountError(f"the home of {entry.pw_name} ({home}) is not owned by it")
    if info.st_mode & 0o777 != 0o700:
        home.chmod(0o700)


def probe_environment(account: Account, command: list[str]) -> None:
    """Check that ``account`` can run the server's Python and import hubforge (once per process).

    A platform installed under a private folder (a home of 0700) would otherwise fail
    every spawn with a traceback in the server's log and nothing on the spawn page.
    """
    python = interpreter(command[0])
    if (account.uid, python) in _PROBED:
        return
    try:
        done = subprocess.run(
            [python, "-c", "import hubforge.server_extension"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd="/",
            user=account.uid,
            group=account.gid,
            extra_groups=account.groups,
            env={"PATH": os.defpath, "HOME": account.home},
        )
        failed = done.returncode != 0
        why = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
    except OSError as exc:
        failed, why = True, str(exc)
    if failed:
        raise AccountError(
            f"the account {account.name} cannot run {python} ({why}): "
            "install the platform and its environments where other accounts can read them"
        )
    _PROBED.add((account.uid, python))


def interpreter(program: str) -> str:
    """The Python a console script runs with (its ``#!`` line), or the program itself."""
    try:
        with open(program, "rb") as f:
            first = f.readline(512)
    except OSError:
        return program
    if first.startswith(b"#!"):
        words = first[2:].decode(errors="replace").split()
        if words and os.path.basename(words[0]) == "env" and len(words) > 1:
            return shutil.which(words[1]) or words[1]
        if words:
            return words[0]
    return program
