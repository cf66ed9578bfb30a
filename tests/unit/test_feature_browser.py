"""The feature browser without a platform: a catalog built here, a fake client, a fixed clock.

The widget reads the catalog through a fake with the client's one method; the client itself
is tried against httpx's ``MockTransport``, answering as the features service does (ETag,
304, the 503 before any apply, a refused token).
"""

from __future__ import annotations

import copy
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from hubforge.contract import FEATURES_URL_ENV
from hubforge.features.catalog import MAX_HITS, Catalog, Item
from hubforge.widgets.client import FeaturesClient, WidgetError
from hubforge.widgets.feature_browser import (
    FeatureBrowser,
    ago,
    freshness,
    human_duration,
    notebook_insert,
    snippet_for,
    ttl_text,
)
from hubforge.widgets.notebook_insert import INSERTED, NEXT_RUN, Insertion

NOW = datetime(2026, 12, 3, 22, 50, tzinfo=UTC)
GROWTH, RISK = "growth-analytics@example.org", "risk-engineering@example.org"
URL = "http://hub.test/services/features"


def columns(*names: str, dtype: str = "Int64") -> list[dict[str, str]]:
    return [{"name": name, "dtype": dtype, "description": f"What {name} is."} for name in names]


def view(name: str, features: list[dict[str, str]], **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "description": f"The {name} view.",
        "owner": GROWTH,
        "tags": {"team": "growth", "sensitivity": "internal"},
        "kind": "batch",
        "entities": ["customer"],
        "features": features,
        "ttl_seconds": 30 * 86400,
        "sources": [f"{name}_source"],
        "online": True,
        "materialized_to": (NOW - timedelta(hours=3, minutes=7)).isoformat(),
    } | fields


def source(name: str, **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "description": f"Where {name} comes from.",
        "owner": GROWTH,
        "tags": {"system": "events"},
        "type": "FileSource",
        "path": f"/srv/hubforge/features/data/{name}.parquet",
        "timestamp_field": "event_timestamp",
        "fields": [],
    } | fields


def entity(name: str, owner: str) -> dict[str, Any]:
    return {
        "name": name,
        "description": f"A {name}.",
        "owner": owner,
        "tags": {"pii": "none"},
        "join_keys": [f"{name}_id"],
        "value_type": "INT64",
    }


def demo() -> dict[str, Any]:
    """The demo repository's catalog (hubforge/features/demo-repo), as the apply writes it, in short."""
    return {
        "version": 1,
        "generated": "2026-12-03T19:43:50+00:00",
        "project": {"name": "hubforge_demo", "description": "A payments company."},
        "entities": [entity("customer", GROWTH), entity("merchant", RISK)],
        "data_sources": [
            source("customer_activity_source"),
            source("customer_profile_source", tags={"system": "billing"}),
            source("merchant_risk_source", owner=RISK),
            source(
                "transaction_request",
                type="RequestSource",
                path="",
                timestamp_field="",
                fields=columns("amount_usd", dtype="Float64"),
                owner=RISK,
            ),
        ],
        "feature_views": [
            view(
                "customer_activity",
                columns("sessions_7d", "transactions_7d") + columns("spend_7d_usd", dtype="Float64"),
            ),
            view(
                "customer_profile",
                [{"name": "plan", "dtype": "String", "description": "Subscription plan: basic, plus or premium."}],
                ttl_seconds=90 * 86400,
                tags={"team": "growth", "sensitivity": "confidential"},
                description="Who the customer is and what they pay.",
            ),
            view("merchant_risk", columns("txn_count_30d"), entities=["merchant"], owner=RISK),
            view(
                "transaction_risk",
                columns("amount_vs_merchant_avg", dtype="Float64"),
                kind="on_demand",
                entities=["customer", "merchant"],
                ttl_seconds=None,
                sources=["transaction_request", "merchant_risk", "customer_activity"],
                materialized_to=None,
                owner=RISK,
            ),
        ],
        "feature_services": [
            {
                "name": "churn_model_v1",
                "description": "The churn model's inputs.",
                "owner": GROWTH,
                "tags": {"model": "churn"},
                "views": {"customer_profile": ["plan"], "customer_activity": ["sessions_7d", "spend_7d_usd"]},
            },
            {
                "name": "fraud_model_v1",
                "description": "The fraud model's inputs.",
                "owner": RISK,
                "tags": {"model": "fraud"},
                "views": {
                    "customer_activity": ["transactions_7d"],
                    "merchant_risk": ["txn_count_30d"],
                    "transaction_risk": ["amount_vs_merchant_avg"],
                },
            },
        ],
    }


