"""Feature lineage without MLflow: how reads become run tags, how tags are read back and searched,
and the HTML the feature browser shows."""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from hubforge.contract import MLFLOW_URL_ENV
from hubforge.features import usage
from hubforge.features.usage import (
    MORE,
    PROJECT_TAG,
    SERVICES_TAG,
    VIEWS_TAG,
    FeatureUsage,
    Retrieval,
    name_list,
    names_in,
    record_retrieval,
)
from hubforge.widgets.client import PUBLIC_HUB_ENV, WidgetError
from hubforge.widgets.feature_lineage import (
    Lineage,
    LineageModel,
    LineageRun,
    lineage_html,
    lineage_runs,
    mlflow_ui_url,
    tag_filter,
)

# --- tags --------------------------------------------------------------------------------


def test_a_name_list_is_sorted_unique_and_delimited_at_both_ends() -> None:
    assert name_list(["txn_stats", "merchant_risk", "txn_stats"]) == ",merchant_risk,txn_stats,"
    assert name_list([]) == ""
    # A comma or a control character would split or corrupt the list: such names are left out.
    assert name_list(["a,b", "c\nd", "", "ok", f"{MORE}3 more", "x" * 251]) == ",ok,"


def test_a_long_name_list_keeps_what_fits_and_says_how_many_it_left_out() -> None:
    names = [f"view_{i:04d}" for i in range(2000)]
    value = name_list(names, limit=8000)
    assert len(value) <= 8000
    kept = names_in(value)
    assert kept and kept < set(names)
    assert sorted(kept) == names[: len(kept)], "the first names in order"
    assert value.endswith(f",{MORE}{2000 - len(kept)} more,")
    assert len(name_list(names, limit=100)) <= 100


def test_names_are_read_back_from_the_tag_and_a_malformed_tag_holds_nothing_odd() -> None:
    assert names_in(",merchant_risk,txn_stats,") == {"merchant_risk", "txn_stats"}
    assert names_in(f",a,{MORE}4 more,") == {"a"}
    for odd in (None, 5, "", ",,", ["a"], "a,b", ",a"):
        assert names_in(odd) == set()


def test_the_search_pattern_matches_a_whole_name_and_quotes_nothing() -> None:
    assert tag_filter(VIEWS_TAG, "merchant_risk") == "tags.`hubforge.features.views` LIKE '%,merchant_risk,%'"
    # Anything but letters, digits, '.' and '-' becomes '_' (one character): no quote, no '%'.
    assert tag_filter(SERVICES_TAG, "it's 100%") == "tags.`hubforge.features.services` LIKE '%,it_s_100_,%'"


# --- recording ---------------------------------------------------------------------------


@pytest.fixture
def recorded() -> Iterator[list[Retrieval]]:
    found: list[Retrieval] = []
    usage.set_recorder(found.append)
    try:
        yield found
    finally:
        usage.set_recorder(None)


def test_without_a_tracking_kernel_a_read_records_nothing() -> None:
    assert usage._recorder is None
    record_retrieval("online", ["merchant_risk"], [])  # no error, nothing to hand it to


def test_a_read_is_handed_over_with_the_views_its_features_name(recorded: list[Retrieval]) -> None:
    record_retrieval("online", (), ["fraud_v1"], ["merchant_risk:avg_ticket_usd", "txn_stats:count_7d"], "fraud")
    record_retrieval("historical", "merchant_risk", "", "merchant_risk:avg_ticket_usd")  # single names, not letters
    record_retrieval("online", None, None, None)  # type: ignore[arg-type]
    assert recorded == [
        Retrieval(
            "online",
            ("merchant_risk", "txn_stats"),
            ("fraud_v1",),
            ("merchant_risk:avg_ticket_usd", "txn_stats:count_7d"),
            "fraud",
        ),
        Retrieval("historical", ("merchant_risk",), (), ("merchant_risk:avg_ticket_usd",), ""),
        Retrieval("online", (), (), (), ""),
    ]


def test_a_recorder_that_fails_never_fails_the_read() -> None:
    def broken(_: Retrieval) -> None:
        raise RuntimeError("tracker gone")

    usage.set_recorder(broken)
    try:
        record_retrieval("online", ["v"], ["s"])
        record_retrieval("online", object(), 5)  # type: ignore[arg-type]
    finally:
        usage.set_recorder(None)


def test_the_recording_module_imports_only_the_standard_library() -> None:
    # It is imported by every reader in every kernel: no mlflow, no tracker, no third party.
    source = Path(usage.__file__).read_text()
    modules = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level:
            modules.add((node.module or "").split(".")[0])
    assert modules <= set(sys.stdlib_module_names) | {"__future__"}, modules


