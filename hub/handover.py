"""What a ``hubforge up --keep-servers`` stop leaves to the next start: people's servers and
the proxy, still running, and what the next hub needs to take them over.

People's servers call the hub at the address they were started with (the hub's internal
port), and the proxy answers only the token it was started with; so the next start must
reuse both, and the proxy's API port. They are kept in ``handover.json`` in the data
folder (private to the platform's account: it holds the proxy's token), written once the
stop is complete and removed once the next hub answers.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from hubforge.contract import FIT_LOGGER_MODULE, REPLAY_MODULE, SERVER_PROGRAMS

from .proxy import running_proxy

__all__ = ["HANDOVER_FILE", "Handover", "fit_loggers", "kept_processes", "user_servers"]

HANDOVER_FILE = "handover.json"


@dataclass(frozen=True)
class Handover:
    """The ports and the proxy's token a kept proxy and kept servers were started with."""

    public_port: int
    hub_port: int
    proxy_api_port: int
    proxy_token: str

    def save(self, data_dir: Path) -> None:
        """Write it (owner-only) beside the hub's database, replacing any earlier one at once."""
        path = data_dir / HANDOVER_FILE
        part = path.with_suffix(".part")
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(asdict(self), fh)
        os.replace(part, path)

    @classmethod
    def load(cls, data_dir: Path) -> Handover | None:
        """The last stop's handover; None when there is none or it cannot be read."""
        try:
            raw = json.loads((data_dir / HANDOVER_FILE).read_text())
            return cls(
                public_port=int(raw["public_port"]),
                hub_port=int(raw["hub_port"]),
                proxy_api_port=int(raw["proxy_api_port"]),
                proxy_token=str(raw["proxy_token"]),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    @staticmethod
    def forget(data_dir: Path) -> None:
        """Remove the handover (the next hub has taken over, or nothing is left to take)."""
        (data_dir / HANDOVER_FILE).unlink(missing_ok=True)


def _by_command(procs: Iterable[psutil.Process], matches: Callable[[list[str]], bool]) -> list[psutil.Process]:
    """Those of ``procs`` (still there, and readable) whose command line ``matches``."""
    found = []
    for proc in procs:
        try:
            if matches(proc.cmdline()):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def user_servers(procs: Iterable[psutil.Process]) -> list[psutil.Process]:
    """Those of ``procs`` that are people's single-user servers (one of :data:`SERVER_PROGRAMS`)."""
    return _by_command(procs, lambda cmd: any(program in part for part in cmd[:2] for program in SERVER_PROGRAMS))


def fit_loggers(procs: Iterable[psutil.Process]) -> list[psutil.Process]:
    """Those of ``procs`` that log run data to MLflow after the kernel that made it ended: the
    kernels' fit loggers (:data:`FIT_LOGGER_MODULE`) and the servers' replays of what kernels
    kept (:data:`REPLAY_MODULE`), each run as ``python -m``."""
    return _by_command(procs, lambda cmd: bool({FIT_LOGGER_MODULE, REPLAY_MODULE} & set(cmd[:3])))


def kept_processes(procs: Iterable[psutil.Process], proxy_pid_file: Path, instance: str) -> set[int]:
    """The pids a restart of the hub leaves alone: people's servers with everything they started
    (kernels, terminals), and the proxy routing to them."""
    procs = list(procs)
    kept: set[int] = set()
    for server in user_servers(procs):
        kept.add(server.pid)
        try:
            kept.update(child.pid for child in server.children(recursive=True))
        except psutil.NoSuchProcess:
            continue
    proxy = running_proxy(str(proxy_pid_file), instance)
    if proxy is not None:
        kept.add(proxy.pid)
    return kept
