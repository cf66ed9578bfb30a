"""The feature catalog as plain data: read, searched as a person types, and refused when it is
not a catalog. The catalog the real Feast writes is tested in tests/features."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hubforge.features import FeaturesError
from hubforge.features.catalog import Catalog, load


def view(name: str, description: str = "", owner: str = "growth@example.org", **tags: str) -> dict[str, Any]:
    features = [{"name": f"{name}_score", "dtype": "Float32", "description": "a score"}]
    return {"name": name, "kind": "batch", "entities": ["customer"], "features": features, "sources": [f"{name}_src"],
            "description": description, "owner": owner, "tags": tags}  # fmt: skip


def catalog(*views: dict[str, Any]) -> Catalog:
    return Catalog({
        "version": 1,
        "project": {"name": "payments"},
        "entities": [{"name": "customer", "join_keys": ["customer_id"], "description": "", "owner": "", "tags": {}}],
        "data_sources": [{"name": f"{v['name']}_src", "description": "", "owner": "", "tags": {}} for v in views],
        "feature_views": list(views),
        "feature_services": [{"name": "churn_v1", "views": {"profile": []}, "description": "", "owner": "",
                              "tags": {"model": "churn"}}],
    })  # fmt: skip


def names(hits: list[Any]) -> list[str]:
    return [hit.item.name for hit in hits]


def test_names_that_start_with_the_words_come_first_then_names_containing_them_then_the_rest() -> None:
    c = catalog(view("customer_profile"), view("risky_customer"), view("merchant", "Chargebacks of each customer"))
    assert names(c.search("customer", kinds=["feature_view"])) == ["customer_profile", "risky_customer", "merchant"]
    assert names(c.search("CUST prof")) == ["customer_profile", "customer_profile_src"], "every word, any case"


def test_owner_tags_and_feature_names_are_searched_and_kinds_filter() -> None:
    c = catalog(view("profile", owner="risk@example.org", sensitivity="confidential"), view("activity"))
    assert names(c.search("risk@")) == ["profile"]
    assert names(c.search("sensitivity:confidential")) == ["profile"]
    assert names(c.search("activity_score")) == ["activity"]
    assert names(c.search("churn", kinds=["feature_service"])) == ["churn_v1"]
    assert c.get("feature_view", "profile").restricted and not c.get("feature_view", "activity").restricted
    assert c.lineage("profile") == {"sources": ["profile_src"], "services": ["churn_v1"]}
    assert c.lineage("nothing") == {"sources": [], "services": []}


def test_an_empty_query_lists_everything_views_first_up_to_the_limit() -> None:
    c = catalog(*(view(f"view_{i:04d}") for i in range(2000)))
    hits = c.search("")
    assert len(hits) == 50 and hits[0].item.kind == "feature_view"
    assert len(c.search("view_1", limit=500)) == 500
    assert names(c.search("view_1999")) == ["view_1999", "view_1999_src"], "views before their sources"


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("{", "features: catalog: unreadable"),
        ("[]", "features: catalog: not a version 1 catalog"),
        ('{"version": 2}', "features: catalog: not a version 1 catalog"),
        ('{"version": 1, "feature_views": [{"kind": "batch"}]}', "features: catalog: feature_view ?: malformed"),
        ('{"version": 1, "feature_views": [{"name": "v", "features": 5}]}', "features: catalog: feature_view v: "),
        ('{"version": 1, "entities": [{"name": "e", "tags": ["a"]}]}', "features: catalog: entity e: malformed"),
    ],
)
def test_what_is_not_a_catalog_is_one_line(text: str, said: str) -> None:
    with pytest.raises(FeaturesError) as refused:
        Catalog.from_json(text)
    assert str(refused.value).startswith(said) and "\n" not in str(refused.value)


def test_load_names_the_file_it_cannot_read(tmp_path: Path) -> None:
    with pytest.raises(FeaturesError, match=r"cannot read .*catalog.json: No such file"):
        load(tmp_path / "catalog.json")
    (tmp_path / "catalog.json").write_text(json.dumps({"version": 1}))
    assert load(tmp_path / "catalog.json").items == []
