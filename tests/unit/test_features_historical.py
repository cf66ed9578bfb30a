"""Historical reads checked before Feast sees them: the rows' times in UTC whatever their
spelling, what each row needs named, and the views an on-demand view computes from counted
among those a read touches (their grants are checked too). And the kernel's reader: a
training set sent in parts the service takes, answered as the entity frame with the
features, refusals one line."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pandas as pd
import pytest

import hubforge.features.historical as historical
from harness.features import catalog, view
from hubforge.errors import Invalid
from hubforge.features import FeaturesError
from hubforge.features.catalog import Catalog
from hubforge.features.historical import HistoricalFeatures
from hubforge.hub.features.access import restricted_views
from hubforge.hub.features.historical import MAX_ROWS, parse_historical

STAMP = "2026-12-01T09:30:00Z"
SPEND = ["customer_activity:spend_7d_usd"]


def fv(name: str, feature: str, tags: dict[str, str] | None = None, **fields: Any) -> dict[str, Any]:
    return {**view(name, **(tags or {})), "features": [{"name": feature, "dtype": "Float64"}], **fields}


def demo() -> Catalog:
    """Customers (a restricted profile), merchants, and an on-demand view over both and a request."""
    data = catalog([fv("customer_profile", "plan", {"sensitivity": "confidential"}),
                    fv("customer_activity", "spend_7d_usd"),
                    fv("merchant_risk", "avg_ticket_usd", entities=["merchant"]),
                    fv("transaction_risk", "amount_vs_merchant_avg", kind="on_demand", ttl_seconds=None,
                       entities=["customer", "merchant"],
                       sources=["transaction_request", "merchant_risk", "customer_profile"])])  # fmt: skip
    data["entities"].append({**data["entities"][0], "name": "merchant", "join_keys": ["merchant_id"]})
    amount = {"name": "amount_usd", "dtype": "Float64", "description": ""}
    data["data_sources"].append({"name": "transaction_request", "type": "RequestSource", "path": "",
                                 "timestamp_field": "", "description": "", "owner": "", "tags": {},
                                 "fields": [amount]})  # fmt: skip
    data["feature_services"].append({"name": "fraud_model_v1", "views": {"transaction_risk": []}, "description": "",
                                     "owner": "", "tags": {}})  # fmt: skip
    return Catalog(data)


def rows(n: int = 1, **extra: Any) -> list[dict[str, Any]]:
    return [{"customer_id": 1001 + i, "event_timestamp": STAMP, **extra} for i in range(n)]


def test_each_rows_time_is_read_in_utc_whatever_its_spelling() -> None:
    spellings = ["2026-12-01T09:30:00Z", "2026-12-01T10:30:00+01:00", "2026-12-01T09:30:00", "2026-12-01 09:30:00.0"]
    entity_rows = [{"customer_id": 1001, "event_timestamp": text, "label": None} for text in spellings]
    body = {"features": SPEND, "entity_rows": entity_rows}
    query = parse_historical(body, demo())
    assert query.features == tuple(SPEND) and query.service is None
    assert query.views == ("customer_activity",)
    assert {row["event_timestamp"] for row in query.rows} == {datetime(2026, 12, 1, 9, 30, tzinfo=UTC)}
    assert all(row["customer_id"] == 1001 and row["label"] is None for row in query.rows), "other columns pass"
    date_only = [{"customer_id": 1, "event_timestamp": "2026-12-01"}]
    midnight = parse_historical({"features": SPEND, "entity_rows": date_only}, demo())
    assert midnight.rows[0]["event_timestamp"] == datetime(2026, 12, 1, tzinfo=UTC)


def test_an_on_demand_view_touches_the_views_it_computes_from() -> None:
    cat = demo()
    body = {"features": ["transaction_risk:amount_vs_merchant_avg"],
            "entity_rows": rows(merchant_id=501, amount_usd=25.0)}  # fmt: skip
    query = parse_historical(body, cat)
    assert query.views == ("transaction_risk", "merchant_risk", "customer_profile")
    assert restricted_views(cat, query.views) == ["customer_profile"], "its grant is checked: its data is in the values"
    served = parse_historical({"feature_service": "fraud_model_v1", "entity_rows": body["entity_rows"]}, cat)
    assert served.service == "fraud_model_v1" and served.features == () and served.views == query.views


def test_ten_thousand_rows_read_in_one_call() -> None:
    query = parse_historical({"features": SPEND, "entity_rows": rows(MAX_ROWS)}, demo())
    assert len(query.rows) == MAX_ROWS == 10_000


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ([], "the body must be a JSON object"),
        ({"features": SPEND, "entity_rows": rows(), "full_feature_names": True},
         "full_feature_names: not a field of a historical read"),
        ({"features": ["customer_activity:spend_7d_usd"]}, "entity_rows: a list of 1 to 10,000 objects"),
        ({"features": SPEND, "entity_rows": rows(MAX_ROWS + 1)},
         "entity_rows: a list of 1 to 10,000 objects"),
        ({"features": SPEND, "entity_rows": [[1001, STAMP]]},
         "entity_rows: each row is an object of join keys, request fields and an event_timestamp"),
        ({"features": SPEND, "entity_rows": [{"customer_id": 1001}]},
         "entity_rows[0]: no event_timestamp, the time to read the values as of"),
        ({"features": SPEND, "entity_rows": [*rows(), {"event_timestamp": STAMP}]},
         "entity_rows[1]: not the columns of entity_rows[0]; each row has the same"),
        ({"features": SPEND, "entity_rows": [{"customer_id": 1, "event_timestamp": 1.7e9}]},
         "entity_rows[0].event_timestamp: '1700000000.0' is not an ISO 8601 date and time (say 2026-12-01T09:30:00Z)"),
        ({"features": SPEND, "entity_rows": [{"customer_id": 1, "event_timestamp": "yesterday"}]},
         "entity_rows[0].event_timestamp: 'yesterday' is not an ISO 8601 date and time (say 2026-12-01T09:30:00Z)"),
        ({"features": SPEND,
          "entity_rows": [{"customer_id": 1, "event_timestamp": "0001-01-01T00:00:00"}]},
         "entity_rows[0].event_timestamp: a time in the years 1678 to 2261"),
        ({"features": SPEND, "entity_rows": rows(customer_id=[1001])},
         "entity_rows: 'customer_id' must be a number, a string or a boolean"),
        ({"features": SPEND, "entity_rows": rows(customer_id=None)},
         "entity_rows[0]: 'customer_id' must be a number, a string or a boolean"),
        ({"entity_rows": rows()}, "name either features (view:feature, ...) or a feature_service"),
        ({"features": ["customer_activity"], "entity_rows": rows()},
         "features: 'customer_activity' is not a reference view:feature"),
        ({"features": ["customer_activity:x"], "entity_rows": rows()},
         "features: customer_activity has no feature 'x'"),
        ({"feature_service": "nothing", "entity_rows": rows()},
         "feature_service: no feature service 'nothing' in the catalog"),
        ({"features": ["merchant_risk:avg_ticket_usd"], "entity_rows": rows()},
         "entity_rows: each row needs 'merchant_id' (merchant_risk reads by it)"),
        ({"feature_service": "fraud_model_v1", "entity_rows": rows(merchant_id=501)},
         "entity_rows: each row needs 'amount_usd' (transaction_risk reads by it)"),
    ],
)  # fmt: skip
def test_bad_reads_are_refused_naming_what_is_wrong(body: Any, said: str) -> None:
    with pytest.raises(Invalid) as refused:
        parse_historical(body, demo())
    assert str(refused.value) == said


# --- the kernel's reader -----------------------------------------------------------


class Service:
    """``api/historical`` answering each row's merchant and a ticket by merchant, recording the bodies."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/services/features/api/historical"
        assert request.headers["Authorization"] == "token alice-token"
        body = json.loads(request.content)
        self.bodies.append(body)
        if body.get("feature_service") == "churn_model_v1":
            return httpx.Response(403, json={"status": 403, "message": "customer_profile is restricted: ..."})
        rows = body["entity_rows"]
        columns = {name: [row[name] for row in rows] for name in rows[0]}
        columns["event_timestamp"] = [row["event_timestamp"].replace("Z", "+00:00") for row in rows]
        columns["avg_ticket_usd"] = [row["merchant_id"] / 10 for row in rows]
        return httpx.Response(200, json={"features": columns})