class FakeClient:
    """The client's one method: the catalog, or a WidgetError; counts the reads."""

    def __init__(self, catalog: Catalog | None = None, error: str = "") -> None:
        self.found, self.error, self.reads = catalog, error, 0
        self.gate: threading.Event | None = None

    def catalog(self) -> Catalog:
        self.reads += 1
        if self.gate is not None:
            self.gate.wait(5)
        if self.error:
            raise WidgetError(self.error)
        assert self.found is not None
        return self.found


def item(catalog: Catalog, kind: str, name: str) -> Item:
    found = catalog.get(kind, name)
    assert found is not None
    return found


def browser(data: dict[str, Any] | None = None, **kwargs: Any) -> FeatureBrowser:
    found = FeatureBrowser(FakeClient(Catalog(data or demo())), now=lambda: NOW, **kwargs)
    assert found.wait(5), found.status.value
    return found


# --- pure ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(90 * 86400, "90 days"), (86400 + 6 * 3600, "1 day 6 hours"), (86400 + 300, "1 day"), (45, "45 seconds")],
)
def test_durations_in_words(seconds: int, text: str) -> None:
    assert human_duration(seconds) == text


def test_ttl_and_freshness_in_words() -> None:
    views = {v["name"]: v for v in demo()["feature_views"]}
    assert ttl_text(views["customer_profile"]) == "90 days"
    assert ttl_text(views["transaction_risk"]) == "none: computed at request time"
    assert ttl_text(views["customer_activity"] | {"ttl_seconds": None}) == "no limit: values never expire"
    assert freshness(views["customer_activity"], NOW) == "materialized up to 3 hours ago (2026-12-03 19:43 UTC)"
    assert freshness(views["customer_activity"] | {"materialized_to": None}, NOW) == "never materialized"
    assert freshness(views["transaction_risk"], NOW) == "computed at request time"
    assert ago(NOW - timedelta(seconds=20), NOW) == "just now"
    assert ago(NOW - timedelta(days=2, hours=5), NOW) == "2 days ago"
    assert ago(NOW - timedelta(minutes=1), NOW) == "1 minute ago"


def test_the_code_of_a_view_reads_each_feature_by_reference() -> None:
    catalog = Catalog(demo())
    code = snippet_for(catalog, item(catalog, "feature_view", "customer_activity"))
    assert "training_df = HistoricalFeatures.from_env().get(\n    [\n" in code and "    entity_df=entity_df,\n" in code
    assert "store." not in code, "the kernel has no Feast: it reads through the platform"
    assert '"customer_activity:sessions_7d",' in code and '"customer_activity:spend_7d_usd",' in code
    assert "OnlineFeatures.from_env().get(" in code and 'entity_rows=[{"customer_id": 1001}]' in code
    assert '"customer_id": [1001, 1002],' in code
    compile(code, "<snippet>", "exec")
    # An on-demand view needs its entities' keys and its request source's fields in each row.
    code = snippet_for(catalog, item(catalog, "feature_view", "transaction_risk"))
    assert 'entity_rows=[{"customer_id": 1001, "merchant_id": 1001, "amount_usd": 10.0}]' in code
    assert snippet_for(catalog, item(catalog, "entity", "customer")) == ""


def test_catalog_text_in_the_code_is_only_ever_a_literal() -> None:
    data = demo()
    data["feature_views"][0]["features"][0]["name"] = 'x"]\nimport os; os.system("rm -rf ~")  # '
    catalog = Catalog(data)
    code = snippet_for(catalog, item(catalog, "feature_view", "customer_activity"))
    assert "\nimport os" not in code
    compile(code, "<snippet>", "exec")


# --- the widget ---------------------------------------------------------------------


def test_it_loads_the_catalog_in_the_background_showing_progress() -> None:
    client = FakeClient(Catalog(demo()))
    client.gate = threading.Event()
    panel = FeatureBrowser(client, now=lambda: NOW)
    assert "Reading the feature catalog" in panel.activity.value and panel.refresh_button.disabled
    assert panel.results == []
    client.gate.set()
    assert panel.wait(5)
    assert panel.activity.value == "" and not panel.refresh_button.disabled
    assert panel.status.value == (
        "hubforge_demo: 4 feature views, 2 feature services, 2 entities, 4 data sources (applied 2026-12-03 19:43 UTC)."
    )
    assert len(panel.results) == 12 and len(panel.list.options) == 12


