"""The scheduler service: job definitions over REST, a loop that fires and runs them, their history.

JupyterHub starts it as a managed service (``python -m hubforge.hub.scheduler``). People
holding ``custom:schedules:run`` define jobs (``POST api/jobs``: a notebook, its
parameters, a schedule, a tier, a timeout, retries with backoff, a concurrency and a
catch-up policy, a webhook for failures) and pause, resume or delete their own; every
run is recorded with its state, its duration, its error and its output notebook, which
``api/runs/<id>/output`` shows as HTML. ``hubforge schedule`` (:mod:`hubforge.schedule`)
is the command line.

:class:`Scheduler` ticks every second: it fires the occurrences that fell due
(:func:`~.schedule.due`, once each even across restarts), starts the queued runs whose
time has come (a run due while its job's previous one still goes is skipped or waits,
by the job's concurrency policy) and executes each through :mod:`.runner` as the job's
owner. At start, runs the previous process left going are marked interrupted and
retried by their job's policy. A run that failed for good is told to the job's webhook.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import shutil
import socket
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote, urlsplit

import httpx
from jupyterhub.services.auth import HubOAuth
from jupyterhub.utils import url_path_join
from tornado import web
from tornado.httpserver import HTTPServer
from tornado.log import app_log
from traitlets import Unicode
from traitlets.config import catch_config_error

from hubforge import __version__, proxies
from hubforge.catalog import load_catalog, personas_for_groups, tiers_for
from hubforge.config import PlatformConfig, load_config
from hubforge.contract import EX_TEMPFAIL, ISOLATION_ENV, SCHEDULER_RUN_SERVICES_ENV
from hubforge.errors import Invalid, Refusal, Unavailable
from hubforge.events.record import record as record_event
from hubforge.events.spool import EventSpool, open_spool, platform_spool_dir
from hubforge.files import replace_durably
from hubforge.hub.apps.app import Groups
from hubforge.hub.apps.notebooks import inspect as inspect_notebook
from hubforge.hub.governance.api import APIHandler
from hubforge.hub.governance.app import load_cookie_secret
from hubforge.hub.governance.auth import needs_scope, public
from hubforge.hub.governance.handlers import NotFoundHandler, OAuthCallbackHandler, OpenAPIHandler
from hubforge.hub.governance.openapi import Operation, build_spec, path_pattern
from hubforge.hub.service_app import HubServiceApp, make_hub_oauth

from .pages import PAGE_CSP, RUNS_SHOWN, jobs_page
from .runner import TOKEN_MARGIN, Execution, HubTokens, Outcome, deliver_kept, execute, run_environment
from .schedule import due, parse_schedule
from .store import Job, Run, SchedulerStore

if TYPE_CHECKING:
    from .kube import KubeRuns  # kubespawner, imported on Kubernetes only

__all__ = ["RUNS_SCOPE", "Scheduler", "SchedulerService", "main", "make_app"]

SERVICE = "scheduler"
#: Where a run works when it runs as its owner's account: a folder of their home.
RUNS_FOLDER = ".hubforge-scheduled"
#: The spool of a person's server under their home (jupyter's data dir, ``hubforge/spool``).
SERVER_SPOOL = ".local/share/jupyter/hubforge/spool"
RUNS_SCOPE = "custom:schedules:run"
#: Seconds between two ticks at most (a run ending frees its job's queue), and at least.
TICK_S = 1.0
MIN_WAIT_S = 0.01
#: The variable holding, as JSON, the service addresses a run's environment gets (what
#: people's servers get from the hub).
RUN_SERVICES_ENV = SCHEDULER_RUN_SERVICES_ENV
MAX_BODY = 34 * 1024 * 1024
NOT_FOUND = "no such job"
#: An output notebook's page: the owner's code's outputs, shown, never run on the hub's origin.
OUTPUT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox"

_POLICY = {
    "timeout": {"type": "integer", "minimum": 1, "maximum": 7 * 24 * 3600},
    "retries": {"type": "integer", "minimum": 0, "maximum": 10},
    "backoff": {"type": "integer", "minimum": 0, "maximum": 86400},
    "concurrency": {"enum": ["skip", "queue"]},
    "catch_up": {"enum": ["none", "latest"]},
}
CREATE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "notebook", "schedule"],
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$"},
        "notebook": {"type": "object", "description": "The notebook (nbformat 4 JSON), frozen at creation."},
        "notebook_name": {"type": "string", "maxLength": 255},
        "parameters": {"type": "object", "maxProperties": 100},
        "schedule": {
            "type": "object",
            "description": "{cron, timezone} or {once}: cron of five fields in the time zone, or an ISO 8601 moment.",
        },
        "tier": {"type": "string", "maxLength": 64},
        **_POLICY,
        "notify_url": {"type": "string", "maxLength": 2000, "description": "An https:// webhook told of failures."},
    },
}
JOB = {"type": "object", "required": ["id", "owner", "name", "schedule", "paused"]}
RUN = {"type": "object", "required": ["id", "job", "state", "attempt", "scheduled_for"]}


def _prepare(work: Path, notebook: Path, copy: Path, user: int | None, group: int | None) -> None:
    """The run's folder with its ``copy`` of the notebook, both the run's account's."""
    work.mkdir(parents=True, exist_ok=True, mode=0o700)
    shutil.copyfile(notebook, copy)
    if user is not None and group is not None:
        for path in (work.parent, work, copy):
            os.chown(path, user, group)


