"""Fair share: GPU-hours in a window, the serving order, and the words a waiting person reads."""

from __future__ import annotations

import pytest

from hubforge.spawner_profiles.local.gpus.fairshare import (
    Interval,
    Waiting,
    gpu_hours,
    group_hours,
    hours_words,
    order,
    ordinal,
    status_line,
    window_words,
)

HOUR = 3600.0
DAY = 24 * HOUR
WEEK = 7 * DAY


@pytest.mark.parametrize(
    ("n", "word"),
    [
        (1, "1st"),
        (2, "2nd"),
        (3, "3rd"),
        (4, "4th"),
        (10, "10th"),
        (11, "11th"),
        (12, "12th"),
        (13, "13th"),
        (14, "14th"),
        (21, "21st"),
        (22, "22nd"),
        (23, "23rd"),
        (101, "101st"),
        (111, "111th"),
        (112, "112th"),
        (1002, "1002nd"),
    ],
)
def test_ordinal(n: int, word: str) -> None:
    assert ordinal(n) == word


def test_gpu_hours_counts_gpus_times_time() -> None:
    now = 100 * DAY
    assert gpu_hours([Interval(now - 3 * HOUR, now - HOUR, 2)], now, WEEK) == pytest.approx(4.0)


def test_gpu_hours_clips_to_the_window() -> None:
    now = 100 * DAY
    since = now - WEEK
    intervals = [
        Interval(since - 10 * HOUR, since + 2 * HOUR, 1),  # straddles the window's start: 2 h count
        Interval(since - 10 * HOUR, since - HOUR, 4),  # wholly before the window: nothing
        Interval(now - HOUR, None, 3),  # still running: counts up to now
        Interval(now - HOUR, now + 5 * HOUR, 1),  # an end in the future counts up to now
    ]
    assert gpu_hours(intervals, now, WEEK) == pytest.approx(2 + 0 + 3 + 1)
    assert gpu_hours([], now, WEEK) == 0.0
    assert gpu_hours([Interval(now + HOUR, None, 1)], now, WEEK) == 0.0  # starts after now


def test_group_hours_sums_per_group() -> None:
    now = 100 * DAY
    rows = [("ds", now - 2 * HOUR, now - HOUR, 1), ("ml", now - HOUR, None, 2), ("ds", now - HOUR, None, 1)]
    assert group_hours(rows, now, WEEK) == {"ds": pytest.approx(2.0), "ml": pytest.approx(2.0)}


def _waiting(request_id: str, group: str, arrival: float) -> Waiting:
    return Waiting(request_id, request_id, group, "training", 1, None, arrival)


def test_order_is_by_group_gpu_hours_then_arrival() -> None:
    waiting = [
        _waiting("a", "heavy", 1.0),
        _waiting("b", "light", 5.0),
        _waiting("c", "new", 9.0),  # a group with no usage counts as 0 and goes first
        _waiting("d", "light", 2.0),
        _waiting("e", "heavy", 0.5),
    ]
    usage = {"heavy": 40.0, "light": 3.0}
    assert [w.request_id for w in order(waiting, usage)] == ["c", "d", "b", "e", "a"]


def test_order_keeps_the_given_order_on_a_full_tie() -> None:
    waiting = [_waiting(str(i), "g", 7.0) for i in range(10)]
    assert order(waiting, {}) == waiting


@pytest.mark.parametrize(
    ("hours", "words"),
    [(0, "0 GPU-hours"), (1, "1 GPU-hour"), (0.54, "0.5 GPU-hours"), (9.96, "10 GPU-hours"), (12.4, "12 GPU-hours")],
)
def test_hours_words(hours: float, words: str) -> None:
    assert hours_words(hours) == words


@pytest.mark.parametrize(
    ("seconds", "words"),
    [(WEEK, "7 days"), (DAY, "day"), (12 * HOUR, "12 hours"), (HOUR, "hour"), (1800, "30 minutes"), (90, "90 seconds")],
)
def test_window_words(seconds: float, words: str) -> None:
    assert window_words(seconds) == words


def test_status_line() -> None:
    assert status_line(3, "training", 12, WEEK) == (
        "3rd in line for training; your group used 12 GPU-hours in the last 7 days"
    )
    assert status_line(1, "hpo", 0, DAY, "waiting for your group's hpo quota (4 of 4 GPUs in use)") == (
        "1st in line for hpo; your group used 0 GPU-hours in the last day; "
        "waiting for your group's hpo quota (4 of 4 GPUs in use)"
    )
