"""The demo feature repository's plain logic: its files, its data, and what a run redoes.

No Feast here (importing it takes seconds); applying and materializing with the real
Feast, on SQLite and on Redis, is in ``tests/integration/test_features_repo.py``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
import yaml

from hubforge.features.datagen import FILES, Shape, generate
from hubforge.features.repo import (
    REFRESH_AFTER,
    FeaturesError,
    Plan,
    State,
    definitions_text,
    feature_store_yaml,
    plan,
    redacted,
    redis_connection_string,
)

ANCHOR = datetime(2026, 3, 2, 14, tzinfo=UTC)


def test_the_data_is_the_same_for_the_same_anchor_and_before_it() -> None:
    first, second = generate(ANCHOR), generate(ANCHOR)
    assert set(first) == set(FILES)
    for name in FILES:
        pd.testing.assert_frame_equal(first[name], second[name])
        assert (first[name]["event_timestamp"] < pd.Timestamp(ANCHOR)).all(), name
    # A few thousand rows, every customer and merchant with a row on the anchor's day.
    assert 5_000 <= sum(len(frame) for frame in first.values()) <= 10_000
    activity = first["customer_activity"]
    latest = activity[activity["event_timestamp"] > pd.Timestamp(ANCHOR - timedelta(days=1))]
    assert latest["customer_id"].nunique() == Shape().customers
    # Another anchor moves the times, not the values.
    later = generate(ANCHOR + timedelta(days=3))
    moved = later["merchant_risk"]["event_timestamp"] - first["merchant_risk"]["event_timestamp"]
    assert (moved == pd.Timedelta(days=3)).all()
    pd.testing.assert_series_equal(later["merchant_risk"]["avg_ticket_usd"], first["merchant_risk"]["avg_ticket_usd"])


def test_the_data_refuses_a_naive_anchor() -> None:
    with pytest.raises(ValueError, match="UTC-aware"):
        generate(datetime(2026, 3, 2, 14))


def test_feature_store_yaml_is_sqlite_by_default_and_redis_when_configured() -> None:
    sqlite = yaml.safe_load(feature_store_yaml("demo", ""))
    assert sqlite["online_store"] == {"type": "sqlite", "path": "online.db"}
    assert sqlite["offline_store"] == {"type": "file"} and sqlite["project"] == "demo"
    assert sqlite["registry"]["path"] == "registry.db"
    redis = yaml.safe_load(feature_store_yaml("demo", "rediss://:s%40cret@cache.internal:6380/2"))
    assert redis["online_store"] == {
        "type": "redis",
        "connection_string": "cache.internal:6380,db=2,ssl=true,password=s@cret",
    }


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6379/0", "127.0.0.1:6379,db=0"),
        ("redis://localhost", "localhost:6379,db=0"),
        ("redis://app:pw@db.internal:7000/3", "db.internal:7000,db=3,username=app,password=pw"),
    ],
)
def test_redis_urls_become_feast_connection_strings(url: str, expected: str) -> None:
    assert redis_connection_string(url) == expected


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("unix:///run/redis.sock", "needs redis://host:port/db"),
        ("redis://127.0.0.1:6379/cache", "must be a number"),
        ("redis://:a,b@127.0.0.1/0", "with a comma"),
        ("redis://127.0.0.1:port/0", "invalid port"),
    ],
)
def test_a_redis_url_feast_cannot_use_is_one_line_naming_the_key(url: str, problem: str) -> None:
    with pytest.raises(FeaturesError) as err:
        redis_connection_string(url)
    message = str(err.value)
    assert message.startswith("features: backends.redis_url: ") and problem in message
    assert "\n" not in message and "a,b" not in message


def test_messages_never_show_the_redis_password() -> None:
    assert redacted("redis://app:pw@db.internal:7000/3") == "redis://app:***@db.internal:7000/3"
    assert redacted("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_the_shipped_definitions_describe_every_object() -> None:
    text = definitions_text()
    for kind in ("Entity(", "FileSource(", "FeatureView(", "@on_demand_feature_view(", "FeatureService("):
        assert kind in text
    assert text.count("owner=") >= 10 and text.count("tags=") >= 10


def state(**changes: object) -> State:
    base = {"definitions": "d1", "online": "sqlite", "anchor": ANCHOR.isoformat(), "data_version": 1}
    base.update(changes)
    return State(materialized_to=ANCHOR.isoformat(), **base)  # type: ignore[arg-type]


def decide(before: State | None, now: State, **facts: bool) -> Plan:
    given = {"data_present": True, "registry_present": True, "force": False, **facts}
    return plan(before, now, **given)


def test_a_first_run_or_a_forced_one_does_every_step() -> None:
    assert decide(None, state()) == Plan(generate=True, apply=True, materialize=True)
    assert decide(state(), state(), force=True) == Plan(generate=True, apply=True, materialize=True)


def test_a_run_with_nothing_changed_does_nothing() -> None:
    later = ANCHOR + REFRESH_AFTER - timedelta(hours=1)
    assert decide(state(), state(anchor=later.isoformat())) == Plan(generate=False, apply=False, materialize=False)


@pytest.mark.parametrize(
    ("now", "facts", "expected"),
    [
        # Another online store (Redis configured): fill it, apply nothing, keep the data.
        (state(online="redis"), {}, Plan(generate=False, apply=False, materialize=True)),
        # The definitions (or Feast) changed, or the registry is gone: apply and fill again.
        (state(definitions="d2"), {}, Plan(generate=False, apply=True, materialize=True)),
        (state(), {"registry_present": False}, Plan(generate=False, apply=True, materialize=True)),
        # Data missing, of another generator, or older than REFRESH_AFTER: generate and fill.
        (state(), {"data_present": False}, Plan(generate=True, apply=False, materialize=True)),
        (state(data_version=2), {}, Plan(generate=True, apply=False, materialize=True)),
        (state(anchor=(ANCHOR + REFRESH_AFTER).isoformat()), {}, Plan(generate=True, apply=False, materialize=True)),
    ],
)
def test_a_run_redoes_only_what_changed(now: State, facts: dict[str, bool], expected: Plan) -> None:
    assert decide(state(), now, **facts) == expected


def test_a_run_that_never_materialized_materializes() -> None:
    unfinished = State(definitions="d1", online="sqlite", anchor=ANCHOR.isoformat(), data_version=1)
    assert decide(unfinished, state()).materialize


def test_an_unreadable_state_is_no_state() -> None:
    assert State.from_json("{not json") is None
    assert State.from_json('{"definitions": "d1"}') is None
    assert State.from_json(state().to_json()) == state()
