"""One run of a scheduled job: papermill's ``hubforge`` engine, as the job's owner, bounded in time.

For each run the scheduler asks the hub for a token of the job's owner that expires
shortly after the run's timeout (:class:`HubTokens`), and revokes it when the run
ends. The papermill process gets an environment built from nothing: the owner's
name and that token, the addresses of the platform's services as people's servers
reach them, the job's parameters (``-y``) and the run's identity (``HUBFORGE_JOB``,
``HUBFORGE_JOB_RUN``, origin ``scheduler``), so its MLflow run is the owner's and is
tagged with the job, and nothing of the platform's own: no service token, no
database URL, no key. When the platform runs people as their own system accounts,
the run is that account's process too.

A run that passes its timeout is stopped: papermill and every process under it (the
kernel runs in a session of its own) get SIGTERM, then SIGKILL. The output notebook
(the executed copy, with the cells' outputs and the error, if any) is kept, and so is
papermill's log.

A run never outlives the scheduler: papermill is started to get SIGKILL when the
scheduler's process dies (``PR_SET_PDEATHSIG``), and its kernel ends when papermill is
gone (ipykernel watches its parent), so a scheduler killed mid-run and started again
finds no orphan still running the notebook beside the retry; the run it left going is
marked interrupted and retried by its job's policy.

A kernel that could not reach MLflow keeps its run's data in the owner's spool, as in a
person's server. After each run, while its token still holds, :func:`deliver_kept`
sends what waits there (this run's and any earlier run's) with the same replay a
person's server runs; what MLflow still cannot take waits for the owner's next run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

import psutil

from hubforge.contract import JOB_ENV, JOB_RUN_ENV, ORIGIN_ENV, SPOOL_DIR_ENV, TRACKING_ENV
from hubforge.notebook_runs import DELIVER_WITHIN, papermill_command, replay_command, replay_env
from hubforge.processes import die_with_parent

__all__ = [
    "KILL_GRACE",
    "Execution",
    "HubTokens",
    "Outcome",
    "deliver_kept",
    "execute",
    "last_error_line",
    "run_environment",
]

#: Seconds between SIGTERM and SIGKILL for a run past its timeout.
KILL_GRACE = 10.0
#: Seconds a run's token outlives the run's timeout (papermill's start, the kernel's end and
#: the delivery of what it kept).
TOKEN_MARGIN = 300


@dataclass(frozen=True)
class Outcome:
    """How a run ended: ``succeeded``, ``failed`` (``error`` says why in a line) or ``timed_out``."""

    state: str
    error: str = ""


@dataclass(frozen=True)
class Execution:
    """Where a run reads its notebook and writes its output and log."""

    notebook: Path
    output: Path
    log: Path
    workdir: Path


class HubTokens:
    """Short-lived tokens of a job's owner, made and revoked through the hub's REST API with
    the scheduler's own token (its role holds the ``tokens`` scope)."""

    def __init__(self, api_url: str, service_token: str) -> None:
        self.api_url, self.service_token = api_url.rstrip("/"), service_token

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        from tornado.httpclient import AsyncHTTPClient, HTTPRequest

        request = HTTPRequest(
            f"{self.api_url}/{path}",
            method=method,
            headers={"Authorization": f"token {self.service_token}", "Content-Type": "application/json"},
            body=json.dumps(body) if body is not None else None,
            allow_nonstandard_methods=True,
            request_timeout=30,
        )
        resp = await AsyncHTTPClient().fetch(request)
        return json.loads(resp.body) if resp.body else None

    async def issue(self, owner: str, seconds: int, note: str) -> tuple[str, str]:
        """(token, token id) of ``owner`` holding their own permissions for ``seconds``."""
        made = await self._call(
            "POST", f"users/{quote(owner, safe='')}/tokens", {"expires_in": int(seconds), "note": note}
        )
        return str(made["token"]), str(made["id"])

    async def revoke(self, owner: str, token_id: str) -> None:
        await self._call("DELETE", f"users/{quote(owner, safe='')}/tokens/{quote(token_id, safe='')}")


