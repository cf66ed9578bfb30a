"""When scheduled jobs run: cron in a time zone (daylight saving included), one-offs, and what
a tick runs after the platform was down, by catch-up policy."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from hubforge.errors import Invalid
from hubforge.hub.scheduler.schedule import Schedule, due, parse_schedule


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def test_cron_runs_at_the_local_hour_across_daylight_saving() -> None:
    weekdays_at_nine = parse_schedule({"cron": "0 9 * * 1-5", "timezone": "Europe/Berlin"})
    # Friday 27 March 2026 (CET, UTC+1) -> Monday 30 March (CEST, UTC+2) -> Tuesday.
    first = weekdays_at_nine.next_after(utc(2026, 3, 27, 12))
    assert first == utc(2026, 3, 30, 7)
    assert weekdays_at_nine.next_after(first) == utc(2026, 3, 31, 7)
    assert weekdays_at_nine.next_after(utc(2026, 3, 27, 7)) == utc(2026, 3, 27, 8)  # still winter time


def test_every_minute_and_strictly_after() -> None:
    every_minute = parse_schedule({"cron": "* * * * *"})
    assert every_minute.next_after(utc(2026, 12, 4, 10, 0)) == utc(2026, 12, 4, 10, 1)
    assert every_minute.next_after(utc(2026, 12, 4, 10, 0, 30)) == utc(2026, 12, 4, 10, 1)


def test_a_one_off_runs_once() -> None:
    once = parse_schedule({"once": "2026-12-24T18:00:00+01:00"})
    assert once.next_after(utc(2026, 12, 1)) == utc(2026, 12, 24, 17)
    assert once.next_after(utc(2026, 12, 24, 17)) is None
    local = parse_schedule({"once": "2026-12-24T18:00", "timezone": "America/New_York"})
    assert local.once == utc(2026, 12, 24, 23)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        ({"cron": "61 * * * *"}, "is not a cron expression of five fields"),
        ({"cron": "* * * *"}, "five fields"),
        ({"cron": "@reboot"}, "five fields"),
        ({"cron": 5}, "five fields"),
        ({"cron": "* * * * *", "timezone": "Mars/Olympus"}, "is no time zone"),
        ({"cron": "* * * * *", "timezone": 3}, "time zone name"),
        ({"once": "next tuesday"}, "ISO 8601"),
        ({"once": "2026-12-01", "cron": "* * * * *"}, "either cron"),
        ({}, "either cron"),
        ("0 9 * * *", "either cron"),
    ],
)
def test_bad_schedules_are_one_line(data: object, why: str) -> None:
    with pytest.raises(Invalid, match=why) as info:
        parse_schedule(data)
    assert "\n" not in str(info.value)


def test_a_tick_runs_what_fell_due_and_the_catch_up_policy_decides_on_what_was_missed() -> None:
    hourly = Schedule("0 * * * *", "UTC")
    now = utc(2026, 12, 4, 10, 0, 20)
    # On time (20 s late): run it, next is 11:00.
    assert due(hourly, utc(2026, 12, 4, 10), now, "none") == ([utc(2026, 12, 4, 10)], utc(2026, 12, 4, 11))
    # Not yet.
    assert due(hourly, utc(2026, 12, 4, 11), now, "none") == ([], utc(2026, 12, 4, 11))
    # Down since 06:30: 07, 08, 09 missed; 10 on time; none or latest, 10 runs, once.
    for policy in ("none", "latest"):
        assert due(hourly, utc(2026, 12, 4, 7), now, policy) == ([utc(2026, 12, 4, 10)], utc(2026, 12, 4, 11))
    # Back at 10:30: nothing on time; latest runs 10:00, none runs nothing.
    later = utc(2026, 12, 4, 10, 30)
    assert due(hourly, utc(2026, 12, 4, 7), later, "none") == ([], utc(2026, 12, 4, 11))
    assert due(hourly, utc(2026, 12, 4, 7), later, "latest") == ([utc(2026, 12, 4, 10)], utc(2026, 12, 4, 11))


def test_the_page_lists_jobs_with_their_runs_escaped() -> None:
    from datetime import timedelta

    from hubforge.hub.scheduler.pages import jobs_page
    from hubforge.hub.scheduler.store import Job, Run

    due_at = utc(2026, 12, 4, 7)
    weekly = parse_schedule({"cron": "0 7 * * 1"})
    job = Job("j-1", "alice", "<b>report</b>", "n" * 64, "weekly <report>.ipynb", {}, weekly,
              "interactive", 600, 2, 60, "skip", "latest", "", False, due_at, due_at)  # fmt: skip
    ended = due_at + timedelta(seconds=12)
    ran = Run("r-1", "j-1", due_at, 1, "failed", due_at, due_at, ended, "<script>x</script>", "o")
    page = jobs_page("/services/scheduler/", "alice", [job], {"j-1": [ran]})
    assert "<script>" not in page and "&lt;b&gt;report&lt;/b&gt;" in page
    assert 'data-job="j-1"' in page and 'data-run="r-1"' in page and "12.0 s" in page
    assert "/services/scheduler/api/runs/r-1/output" in page and "next run 2026-12-04 07:00:00 UTC" in page
    assert "cron 0 7 * * 1 (UTC)" in page and "catch-up latest" in page
    assert "No scheduled notebook yet" in jobs_page("/services/scheduler/", "bob", [], {})
