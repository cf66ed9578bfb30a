"""Online reads through the features service, on the demo repository applied as `make up`
applies it: values as the online store holds them, refusals naming what is wrong, and
restricted views refused with how to ask for access (the service fails closed)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pandas as pd
import pytest

from harness.features import SERVICE_TOKEN, USERS, FeaturesProcess, apply_demo
from harness.hub import running_hub


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FeaturesProcess]:
    data = apply_demo(tmp_path_factory.mktemp("online"))
    with running_hub(USERS, SERVICE_TOKEN) as hub:
        running = FeaturesProcess(hub, data)
        try:
            yield running
        finally:
            running.stop()


def read(service: FeaturesProcess, body: Any, token: str | None = "alice-token") -> httpx.Response:
    headers = {"Authorization": f"token {token}"} if token else {}
    return service.client.post("api/online", json=body, headers=headers, timeout=60)


def latest(service: FeaturesProcess, name: str, key: str) -> pd.DataFrame:
    frame = pd.read_parquet(service.catalog_path.parent / "data" / f"{name}.parquet")
    return frame.sort_values("event_timestamp").groupby(key).tail(1).set_index(key)


def test_a_person_reads_the_latest_values_of_the_features_named(service: FeaturesProcess) -> None:
    body = {"features": ["merchant_risk:avg_ticket_usd", "merchant_risk:category"],
            "entity_rows": [{"merchant_id": 501}, {"merchant_id": 537}, {"merchant_id": 9}]}  # fmt: skip
    answer = read(service, body)
    assert answer.status_code == 200, answer.text
    values = answer.json()["features"]
    expected = latest(service, "merchant_risk", "merchant_id").loc[[501, 537]]
    assert values["merchant_id"] == [501, 537, 9]
    assert values["avg_ticket_usd"][:2] == pytest.approx(expected["avg_ticket_usd"].tolist())
    assert values["category"][:2] == expected["category"].tolist()
    assert values["avg_ticket_usd"][2] is None, "an unknown merchant reads as missing"


def test_a_feature_service_with_its_on_demand_view_reads_in_one_call(service: FeaturesProcess) -> None:
    rows = [{"customer_id": 1001, "merchant_id": 501, "amount_usd": 250.0}]
    answer = read(service, {"feature_service": "fraud_model_v1", "entity_rows": rows})
    assert answer.status_code == 200, answer.text
    values = answer.json()["features"]
    ticket = latest(service, "merchant_risk", "merchant_id").loc[501, "avg_ticket_usd"]
    assert values["amount_vs_merchant_avg"] == pytest.approx([250.0 / ticket])


@pytest.mark.parametrize(
    "body",
    [
        {"features": ["customer_profile:plan"], "entity_rows": [{"customer_id": 1001}]},
        {"feature_service": "churn_model_v1", "entity_rows": [{"customer_id": 1001}]},
    ],
    ids=["view", "service"],
)
def test_restricted_data_is_refused_saying_how_to_ask_for_it(service: FeaturesProcess, body: Any) -> None:
    answer = read(service, body)
    assert answer.status_code == 403
    assert answer.json()["message"] == (
        "customer_profile is restricted: reading its data needs an approved data-access request "
        "(target feature_view:hubforge_demo/customer_profile) from a data steward; ask for it with the "
        "feature browser's Request access button, or submit one to the governance service"
    )


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ([], "the body must be a JSON object"),
        ({"features": ["merchant_risk:category"]}, "entity_rows: a list of 1 to 1000 objects"),
        ({"features": ["merchant_risk:category"], "entity_rows": []}, "entity_rows: a list of 1 to 1000 objects"),
        ({"features": ["merchant_risk:category"], "entity_rows": [[501]]},
         "entity_rows: each row is an object of join keys and their values"),
        ({"features": ["merchant_risk:category"], "entity_rows": [{"merchant_id": [501]}]},
         "entity_rows: 'merchant_id' must be a number, a string or a boolean"),
        ({"entity_rows": [{"merchant_id": 501}]}, "name either features (view:feature, ...) or a feature_service"),
        ({"features": ["merchant_risk:category"], "feature_service": "fraud_model_v1",
          "entity_rows": [{"merchant_id": 501}]}, "name either features (view:feature, ...) or a feature_service"),
        ({"features": "merchant_risk:category", "entity_rows": [{"merchant_id": 501}]},
         "features: a list of 1 to 200 references view:feature"),
        ({"features": ["merchant_risk"], "entity_rows": [{"merchant_id": 501}]},
         "features: 'merchant_risk' is not a reference view:feature"),
        ({"features": ["nowhere:x"], "entity_rows": [{"merchant_id": 501}]},
         "features: no feature view 'nowhere' in the catalog"),
        ({"features": ["merchant_risk:x"], "entity_rows": [{"merchant_id": 501}]},
         "features: merchant_risk has no feature 'x'"),
        ({"feature_service": "nothing", "entity_rows": [{"merchant_id": 501}]},
         "feature_service: no feature service 'nothing' in the catalog"),
        ({"features": ["merchant_risk:category"], "entity_rows": [{"merchant_id": 501}], "limit": 3},
         "limit: not a field of an online read"),
    ],
)  # fmt: skip
def test_bad_reads_are_400_naming_what_is_wrong(service: FeaturesProcess, body: Any, said: str) -> None:
    answer = read(service, body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["message"] == said


def test_what_feast_refuses_is_one_line_and_the_service_goes_on(service: FeaturesProcess) -> None:
    answer = read(service, {"features": ["merchant_risk:category"], "entity_rows": [{"customer_id": 1}]})
    assert answer.status_code == 400
    message = answer.json()["message"]
    assert message.startswith("features: online read: ") and "\n" not in message
    not_json = service.client.post("api/online", content=b"{", headers={"Authorization": "token alice-token"})
    assert not_json.status_code == 400 and not_json.json()["message"] == "the body must be JSON"
    assert read(service, {"features": ["merchant_risk:category"], "entity_rows": [{"merchant_id": 501}]},
                token=None).status_code in (401, 403)  # fmt: skip
    assert read(service, {"features": ["merchant_risk:category"], "entity_rows": [{"merchant_id": 501}]},
                token="mallory-token").status_code == 403  # fmt: skip
    assert service.proc.poll() is None