def check_webhook(url: str) -> str:
    """An ``https://`` URL whose host is not the platform's own machine or network."""
    if not url:
        return ""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise Invalid("notify_url must be an https:// URL")
    try:
        addresses = {str(info[4][0]) for info in socket.getaddrinfo(parts.hostname, parts.port or 443)}
    except (OSError, UnicodeError, ValueError):
        raise Invalid(f"notify_url: the host {parts.hostname[:80]!r} cannot be resolved") from None
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%")[0])
        if ip.is_loopback or ip.is_link_local or ip.is_private or ip.is_unspecified or ip.is_multicast:
            raise Invalid("notify_url must name a host outside the platform's own network")
    return url


class Scheduler:
    """Fires due occurrences, runs queued runs, records how each ended (see the module's docstring)."""

    def __init__(
        self,
        store: SchedulerStore,
        tokens: HubTokens,
        services: Mapping[str, str],
        *,
        accounts: Any = None,
        tracking: Mapping[str, bool] | None = None,
        trust_webhooks: bool = False,
        audit: EventSpool | None = None,
        kube: KubeRuns | None = None,
    ) -> None:
        self.store, self.tokens, self.services = store, tokens, dict(services)
        self.kube = kube  # on Kubernetes: each run a Job on its tier
        self.accounts = accounts  # owner -> their system Account, on one machine with isolation
        self.tracking = dict(tracking or {})  # tier -> whether runs on it are tracked
        self.audit = audit  # the service's audit spool: runs started and ended
        self.trust_webhooks = trust_webhooks  # tests: a webhook on loopback
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.http = httpx.AsyncClient(timeout=10, follow_redirects=False)

    def recover(self, now: datetime | None = None) -> list[Run]:
        """Mark runs the previous process left going as interrupted (retried by policy)."""
        return self.store.interrupted(now or datetime.now(UTC))

    async def tick(self, now: datetime | None = None) -> list[Run]:
        """One pass: fire what fell due, start what may start; the runs started. Reads and
        writes in batches: a minute in which hundreds of jobs fall due is a few transactions."""
        now = now or datetime.now(UTC)
        firings = []
        for job in await asyncio.to_thread(self.store.due_jobs, now):
            assert job.next_due is not None
            firings.append((job, *due(job.schedule, job.next_due, now, job.catch_up)))
        if firings:
            await asyncio.to_thread(self.store.fire_all, firings, now)
        ready = await asyncio.to_thread(self.store.ready_runs, now)
        if not ready:
            return []
        known = await asyncio.to_thread(self.store.jobs_by_id, {run.job for run in ready})
        busy = await asyncio.to_thread(self.store.running_jobs) | set(self.tasks)
        to_start: list[tuple[Job, Run]] = []
        for run in ready:
            owner_job = known.get(run.job)
            if owner_job is None:
                continue  # deleted meanwhile
            if run.job in busy:
                if owner_job.concurrency == "skip":
                    why = "the job's previous run was still going (concurrency: skip)"
                    await asyncio.to_thread(self.store.finish, run, "skipped", now, error=why)
                    self.event(owner_job, "end", run, state="skipped", reason=why)
                continue  # concurrency: queue; it starts when the previous one ends
            busy.add(run.job)
            to_start.append((owner_job, run))
        # The clock a run's duration reads is the real one, whatever ``now`` the tick was for.
        started_ids = await asyncio.to_thread(self.store.start_all, [run.id for _, run in to_start], datetime.now(UTC))
        started = []
        for job, run in to_start:
            if run.id in started_ids:
                self.event(job, "start", run)
                self.tasks[run.job] = asyncio.get_running_loop().create_task(self._run(job, run))
                started.append(run)
        return started

    async def _run(self, job: Job, run: Run) -> None:
        try:
            try:
                outcome = await self._execute(job, run)
            except Exception as exc:  # the hub refused a token, a file system failed: the run failed
                app_log.exception("scheduled run %s of job %s failed to start", run.id, job.id)
                outcome = Outcome("failed", f"could not run: {type(exc).__name__}: {str(exc)[:200]}")
            output = self.store.output_path(run.id)
            retry = await asyncio.to_thread(
                self.store.finish,
                run,
                outcome.state,
                datetime.now(UTC),
                error=outcome.error,
                output=str(output) if output.exists() else "",
            )
        finally:
            # The job is going until its run's end is in the store (and its retry made): a
            # run neither here nor running there would pass for over while it is not yet.
            self.tasks.pop(job.id, None)
        app_log.info("scheduled run %s of %s (%s/%s): %s", run.id, job.id, job.owner, job.name, outcome.state)
        self.event(job, "end", run, state=outcome.state, reason=outcome.error)
        if outcome.state != "succeeded" and retry is None and job.notify_url:
            await self._notify(job, run, outcome)

    def event(self, job: Job, action: str, run: Run, *, state: str = "", reason: str = "") -> None:
        """A run started or ended, in the audit trail as its owner's (``scheduler/run/v1``)."""
        outcome = "success" if action == "start" or state == "succeeded" else "failure"
        record_event(self.audit, "scheduler/run", SERVICE, user=job.owner, action=action, resource=("run", run.id),
                     outcome=outcome, job=job.id, run=run.id, attempt=run.attempt, state=state,
                     scheduled_for=run.scheduled_for.isoformat(), reason=reason[:512])  # fmt: skip

    async def _execute(self, job: Job, run: Run) -> Outcome:
        """Run ``run`` as the owner: their token, and their system account when people have
        their own (then in a folder of their home, which only they and root can enter); on
        Kubernetes, a Job on the job's tier."""
        if self.kube is not None:
            # The token outlives a wait in the tier's queue too; revoked when the Job ends.
            seconds = job.timeout_s + TOKEN_MARGIN + int(self.kube.admission_wait_s)
            token, token_id = await self.tokens.issue(job.owner, seconds, f"scheduler run {run.id}")
            try:
                return await self.kube.execute(job, run, token)
            finally:
                with contextlib.suppress(Exception):
                    await self.tokens.revoke(job.owner, token_id)
        account = await asyncio.to_thread(self.accounts, job.owner) if self.accounts is not None else None
        work = (Path(account.home) / RUNS_FOLDER if account else self.store.root / "work") / run.id
        user, group = (account.uid, account.gid) if account else (None, None)
        # The copy has the job's notebook's name: the MLflow experiment and the run's source say it.
        name = Path(job.notebook_name).name or f"{job.name}.ipynb"
        copy = work / name
        await asyncio.to_thread(_prepare, work, self.store.notebook_path(job.notebook), copy, user, group)
        kept = self.store.output_path(run.id)
        execution = Execution(copy, work / f"output-{run.id}.ipynb", kept.with_suffix(".log"), work)
        token, token_id = await self.tokens.issue(job.owner, job.timeout_s + TOKEN_MARGIN, f"scheduler run {run.id}")
        try:
            env = run_environment(
                job.owner,
                token,
                self.services,
                job=job.id,
                run=run.id,
                home=Path(account.home) if account else work,
                spool=self._spool(job.owner, account),
                tracking=self.tracking.get(job.tier, True),
            )
            outcome = await execute(execution, job.parameters, env, job.timeout_s, user=user, group=group)
            await self._deliver_kept(job, run, env, execution.log, user, group)
        finally:
            with contextlib.suppress(Exception):  # it expires on its own in any case
                await self.tokens.revoke(job.owner, token_id)
        if execution.output.is_file():
            await asyncio.to_thread(shutil.copyfile, execution.output, kept)
        return outcome

    async def _deliver_kept(
        self, job: Job, run: Run, env: Mapping[str, str], log: Path, user: int | None, group: int | None
    ) -> None:
        """Send what the run's kernel could not (MLflow away), and any earlier run's, while the
        run's token holds; the run's outcome stands whatever happens here."""
        try:
            code = await deliver_kept(env, log, user=user, group=group)
        except OSError as exc:
            app_log.warning("run %s: could not send %s's kept run data: %s", run.id, job.owner, exc)
            return
        if code == EX_TEMPFAIL:
            app_log.warning("run %s: MLflow is away; %s's kept run data waits for a later run", run.id, job.owner)
        elif code not in (0, None):
            app_log.warning("run %s: sending %s's kept run data exited %s (see the run's log)", run.id, job.owner, code)

    def _spool(self, owner: str, account: Any) -> Path:
        """Where ``owner``'s scheduled kernels keep run data MLflow could not take: with a system
        account of their own, the spool of their own server (which sends it too when it runs);
        otherwise a folder of the scheduler's for them alone, since a replay sends everything
        it finds with one person's token."""
        if account is not None:
            return Path(account.home) / SERVER_SPOOL
        return self.store.root / "spool" / f"u-{quote(owner, safe='')}"

    async def _notify(self, job: Job, run: Run, outcome: Outcome) -> None:
        payload = {
            "event": "scheduled_run.failed",
            "job": job.as_json(),
            "run": {**run.as_json(), "state": outcome.state, "error": outcome.error},
        }
        try:
            # Asked again now: a name that resolved outside may have been pointed inside since.
            if not self.trust_webhooks:
                await asyncio.to_thread(check_webhook, job.notify_url)
            await self.http.post(job.notify_url, json=payload)
        except Invalid as exc:
            app_log.warning("job %s: the failure webhook was not told: %s", job.id, exc)
        except httpx.HTTPError as exc:
            app_log.warning("job %s: the failure webhook failed: %s", job.id, exc)

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Tick until ``stop``: at least every :data:`TICK_S`, and right when something falls due."""
        while not stop.is_set():
            wait = TICK_S
            try:
                await self.tick()
                upcoming = await asyncio.to_thread(self.store.next_moment)
                if upcoming is not None:
                    wait = min(TICK_S, max(MIN_WAIT_S, (upcoming - datetime.now(UTC)).total_seconds()))
            except Unavailable as exc:
                app_log.error("scheduler tick failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)

    async def close(self) -> None:
        for task in list(self.tasks.values()):
            task.cancel()
        await self.http.aclose()


class SchedulerHandler(APIHandler):
    """Base: the store, the caller's groups, the service's refusals."""

    max_body: ClassVar[int] = MAX_BODY
    store_words: ClassVar[str] = "the scheduler's store"
    not_found_message: ClassVar[str] = NOT_FOUND

    @property
    def store(self) -> SchedulerStore:  # type: ignore[override]
        return self.settings["scheduler_store"]

    @property
    def admin(self) -> bool:
        return bool(self.current_user.get("admin"))

    def job_event(self, action: str, job_id: str) -> None:
        """A job defined, paused, resumed or deleted, in the audit trail as the caller's."""
        record_event(self.settings.get("audit"), "scheduler/run", SERVICE, user=self.user_name, action=action,
                     resource=("job", job_id), job=job_id)  # fmt: skip