def reader(service: Service) -> HistoricalFeatures:
    return HistoricalFeatures("http://hub/services/features/", "alice-token", transport=httpx.MockTransport(service))


def test_a_training_set_goes_in_parts_and_comes_back_as_the_entity_frame_with_features(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service = Service()
    entity_df = pd.DataFrame({
        "merchant_id": [501, 502, 503, 504, 505],
        "event_timestamp": pd.to_datetime(["2026-12-01 09:30"] * 5),  # no zone: UTC
        "label": [1.0, None, 0.0, 1.0, 0.0],
    }, index=[10, 11, 12, 13, 14])  # fmt: skip
    monkeypatch.setattr(historical, "MAX_BYTES", 180)  # two rows' JSON (about 85 bytes each) a part
    training = reader(service).get(["merchant_risk:avg_ticket_usd"], entity_df)
    assert [len(body["entity_rows"]) for body in service.bodies] == [2, 2, 1]
    assert all(body["features"] == ["merchant_risk:avg_ticket_usd"] for body in service.bodies)
    sent = service.bodies[0]["entity_rows"]
    assert sent == [{"merchant_id": 501, "event_timestamp": "2026-12-01T09:30:00+00:00", "label": 1.0},
                    {"merchant_id": 502, "event_timestamp": "2026-12-01T09:30:00+00:00", "label": None}]  # fmt: skip
    assert list(training.columns) == ["merchant_id", "event_timestamp", "label", "avg_ticket_usd"]
    assert training["avg_ticket_usd"].tolist() == [50.1, 50.2, 50.3, 50.4, 50.5]
    assert training["label"].isna().tolist() == [False, True, False, False, False], "the caller's columns, as they were"
    assert str(training["event_timestamp"].dt.tz) == "UTC"
    assert (training["event_timestamp"] == pd.Timestamp("2026-12-01T09:30Z")).all()


def test_refusals_and_what_cannot_be_sent_are_one_line() -> None:
    service = Service()
    rows = [{"customer_id": 1001, "event_timestamp": "2026-12-01T00:00:00Z"}]
    with pytest.raises(FeaturesError) as refused:
        reader(service).get(feature_service="churn_model_v1", entity_df=rows)
    assert str(refused.value) == "features: historical read refused (403): customer_profile is restricted: ..."
    with pytest.raises(FeaturesError, match="entity_df has no event_timestamp column"):
        reader(service).get(["merchant_risk:avg_ticket_usd"], [{"merchant_id": 501}])
    with pytest.raises(FeaturesError, match="entity_df has no rows"):
        reader(service).get(["merchant_risk:avg_ticket_usd"], pd.DataFrame())
    with pytest.raises(FeaturesError, match="a list of references view:feature"):
        reader(service).get("merchant_risk:avg_ticket_usd", rows)
    with pytest.raises(FeaturesError, match="JSON cannot carry"):
        reader(service).get(["merchant_risk:avg_ticket_usd"], [{**rows[0], "merchant_id": float("inf")}])
    with pytest.raises(FeaturesError, match="HUBFORGE_FEATURES_URL is not set"):
        HistoricalFeatures.from_env({})
    assert service.bodies == [{"feature_service": "churn_model_v1", "entity_rows": rows}]


def test_an_online_read_of_an_on_demand_view_touches_its_sources_too() -> None:
    from hubforge.hub.features.online import parse

    cat = demo()
    query = parse({"features": ["transaction_risk:amount_vs_merchant_avg"],
                   "entity_rows": [{"merchant_id": 501, "amount_usd": 25.0}]}, cat)  # fmt: skip
    assert query.views == ("transaction_risk", "merchant_risk", "customer_profile")
    assert restricted_views(cat, query.views) == ["customer_profile"]
