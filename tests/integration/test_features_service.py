"""The features service as the hub runs it: the Feast environment's Python, the hub's
environment, the catalog the apply wrote. Browsed with a person's token, refused without
one, answered in JSON whatever is asked."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.hub import FakeHub, running_hub
from harness.platform import free_port, wait_for
from hubforge.config import load_config
from hubforge.features.environment import feast_python

PREFIX = "/services/features/"
ACCESS = "access:services!service=features"
SERVICE_TOKEN = "features-service-secret"
USERS = {
    "alice-token": {"kind": "user", "name": "alice", "groups": [], "scopes": [ACCESS]},
    "mallory-token": {"kind": "user", "name": "mallory", "groups": [], "scopes": []},  # no access to the service
}


def catalog(views: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "version": 1,
        "generated": "2026-12-03T09:00:00+00:00",
        "project": {"name": "payments", "description": "demo"},
        "entities": [
            {
                "name": "customer",
                "join_keys": ["customer_id"],
                "value_type": "INT64",
                "description": "A customer.",
                "owner": "growth@example.org",
                "tags": {},
            }
        ],
        "data_sources": [],
        "feature_views": views,
        "feature_services": [
            {
                "name": "churn_model_v1",
                "views": {v["name"]: [] for v in views},
                "description": "",
                "owner": "growth@example.org",
                "tags": {"model": "churn"},
            }
        ],
    }


def view(name: str, description: str = "", **tags: str) -> dict[str, Any]:
    return {"name": name, "kind": "batch", "entities": ["customer"], "features": [], "ttl_seconds": 86400,
            "sources": [], "online": True, "materialized_to": None, "description": description,
            "owner": "growth@example.org", "tags": tags}  # fmt: skip


class Service:
    def __init__(self, hub: FakeHub, data: Path) -> None:
        self.port = free_port()
        self.catalog_path = data / "features" / "catalog.json"
        self.log = data.parent / "features.log"
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HUBFORGE_DATA": str(data),
            "JUPYTERHUB_API_TOKEN": SERVICE_TOKEN,
            "JUPYTERHUB_API_URL": hub.api_url,
            "JUPYTERHUB_SERVICE_NAME": "features",
            "JUPYTERHUB_SERVICE_PREFIX": PREFIX,
            "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{self.port}",
        }
        python = feast_python(load_config(None, environ={}))
        with self.log.open("wb") as log:
            cmd = [str(python), "-m", "hubforge.hub.features"]
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}{PREFIX}", timeout=10)
        wait_for(self.healthy, 60, "the features service")

    def healthy(self) -> bool:
        assert self.proc.poll() is None, self.log.read_text()[-3000:]
        try:
            return self.client.get("api/health").status_code == 200
        except httpx.TransportError:
            return False

    def get(self, path: str, token: str | None = "alice-token", **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"token {token}"} if token else {}
        return self.client.get(path, headers={**headers, **kwargs.pop("headers", {})}, **kwargs)

    def write(self, data: Any) -> None:
        self.catalog_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.catalog_path.with_suffix(".tmp")
        tmp.write_text(data if isinstance(data, str) else json.dumps(data))
        os.replace(tmp, self.catalog_path)

    def stop(self) -> None:
        self.client.close()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(20)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with running_hub(USERS, SERVICE_TOKEN) as hub:
        running = Service(hub, tmp_path_factory.mktemp("features") / "data")
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


def test_before_any_apply_the_catalog_is_a_503_saying_what_writes_it(service: Service) -> None:
    assert service.get("api/health", token=None).json() == {"status": "ok", "catalog": False}
    message = error(service.get("api/catalog"), 503)
    assert message == "the feature catalog is not there yet: `hubforge features apply` writes it"


def test_the_catalog_is_served_to_a_person_and_refused_to_others(service: Service) -> None:
    data = catalog([view("customer_profile"), view("customer_activity")])
    service.write(data)
    answer = service.get("api/catalog")
    assert answer.status_code == 200 and answer.json() == data
    assert answer.headers["Cache-Control"] == "no-cache"
    assert service.get("api/catalog", token=None).status_code in (401, 403)
    assert service.get("api/catalog", token="unknown-token").status_code in (401, 403)
    assert service.get("api/catalog", token="mallory-token").status_code == 403


def test_an_unchanged_catalog_costs_a_304_and_a_new_apply_shows_at_once(service: Service) -> None:
    service.write(catalog([view("customer_profile")]))
    first = service.get("api/catalog")
    etag = first.headers["ETag"]
    again = service.get("api/catalog", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    service.write(catalog([view("customer_profile"), view("merchant_risk")]))
    changed = service.get("api/catalog", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["ETag"] != etag
    assert [v["name"] for v in changed.json()["feature_views"]] == ["customer_profile", "merchant_risk"]


def test_search_finds_by_name_description_owner_and_tag_best_first(service: Service) -> None:
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
def test_bad_searches_are_400_naming_the_parameter(service: Service, params: dict[str, str], said: str) -> None:
    service.write(catalog([view("customer_profile")]))
    assert error(service.get("api/search", params=params), 400) == said


def test_an_unreadable_catalog_and_an_unknown_path_answer_in_json(service: Service) -> None:
    service.write("{not json")
    assert error(service.get("api/catalog"), 503).startswith("features: catalog: unreadable")
    service.write({"version": 99})
    assert error(service.get("api/catalog"), 503) == "features: catalog: not a version 1 catalog"
    assert error(service.get("api/nothing"), 404) == "no such path in the features service"
    assert error(service.client.post("api/catalog", headers={"Authorization": "token alice-token"}), 405)
    assert service.proc.poll() is None