def test_usage_merges_each_new_read_into_the_tags_that_change() -> None:
    session = FeatureUsage()
    first = Retrieval("online", ("merchant_risk",), ("fraud_v1",), project="fraud")
    assert session.note(first)
    assert session.merge(first) == {
        VIEWS_TAG: ",merchant_risk,",
        SERVICES_TAG: ",fraud_v1,",
        PROJECT_TAG: ",fraud,",
    }
    assert not session.note(first), "a repeated read is counted, not merged again"
    second = Retrieval("historical", ("txn_stats", "merchant_risk"), ())
    assert session.note(second)
    assert session.merge(second) == {VIEWS_TAG: ",merchant_risk,txn_stats,"}, "only what changed"
    same = Retrieval("online", ("txn_stats",), ())
    assert session.note(same) and session.merge(same) == {}
    summary = session.summary()
    assert summary["views"] == ["merchant_risk", "txn_stats"]
    assert summary["services"] == ["fraud_v1"] and summary["projects"] == ["fraud"]
    assert [(r["kind"], r["count"]) for r in summary["retrievals"]] == [("online", 2), ("historical", 1), ("online", 1)]


def test_usage_keeps_a_bounded_number_of_distinct_reads() -> None:
    session = FeatureUsage(max_distinct=2)
    reads = [Retrieval("online", (f"v{i}",), ()) for i in range(4)]
    assert [session.note(r) for r in reads] == [True, True, False, False]
    assert session.summary()["not_listed"] == 2
    assert FeatureUsage().summary() == {}, "nothing read, no artifact"


# --- looking up --------------------------------------------------------------------------


class Page(list):
    token = None


class Stub:
    """What ``lineage_runs`` asks an MlflowClient, answered from lists (the real one: tests/integration)."""

    def __init__(self, runs: list[Any], error: Exception | None = None) -> None:
        self.runs, self.error = runs, error
        self.filters: list[str] = []

    def search_experiments(self, **_: Any) -> Page:
        if self.error is not None:
            raise self.error
        return Page([SimpleNamespace(experiment_id="1", name="/Users/alice/nb.ipynb")])

    def search_runs(self, experiment_ids: list[str], filter_string: str, **_: Any) -> Page:
        self.filters.append(filter_string)
        return Page([] if "parentRunId" in filter_string else self.runs)

    def search_model_versions(self, *_: Any, **__: Any) -> Page:
        return Page()

    def search_logged_models(self, *_: Any, **__: Any) -> Page:
        return Page()


def stub_run(run_id: str, views: Any, start: int) -> SimpleNamespace:
    info = SimpleNamespace(
        run_id=run_id, run_name=run_id, experiment_id="1", user_id="alice", start_time=start, status="FINISHED"
    )
    return SimpleNamespace(info=info, data=SimpleNamespace(tags={VIEWS_TAG: views} if views is not None else {}))


def test_only_runs_whose_tag_holds_the_whole_name_are_found() -> None:
    # The LIKE pattern lets through near misses ('_' matches any character); the tag decides.
    runs = [
        stub_run("exact", ",merchant_risk,txn,", 3),
        stub_run("wildcard", ",merchantXrisk,", 5),
        stub_run("undelimited", "merchant_risk", 4),
        stub_run("no-tag", None, 2),
        stub_run("older", ",merchant_risk,", 1),
    ]
    client = Stub(runs)
    found = lineage_runs(client, "feature_view", "merchant_risk")  # type: ignore[arg-type]
    assert found.error == ""
    assert [r.run_id for r in found.runs] == ["exact", "older"], "newest first"
    assert found.runs[0].experiment == "/Users/alice/nb.ipynb" and found.runs[0].user == "alice"
    assert client.filters[0] == tag_filter(VIEWS_TAG, "merchant_risk")
    assert len(lineage_runs(client, "feature_view", "merchant_risk", limit=2).runs) == 2  # type: ignore[arg-type]


def test_an_mlflow_failure_is_one_line_and_an_unknown_kind_is_refused() -> None:
    client = Stub([], error=ConnectionError("connection refused\nTraceback (most recent call last):"))
    found = lineage_runs(client, "feature_service", "fraud_v1")  # type: ignore[arg-type]
    assert found.runs == () and found.error == "cannot read MLflow: connection refused"
    with pytest.raises(WidgetError, match="entity"):
        lineage_runs(Stub([]), "entity", "merchant")  # type: ignore[arg-type]


# --- HTML ----------------------------------------------------------------------------------