def test_a_search_from_code_waits_for_the_catalog_being_read() -> None:
    client = FakeClient(Catalog(demo()))
    client.gate = threading.Event()
    panel = FeatureBrowser(client, now=lambda: NOW)
    panel.query.value = "merchant"  # a keystroke does not wait: the load searches for it when done
    assert panel.results == [] and panel.refresh_button.disabled
    threading.Timer(0.05, client.gate.set).start()
    assert ("entity", "merchant") in panel.search("merchant")
    assert panel.wait(5) and ("entity", "merchant") in panel.results


def test_it_searches_as_one_types() -> None:
    panel = browser()
    assert panel.query.continuous_update
    panel.query.value = "cust"
    assert set(panel.results) == {
        ("data_source", "customer_activity_source"),
        ("data_source", "customer_profile_source"),
        ("entity", "customer"),
        ("feature_view", "customer_activity"),
        ("feature_view", "customer_profile"),
    }
    # In the catalog's order (best first).
    assert panel.catalog is not None
    assert panel.results == [(hit.item.kind, hit.item.name) for hit in panel.catalog.search("cust")]
    panel.query.value = "customer act"
    assert set(panel.results) == {("data_source", "customer_activity_source"), ("feature_view", "customer_activity")}
    # Owners, tags and field descriptions are searched too.
    assert ("feature_service", "fraud_model_v1") in panel.search(RISK)
    assert panel.query.value == RISK
    assert panel.search("sensitivity:confidential") == [("feature_view", "customer_profile")]
    assert panel.search("basic plus premium") == [("feature_view", "customer_profile")]
    assert panel.search("nothing-like-this") == [] and "Nothing matches" in panel.note.value


def test_the_kind_filter_narrows_the_results() -> None:
    panel = browser()
    panel.kind.value = "feature_service"
    assert panel.results == [("feature_service", "churn_model_v1"), ("feature_service", "fraud_model_v1")]
    panel.query.value = "fraud"
    assert panel.results == [("feature_service", "fraud_model_v1")]
    panel.kind.value = "entity"
    assert panel.search("") == [("entity", "customer"), ("entity", "merchant")]
    assert [label for label, _ in panel.list.options] == [
        f"customer  ·  entity  ·  {GROWTH}",
        f"merchant  ·  entity  ·  {RISK}",
    ]


def test_a_chosen_view_shows_its_schema_ttl_freshness_lineage_and_restriction() -> None:
    panel = browser()
    panel.search("customer_profile")
    panel.list.value = ("feature_view", "customer_profile")
    shown = panel.detail_html
    assert panel.selected == ("feature_view", "customer_profile")
    assert "<td><code>plan</code></td><td>String</td><td>Subscription plan: basic, plus or premium.</td>" in shown
    assert "<th" in shown and "<td>90 days</td>" in shown
    assert "materialized up to 3 hours ago (2026-12-03 19:43 UTC)" in shown
    assert "<code>customer</code>" in shown and "<code>team: growth</code>" in shown and GROWTH in shown
    assert "Restricted</b> (sensitivity: confidential): reading its data needs an approved data-access request" in shown
    lineage = shown[shown.index("Lineage:") :]
    boxes = ("customer_profile_source</span>", "\N{LOCK} customer_profile</span>", "churn_model_v1</span>")
    order = [lineage.index(box) for box in boxes]
    assert order == sorted(order) and "fraud_model_v1" not in lineage
    labels = {value: label for label, value in panel.list.options}
    assert labels[("feature_view", "customer_profile")] == f"\N{LOCK} customer_profile  ·  feature view  ·  {GROWTH}"
    assert labels[("data_source", "customer_profile_source")].startswith("customer_profile_source")
    panel.select("feature_view", "customer_activity")
    assert "Restricted" not in panel.detail_html and "fraud_model_v1" in panel.detail_html


def test_typing_keeps_the_chosen_item_and_lists_it_while_it_matches() -> None:
    panel = browser()
    panel.select("feature_view", "merchant_risk")
    panel.query.value = "merchant"
    assert panel.list.value == ("feature_view", "merchant_risk") and panel.selected == ("feature_view", "merchant_risk")
    panel.query.value = "churn"
    assert panel.list.value is None and "merchant_risk" in panel.detail_html


