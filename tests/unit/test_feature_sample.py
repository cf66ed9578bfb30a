"""The feature browser's online sample against a reader that answers as the service does: the
keys a view reads by, typed as their types, the values shown, every failure one line."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from harness.features import catalog, view
from hubforge.features import FeaturesError
from hubforge.features.catalog import Catalog
from hubforge.widgets.client import WidgetError
from hubforge.widgets.feature_browser import FeatureBrowser
from hubforge.widgets.feature_sample import SamplePanel, key_value, sample_html

CAT = Catalog(catalog([
    view("merchant_risk") | {"features": [{"name": "category", "dtype": "String"},
                                          {"name": "avg_ticket_usd", "dtype": "Float64"}]},
    view("customer_profile", sensitivity="confidential") | {"features": [{"name": "plan", "dtype": "String"}]},
    view("offline_only") | {"online": False, "features": [{"name": "x", "dtype": "Int64"}]},
]))  # fmt: skip


class Reader:
    def __init__(self) -> None:
        self.asked: list[tuple[list[str], list[dict[str, Any]]]] = []

    def get(self, features: Sequence[str] = (), entity_rows: Sequence[Mapping[str, Any]] = (), *,
            feature_service: str | None = None) -> dict[str, list[Any]]:  # fmt: skip
        rows = [dict(r) for r in entity_rows]
        self.asked.append((list(features), rows))
        if any(f.startswith("customer_profile:") for f in features):
            raise FeaturesError("features: online read refused (403): customer_profile is restricted: ...")
        known = rows[0]["customer_id"] == 1001
        return {"customer_id": [rows[0]["customer_id"]], "category": ["grocery" if known else None],
                "avg_ticket_usd": [41.5 if known else None]}  # fmt: skip


def panel_for(name: str, reader: Reader) -> SamplePanel:
    panel = SamplePanel(lambda: reader)
    item = CAT.get("feature_view", name)
    assert item is not None
    panel.show(CAT, item)
    return panel


def test_a_view_is_read_for_the_key_typed_as_its_type() -> None:
    reader = Reader()
    panel = panel_for("merchant_risk", reader)
    assert panel.layout.display == "" and [b.description for b in panel.inputs.children] == ["customer_id"]
    panel.set_key(customer_id=" 1001 ")
    panel.read()
    assert panel.wait(10)
    assert reader.asked == [(["merchant_risk:category", "merchant_risk:avg_ticket_usd"], [{"customer_id": 1001}])]
    assert "<code>category</code></td><td>grocery" in panel.result.value and "41.5" in panel.result.value
    assert "customer_id" not in panel.result.value, "the key is what was typed, not a feature"


def test_a_key_the_store_does_not_hold_says_so() -> None:
    panel = panel_for("merchant_risk", Reader())
    panel.set_key(customer_id="7")
    panel.read()
    assert panel.wait(10) and "holds no values for this key" in panel.result.value


NOT_A_NUMBER = "customer_id is a whole number (INT64), not &#x27;abc&#x27;."


@pytest.mark.parametrize(("text", "said"), [("", "Give a value for customer_id."), ("abc", NOT_A_NUMBER)])
def test_a_bad_key_is_one_line_and_nothing_is_read(text: str, said: str) -> None:
    reader = Reader()
    panel = panel_for("merchant_risk", reader)
    panel.set_key(customer_id=text)
    panel.read()
    assert reader.asked == [] and said in panel.result.value


def test_a_refusal_of_restricted_data_is_the_services_line() -> None:
    panel = panel_for("customer_profile", Reader())
    panel.set_key(customer_id="1001")
    panel.read()
    assert panel.wait(10)
    assert "customer_profile is restricted" in panel.result.value and panel.values is None


def test_what_is_not_online_offers_no_sample() -> None:
    assert panel_for("offline_only", Reader()).layout.display == "none"


def test_key_values_follow_their_types() -> None:
    assert key_value("k", "2.5", "Float64") == 2.5
    assert key_value("k", "TRUE", "Bool") is True
    assert key_value("k", "id-1", "STRING") == "id-1"
    with pytest.raises(WidgetError, match="k is true or false"):
        key_value("k", "yes", "Bool")
    with pytest.raises(WidgetError, match="at most 256"):
        key_value("k", "x" * 300, "STRING")


def test_values_from_people_are_escaped() -> None:
    shown = sample_html({"id": [1], "<b>f</b>": ["<script>x</script>"]}, ["id"])
    assert "<script>" not in shown and "<b>f</b>" not in shown


def test_the_browser_offers_the_sample_for_the_view_chosen() -> None:
    class Source:
        def catalog(self) -> Catalog:
            return CAT

    reader = Reader()
    browser = FeatureBrowser(Source(), online=lambda: reader, mlflow=lambda: None, governance=lambda: None)  # type: ignore[arg-type,return-value]
    assert browser.wait(10)
    browser.select("feature_view", "merchant_risk")
    assert browser.sample.layout.display == ""
    browser.sample.set_key(customer_id="1001")
    browser.sample.read()
    assert browser.sample.wait(10) and browser.sample.values is not None
    browser.select("entity", "customer")
    assert browser.sample.layout.display == "none"


def test_the_panels_reader_waits_for_a_store_that_is_still_opening(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first read after a platform start waits for the service to open its feature store:
    the panel's glance allows two minutes (a code read keeps 30 s) and records nothing."""
    from hubforge.contract import FEATURES_URL_ENV
    from hubforge.features.reader import TIMEOUT
    from hubforge.widgets import feature_sample

    monkeypatch.setenv(FEATURES_URL_ENV, "http://127.0.0.1:9/services/features")
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "t")
    reader = feature_sample._online()
    try:
        assert reader._http.timeout.read == 120.0 > TIMEOUT.read
        assert (reader.record, reader.ttl) == (False, 0)
    finally:
        reader.close()
