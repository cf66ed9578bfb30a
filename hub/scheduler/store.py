"""Jobs and their runs, in SQLite or PostgreSQL; job notebooks on disk by their sha256.

A job is a frozen copy of a notebook, its parameters, a :class:`~.schedule.Schedule`,
the tier to run on, a timeout, retries with backoff, a concurrency policy (``skip``: a
run due while the previous one still goes is recorded as skipped; ``queue``: it waits)
and a catch-up policy. A run is one execution of one occurrence, with its attempt
number: a failed or timed-out attempt with retries left is followed by a new queued
run of the same occurrence, ``not_before`` the backoff (doubling each attempt).

Every change is one transaction, so a restart finds the definitions and the run records
as they were; :meth:`SchedulerStore.interrupted` marks the runs that were going when the
platform stopped, and the scheduler retries them by their job's policy.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from hubforge.errors import Invalid, NotFound, StoreError
from hubforge.files import replace_durably

from .schedule import CATCH_UP, Schedule

__all__ = [
    "CONCURRENCY",
    "FINAL",
    "Job",
    "JobNotFound",
    "Run",
    "SchedulerStore",
]

CONCURRENCY = ("skip", "queue")
#: Run states that are over.
FINAL = ("succeeded", "failed", "timed_out", "skipped", "interrupted", "cancelled")
STATES = ("queued", "running", *FINAL)
MAX_RETRIES = 10
MAX_TIMEOUT = 7 * 24 * 3600

metadata = sa.MetaData()
jobs = sa.Table(
    "sched_jobs",
    metadata,
    sa.Column("id", sa.String(20), primary_key=True),
    sa.Column("owner", sa.String(255), nullable=False, index=True),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("notebook", sa.String(64), nullable=False),  # sha256 of the frozen copy
    sa.Column("notebook_name", sa.String(255), nullable=False),
    sa.Column("parameters", sa.Text, nullable=False),
    sa.Column("cron", sa.String(200), nullable=True),
    sa.Column("timezone", sa.String(64), nullable=False),
    sa.Column("once", sa.DateTime(timezone=True), nullable=True),
    sa.Column("tier", sa.String(64), nullable=False),
    sa.Column("timeout_s", sa.Integer, nullable=False),
    sa.Column("retries", sa.Integer, nullable=False),
    sa.Column("backoff_s", sa.Integer, nullable=False),
    sa.Column("concurrency", sa.String(8), nullable=False),
    sa.Column("catch_up", sa.String(8), nullable=False),
    sa.Column("notify_url", sa.String(2000), nullable=False),
    sa.Column("paused", sa.Boolean, nullable=False),
    sa.Column("deleted", sa.Boolean, nullable=False),
    sa.Column("next_due", sa.DateTime(timezone=True), nullable=True, index=True),
    sa.Column("created", sa.DateTime(timezone=True), nullable=False),
    # One live job of a name per person (deleted ones keep their records, names and all).
    sa.Index(
        "uq_sched_jobs_live_name",
        "owner",
        "name",
        unique=True,
        sqlite_where=sa.text("NOT deleted"),
        postgresql_where=sa.text("NOT deleted"),
    ),
)
runs = sa.Table(
    "sched_runs",
    metadata,
    sa.Column("id", sa.String(20), primary_key=True),
    sa.Column("job", sa.String(20), sa.ForeignKey("sched_jobs.id"), nullable=False, index=True),
    sa.Column("scheduled_for", sa.DateTime(timezone=True), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("state", sa.String(12), nullable=False, index=True),
    sa.Column("not_before", sa.DateTime(timezone=True), nullable=False),
    sa.Column("started", sa.DateTime(timezone=True), nullable=True),
    sa.Column("ended", sa.DateTime(timezone=True), nullable=True),
    sa.Column("error", sa.Text, nullable=False),
    sa.Column("output", sa.String(1000), nullable=False),
    sa.Column("mlflow_run", sa.String(64), nullable=False),
)


class JobNotFound(NotFound):
    """No such job, or none the caller may see."""


def _aware(moment: datetime | None) -> datetime | None:
    return moment if moment is None or moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Job:
    """A job definition as stored."""

    id: str
    owner: str
    name: str
    notebook: str
    notebook_name: str
    parameters: dict[str, Any]
    schedule: Schedule
    tier: str
    timeout_s: int
    retries: int
    backoff_s: int
    concurrency: str
    catch_up: str
    notify_url: str
    paused: bool
    next_due: datetime | None
    created: datetime

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "owner": self.owner,
            "name": self.name,
            "notebook": self.notebook_name,
            "parameters": self.parameters,
            "schedule": self.schedule.as_json(),
            "tier": self.tier,
            "timeout": self.timeout_s,
            "retries": self.retries,
            "backoff": self.backoff_s,
            "concurrency": self.concurrency,
            "catch_up": self.catch_up,
            "notify_url": self.notify_url or None,
            "paused": self.paused,
            "next_run": self.next_due.isoformat() if self.next_due and not self.paused else None,
            "created": self.created.isoformat(),
        }


@dataclass(frozen=True)
class Run:
    """One attempt at one occurrence of a job."""

    id: str
    job: str
    scheduled_for: datetime
    attempt: int
    state: str
    not_before: datetime
    started: datetime | None = None
    ended: datetime | None = None
    error: str = ""
    output: str = ""
    mlflow_run: str = ""

    def as_json(self) -> dict[str, Any]:
        took = (self.ended - self.started).total_seconds() if self.started and self.ended else None
        return {
            "id": self.id,
            "job": self.job,
            "scheduled_for": self.scheduled_for.isoformat(),
            "attempt": self.attempt,
            "state": self.state,
            "started": self.started.isoformat() if self.started else None,
            "ended": self.ended.isoformat() if self.ended else None,
            "duration": took,
            "error": self.error or None,
            "output": bool(self.output),
            "mlflow_run": self.mlflow_run or None,
        }


def _job(row: Any) -> Job:
    schedule = Schedule(row.cron, row.timezone, _aware(row.once))
    return Job(
        row.id,
        row.owner,
        row.name,
        row.notebook,
        row.notebook_name,
        json.loads(row.parameters),
        schedule,
        row.tier,
        row.timeout_s,
        row.retries,
        row.backoff_s,
        row.concurrency,
        row.catch_up,
        row.notify_url,
        row.paused,
        _aware(row.next_due),
        _aware(row.created),  # type: ignore[arg-type]
    )


def _run(row: Any) -> Run:
    return Run(
        row.id,
        row.job,
        _aware(row.scheduled_for),  # type: ignore[arg-type]
        row.attempt,
        row.state,
        _aware(row.not_before),  # type: ignore[arg-type]
        _aware(row.started),
        _aware(row.ended),
        row.error,
        row.output,
        row.mlflow_run,
    )


def check_policy(timeout_s: Any, retries: Any, backoff_s: Any, concurrency: Any, catch_up: Any) -> None:
    """One line naming the first setting out of range."""

    def whole(value: Any, low: int, high: int) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high

    if not whole(timeout_s, 1, MAX_TIMEOUT):
        raise Invalid(f"timeout is whole seconds from 1 to {MAX_TIMEOUT}")
    if not whole(retries, 0, MAX_RETRIES):
        raise Invalid(f"retries is a whole number from 0 to {MAX_RETRIES}")
    if not whole(backoff_s, 0, 24 * 3600):
        raise Invalid("backoff is whole seconds from 0 to 86400 (it doubles with each retry)")
    if concurrency not in CONCURRENCY:
        raise Invalid(f"concurrency is one of {', '.join(CONCURRENCY)}")
    if catch_up not in CATCH_UP:
        raise Invalid(f"catch_up is one of {', '.join(CATCH_UP)}")


class SchedulerStore:
    """Jobs and runs in the database at ``db_url``; notebooks and outputs under ``root``."""

    def __init__(self, db_url: str, root: Path) -> None:
        self.root = Path(root)
        for folder in ("notebooks", "outputs"):
            (self.root / folder).mkdir(parents=True, exist_ok=True, mode=0o700)
        self.engine = sa.create_engine(db_url, future=True)
        with self._errors():
            metadata.create_all(self.engine)

    def dispose(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except SQLAlchemyError as exc:
            raise StoreError(f"the scheduler database failed: {type(exc).__name__}") from exc

    # -- notebooks and outputs -------------------------------------------------------

    def keep_notebook(self, body: bytes) -> str:
        digest = hashlib.sha256(body).hexdigest()
        path = self.notebook_path(digest)
        if not path.exists():  # stored by its digest: there already is the same
            replace_durably(path, body)
        return digest

    def notebook_path(self, digest: str) -> Path:
        return self.root / "notebooks" / f"{digest}.ipynb"

    def output_path(self, run_id: str) -> Path:
        return self.root / "outputs" / f"{run_id}.ipynb"

    # -- jobs ------------------------------------------------------------------------

    def create_job(self, owner: str, name: str, notebook_body: bytes, notebook_name: str, **spec: Any) -> Job:
        """A new job of ``owner``'s; ``spec``: parameters, schedule, tier, timeout_s, retries,
        backoff_s, concurrency, catch_up, notify_url, now."""
        schedule: Schedule = spec["schedule"]
        check_policy(spec["timeout_s"], spec["retries"], spec["backoff_s"], spec["concurrency"], spec["catch_up"])
        now: datetime = spec.get("now") or datetime.now(UTC)
        first = schedule.next_after(now - timedelta(microseconds=1))
        if first is None:
            raise Invalid("schedule.once is in the past: give a moment to come")
        digest = self.keep_notebook(notebook_body)
        job_id = "j-" + secrets.token_hex(6)
        row = {
            "id": job_id,
            "owner": owner,
            "name": name,
            "notebook": digest,
            "notebook_name": notebook_name,
            "parameters": json.dumps(spec.get("parameters") or {}),
            "cron": schedule.cron,
            "timezone": schedule.timezone,
            "once": schedule.once,
            "tier": spec["tier"],
            "timeout_s": spec["timeout_s"],
            "retries": spec["retries"],
            "backoff_s": spec["backoff_s"],
            "concurrency": spec["concurrency"],
            "catch_up": spec["catch_up"],
            "notify_url": spec.get("notify_url") or "",
            "paused": False,
            "deleted": False,
            "next_due": first,
            "created": now,
        }
        with self._errors():
            try:
                with self.engine.begin() as conn:
                    taken = conn.execute(
                        sa.select(jobs.c.id).where(jobs.c.owner == owner, jobs.c.name == name, ~jobs.c.deleted)
                    ).first()
                    if taken is not None:
                        raise Invalid(f"you have a job named {name!r} already: delete it first or pick another name")
                    conn.execute(jobs.insert().values(**row))
            except sa.exc.IntegrityError as exc:
                raise Invalid(f"you have a job named {name!r} already") from exc
        return self.job(job_id)

    def job(self, job_id: str, viewer: str | None = None, *, sees_all: bool = False) -> Job:
        """The job (not deleted); :class:`JobNotFound` if it is not ``viewer``'s (None: anyone's)."""
        with self._errors(), self.engine.connect() as conn:
            row = conn.execute(sa.select(jobs).where(jobs.c.id == job_id, ~jobs.c.deleted)).first()
        if row is None or (viewer is not None and not sees_all and row.owner != viewer):
            raise JobNotFound(f"no job {job_id}")
        return _job(row)

    def jobs(self, owner: str | None = None) -> list[Job]:
        query = sa.select(jobs).where(~jobs.c.deleted).order_by(jobs.c.created)
        if owner is not None:
            query = query.where(jobs.c.owner == owner)
        with self._errors(), self.engine.connect() as conn:
            return [_job(row) for row in conn.execute(query).all()]

    def _owned(self, job_id: str, caller: str, admin: bool) -> Job:
        """The job, for its owner or an admin; anyone else is told there is no such job."""
        return self.job(job_id, caller, sees_all=admin)

    def set_paused(
        self, job_id: str, caller: str, paused: bool, *, admin: bool = False, now: datetime | None = None
    ) -> Job:
        """Pause a job, or resume it from the next occurrence to come (none is run for the pause)."""
        job = self._owned(job_id, caller, admin)
        changes: dict[str, Any] = {"paused": paused}
        if not paused and job.paused:
            moment = now or datetime.now(UTC)
            changes["next_due"] = job.schedule.next_after(moment)
        with self._errors(), self.engine.begin() as conn:
            conn.execute(jobs.update().where(jobs.c.id == job_id).values(**changes))
        return self.job(job_id)

    def delete_job(self, job_id: str, caller: str, *, admin: bool = False) -> None:
        """Delete a job: no more runs; queued ones are cancelled, the record stays."""
        self._owned(job_id, caller, admin)
        with self._errors(), self.engine.begin() as conn:
            conn.execute(jobs.update().where(jobs.c.id == job_id).values(deleted=True, next_due=None))
            conn.execute(runs.update().where(runs.c.job == job_id, runs.c.state == "queued").values(state="cancelled"))

    # -- the scheduler's work ----------------------------------------------------------

    def due_jobs(self, now: datetime) -> list[Job]:
        query = sa.select(jobs).where(~jobs.c.deleted, ~jobs.c.paused, jobs.c.next_due <= now)
        with self._errors(), self.engine.connect() as conn:
            return [_job(row) for row in conn.execute(query).all()]

    def fire(self, job: Job, occurrences: list[datetime], following: datetime | None, now: datetime) -> list[Run]:
        """Queue a run for each occurrence and move the job's ``next_due`` on, in one transaction
        (only if nobody moved it meanwhile: two schedulers never fire one occurrence twice)."""
        return self.fire_all([(job, occurrences, following)], now)

    def fire_all(self, firings: list[tuple[Job, list[datetime], datetime | None]], now: datetime) -> list[Run]:
        """:meth:`fire` for several jobs in one transaction (a minute when hundreds fall due)."""
        made: list[Run] = []
        with self._errors(), self.engine.begin() as conn:
            for job, occurrences, following in firings:
                moved = conn.execute(
                    jobs.update().where(jobs.c.id == job.id, jobs.c.next_due == job.next_due).values(next_due=following)
                )
                if moved.rowcount != 1:
                    continue
                queued = [Run("r-" + secrets.token_hex(6), job.id, moment, 1, "queued", now) for moment in occurrences]
                if queued:
                    conn.execute(runs.insert(), [self._row(run) for run in queued])
                made += queued
        return made

    @staticmethod
    def _row(run: Run) -> dict[str, Any]:
        return {
            "id": run.id,
            "job": run.job,
            "scheduled_for": run.scheduled_for,
            "attempt": run.attempt,
            "state": run.state,
            "not_before": run.not_before,
            "started": run.started,
            "ended": run.ended,
            "error": run.error,
            "output": run.output,
            "mlflow_run": run.mlflow_run,
        }

    def next_moment(self) -> datetime | None:
        """The earliest moment something may become due: a job's next occurrence, or a queued
        run's ``not_before`` (a retry's backoff)."""
        with self._errors(), self.engine.connect() as conn:
            job = conn.execute(sa.select(sa.func.min(jobs.c.next_due)).where(~jobs.c.deleted, ~jobs.c.paused)).scalar()
            queued = conn.execute(sa.select(sa.func.min(runs.c.not_before)).where(runs.c.state == "queued")).scalar()
        found = [_aware(moment) for moment in (job, queued) if moment is not None]
        return min(found) if found else None  # type: ignore[type-var]

    def ready_runs(self, now: datetime) -> list[Run]:
        """Queued runs whose ``not_before`` has come, oldest occurrence first."""
        query = (
            sa.select(runs)
            .where(runs.c.state == "queued", runs.c.not_before <= now)
            .order_by(runs.c.scheduled_for, runs.c.attempt)
        )
        with self._errors(), self.engine.connect() as conn:
            return [_run(row) for row in conn.execute(query).all()]

    def jobs_by_id(self, ids: set[str]) -> dict[str, Job]:
        """The jobs (not deleted) of ``ids``."""
        if not ids:
            return {}
        query = sa.select(jobs).where(jobs.c.id.in_(sorted(ids)), ~jobs.c.deleted)
        with self._errors(), self.engine.connect() as conn:
            return {row.id: _job(row) for row in conn.execute(query).all()}

    def running_jobs(self) -> set[str]:
        """The jobs with a run going."""
        with self._errors(), self.engine.connect() as conn:
            return {row.job for row in conn.execute(sa.select(runs.c.job).where(runs.c.state == "running")).all()}

    def start_all(self, run_ids: list[str], now: datetime) -> set[str]:
        """Mark queued runs running in one transaction; those that were still queued."""
        if not run_ids:
            return set()
        with self._errors(), self.engine.begin() as conn:
            still = {row.id for row in conn.execute(
                sa.select(runs.c.id).where(runs.c.id.in_(run_ids), runs.c.state == "queued")
            ).all()}  # fmt: skip
            if still:
                conn.execute(runs.update().where(runs.c.id.in_(sorted(still))).values(state="running", started=now))
        return still

    def running(self, job_id: str) -> bool:
        query = sa.select(runs.c.id).where(runs.c.job == job_id, runs.c.state == "running")
        with self._errors(), self.engine.connect() as conn:
            return conn.execute(query).first() is not None

    def start(self, run_id: str, now: datetime) -> bool:
        """Mark a queued run running; False if it was not queued any more."""
        with self._errors(), self.engine.begin() as conn:
            done = conn.execute(
                runs.update().where(runs.c.id == run_id, runs.c.state == "queued").values(state="running", started=now)
            )
        return done.rowcount == 1

    def finish(
        self, run: Run, state: str, now: datetime, *, error: str = "", output: str = "", mlflow_run: str = ""
    ) -> Run | None:
        """Record how a run ended; the next attempt (queued, after the backoff) if it failed
        and its job has retries left."""
        if state not in FINAL:
            raise ValueError(f"not a final state: {state}")
        retry = None
        with self._errors(), self.engine.begin() as conn:
            conn.execute(
                runs.update()
                .where(runs.c.id == run.id)
                .values(state=state, ended=now, error=error[:4000], output=output, mlflow_run=mlflow_run)
            )
            row = conn.execute(sa.select(jobs).where(jobs.c.id == run.job)).first()
            again = state in ("failed", "timed_out", "interrupted")
            if again and row is not None and not row.deleted and run.attempt <= row.retries:
                wait = timedelta(seconds=row.backoff_s * 2 ** (run.attempt - 1))
                retry = Run(
                    "r-" + secrets.token_hex(6), run.job, run.scheduled_for, run.attempt + 1, "queued", now + wait
                )
                conn.execute(runs.insert().values(**self._row(retry)))
        return retry

    def interrupted(self, now: datetime) -> list[Run]:
        """The runs that were going when the scheduler stopped: each marked ``interrupted``
        (and retried by its job's policy). Returns them as they were."""
        with self._errors(), self.engine.connect() as conn:
            going = [_run(row) for row in conn.execute(sa.select(runs).where(runs.c.state == "running")).all()]
        for run in going:
            self.finish(run, "interrupted", now, error="the scheduler stopped while it ran")
        return going

    def run(self, run_id: str) -> Run:
        with self._errors(), self.engine.connect() as conn:
            row = conn.execute(sa.select(runs).where(runs.c.id == run_id)).first()
        if row is None:
            raise JobNotFound(f"no run {run_id}")
        return _run(row)

    def runs(self, job_id: str, limit: int = 100) -> list[Run]:
        query = sa.select(runs).where(runs.c.job == job_id).order_by(runs.c.scheduled_for.desc(), runs.c.attempt.desc())
        with self._errors(), self.engine.connect() as conn:
            return [_run(row) for row in conn.execute(query.limit(limit)).all()]