def test_a_service_shows_its_views_and_features_and_the_code_to_read_them() -> None:
    panel = browser()
    panel.select("feature_service", "churn_model_v1")
    shown = panel.detail_html
    assert "<code>customer_profile</code>, <code>customer_activity</code>" in shown
    assert "<td><code>customer_activity</code></td><td><code>spend_7d_usd</code></td><td>Float64</td>" in shown
    assert "it uses customer_profile" in shown
    code = panel.snippet
    assert code.count('feature_service="churn_model_v1",') == 2, "training and online, through the platform's readers"
    assert "HistoricalFeatures.from_env().get(" in code and "store." not in code
    assert 'entity_rows=[{"customer_id": 1001}]' in code and "needs an approved data-access request" in code
    assert "feature_service=&quot;churn_model_v1&quot;" in panel.code.value
    compile(code, "<snippet>", "exec")


def test_an_entity_shows_its_join_keys_and_the_views_keyed_by_it() -> None:
    panel = browser()
    panel.select("entity", "merchant")
    assert "<code>merchant_id</code>" in panel.detail_html
    assert "<code>merchant_risk</code>, <code>transaction_risk</code>" in panel.detail_html
    assert panel.snippet == "" and panel.insert_button.disabled
    panel.select("data_source", "transaction_request")
    assert "<code>amount_usd</code>" in panel.detail_html and "<code>transaction_risk</code>" in panel.detail_html


def test_insert_puts_the_code_in_the_next_cell() -> None:
    inserted: list[str] = []
    panel = browser(insert=inserted.append)
    panel.select("feature_view", "customer_activity")
    assert not panel.insert_button.disabled
    panel.insert_button.click()
    assert inserted == [panel.snippet] and "new cell" in panel.insert_status.value


def test_the_line_follows_the_notebooks_answer_when_it_comes() -> None:
    asked: list[tuple[str, Insertion]] = []

    def insert(code: str) -> Insertion:
        asked.append((code, Insertion()))
        return asked[-1][1]

    panel = browser(insert=insert)
    panel.select("feature_view", "customer_activity")
    panel.insert_button.click()
    assert [code for code, _ in asked] == [panel.snippet] and "Inserting" in panel.insert_status.value
    asked[0][1].decide(INSERTED)  # JupyterLab's extension answered: the cell is there now
    assert panel.insert_status.value == "Inserted below."
    panel.insert_button.click()
    asked[1][1].decide(NEXT_RUN)  # a frontend without the extension: the next cell run
    assert panel.insert_status.value == "The code goes into a new cell below the next cell you run."
    asked[1][1].decide(INSERTED)  # an answer later than the timeout still says where the code is
    assert panel.insert_status.value == "Inserted below."


def test_an_answer_for_what_is_no_longer_shown_changes_nothing() -> None:
    late = Insertion()
    panel = browser(insert=lambda code: late)
    panel.select("feature_view", "customer_activity")
    panel.insert()
    panel.select("feature_view", "merchant_risk")
    late.decide(INSERTED)
    assert panel.insert_status.value == ""


def test_without_a_notebook_insert_says_so_in_one_line() -> None:
    with pytest.raises(WidgetError, match="needs a notebook"):
        notebook_insert("x = 1")
    panel = browser()
    panel.select("feature_view", "customer_activity")
    panel.insert()
    assert "needs a notebook" in panel.insert_status.value and "\n" not in panel.insert_status.value


def test_what_people_typed_is_escaped() -> None:
    data = demo()
    hostile = "<script>alert(1)</script>"
    data["feature_views"][0] |= {"description": hostile, "owner": "<b>eve</b>", "tags": {"<i>": hostile}}
    data["feature_views"][0]["features"][0]["description"] = hostile
    data["feature_services"][0]["views"]["customer_activity"] = ["<img src=x onerror=alert(1)>"]
    panel = browser(data)
    panel.select("feature_view", "customer_activity")
    assert "<script>" not in panel.detail_html and "<b>eve" not in panel.detail_html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in panel.detail_html and "&lt;i&gt;: " in panel.detail_html
    panel.select("feature_service", "churn_model_v1")
    assert "<img" not in panel.detail_html and "<img" not in panel.code.value
    panel.search("<script>zzz")
    assert "Nothing matches &lt;script&gt;zzz" in panel.note.value


def test_an_error_is_one_line_in_the_panel_and_refresh_tries_again() -> None:
    message = "cannot read the feature catalog: 503 the feature catalog is not there yet: `hubforge features apply`"
    client = FakeClient(Catalog(demo()), error=message)
    panel = FeatureBrowser(client, now=lambda: NOW)
    assert panel.wait(5)
    assert message in panel.status.value and "Traceback" not in panel.status.value
    assert panel.results == [] and panel.search("customer") == []
    client.error = ""
    panel.refresh_button.click()
    assert panel.wait(5) and client.reads == 2
    assert "hubforge_demo" in panel.status.value and ("entity", "customer") in panel.search("customer")
    client.error = "cannot read the feature catalog: cannot reach the features service"
    panel.refresh()
    assert panel.wait(5) and "(showing the catalog read before)" in panel.status.value and panel.catalog is not None