class JobsHandler(SchedulerHandler):
    operations: ClassVar[dict[str, Operation]] = {
        "get": Operation("The caller's jobs (everyone's for a platform admin)", {200: {"type": "array", "items": JOB}}),
        "post": Operation(
            "Define a job: a notebook, its parameters, a schedule and its policies",
            {201: JOB},
            request=CREATE,
            errors=(400, 403, 413, 415),
        ),
    }

    @needs_scope(RUNS_SCOPE)
    async def get(self) -> None:
        found = await self.call_store(self.store.jobs, None if self.admin else self.user_name)
        self.write_json([job.as_json() for job in found])

    @needs_scope(RUNS_SCOPE)
    async def post(self) -> None:
        body = self.json_body()
        try:
            schedule = parse_schedule(body["schedule"])
            checked = await asyncio.to_thread(inspect_notebook, body["notebook"], self.settings["kernels"])
            notify = await asyncio.to_thread(check_webhook, body.get("notify_url", ""))
        except Refusal as exc:
            raise self.refused(exc) from None
        tier = body.get("tier") or self.settings["default_tier"]
        groups = await self.settings["groups"].of(self.user_name)
        if tier not in self.settings["tiers_for"](groups):
            raise web.HTTPError(403, f"tier {tier[:64]!r} is not one of the tiers open to you")
        job = await self.call_store(
            self.store.create_job,
            self.user_name,
            body["name"],
            checked.body,
            body.get("notebook_name") or f"{body['name']}.ipynb",
            parameters=body.get("parameters") or {},
            schedule=schedule,
            tier=tier,
            timeout_s=body.get("timeout", 3600),
            retries=body.get("retries", 0),
            backoff_s=body.get("backoff", 60),
            concurrency=body.get("concurrency", "skip"),
            catch_up=body.get("catch_up", "none"),
            notify_url=notify,
        )
        self.log.info("%s defined job %s (%s)", self.user_name, job.id, job.name)
        self.job_event("define", job.id)
        self.set_header("Location", url_path_join(self.settings["service_prefix"], "api/jobs", job.id))
        self.write_json(job.as_json(), 201)


