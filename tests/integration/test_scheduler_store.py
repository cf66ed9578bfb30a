"""The scheduler's records on SQLite and PostgreSQL: job definitions, an occurrence fired once,
retries with doubling backoff, runs interrupted by a stop, pause and resume, deletion."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from harness.apps import notebook
from harness.platform import pg_databases
from hubforge.errors import Invalid
from hubforge.hub.scheduler.schedule import due, parse_schedule
from hubforge.hub.scheduler.store import JobNotFound, SchedulerStore

NOW = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)
BODY = json.dumps(notebook("Nightly report")).encode()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SchedulerStore]:
    with contextlib.ExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path / 'scheduler.sqlite'}"
        else:
            url = stack.enter_context(pg_databases("scheduler"))["scheduler"]
            url = "postgresql+psycopg2://" + url.removeprefix("postgresql://")
        opened = SchedulerStore(url, tmp_path / "files")
        stack.callback(opened.dispose)
        yield opened


def spec(**changes: Any) -> dict[str, Any]:
    base = {
        "parameters": {"region": "emea"},
        "schedule": parse_schedule({"cron": "*/5 * * * *"}),
        "tier": "interactive",
        "timeout_s": 600,
        "retries": 2,
        "backoff_s": 30,
        "concurrency": "skip",
        "catch_up": "none",
        "now": NOW,
    }
    return {**base, **changes}


def test_a_job_is_kept_with_its_notebook_and_fires_each_occurrence_once(store: SchedulerStore) -> None:
    job = store.create_job("alice", "report", BODY, "report.ipynb", **spec())
    assert (job.next_due, job.parameters, job.paused) == (NOW, {"region": "emea"}, False)
    assert store.notebook_path(job.notebook).read_bytes() == BODY
    tick = NOW + timedelta(seconds=3)
    (fired,) = store.due_jobs(tick)
    occurrences, following = due(fired.schedule, fired.next_due, tick, fired.catch_up)
    made = store.fire(fired, occurrences, following, tick)
    assert [(r.scheduled_for, r.attempt, r.state) for r in made] == [(NOW, 1, "queued")]
    assert store.fire(fired, occurrences, following, tick) == []  # a second scheduler finds it moved
    assert store.job(job.id).next_due == NOW + timedelta(minutes=5)
    assert store.due_jobs(tick) == []
    assert [r.id for r in store.ready_runs(tick)] == [made[0].id]


def test_a_failed_run_is_retried_with_doubling_backoff_then_given_up(store: SchedulerStore) -> None:
    job = store.create_job("alice", "flaky", BODY, "flaky.ipynb", **spec(retries=2, backoff_s=30))
    (first,) = store.fire(job, [NOW], NOW + timedelta(minutes=5), NOW)
    assert store.start(first.id, NOW) and not store.start(first.id, NOW)  # started once
    assert store.running(job.id)
    second = store.finish(first, "failed", NOW + timedelta(seconds=5), error="ZeroDivisionError")
    assert second is not None and (second.attempt, second.not_before) == (2, NOW + timedelta(seconds=35))
    assert store.ready_runs(NOW + timedelta(seconds=34)) == []
    store.start(second.id, NOW + timedelta(seconds=35))
    third = store.finish(second, "timed_out", NOW + timedelta(seconds=40))
    assert third is not None and (third.attempt, third.not_before) == (3, NOW + timedelta(seconds=100))
    store.start(third.id, NOW + timedelta(seconds=100))
    assert store.finish(third, "failed", NOW + timedelta(seconds=101)) is None  # retries spent
    history = store.runs(job.id)
    assert [(r.attempt, r.state) for r in history] == [(3, "failed"), (2, "timed_out"), (1, "failed")]
    assert history[2].error == "ZeroDivisionError" and history[2].as_json()["duration"] == 5.0
    assert store.finish(third, "succeeded", NOW) is None  # success is never retried


def test_runs_going_when_the_scheduler_stopped_are_interrupted_and_retried(store: SchedulerStore) -> None:
    job = store.create_job("alice", "long", BODY, "long.ipynb", **spec(retries=1, backoff_s=0))
    (run,) = store.fire(job, [NOW], None, NOW)
    store.start(run.id, NOW)
    (was,) = store.interrupted(NOW + timedelta(minutes=1))
    assert was.id == run.id
    assert store.run(run.id).state == "interrupted"
    (retry,) = store.ready_runs(NOW + timedelta(minutes=1))
    assert (retry.attempt, retry.scheduled_for) == (2, NOW)


def test_pause_resume_delete_and_who_may(store: SchedulerStore) -> None:
    job = store.create_job("alice", "weekly", BODY, "weekly.ipynb", **spec())
    with pytest.raises(JobNotFound):
        store.job(job.id, "bob")
    with pytest.raises(JobNotFound):  # not his: no such job, as far as bob is told
        store.set_paused(job.id, "bob", True)
    paused = store.set_paused(job.id, "alice", True)
    assert paused.paused and paused.as_json()["next_run"] is None and store.due_jobs(NOW + timedelta(hours=1)) == []
    resumed = store.set_paused(job.id, "alice", False, now=NOW + timedelta(hours=1, minutes=2))
    assert resumed.next_due == NOW + timedelta(hours=1, minutes=5)  # nothing run for the pause
    (queued,) = store.fire(resumed, [resumed.next_due], None, NOW)
    store.delete_job(job.id, "erin", admin=True)
    assert store.run(queued.id).state == "cancelled"
    with pytest.raises(JobNotFound):
        store.job(job.id)
    again = store.create_job("alice", "weekly", BODY, "weekly.ipynb", **spec())  # the name is free again
    assert again.id != job.id


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"timeout_s": 0}, "timeout is whole seconds"),
        ({"retries": 11}, "retries is a whole number"),
        ({"backoff_s": -1}, "backoff is whole seconds"),
        ({"concurrency": "parallel"}, "concurrency is one of skip, queue"),
        ({"catch_up": "all"}, "catch_up is one of none, latest"),
        ({"schedule": parse_schedule({"once": "2020-01-01T00:00:00+00:00"})}, "in the past"),
    ],
)
def test_bad_definitions_are_refused(store: SchedulerStore, changes: dict[str, Any], why: str) -> None:
    with pytest.raises(Invalid, match=why):
        store.create_job("alice", "bad", BODY, "bad.ipynb", **spec(**changes))


def test_one_live_job_of_a_name_per_person(store: SchedulerStore) -> None:
    store.create_job("alice", "daily", BODY, "daily.ipynb", **spec())
    with pytest.raises(Invalid, match="a job named 'daily' already"):
        store.create_job("alice", "daily", BODY, "daily.ipynb", **spec())
    assert store.create_job("bob", "daily", BODY, "daily.ipynb", **spec()).owner == "bob"