def test_without_the_platform_the_panel_says_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(FEATURES_URL_ENV, raising=False)
    panel = FeatureBrowser()
    assert panel.wait(5)
    assert f"{FEATURES_URL_ENV} is not set" in panel.status.value


def test_a_malformed_entry_shows_one_line() -> None:
    data = demo()
    data["feature_views"][0]["materialized_to"] = {"not": "a time"}
    data["feature_views"][0] |= {"entities": "customer"}
    panel = browser(data)
    panel.select("feature_view", "customer_activity")
    assert "materialized up to {&#x27;not&#x27;: &#x27;a time&#x27;}" in panel.detail_html
    assert '<th style="text-align:left;padding-right:1em">entities</th><td><i>none</i></td>' in panel.detail_html
    assert "customer_activity:sessions_7d" in panel.snippet


def test_a_large_catalog_lists_at_most_the_limit_in_one_widget() -> None:
    data = demo()
    template = data["feature_views"][1]
    data["feature_views"] = [
        copy.deepcopy(template) | {"name": f"customer_view_{i:04d}", "description": f"Customer facts, batch {i}."}
        for i in range(2000)
    ]
    panel = browser(data)
    children = panel.children
    assert len(panel.results) == MAX_HITS and len(panel.list.options) == MAX_HITS
    assert len(panel.search("customer facts")) == MAX_HITS and "type more words" in panel.note.value
    assert panel.search("customer_view_0999") == [("feature_view", "customer_view_0999")]
    assert panel.search("batch 1999") == [("feature_view", "customer_view_1999")]
    assert panel.children is children and len(panel.list.options) == 1


# --- the client ---------------------------------------------------------------------


def client_with(handler: Any) -> FeaturesClient:
    return FeaturesClient(URL, "alice-token", transport=httpx.MockTransport(handler))


def test_the_client_keeps_the_catalog_and_asks_with_its_etag() -> None:
    seen: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        if req.headers.get("If-None-Match") == '"v1"':
            return httpx.Response(304, headers={"ETag": '"v1"'})
        return httpx.Response(200, json=demo(), headers={"ETag": '"v1"'})

    client = client_with(handler)
    first = client.catalog()
    assert first.get("feature_view", "customer_profile") is not None
    assert client.catalog() is first
    assert [str(r.url) for r in seen] == [f"{URL}/api/catalog"] * 2
    assert seen[0].headers["Authorization"] == "token alice-token" and "If-None-Match" not in seen[0].headers
    assert seen[1].headers["If-None-Match"] == '"v1"'


def test_the_client_says_in_one_line_what_failed() -> None:
    answers = iter(
        [
            httpx.Response(503, json={"status": 503, "message": "the feature catalog is not there yet: run\napply"}),
            httpx.Response(403, json={"status": 403, "message": "Forbidden"}),
            httpx.Response(200, text="{not json"),
            httpx.Response(200, json={"version": 2}),
        ]
    )
    client = client_with(lambda req: next(answers))
    failed = "^cannot read the feature catalog: "
    with pytest.raises(WidgetError, match=failed + "503 the feature catalog is not there yet: run apply$"):
        client.catalog()
    with pytest.raises(WidgetError, match=failed + "403 Forbidden$"):
        client.catalog()
    with pytest.raises(WidgetError, match=failed + "features: catalog: unreadable"):
        client.catalog()
    with pytest.raises(WidgetError, match="not a version 1 catalog"):
        client.catalog()

    def down(req: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    with pytest.raises(WidgetError, match=failed + f"cannot reach the features service at {URL}"):
        client_with(down).catalog()

    def slow(req: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=req)

    with pytest.raises(WidgetError, match="did not answer in time"):
        client_with(slow).catalog()


def test_the_client_comes_from_the_kernels_environment() -> None:
    with pytest.raises(WidgetError, match=f"^{FEATURES_URL_ENV} is not set"):
        FeaturesClient.from_env({"JUPYTERHUB_API_TOKEN": "t"})
    with pytest.raises(WidgetError, match="JUPYTERHUB_API_TOKEN is not set"):
        FeaturesClient.from_env({FEATURES_URL_ENV: URL})
    assert FeaturesClient.from_env({FEATURES_URL_ENV: URL + "/", "JUPYTERHUB_API_TOKEN": "t"}).url == URL