class JobHandler(SchedulerHandler):
    operations: ClassVar[dict[str, Operation]] = {
        "get": Operation("A job and its next run", {200: JOB}),
        "delete": Operation("Delete a job: no more runs; its records stay", {204: None}),
    }

    @needs_scope(RUNS_SCOPE)
    async def get(self, job_id: str) -> None:
        job = await self.call_store(self.store.job, job_id, self.user_name, sees_all=self.admin)
        self.write_json(job.as_json())

    @needs_scope(RUNS_SCOPE)
    async def delete(self, job_id: str) -> None:
        await self.call_store(self.store.delete_job, job_id, self.user_name, admin=self.admin)
        self.job_event("delete", job_id)
        self.set_status(204)
        self.finish()


class PauseHandler(SchedulerHandler):
    operations: ClassVar[dict[str, Operation]] = {"post": Operation("Pause the job", {200: JOB})}
    paused: ClassVar[bool] = True

    @needs_scope(RUNS_SCOPE)
    async def post(self, job_id: str) -> None:
        job = await self.call_store(self.store.set_paused, job_id, self.user_name, self.paused, admin=self.admin)
        self.job_event("pause" if self.paused else "resume", job_id)
        self.write_json(job.as_json())


class ResumeHandler(PauseHandler):
    operations: ClassVar[dict[str, Operation]] = {
        "post": Operation("Resume the job from its next occurrence to come", {200: JOB})
    }
    paused: ClassVar[bool] = False


