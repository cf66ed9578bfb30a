"""Fair share: who gets the next free GPU, and the words that say why.

Pure functions with no I/O. A group that used fewer GPU-hours in the recent
window goes first; among equals, the earlier arrival. The allocator applies
the order; these functions only compute it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple, Protocol, TypeVar

__all__ = [
    "Interval",
    "Waiting",
    "gpu_hours",
    "group_hours",
    "hours_words",
    "order",
    "ordinal",
    "status_line",
    "window_words",
]


@dataclass(frozen=True)
class Waiting:
    """A request waiting for GPUs: who asks, for what, since when."""

    request_id: str
    user: str
    group: str
    tier: str
    gpus: int
    model: str | None
    arrival: float
    mig_profile: str | None = None


class Interval(NamedTuple):
    """GPUs held from ``start`` to ``end`` (``None`` while still held), in epoch seconds."""

    start: float
    end: float | None
    gpus: int


class _Queued(Protocol):
    @property
    def group(self) -> str: ...

    @property
    def arrival(self) -> float: ...


Q = TypeVar("Q", bound=_Queued)


def _seconds(start: float, end: float | None, gpus: int, now: float, since: float) -> float:
    """GPU-seconds of one interval inside ``[since, now]``."""
    held = (now if end is None else min(end, now)) - max(start, since)
    return held * gpus if held > 0 else 0.0


def gpu_hours(intervals: Iterable[tuple[float, float | None, int]], now: float, window: float) -> float:
    """GPU-hours held within ``[now - window, now]``; running intervals count up to ``now``."""
    since = now - window
    return sum(_seconds(start, end, gpus, now, since) for start, end, gpus in intervals) / 3600


def group_hours(rows: Iterable[tuple[str, float, float | None, int]], now: float, window: float) -> dict[str, float]:
    """GPU-hours per group from ``(group, start, end, gpus)`` rows, clipped to the window."""
    since = now - window
    seconds: dict[str, float] = {}
    for group, start, end, gpus in rows:
        seconds[group] = seconds.get(group, 0.0) + _seconds(start, end, gpus, now, since)
    return {group: total / 3600 for group, total in seconds.items()}


def order(waiting: Iterable[Q], usage_by_group: Mapping[str, float]) -> list[Q]:
    """Waiting requests in the order they are served: group's GPU-hours, then arrival.

    The sort is stable, so requests that tie on both keep the order given.
    """
    return sorted(waiting, key=lambda w: (usage_by_group.get(w.group, 0.0), w.arrival))


def ordinal(n: int) -> str:
    """``1st``, ``2nd``, ``3rd``, ``4th``, ``11th``, ``12th``, ``13th``, ``21st``, ..."""
    if n % 100 in (11, 12, 13):
        return f"{n}th"
    return f"{n}{ {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th') }"


def hours_words(hours: float) -> str:
    """``"12 GPU-hours"``, ``"1 GPU-hour"``, ``"0.5 GPU-hours"``: precise where it is small."""
    value = f"{hours:.0f}" if hours >= 10 else f"{hours:.1f}".removesuffix(".0")
    return f"{value} GPU-hour{'' if value == '1' else 's'}"


def window_words(seconds: float) -> str:
    """``"7 days"``, ``"day"``, ``"12 hours"``, ``"30 minutes"``: as in "in the last ..."."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return unit if count == 1 else f"{count} {unit}s"
    return f"{seconds:g} seconds"


def status_line(position: int, tier: str, hours: float, window_s: float, reason: str | None = None) -> str:
    """The line a waiting person reads on the spawn page.

    >>> status_line(3, "training", 12, 7 * 86400)
    '3rd in line for training; your group used 12 GPU-hours in the last 7 days'
    """
    used = f"your group used {hours_words(hours)} in the last {window_words(window_s)}"
    line = f"{ordinal(position)} in line for {tier}; {used}"
    return f"{line}; {reason}" if reason else line
