"""``python -m hubforge.hub.supervised --port PORT -- COMMAND ...``: a service's command on one
machine, run so that nothing it starts outlives it, and no leftover of an earlier one keeps
it from starting.

Every service runs under it on one machine (on Kubernetes a pod ends whole, and the
kubelet restarts it). It:

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
   SIGKILL after a grace), says how it ended, and starts it again after a backoff
   (1 s, doubling to 30 s; a run of a minute or more starts the count again). A command
   that keeps failing (six restarts in a row that did not last) is left to the hub: the
   supervisor exits with the command's status (128 + the signal's number when a signal
   ended it), and the hub logs it and starts the service again at its own pace;
5. when it is told to stop (SIGTERM or SIGINT: the hub stopping its service), stops the
   command and everything it started, and exits with the command's status.

A killed supervisor takes the command with it (the death signal); what the command had
started itself is stopped by step 1 of the next start, which the hub makes.
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
from hubforge.processes import Backoff, become_subreaper, describe_exit, die_with_parent

__all__ = ["main", "stop_leftovers"]

#: Seconds between SIGTERM and SIGKILL for what the command leaves.
GRACE_S = 5.0
#: A command that ran this long before it ended had come up: its restarts count from one again.
STEADY_S = 60.0


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


def _say(line: str) -> None:
    print(f"hubforge: {line}", file=sys.stderr, flush=True)


def run(command: list[str], port: int, backoff: Backoff | None = None) -> int:
    """Steps 1 to 5 of the module's docstring; the command's last exit status."""
    backoff = backoff or Backoff()
    instance = os.environ.get(INSTANCE_ENV, "")
    left = stop_leftovers(port, instance)
    if left:
        _say(f"stopped {len(left)} leftover process(es) holding port {port} or marked as its service: {left}")
    become_subreaper()
    env = {**os.environ, SUPERVISED_ENV: str(port)}
    stopping: list[int] = []
    child: subprocess.Popen[bytes] | None = None

    def forward(signum: int, _frame: object) -> None:
        if signum != signal.SIGHUP:
            stopping.append(signum)
        if child is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    name = os.environ.get("JUPYTERHUB_SERVICE_NAME") or os.path.basename(command[0])
    while True:
        started = time.monotonic()
        child = subprocess.Popen(command, env=env, start_new_session=True, preexec_fn=die_with_parent())
        try:
            code = child.wait()
        finally:
            _end_all()
        if stopping:
            break
        if time.monotonic() - started >= STEADY_S:
            backoff.recovered()
        delay = backoff.next_delay()
        if delay is None:
            _say(f"{name} exited with {describe_exit(code)}, {backoff.attempts} times in a row: leaving it to the hub")
            break
        _say(f"{name} exited with {describe_exit(code)}; starting it again in {delay:.0f}s")
        if not _sleep(delay, stopping):
            break
        stop_leftovers(port, instance)  # whatever of the instance took the port meanwhile
    return code if code >= 0 else 128 - code


def _sleep(seconds: float, stopping: list[int]) -> bool:
    """Sleep, unless told to stop meanwhile (then False)."""
    deadline = time.monotonic() + seconds
    while not stopping and time.monotonic() < deadline:
        time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
    return not stopping


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