def a_lineage(**kwargs: Any) -> Lineage:
    run = LineageRun(
        run_id="r1",
        name="<b>train</b>.ipynb",
        experiment_id="7",
        experiment="/Users/alice/<x>.ipynb",
        user="alice",
        start_time=1_700_000_000_000,
        status="FAILED",
        via=("fraud_v1",),
        models=(
            LineageModel("fraud & co", "r2", "7", version="3"),
            LineageModel("LogisticRegression", "r2", "7", model_id="m-1"),
        ),
    )
    return Lineage("feature_view", "merchant_risk", (run,), **kwargs)


def test_the_html_links_runs_and_models_to_mlflow_and_escapes_every_name() -> None:
    page = lineage_html(a_lineage(), "https://hub.example/hub-base/services/mlflow/")
    base = "https://hub.example/hub-base/services/mlflow/#/"
    assert f'<a href="{base}experiments/7/runs/r1" target="_blank"' in page
    assert "&lt;b&gt;train&lt;/b&gt;.ipynb" in page and "<b>train" not in page
    assert "/Users/alice/&lt;x&gt;.ipynb" in page
    assert "2023-11-14 22:13 UTC" in page and "via fraud_v1" in page and "failed" in page
    assert f'href="{base}models/fraud%20%26%20co/versions/3"' in page and "fraud &amp; co v3" in page
    assert f'href="{base}experiments/7/models/m-1"' in page and "(logged)" in page
    assert "1 run, newest first" in page


def test_without_a_web_base_the_html_links_nothing() -> None:
    for base in ("", "javascript:alert(1)//", "//evil.example/x", "ftp://x/"):
        page = lineage_html(a_lineage(), base)
        assert "<a " not in page and "javascript" not in page, base
    assert 'href="/services/mlflow/#/experiments/7/runs/r1"' in lineage_html(a_lineage(), "/services/mlflow")


def test_the_html_says_in_one_line_when_no_run_used_it_or_mlflow_failed() -> None:
    none = lineage_html(Lineage("feature_service", "fraud_v1"))
    assert "no tracked run has used this feature service fraud_v1 yet" in none and "<ul" not in none
    failed = lineage_html(Lineage("feature_view", "<v>", error="cannot read MLflow: 403 <denied>\nTraceback"))
    assert "cannot find the runs that used feature view &lt;v&gt;: cannot read MLflow: 403 &lt;denied&gt;" in failed
    assert "\n" not in failed and "<ul" not in failed
    assert "the newest 1 runs" in lineage_html(a_lineage(more=True))
    assert "not searched" in lineage_html(a_lineage(partial=True))


def test_the_mlflow_ui_is_where_the_browser_reaches_the_hub() -> None:
    env = {MLFLOW_URL_ENV: "http://hub:8081/base/services/mlflow"}
    assert mlflow_ui_url(env) == "/base/services/mlflow/", "the page's own origin"
    env[PUBLIC_HUB_ENV] = "https://ai.example.com/base/hub/"
    assert mlflow_ui_url(env) == "https://ai.example.com/base/services/mlflow/"
    assert mlflow_ui_url({}) == ""


# --- in the browser ----------------------------------------------------------------------


def test_the_browser_shows_the_runs_that_read_a_view_and_one_line_without_mlflow() -> None:
    from harness.features import catalog, view
    from hubforge.features.catalog import Catalog
    from hubforge.widgets.feature_browser import FeatureBrowser

    cat = Catalog(catalog([view("merchant_risk"), view("txn")]))

    class Source:
        def catalog(self) -> Catalog:
            return cat

    client = Stub([stub_run("fit-1", ",merchant_risk,", 3)])
    browser = FeatureBrowser(Source(), mlflow=lambda: client, governance=lambda: None)  # type: ignore[arg-type,return-value]
    assert browser.wait(10)
    browser.select("feature_view", "merchant_risk")
    assert browser.wait_runs(10) and browser.lineage is not None
    assert [r.run_id for r in browser.lineage.runs] == ["fit-1"] and "fit-1" in browser.runs.value
    browser.select("entity", "customer")
    assert browser.runs.value == "" and browser.lineage is None

    def no_mlflow() -> Any:
        raise WidgetError("HUBFORGE_MLFLOW_URL is not set: the widgets run in a kernel of a hubforge server")

    offline = FeatureBrowser(Source(), mlflow=no_mlflow, governance=lambda: None)  # type: ignore[arg-type,return-value]
    assert offline.wait(10)
    offline.select("feature_service", "churn_model_v1")
    assert offline.wait_runs(10)
    assert "HUBFORGE_MLFLOW_URL is not set" in offline.runs.value and "Traceback" not in offline.runs.value