class RunsHandler(SchedulerHandler):
    operations: ClassVar[dict[str, Operation]] = {
        "get": Operation("The job's runs, newest first", {200: {"type": "array", "items": RUN}})
    }

    @needs_scope(RUNS_SCOPE)
    async def get(self, job_id: str) -> None:
        await self.call_store(self.store.job, job_id, self.user_name, sees_all=self.admin)
        found = await self.call_store(self.store.runs, job_id)
        self.write_json([run.as_json() for run in found])


class RunNotebookHandler(SchedulerHandler):
    operations: ClassVar[dict[str, Operation]] = {
        "get": Operation(
            "The notebook a run executes (its job's frozen copy)",
            {200: {"type": "object"}},
            description="For the job's owner only: what a run's pod fetches with the run's token "
            "(`hubforge schedule execute`).",
        )
    }

    @needs_scope(RUNS_SCOPE)
    async def get(self, run_id: str) -> None:
        run = await self.call_store(self.store.run, run_id)
        job = await self.call_store(self.store.job, run.job, self.user_name)
        body = await asyncio.to_thread(self.store.notebook_path(job.notebook).read_bytes)
        self.set_header("Content-Type", "application/json")
        self.finish(body)


class OutputHandler(SchedulerHandler):
    operations: ClassVar[dict[str, Operation]] = {
        "get": Operation("The run's output notebook as HTML", {200: {"type": "string"}}, media_type="text/html"),
        "put": Operation(
            "Keep a going run's output notebook",
            {204: None},
            request={"type": "object"},
            description="For the job's owner only, while the run is going: how a run's pod hands its "
            "output back (`hubforge schedule execute`). The notebook is checked as a published one is.",
            errors=(400, 409, 413, 415),
        ),
    }

    @needs_scope(RUNS_SCOPE)
    async def put(self, run_id: str) -> None:
        body = self.json_body()
        run = await self.call_store(self.store.run, run_id)
        await self.call_store(self.store.job, run.job, self.user_name)
        if run.state != "running":
            raise web.HTTPError(409, f"run {run.id} is {run.state}: only a going run's output can be sent")
        try:
            checked = await asyncio.to_thread(inspect_notebook, body, self.settings["kernels"])
        except Refusal as exc:
            raise self.refused(exc) from None
        await asyncio.to_thread(replace_durably, self.store.output_path(run.id), checked.body)
        self.set_status(204)
        self.finish()

    @needs_scope(RUNS_SCOPE)
    async def get(self, run_id: str) -> None:
        run = await self.call_store(self.store.run, run_id)
        await self.call_store(self.store.job, run.job, self.user_name, sees_all=self.admin)
        if not run.output:
            raise web.HTTPError(404, "this run left no output notebook")
        html = await asyncio.to_thread(_as_html, Path(run.output))
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Content-Security-Policy", OUTPUT_CSP)
        self.finish(html)


