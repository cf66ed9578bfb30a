"""``hubforge schedule``: run a notebook on a schedule, as oneself, and follow its runs.

It talks to the scheduler (``HUBFORGE_SCHEDULER_URL``, which the hub gives every server,
or ``--url``) with the hub token of the server it runs in. Registered under the
``hubforge.commands`` entry-point group::

    hubforge schedule create report.ipynb --name nightly --cron "0 2 * * *" --timezone Europe/Berlin \\
        --param region=emea --timeout 1800 --retries 2 --backoff 60 --concurrency skip --catch-up latest
    hubforge schedule create report.ipynb --name once --once 2026-12-24T18:00:00+01:00
    hubforge schedule list
    hubforge schedule runs JOB
    hubforge schedule pause|resume|delete JOB
    hubforge schedule execute          # in a scheduled run's Kubernetes pod (HUBFORGE_JOB_RUN)

The notebook is frozen when the job is made: later edits to the file do not change it.
``--param NAME=VALUE`` values are read as JSON when they are JSON (``6``, ``true``,
``[1, 2]``), else kept as text. Every refusal is the scheduler's one line, exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from hubforge.contract import JOB_ENV, JOB_RUN_ENV, SCHEDULER_URL_ENV
from hubforge.errors import Invalid
from hubforge.notebook_runs import DELIVER_WITHIN, papermill_command, replay_command, replay_env
from hubforge.service_client import ServiceClient

__all__ = ["ScheduleClient", "execute_run", "parse_params", "register"]


class ScheduleClient(ServiceClient):
    """The scheduler's API, as the holder of a hub token."""

    service = "scheduler"
    url_env = SCHEDULER_URL_ENV

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.call("POST", "api/jobs", json=body)

    def jobs(self) -> list[dict[str, Any]]:
        return self.call("GET", "api/jobs")

    def runs(self, job: str) -> list[dict[str, Any]]:
        return self.call("GET", f"api/jobs/{quote(job, safe='')}/runs")

    def pause(self, job: str, paused: bool) -> dict[str, Any]:
        return self.call("POST", f"api/jobs/{quote(job, safe='')}/{'pause' if paused else 'resume'}")

    def delete(self, job: str) -> None:
        self.call("DELETE", f"api/jobs/{quote(job, safe='')}")

    def job(self, job: str) -> dict[str, Any]:
        return self.call("GET", f"api/jobs/{quote(job, safe='')}")

    def run_notebook(self, run: str) -> dict[str, Any]:
        return self.call("GET", f"api/runs/{quote(run, safe='')}/notebook")

    def send_output(self, run: str, body: bytes) -> None:
        self.call("PUT", f"api/runs/{quote(run, safe='')}/output", content=body,
                  headers={"Content-Type": "application/json"})  # fmt: skip


def execute_run(client: ScheduleClient, env: Mapping[str, str], workdir: Path) -> int:
    """One scheduled run, here (a Kubernetes Job's pod): the run's notebook from the scheduler,
    papermill through hubforge's engine with the job's parameters, the delivery of what the
    kernel kept while MLflow was away, the output notebook back to the scheduler. papermill's
    exit status: the Job succeeds or fails with it."""
    job_id, run_id = env.get(JOB_ENV, ""), env.get(JOB_RUN_ENV, "")
    if not job_id or not run_id:
        raise Invalid(f"{JOB_ENV} and {JOB_RUN_ENV} are unset: this runs in a scheduled run's pod")
    job = client.job(job_id)
    notebook = client.run_notebook(run_id)
    work = workdir / run_id
    work.mkdir(parents=True, exist_ok=True)
    source = work / (Path(str(job.get("notebook") or "")).name or f"{job['name']}.ipynb")
    source.write_text(json.dumps(notebook), encoding="utf-8")
    output = work / f"output-{run_id}.ipynb"
    command = papermill_command(source, output, work, job.get("parameters") or {})
    code = subprocess.run(command, env=dict(env), cwd=work, stdin=subprocess.DEVNULL, check=False).returncode
    delivery = replay_env(env)
    if delivery is not None:
        try:
            subprocess.run(replay_command(env), env=delivery, stdin=subprocess.DEVNULL, timeout=DELIVER_WITHIN,
                           check=False)  # fmt: skip
        except subprocess.TimeoutExpired:
            print("hubforge: MLflow is slow; the kept run data waits", flush=True)
    if output.is_file():
        client.send_output(run_id, output.read_bytes())
    return code


def parse_params(items: Sequence[str] | None) -> dict[str, Any]:
    """``NAME=VALUE`` items as papermill parameters (VALUE as JSON when it is JSON)."""
    params: dict[str, Any] = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        if not sep or not name.isidentifier():
            raise Invalid(f"--param {item[:80]!r}: write NAME=VALUE, NAME a Python identifier")
        try:
            params[name] = json.loads(value)
        except ValueError:
            params[name] = value
    return params


def _notebook(path: str) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise Invalid(f"{path}: cannot read it: {exc}") from None
    except ValueError as exc:
        raise Invalid(f"{path}: not a notebook (not JSON: {exc})") from None