def run_environment(
    owner: str,
    token: str,
    services: Mapping[str, str],
    *,
    job: str,
    run: str,
    home: Path,
    spool: Path,
    tracking: bool = True,
) -> dict[str, str]:
    """The papermill process's whole environment (see the module's docstring); ``services``:
    the variables naming the platform's services as people's servers reach them."""
    python_bin = str(Path(sys.executable).parent)
    env = {
        "PATH": f"{python_bin}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "USER": owner,
        "JUPYTERHUB_USER": owner,
        "JUPYTERHUB_API_TOKEN": token,
        ORIGIN_ENV: "scheduler",
        JOB_ENV: job,
        JOB_RUN_ENV: run,
        SPOOL_DIR_ENV: str(spool),
        "PYTHONUNBUFFERED": "1",
    }
    env.update(services)
    if not tracking:
        env[TRACKING_ENV] = "off"
    return env


async def _start(
    command: list[str], env: Mapping[str, str], cwd: str | None, out: IO[bytes], user: int | None, group: int | None
) -> asyncio.subprocess.Process:
    """``command`` as ``user``, in a session of its own, ending with this process; its output to ``out``."""
    return await asyncio.create_subprocess_exec(
        *command,
        env=dict(env),
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=out,
        stderr=out,
        start_new_session=True,
        preexec_fn=die_with_parent(user=user, group=group),
    )


def _stop(pid: int, sig: int) -> list[psutil.Process]:
    """Send ``sig`` to ``pid`` and every process under it; those that were there."""
    try:
        top = psutil.Process(pid)
        family = [top, *top.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
    for proc in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(sig)
    return family


def _last_error(log: Path) -> str:
    """The line that says why papermill failed (the exception's last line), from its log."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return "papermill failed (no log)"
    return last_error_line(text)


def last_error_line(text: str) -> str:
    """The line of papermill's output that says why it failed (the exception's last line)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if "Error" in line or "Exception" in line:
            return line[:500]
    return (lines[-1] if lines else "papermill failed")[:500]


async def execute(
    execution: Execution,
    parameters: Mapping[str, Any],
    env: Mapping[str, str],
    timeout_s: int,
    *,
    user: int | None = None,
    group: int | None = None,
) -> Outcome:
    """Run the notebook through papermill; its :class:`Outcome` (SIGTERM, then SIGKILL, for
    papermill and its kernel past ``timeout_s``)."""
    execution.workdir.mkdir(parents=True, exist_ok=True)
    with execution.log.open("wb") as log:
        command = papermill_command(execution.notebook, execution.output, execution.workdir, parameters)
        proc = await _start(command, env, str(execution.workdir), log, user, group)
        try:
            code = await asyncio.wait_for(proc.wait(), timeout_s)
        except TimeoutError:
            family = _stop(proc.pid, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), KILL_GRACE)
            _, alive = await asyncio.to_thread(psutil.wait_procs, family, timeout=KILL_GRACE)
            for survivor in alive:
                with contextlib.suppress(psutil.NoSuchProcess):
                    survivor.kill()
            await proc.wait()
            return Outcome("timed_out", f"stopped after its timeout of {timeout_s} s")
        except asyncio.CancelledError:
            # The scheduler is stopping: the run stops with it (no orphan holds on), and the
            # next start finds it going, marks it interrupted and retries it by its policy.
            _stop(proc.pid, signal.SIGTERM)
            raise
    if code == 0:
        return Outcome("succeeded")
    return Outcome("failed", _last_error(execution.log))


async def deliver_kept(
    env: Mapping[str, str],
    log: Path,
    *,
    user: int | None = None,
    group: int | None = None,
    timeout_s: float = DELIVER_WITHIN,
) -> int | None:
    """Send the run data kernels kept in the owner's spool (``env``'s, a run's environment)
    to MLflow, with the run's token, as the owner; what it says goes to ``log``.

    The replay's exit status: 0 when nothing is left, ``EX_TEMPFAIL`` when MLflow is still
    away (the data waits for the next try). None when the run is not tracked, or the
    replay took longer than ``timeout_s`` (stopped; what it had not sent waits).
    """
    delivery = replay_env(env)
    if delivery is None:
        return None
    with log.open("ab") as out:
        proc = await _start(replay_command(env), delivery, env.get("HOME") or None, out, user, group)
        try:
            return await asyncio.wait_for(proc.wait(), timeout_s)
        except TimeoutError:
            _stop(proc.pid, signal.SIGKILL)
            await proc.wait()
            return None
        except asyncio.CancelledError:
            _stop(proc.pid, signal.SIGTERM)
            raise