def _as_html(path: Path) -> str:
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="classic")
    exporter.exclude_input_prompt = exporter.exclude_output_prompt = False
    body, _ = exporter.from_notebook_node(nbformat.read(path, as_version=4))
    return str(body)


class PageHandler(SchedulerHandler):
    """The scheduler's page: the person's jobs, their next runs and their run history."""

    operations: ClassVar[dict[str, Operation]] = {
        "get": Operation(
            "One's jobs, their next runs and their latest runs (an HTML page)",
            {200: {"type": "string"}, 302: None},
            description="An HTML page without script. Browsers without a session are sent to the hub login.",
            media_type="text/html",
        )
    }

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.set_header("Content-Security-Policy", PAGE_CSP)
        self.set_header("X-Content-Type-Options", "nosniff")

    @needs_scope(RUNS_SCOPE)
    async def get(self) -> None:
        jobs = await self.call_store(self.store.jobs, None if self.admin else self.user_name)
        runs = {job.id: await self.call_store(self.store.runs, job.id, RUNS_SHOWN) for job in jobs}
        self.finish(jobs_page(self.settings["service_prefix"], self.user_name, jobs, runs))


class HealthHandler(SchedulerHandler):
    operations: ClassVar[dict[str, Operation]] = {"get": Operation("Readiness check", {200: {"type": "object"}})}

    @public
    def get(self) -> None:
        self.write_json({"status": "ok"})


ROUTES: list[tuple[str, type[web.RequestHandler]]] = [
    ("", PageHandler),
    ("api/health", HealthHandler),
    ("api/openapi.json", OpenAPIHandler),
    ("oauth_callback", OAuthCallbackHandler),
    ("api/jobs", JobsHandler),
    ("api/jobs/{job_id}", JobHandler),
    ("api/jobs/{job_id}/pause", PauseHandler),
    ("api/jobs/{job_id}/resume", ResumeHandler),
    ("api/jobs/{job_id}/runs", RunsHandler),
    ("api/runs/{run_id}/notebook", RunNotebookHandler),
    ("api/runs/{run_id}/output", OutputHandler),
]


def make_app(
    store: SchedulerStore,
    prefix: str,
    *,
    hub_auth: HubOAuth | None = None,
    kernels: list[str] | None = None,
    tiers_for_groups: Any = None,
    default_tier: str = "interactive",
    cookie_secret: bytes | None = None,
    **settings: Any,
) -> web.Application:
    """The scheduler's tornado application under ``prefix``."""
    from hubforge.hub.apps.app import available_kernels

    prefix = url_path_join("/", prefix, "/")
    hub_auth = hub_auth if hub_auth is not None else make_hub_oauth(SERVICE, prefix)
    handlers = [(url_path_join(prefix, path_pattern(template)), handler) for template, handler in ROUTES]
    return web.Application(
        handlers,
        default_handler_class=NotFoundHandler,
        scheduler_store=store,
        groups=Groups(hub_auth),
        hub_auth=hub_auth,
        service_prefix=prefix,
        kernels=kernels if kernels is not None else available_kernels(),
        tiers_for=tiers_for_groups or (lambda groups: {default_tier}),
        default_tier=default_tier,
        openapi=build_spec(
            ROUTES,
            prefix,
            cookie_name=hub_auth.cookie_name,
            title="hubforge scheduler",
            version=__version__,
            description="Scheduled notebook runs, behind JupyterHub auth.",
        ),
        cookie_secret=cookie_secret or os.urandom(32),
        xsrf_cookies=False,
        **settings,
    )