def _job_line(job: dict[str, Any]) -> str:
    when = job["schedule"].get("cron") or f"once {job['schedule'].get('once')}"
    zone = f" ({job['schedule']['timezone']})" if job["schedule"].get("timezone") else ""
    state = "paused" if job["paused"] else f"next {job.get('next_run') or 'none'}"
    return f"{job['id']}  {job['name']}  {when}{zone}  {state}"


def _run(args: argparse.Namespace) -> int:
    client = ScheduleClient.from_env(url=args.url)
    try:
        if args.schedule_command == "create":
            if (args.cron is None) == (args.once is None):
                raise Invalid("give --cron or --once")
            schedule = {"once": args.once} if args.once else {"cron": args.cron, "timezone": args.timezone}
            body: dict[str, Any] = {
                "name": args.name,
                "notebook": _notebook(args.notebook),
                "notebook_name": Path(args.notebook).name,
                "parameters": parse_params(args.param),
                "schedule": schedule,
                "timeout": args.timeout,
                "retries": args.retries,
                "backoff": args.backoff,
                "concurrency": args.concurrency,
                "catch_up": args.catch_up,
            }
            for key, value in (("tier", args.tier), ("notify_url", args.notify)):
                if value:
                    body[key] = value
            job = client.create(body)
            print(f"scheduled {job['id']} ({job['name']}): next run {job.get('next_run')}")
        elif args.schedule_command == "list":
            for job in client.jobs():
                print(_job_line(job))
        elif args.schedule_command == "runs":
            for run in client.runs(args.job):
                took = f"{run['duration']:.1f} s" if run.get("duration") is not None else "-"
                error = f"  {run['error']}" if run.get("error") else ""
                print(f"{run['id']}  {run['scheduled_for']}  attempt {run['attempt']}  {run['state']}  {took}{error}")
        elif args.schedule_command in ("pause", "resume"):
            print(_job_line(client.pause(args.job, args.schedule_command == "pause")))
        elif args.schedule_command == "delete":
            client.delete(args.job)
            print(f"deleted {args.job}")
        elif args.schedule_command == "execute":
            return execute_run(client, os.environ, Path(args.workdir))
    finally:
        client.close()
    return 0


def register(subparsers: argparse._SubParsersAction, parents: Sequence[argparse.ArgumentParser] = ()) -> None:
    """Add ``schedule create|list|runs|pause|resume|delete|execute`` to ``hubforge``."""
    schedule = subparsers.add_parser("schedule", help="run notebooks on a schedule, as yourself")
    actions = schedule.add_subparsers(dest="schedule_command", metavar="ACTION", required=True)
    url = argparse.ArgumentParser(add_help=False)
    url.add_argument("--url", help=f"the scheduler (default: ${SCHEDULER_URL_ENV})")
    common = [*parents, url]

    create = actions.add_parser("create", parents=common, help="schedule a notebook (a frozen copy of it)")
    create.add_argument("notebook", metavar="NOTEBOOK", help="the .ipynb file")
    create.add_argument("--name", required=True, help="the job's name: lower-case letters, digits and dashes")
    create.add_argument("--cron", help='five cron fields, e.g. "0 2 * * *" (in --timezone)')
    create.add_argument("--timezone", default="UTC", help="the cron's time zone, e.g. Europe/Berlin (default UTC)")
    create.add_argument("--once", metavar="WHEN", help="run once, at an ISO 8601 date and time")
    create.add_argument("--param", action="append", metavar="NAME=VALUE", help="a papermill parameter; repeat")
    create.add_argument("--tier", help="the tier to run on (default: the first open to you)")
    create.add_argument("--timeout", type=int, default=3600, help="seconds a run may take (default 3600)")
    create.add_argument("--retries", type=int, default=0, help="attempts after a failure (default 0)")
    create.add_argument("--backoff", type=int, default=60, help="seconds before the first retry; doubles (default 60)")
    create.add_argument("--concurrency", choices=("skip", "queue"), default="skip",
                        help="a run due while the previous one goes: skip it or queue it (default skip)")  # fmt: skip
    create.add_argument("--catch-up", dest="catch_up", choices=("none", "latest"), default="none",
                        help="runs missed while the platform was down: none, or the latest (default none)")  # fmt: skip
    create.add_argument("--notify", metavar="URL", help="an https:// webhook told when a run fails for good")

    actions.add_parser("list", parents=common, help="your jobs and their next runs")
    for name, text in (("runs", "a job's runs, newest first"), ("pause", "pause a job"),
                       ("resume", "resume a job from its next occurrence"), ("delete", "delete a job")):  # fmt: skip
        action = actions.add_parser(name, parents=common, help=text)
        action.add_argument("job", metavar="JOB", help="the job's id (j-...)")
    execute = actions.add_parser("execute", parents=common,
                                 help="run the scheduled run this pod is for (a Kubernetes Job's command)")  # fmt: skip
    execute.add_argument("--workdir", default=".", help="where the run works (default: here)")
    for action in actions.choices.values():
        action.set_defaults(func=_run)
