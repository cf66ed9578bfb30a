"""``historical_values`` with the real Feast, on the demo repository: a value per entity row,
in the rows' order, as of each row's time, where Feast's file offline store alone would drop
rows (a view with data only after a row's time takes the other views' values with it; rows
sharing a key and a time collapse into one, feast-dev/feast#6787); JSON's values."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from hubforge.config import load_config
from hubforge.contract import DATA_ENV
from hubforge.features import FeaturesError, apply_demo
from hubforge.features.store import historical_values, open_store


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("historical")
    (tmp / "platform.yaml").write_text("{}\n")
    cfg = load_config(tmp / "platform.yaml", environ={DATA_ENV: str(tmp / "data")})
    return apply_demo(cfg, lambda line: None).repo


def data(repo: Path, name: str) -> pd.DataFrame:
    return pd.read_parquet(repo / "data" / f"{name}.parquet")


def as_of(table: pd.DataFrame, key: str, rows: pd.DataFrame, ttl: pd.Timedelta) -> pd.DataFrame:
    """pandas' answer: each row's last ``table`` row of its key at or before its time, within ``ttl``."""
    asked = rows.assign(_n=range(len(rows)))
    joined = pd.merge_asof(asked.sort_values("event_timestamp"), table.sort_values("event_timestamp"),
                           on="event_timestamp", by=key, direction="backward", tolerance=ttl)  # fmt: skip
    return joined.sort_values("_n").reset_index(drop=True)


def plain(values: pd.Series) -> list[Any]:
    return [None if pd.isna(v) else v for v in values.tolist()]


def test_each_view_answers_for_every_row_even_where_another_has_nothing_then(repo: Path) -> None:
    store = open_store(repo)
    activity = data(repo, "customer_activity")
    first = activity["event_timestamp"].min()
    # Before the daily roll-ups begin the monthly profile is there: Feast alone drops such a row.
    times = [first - pd.Timedelta(days=10), first + pd.Timedelta(days=3), first - pd.Timedelta(days=10)]
    rows = pd.DataFrame({"customer_id": [1001, 1002, 1001], "event_timestamp": times, "label": [True, False, None]})
    values = historical_values(store, [], "churn_model_v1", rows.to_dict("records"))
    assert len(values["plan"]) == 3 and values["label"] == [True, False, None]
    profile = as_of(data(repo, "customer_profile"), "customer_id", rows, pd.Timedelta(days=90))
    rolled = as_of(activity, "customer_id", rows, pd.Timedelta(days=30))
    assert values["plan"] == plain(profile["plan"]) and values["plan"][0] is not None
    assert values["tenure_months"] == plain(profile["tenure_months"])
    assert values["sessions_7d"] == [None, int(rolled.loc[1, "sessions_7d"]), None]
    assert values["event_timestamp"] == [t.tz_convert("UTC").isoformat() for t in times]
    json.dumps(values, allow_nan=False)  # JSON's values: no NaN, no NumPy, no Timestamp


def test_rows_sharing_a_key_and_a_time_each_get_their_own_answer(repo: Path) -> None:
    store = open_store(repo)
    payment = data(repo, "transactions").iloc[0]
    row = {"customer_id": int(payment.customer_id), "merchant_id": int(payment.merchant_id),
           "event_timestamp": payment.event_timestamp}  # fmt: skip
    rows = [{**row, "amount_usd": 10.0}, {**row, "amount_usd": 20.0}, {**row, "amount_usd": 40.0}]
    values = historical_values(store, ["transaction_risk:amount_vs_merchant_avg", "merchant_risk:category"], None, rows)
    ratios = values["amount_vs_merchant_avg"]
    assert None not in ratios
    assert ratios[1:] == pytest.approx([2 * ratios[0], 4 * ratios[0]])
    assert values["amount_usd"] == [10.0, 20.0, 40.0] and len(set(values["category"])) == 1
    assert "avg_ticket_usd" not in values, "only what was asked for"


def test_what_feast_cannot_read_is_one_line(repo: Path) -> None:
    store = open_store(repo)
    stamp = pd.Timestamp("2026-12-01T00:00:00Z")
    with pytest.raises(FeaturesError, match=r"^features: historical read: the entity rows have no merchant_id "):
        historical_values(store, ["merchant_risk:category"], None, [{"customer_id": 1, "event_timestamp": stamp}])
    with pytest.raises(FeaturesError, match=r"^features: historical read: .*Feature.*nothing") as refused:
        historical_values(store, ["merchant_risk:nothing"], None, [{"merchant_id": 501, "event_timestamp": stamp}])
    assert "\n" not in str(refused.value)