def tiers_by_groups(cfg: PlatformConfig) -> Any:
    """groups -> the slugs of the tiers open to them (the spawn page's rule)."""
    catalog, group_personas = load_catalog(cfg), cfg.group_personas()

    def open_to(groups: frozenset[str]) -> set[str]:
        personas = personas_for_groups(group_personas, groups)
        return {tier.slug for tier in tiers_for(catalog, groups, personas)}

    return open_to


class SchedulerService(HubServiceApp):
    """``python -m hubforge.hub.scheduler``."""

    service_name: ClassVar[str] = SERVICE
    name = "hubforge-scheduler"
    description = "The hubforge scheduler service"

    db_url = Unicode("", help="SQLAlchemy URL of the scheduler's store. Default: backends.scheduler_db_url.").tag(
        config=True
    )

    @catch_config_error
    def initialize(self, argv: list[str] | None = None) -> None:
        super().initialize(argv)
        self.init_logging()
        self.platform = load_config()
        self.init_address()
        self.store = SchedulerStore(
            self.db_url or self.platform.db_url("scheduler"), self.platform.data_dir / "scheduler"
        )
        hub_auth = make_hub_oauth(SERVICE, self.service_prefix)
        services = json.loads(os.environ.get(RUN_SERVICES_ENV) or "{}")
        catalog = load_catalog(self.platform)
        audit = open_spool(platform_spool_dir(self.platform.data_dir, SERVICE), SERVICE)
        self.scheduler = Scheduler(
            self.store,
            HubTokens(hub_auth.api_url, hub_auth.api_token),
            services,
            accounts=self._accounts() if os.environ.get(ISOLATION_ENV) == "users" else None,
            tracking={tier.slug: tier.tracking for tier in catalog.tiers},
            audit=audit,
            kube=self._kube(hub_auth, services) if self.platform.spawner.on_kubernetes else None,
        )
        self.proxy_peers = proxies.from_env()
        self.web_app = make_app(
            self.store,
            self.service_prefix,
            hub_auth=hub_auth,
            tiers_for_groups=tiers_by_groups(self.platform),
            cookie_secret=load_cookie_secret(self.platform.data_dir / "scheduler_cookie_secret"),
            audit=audit,
            log=self.log,
            proxy_peers=self.proxy_peers,
        )

    def _kube(self, hub_auth: HubOAuth, services: Mapping[str, str]) -> KubeRuns:
        """Runs as Jobs, through the API as the hub pod's service account."""
        from kubernetes_asyncio import client, config

        from .kube import KubeRuns

        config.load_incluster_config()
        return KubeRuns(self.platform, Groups(hub_auth).of, services, client.ApiClient)

    def _accounts(self) -> Any:
        """owner -> their system account (made on first use), as the local spawner makes it."""
        from hubforge.spawner_profiles.local.accounts import ensure_account

        local = self.platform.spawner.local
        return lambda owner: ensure_account(local.account_prefix, owner, local.home_root)

    def start(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        server = HTTPServer(self.web_app, xheaders=self.proxy_peers is None, max_body_size=MAX_BODY + 1024)
        server.listen(self.port, self.ip)
        interrupted = self.scheduler.recover()
        if interrupted:
            self.log.warning("%d scheduled runs were going when the scheduler stopped: interrupted", len(interrupted))
        self.log.info("Scheduler listening on http://%s:%d%s", self.ip, self.port, self.service_prefix)
        stop = asyncio.Event()
        loop = asyncio.create_task(self.scheduler.run_forever(stop))
        await self.until_signalled()
        stop.set()
        await loop
        server.stop()
        await self.scheduler.close()
        self.store.dispose()


def main(argv: list[str] | None = None) -> None:
    SchedulerService.main(argv)
