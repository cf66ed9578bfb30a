"""Historical (point-in-time) reads through the features service, on the demo repository
applied as `make up` applies it: each row gets the values as of its own time (never later
ones, none before the data begins or past a view's TTL), in the rows' order; a feature
service computes its on-demand view; bad bodies are 400s naming what is wrong, restricted
views 403s; and a kernel's ``HistoricalFeatures`` reads a training set through it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pandas as pd
import pytest

import hubforge.features.historical as historical
from harness.features import SERVICE_TOKEN, USERS, FeaturesProcess, apply_demo
from harness.hub import running_hub
from hubforge.contract import FEATURES_URL_ENV
from hubforge.features import FeaturesError
from hubforge.features.historical import HistoricalFeatures

TTL = pd.Timedelta(days=30)  # merchant_risk's and customer_activity's


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FeaturesProcess]:
    data = apply_demo(tmp_path_factory.mktemp("historical"))
    with running_hub(USERS, SERVICE_TOKEN) as hub:
        running = FeaturesProcess(hub, data)
        try:
            yield running
        finally:
            running.stop()


def read(service: FeaturesProcess, body: Any, token: str | None = "alice-token") -> httpx.Response:
    headers = {"Authorization": f"token {token}"} if token else {}
    return service.client.post("api/historical", json=body, headers=headers, timeout=120)


def data(service: FeaturesProcess, name: str) -> pd.DataFrame:
    frame = pd.read_parquet(service.catalog_path.parent / "data" / f"{name}.parquet")
    return frame.assign(event_timestamp=frame["event_timestamp"].astype("datetime64[ns, UTC]"))


def as_of(table: pd.DataFrame, key: str, rows: pd.DataFrame) -> pd.DataFrame:
    """pandas' answer: each row's last ``table`` row of its key at or before its time, within the TTL."""
    asked = rows.assign(event_timestamp=pd.to_datetime(rows["event_timestamp"], utc=True).astype("datetime64[ns, UTC]"),
                        _n=range(len(rows)))  # fmt: skip
    joined = pd.merge_asof(asked.sort_values("event_timestamp"), table.sort_values("event_timestamp"),
                           on="event_timestamp", by=key, direction="backward", tolerance=TTL)  # fmt: skip
    return joined.sort_values("_n").reset_index(drop=True)


def missing(value: Any) -> bool:
    return value is None or value != value


def test_each_row_reads_the_values_of_its_own_time_in_the_rows_order(service: FeaturesProcess) -> None:
    merchants = data(service, "merchant_risk")
    days = sorted(merchants["event_timestamp"].unique())
    first, last = pd.Timestamp(days[0]), pd.Timestamp(days[-1])
    asked = [
        (537, last + pd.Timedelta(hours=1)),  # after the latest roll-up: the latest
        (501, first + pd.Timedelta(days=2, hours=12)),  # between roll-ups: the one before, not the latest
        (501, first + pd.Timedelta(days=1)),  # exactly at a roll-up: that one
        (501, first - pd.Timedelta(days=1)),  # before any data: missing
        (9, last),  # an unknown merchant: missing
        (501, last + TTL + pd.Timedelta(days=1)),  # past the view's TTL: missing
        (501, first + pd.Timedelta(days=2, hours=12)),  # the same key and time again: answered again
    ]
    rows = [{"merchant_id": m, "event_timestamp": t.isoformat()} for m, t in asked]
    features = ["merchant_risk:avg_ticket_usd", "merchant_risk:category"]
    answer = read(service, {"features": features, "entity_rows": rows})
    assert answer.status_code == 200, answer.text
    values = answer.json()["features"]
    assert list(values) == ["merchant_id", "event_timestamp", "avg_ticket_usd", "category"]
    assert values["merchant_id"] == [m for m, _ in asked], "the rows' order"
    assert values["event_timestamp"] == [t.tz_convert("UTC").isoformat() for _, t in asked]
    expected = as_of(merchants, "merchant_id", pd.DataFrame(rows))
    assert [missing(v) for v in values["avg_ticket_usd"]] == [False, False, False, True, True, True, False]
    assert values["avg_ticket_usd"] == [None if missing(v) else pytest.approx(v) for v in expected["avg_ticket_usd"]]
    assert values["category"] == [None if missing(v) else v for v in expected["category"]]
    latest = merchants[merchants["event_timestamp"] == last].set_index("merchant_id").loc[501, "avg_ticket_usd"]
    assert values["avg_ticket_usd"][1] != pytest.approx(latest), "as of the row's time, not the latest"


def test_a_feature_service_computes_its_on_demand_view_for_every_row(service: FeaturesProcess) -> None:
    payments = data(service, "transactions").head(40)
    rows = [{"customer_id": int(p.customer_id), "merchant_id": int(p.merchant_id), "amount_usd": float(p.amount_usd),
             "event_timestamp": p.event_timestamp.isoformat(), "is_fraud": bool(p.is_fraud)}
            for p in payments.itertuples()]  # fmt: skip
    rows.append({**rows[0], "amount_usd": rows[0]["amount_usd"] * 2})  # the same key and time, another payment
    answer = read(service, {"feature_service": "fraud_model_v1", "entity_rows": rows})
    assert answer.status_code == 200, answer.text
    values = answer.json()["features"]
    asked = pd.DataFrame(rows)
    ticket = as_of(data(service, "merchant_risk"), "merchant_id", asked)["avg_ticket_usd"]
    activity = as_of(data(service, "customer_activity"), "customer_id", asked)
    assert values["is_fraud"] == asked["is_fraud"].tolist(), "the rows' other columns pass through"
    assert values["avg_ticket_usd"] == pytest.approx(ticket.tolist())
    assert values["transactions_7d"] == activity["transactions_7d"].tolist()
    assert values["amount_vs_merchant_avg"] == pytest.approx((asked["amount_usd"] / ticket.clip(lower=1.0)).tolist())
    assert values["amount_vs_merchant_avg"][-1] == pytest.approx(2 * values["amount_vs_merchant_avg"][0])
    assert values["large_for_merchant"] == [ratio > 3.0 for ratio in values["amount_vs_merchant_avg"]]


CUSTOMER = {"customer_id": 1001, "event_timestamp": "2026-12-01"}


@pytest.mark.parametrize(
    "body",
    [
        {"features": ["customer_profile:plan"], "entity_rows": [CUSTOMER]},
        {"feature_service": "churn_model_v1", "entity_rows": [CUSTOMER]},
    ],
    ids=["view", "service"],
)
def test_restricted_data_is_refused(service: FeaturesProcess, body: Any) -> None:
    answer = read(service, body)
    assert answer.status_code == 403
    assert answer.json()["message"].startswith(
        "customer_profile is restricted: reading its data needs an approved data-access request "
        "(target feature_view:hubforge_demo/customer_profile)"
    )


ROW = {"merchant_id": 501, "event_timestamp": "2026-12-01T09:30:00Z"}


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ([], "the body must be a JSON object"),
        ({"features": ["merchant_risk:category"]}, "entity_rows: a list of 1 to 10,000 objects"),
        ({"features": ["merchant_risk:category"], "entity_rows": [ROW] * 10_001},
         "entity_rows: a list of 1 to 10,000 objects"),
        ({"features": ["merchant_risk:category"], "entity_rows": [{"merchant_id": 501}]},
         "entity_rows[0]: no event_timestamp, the time to read the values as of"),
        ({"features": ["merchant_risk:category"], "entity_rows": [ROW, {**ROW, "event_timestamp": "1 Dec 2026"}]},
         "entity_rows[1].event_timestamp: '1 Dec 2026' is not an ISO 8601 date and time (say 2026-12-01T09:30:00Z)"),
        ({"features": ["merchant_risk:category"], "entity_rows": [{**ROW, "merchant_id": {"id": 501}}]},
         "entity_rows: 'merchant_id' must be a number, a string or a boolean"),
        ({"features": ["merchant_risk:category"], "entity_rows": [{"customer_id": 1, "event_timestamp": "2026-12-01"}]},
         "entity_rows: each row needs 'merchant_id' (merchant_risk reads by it)"),
        ({"feature_service": "fraud_model_v1", "entity_rows": [{**ROW, "customer_id": 1001}]},
         "entity_rows: each row needs 'amount_usd' (transaction_risk reads by it)"),
        ({"entity_rows": [ROW]}, "name either features (view:feature, ...) or a feature_service"),
        ({"features": ["merchant_risk:x"], "entity_rows": [ROW]}, "features: merchant_risk has no feature 'x'"),
        ({"feature_service": "nothing", "entity_rows": [ROW]},
         "feature_service: no feature service 'nothing' in the catalog"),
        ({"features": ["merchant_risk:category"], "entity_rows": [ROW], "start_date": "2026-12-01"},
         "start_date: not a field of a historical read"),
    ],
)  # fmt: skip
def test_bad_reads_are_400_naming_what_is_wrong(service: FeaturesProcess, body: Any, said: str) -> None:
    answer = read(service, body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["message"] == said


def test_what_feast_refuses_is_one_line_and_the_service_goes_on(service: FeaturesProcess) -> None:
    mixed = [ROW, {**ROW, "merchant_id": "x501"}]  # a join key both a number and a string
    answer = read(service, {"features": ["merchant_risk:category"], "entity_rows": mixed})
    assert answer.status_code == 400
    message = answer.json()["message"]
    assert message.startswith("features: historical read: ") and "\n" not in message
    over = service.client.post("api/online", content=b"[" + b" " * 300_000 + b"]",
                               headers={"Authorization": "token alice-token"})  # fmt: skip
    assert over.status_code == 413, "an online read keeps its own, smaller, body limit"
    body = {"features": ["merchant_risk:category"], "entity_rows": [ROW]}
    assert read(service, body, token=None).status_code in (401, 403)
    assert read(service, body, token="mallory-token").status_code == 403
    assert service.proc.poll() is None


def test_a_kernel_reads_a_training_set_through_the_service(
    service: FeaturesProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {FEATURES_URL_ENV: service.url, "JUPYTERHUB_API_TOKEN": "alice-token"}
    labels = data(service, "churn_labels").head(25)
    entity_df = labels.assign(event_timestamp=labels["event_timestamp"].dt.tz_localize(None),  # no zone: UTC
                              churned=labels["churned"].astype("boolean"))  # fmt: skip
    entity_df.loc[3, "churned"] = pd.NA  # a missing label passes through
    monkeypatch.setattr(historical, "MAX_ROWS", 10)  # three calls, answered as one frame
    reader = HistoricalFeatures.from_env(env)
    training = reader.get(["customer_activity:sessions_7d", "customer_activity:spend_7d_usd"], entity_df)
    assert len(training) == 25 and list(training.columns[:3]) == ["customer_id", "event_timestamp", "churned"]
    assert training["customer_id"].tolist() == labels["customer_id"].tolist()
    assert training["event_timestamp"].tolist() == labels["event_timestamp"].tolist()
    assert str(training["event_timestamp"].dt.tz) == "UTC"
    assert training["churned"].isna().tolist() == [i == 3 for i in range(25)]
    expected = as_of(data(service, "customer_activity"), "customer_id", labels[["customer_id", "event_timestamp"]])
    assert training["sessions_7d"].tolist() == expected["sessions_7d"].tolist()
    assert training["spend_7d_usd"].tolist() == pytest.approx(expected["spend_7d_usd"].tolist())
    rows = [{"customer_id": 1001, "event_timestamp": "2026-12-01T00:00:00Z"}]
    with pytest.raises(FeaturesError) as refused:
        reader.get(feature_service="churn_model_v1", entity_df=rows)
    assert str(refused.value).startswith("features: historical read refused (403): customer_profile is restricted")
    reader.close()


def test_ten_thousand_rows_read_in_one_call(service: FeaturesProcess) -> None:
    payments = data(service, "transactions")
    rows = [{"customer_id": int(p.customer_id), "merchant_id": int(p.merchant_id), "amount_usd": float(p.amount_usd),
             "event_timestamp": p.event_timestamp.isoformat()} for p in payments.itertuples()] * 5  # fmt: skip
    assert len(rows) == 10_000
    answer = read(service, {"feature_service": "fraud_model_v1", "entity_rows": rows})
    assert answer.status_code == 200, answer.text
    values = answer.json()["features"]
    assert values["merchant_id"] == [row["merchant_id"] for row in rows]
    assert values["amount_vs_merchant_avg"][:2000] * 5 == values["amount_vs_merchant_avg"]
