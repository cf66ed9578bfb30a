"""``python -m hubforge.hub.supervised --port PORT -- COMMAND ...``: a service's command on one
machine, run so that nothing it starts outlives it, and no leftover of an earlier one keeps
it from starting.

Services that start processes of their own (MLflow's uvicorn workers, the serving router's
scoring servers) run under it. It:

1. stops what a predecessor that was killed left of this platform instance's service
   (``HUBFORGE_INSTANCE``): every process marked as the service's (step 3), and whatever
   of the instance listens on ``PORT``, which would otherwise hold the port while the hub
   starts the service again, forever;
2. becomes a child subreaper (``PR_SET_CHILD_SUBREAPER``), so processes the command starts
   and loses come back to it instead of to init;
3. runs the command in a process group of its own, marked as the service's
   (``HUBFORGE_SUPERVISED=PORT``, inherited by all it starts), sent SIGKILL should this
   process die (``PR_SET_PDEATHSIG``), and passes SIGTERM, SIGINT and SIGHUP on to it;
4. when the command ends, however it ends, stops everything it started (SIGTERM, then
   SIGKILL after a grace), and exits with the command's status (128 + the signal's
   number when a signal ended it), so the hub sees and logs why its service stopped.

A killed supervisor takes the command with it (the death signal); what the command had
started itself is stopped by step 1 of the next start.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time

import psutil

from hubforge.contract import INSTANCE_ENV, SUPERVISED_ENV
from hubforge.processes import become_subreaper, die_with_parent

__all__ = ["main", "stop_leftovers"]

#: Seconds between SIGTERM and SIGKILL for what the command leaves.
GRACE_S = 5.0


def _stop(procs: list[psutil.Process], grace: float = GRACE_S) -> None:
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(alive, timeout=grace)


def stop_leftovers(port: int, instance: str, wait_s: float = 10.0) -> list[int]:
    """Stop what an earlier run of the service on ``port`` of ``instance`` (its
    ``HUBFORGE_INSTANCE``) left: every process marked as that service's
    (``HUBFORGE_SUPERVISED``, which all it started inherit) and every process of the
    instance listening on ``port``; then wait until the port is free. Their pids, oldest
    first. Nobody else's processes are touched."""
    if not instance:
        return []
    ours = {os.getpid(), *(p.pid for p in psutil.Process().children(recursive=True))}
    listening = {
        c.pid
        for c in psutil.net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
    }
    found: list[psutil.Process] = []
    for proc in psutil.process_iter(["pid", "create_time"]):
        if proc.pid in ours:
            continue
        try:
            env = proc.environ()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        if env.get(INSTANCE_ENV) != instance:
            continue
        if env.get(SUPERVISED_ENV) == str(port) or proc.pid in listening:
            found.append(proc)
    found.sort(key=lambda proc: proc.info["create_time"])
    if found:
        _stop(found)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and any(
            c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
            for c in psutil.net_connections(kind="tcp")
        ):
            time.sleep(0.1)
    return [proc.pid for proc in found]


def run(command: list[str], port: int) -> int:
    """Steps 1 to 4 of the module's docstring; the command's exit status."""
    left = stop_leftovers(port, os.environ.get(INSTANCE_ENV, ""))
    if left:
        said = (
            f"hubforge: stopped {len(left)} leftover process(es) holding port {port} or marked as its service: {left}"
        )
        print(said, file=sys.stderr)
    become_subreaper()
    env = {**os.environ, SUPERVISED_ENV: str(port)}
    child = subprocess.Popen(command, env=env, start_new_session=True, preexec_fn=die_with_parent())

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    try:
        code = child.wait()
    finally:
        _end_all()
    return code if code >= 0 else 128 - code


def _end_all() -> None:
    """Stop every process left under this one, until none is: what an ending process had
    started comes back to this subreaper only once that process is gone."""
    deadline = time.monotonic() + 4 * GRACE_S
    while time.monotonic() < deadline:
        left = psutil.Process().children(recursive=True)
        if not left:
            return
        _stop(left)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hubforge.hub.supervised", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--port", type=int, required=True, help="the port the service listens on")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- and the service's command")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the service's command after --")
    return run(command, args.port)


if __name__ == "__main__":
    sys.exit(main())
