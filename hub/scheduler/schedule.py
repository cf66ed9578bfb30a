"""When a job runs: a cron expression in a time zone, or once at a moment.

:func:`parse_schedule` checks what a person wrote (one line naming what is wrong) and
:meth:`Schedule.next_after` gives the next moment, in UTC, strictly after another.
Cron is read by croniter in the job's own time zone, so ``0 9 * * 1-5`` in
``Europe/Berlin`` is nine o'clock there in winter and in summer.

:func:`due` answers what the scheduler does at a tick: the occurrences that fell due
since the job's ``next_due``, reduced by the job's catch-up policy: after the platform
was down over several occurrences, ``none`` runs none of those missed by more than a
grace period, ``latest`` runs the latest one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from hubforge.errors import Invalid

__all__ = ["CATCH_UP", "GRACE", "Schedule", "due", "parse_schedule"]

#: What to do with occurrences missed while the platform was down.
CATCH_UP = ("none", "latest")
#: An occurrence this late is still on time (a tick, a busy machine); later ones were missed.
GRACE = timedelta(seconds=60)
#: The most occurrences looked at in one tick (a job every minute down for a week).
MAX_STEPS = 100_000


@dataclass(frozen=True)
class Schedule:
    """A cron expression and its time zone, or one moment (``once``, UTC)."""

    cron: str | None
    timezone: str
    once: datetime | None = None

    def next_after(self, moment: datetime) -> datetime | None:
        """The first occurrence strictly after ``moment`` (UTC), or None (a one-off that was)."""
        if self.once is not None:
            return self.once if self.once > moment else None
        from croniter import croniter

        local = moment.astimezone(ZoneInfo(self.timezone))
        following: datetime = croniter(self.cron, local).get_next(datetime)
        return following.astimezone(UTC)

    def as_json(self) -> dict[str, Any]:
        if self.once is not None:
            return {"once": self.once.isoformat()}
        return {"cron": self.cron, "timezone": self.timezone}


def parse_schedule(data: Any) -> Schedule:
    """``{"cron": "...", "timezone": "Area/City"}`` or ``{"once": "<ISO 8601 with a zone>"}``."""
    if not isinstance(data, dict) or ("cron" in data) == ("once" in data):
        raise Invalid("schedule: give either cron (with an optional timezone) or once")
    timezone = data.get("timezone", "UTC")
    if not isinstance(timezone, str):
        raise Invalid("schedule.timezone must be a time zone name such as Europe/Berlin")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise Invalid(f"schedule.timezone {timezone[:60]!r} is no time zone (e.g. UTC, Europe/Berlin)") from None
    if "once" in data:
        when = data["once"]
        try:
            moment = datetime.fromisoformat(when) if isinstance(when, str) else None
        except ValueError:
            moment = None
        if moment is None:
            raise Invalid("schedule.once must be an ISO 8601 date and time (2026-12-04T09:00:00+01:00)")
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=ZoneInfo(timezone))
        return Schedule(None, timezone, moment.astimezone(UTC))
    from croniter import croniter

    cron = data["cron"]
    if not isinstance(cron, str) or len(cron) > 200 or len(cron.split()) != 5 or not croniter.is_valid(cron):
        shown = cron[:60] if isinstance(cron, str) else cron
        raise Invalid(
            f"schedule.cron {shown!r} is not a cron expression of five fields (minute hour day month weekday)"
        )
    return Schedule(cron, timezone)


def due(schedule: Schedule, next_due: datetime, now: datetime, catch_up: str) -> tuple[list[datetime], datetime | None]:
    """(the occurrences to run now, the next one after them) for a job whose next occurrence
    was ``next_due``: those no later than ``now``, of which the ones missed by more than
    :data:`GRACE` are dropped (``none``) or reduced to the latest (``latest``)."""
    if next_due > now:
        return [], next_due
    occurrences = [next_due]
    following = schedule.next_after(next_due)
    for _ in range(MAX_STEPS):
        if following is None or following > now:
            break
        occurrences.append(following)
        following = schedule.next_after(following)
    on_time = [moment for moment in occurrences if now - moment <= GRACE]
    missed = [moment for moment in occurrences if now - moment > GRACE]
    if missed and catch_up == "latest" and not on_time:
        on_time = [missed[-1]]
    return on_time, following
