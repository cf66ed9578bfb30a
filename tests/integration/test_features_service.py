"""The features service as the hub runs it: the Feast environment's Python, the hub's
environment, the catalog the apply wrote. Browsed with a person's token, refused without
one, answered in JSON whatever is asked."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from harness.features import SERVICE_TOKEN, USERS, FeaturesProcess, catalog, view
from harness.hub import running_hub


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FeaturesProcess]:
    with running_hub(USERS, SERVICE_TOKEN) as hub:
        running = FeaturesProcess(hub, tmp_path_factory.mktemp("features") / "data")
        try:
            yield running
        finally:
            running.stop()


def error(answer: httpx.Response, status: int) -> str:
    assert answer.status_code == status, answer.text
    assert answer.headers["Content-Type"].startswith("application/json")
    body = answer.json()
    assert body["status"] == status and "\n" not in body["message"]
    return str(body["message"])


def test_before_any_apply_the_catalog_is_a_503_saying_what_writes_it(service: FeaturesProcess) -> None:
    assert service.get("api/health", token=None).json() == {"status": "ok", "catalog": False}
    message = error(service.get("api/catalog"), 503)
    assert message == "the feature catalog is not there yet: `hubforge features apply` writes it"


def test_the_catalog_is_served_to_a_person_and_refused_to_others(service: FeaturesProcess) -> None:
    data = catalog([view("customer_profile"), view("customer_activity")])
    service.write(data)
    answer = service.get("api/catalog")
    assert answer.status_code == 200 and answer.json() == data
    assert answer.headers["Cache-Control"] == "no-cache"
    assert service.get("api/catalog", token=None).status_code in (401, 403)
    assert service.get("api/catalog", token="unknown-token").status_code in (401, 403)
    assert service.get("api/catalog", token="mallory-token").status_code == 403


def test_an_unchanged_catalog_costs_a_304_and_a_new_apply_shows_at_once(service: FeaturesProcess) -> None:
    service.write(catalog([view("customer_profile")]))
    first = service.get("api/catalog")
    etag = first.headers["ETag"]
    again = service.get("api/catalog", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    service.write(catalog([view("customer_profile"), view("merchant_risk")]))
    changed = service.get("api/catalog", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["ETag"] != etag
    assert [v["name"] for v in changed.json()["feature_views"]] == ["customer_profile", "merchant_risk"]


def test_search_finds_by_name_description_owner_and_tag_best_first(service: FeaturesProcess) -> None:
    service.write(catalog([
        view("customer_profile", "Plan and tenure of each customer.", sensitivity="confidential"),
        view("customer_activity", "Sessions and spend over 7 days."),
        view("merchant_risk", "Chargebacks of each merchant's customers."),
    ]))  # fmt: skip
    hits = service.get("api/search", params={"q": "customer"}).json()["hits"]
    names = [(h["kind"], h["name"]) for h in hits]
    # Names starting with the word first, then the rest (here: a description's mention).
    assert names[:3] == [("feature_view", "customer_activity"), ("feature_view", "customer_profile"),
                         ("entity", "customer")]  # fmt: skip
    assert ("feature_view", "merchant_risk") in names
    profile = next(h for h in hits if h["name"] == "customer_profile")
    assert profile["restricted"] is True and profile["owner"] == "growth@example.org"
    tagged = service.get("api/search", params={"q": "sensitivity:confidential"}).json()["hits"]
    assert [h["name"] for h in tagged] == ["customer_profile"]
    views = service.get("api/search", params=[("q", "churn"), ("kind", "feature_service")]).json()["hits"]
    assert [h["name"] for h in views] == ["churn_model_v1"]
    assert service.get("api/search", params={"q": "spend 7 days"}).json()["hits"][0]["name"] == "customer_activity"


@pytest.mark.parametrize(
    ("params", "said"),
    [
        ({"q": "x" * 201}, "q: at most 200 characters"),
        ({"q": "a", "kind": "table"}, "kind: table is none of data_source, entity, feature_service, feature_view"),
        ({"q": "a", "limit": "0"}, "limit: a whole number from 1 to 200"),
        ({"q": "a", "limit": "1e3"}, "limit: a whole number from 1 to 200"),
    ],
)
def test_bad_searches_are_400_naming_the_parameter(service: FeaturesProcess, params: dict[str, str], said: str) -> None:
    service.write(catalog([view("customer_profile")]))
    assert error(service.get("api/search", params=params), 400) == said


def test_an_unreadable_catalog_and_an_unknown_path_answer_in_json(service: FeaturesProcess) -> None:
    service.write("{not json")
    assert error(service.get("api/catalog"), 503).startswith("features: catalog: unreadable")
    service.write({"version": 99})
    assert error(service.get("api/catalog"), 503) == "features: catalog: not a version 1 catalog"
    assert error(service.get("api/nothing"), 404) == "no such path in the features service"
    assert error(service.client.post("api/catalog", headers={"Authorization": "token alice-token"}), 405)
    assert service.proc.poll() is None
