"""Feature lineage end to end against a real ``mlflow server``: a tracked ipykernel reads
features and fits a model; the session run names the views and services it read, and the
lookup finds that run, with its fit's model, for each of them and for nothing else."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.kernel import Kernel, children, kernel_env, only_run, write_notebook
from harness.mlflow import MlflowServer, new_run
from harness.platform import free_port, wait_for
from hubforge.contract import tag_item
from hubforge.features.usage import PROJECT_TAG, SERVICES_TAG, VIEWS_TAG, FeatureUsage, Retrieval
from hubforge.server_extension.kernel.queue import TrackingQueue
from hubforge.server_extension.replay import replay
from hubforge.widgets.feature_lineage import lineage_html, lineage_runs

CELLS = [
    # What the historical helper does after a read (no features service needed for it).
    "from hubforge.features.usage import record_retrieval\n"
    "record_retrieval('historical', ['merchant_risk'], ['fraud_scoring'], ['merchant_risk:avg_ticket_usd'], 'fraud')",
    # The online reader against a features service faked at the transport: one read of a
    # view's features, one of a service, and the same read again (counted, not merged again).
    "import httpx\nfrom hubforge.features.reader import OnlineFeatures\n"
    "answer = lambda request: httpx.Response(200, json={'features': {'merchant_id': [501], 'n': [3]}})\n"
    "online = OnlineFeatures('http://features.test', 'token', ttl=0, transport=httpx.MockTransport(answer))\n"
    "online.get(['txn_stats:count_7d'], [{'merchant_id': 501}])\n"
    "online.get(feature_service='scoring_v2', entity_rows=[{'merchant_id': 501}])\n"
    "online.get(['txn_stats:count_7d'], [{'merchant_id': 501}])",
    "from sklearn.datasets import load_iris\nfrom sklearn.linear_model import LogisticRegression\n"
    "X, y = load_iris(return_X_y=True)\nmodel = LogisticRegression(max_iter=300).fit(X, y)",
]


@pytest.fixture
def client(mlflow_server: MlflowServer):
    from mlflow import MlflowClient

    return MlflowClient(mlflow_server.url, mlflow_server.url)


def finished(runs: dict[str, Any]) -> dict[str, Any] | None:
    return runs if runs and all(r.info.status != "RUNNING" for r in runs.values()) else None


def test_the_runs_and_models_that_used_a_view_or_a_service_are_found(
    mlflow_server: MlflowServer, client, tmp_path: Path
) -> None:
    write_notebook(tmp_path, "work/score.ipynb", CELLS)
    kernel = Kernel(kernel_env(mlflow_server.url, tmp_path, "gina", "work/score.ipynb"), tmp_path)
    try:
        said = [kernel.run(cell, 120) for cell in CELLS]
    finally:
        kernel.shutdown()
    assert "Error" not in "".join(said), said
    replay(tmp_path / ".spool", mlflow_server.url, client=client)  # what a slow MLflow left to the server
    exp, run = only_run(client, "/Users/gina/work/score.ipynb")
    tags = run.data.tags
    assert tags[VIEWS_TAG] == ",merchant_risk,txn_stats,"
    assert tags[SERVICES_TAG] == ",fraud_scoring,scoring_v2,"
    assert tags[PROJECT_TAG] == ",fraud,"
    local = client.download_artifacts(run.info.run_id, "features/retrievals.json", str(tmp_path / "dl"))
    summary = json.loads(Path(local).read_text())
    assert summary["views"] == ["merchant_risk", "txn_stats"]
    assert [(r["kind"], r["views"], r["services"], r["count"]) for r in summary["retrievals"]] == [
        ("historical", ["merchant_risk"], ["fraud_scoring"], 1),
        ("online", ["txn_stats"], [], 2),
        ("online", [], ["scoring_v2"], 1),
    ]
    fits = wait_for(lambda: finished(children(client, exp, run)), 120, "the fit's run to end")
    fit = fits["LogisticRegression"]
    (logged,) = wait_for(lambda: client.search_logged_models([exp.experiment_id]), 60, "the fit's model")
    assert logged.source_run_id == fit.info.run_id

    # A run of someone else's whose tag only looks alike to MLflow's LIKE ('_' is any character).
    decoy = new_run(client, "decoy")
    client.set_tag(decoy, VIEWS_TAG, ",merchantXrisk,")

    for kind, name in [
        ("feature_view", "merchant_risk"),
        ("feature_view", "txn_stats"),
        ("feature_service", "fraud_scoring"),
        ("feature_service", "scoring_v2"),
    ]:
        found = lineage_runs(client, kind, name)
        assert found.error == "" and not found.partial, (kind, name, found.error)
        assert [r.run_id for r in found.runs] == [run.info.run_id], (kind, name)
        (used,) = found.runs
        assert (used.experiment, used.user, used.via) == ("/Users/gina/work/score.ipynb", "gina", ())
        assert [(m.name, m.run_id, m.model_id, m.version) for m in used.models] == [
            ("LogisticRegression", fit.info.run_id, logged.model_id, "")
        ], "the model of its fit's child run"
    for kind, name in [("feature_view", "merchant"), ("feature_view", "other_view"), ("feature_service", "fraud")]:
        assert lineage_runs(client, kind, name).runs == (), (kind, name)
    assert [r.run_id for r in lineage_runs(client, "feature_view", "merchantXrisk").runs] == [decoy]

    # A view read only through a service that includes it.
    (through,) = lineage_runs(client, "feature_view", "customer_profile", via_services=["scoring_v2"]).runs
    assert (through.run_id, through.via) == (run.info.run_id, ("scoring_v2",))

    # Registered, the model shows as its version.
    client.create_registered_model("fraud-detector-lineage")
    client.create_model_version(
        "fraud-detector-lineage", f"models:/{logged.model_id}", run_id=fit.info.run_id, model_id=logged.model_id
    )
    (used,) = lineage_runs(client, "feature_view", "merchant_risk").runs
    assert [(m.name, m.version) for m in used.models] == [("fraud-detector-lineage", "1")]
    page = lineage_html(lineage_runs(client, "feature_view", "merchant_risk"), "/services/mlflow/")
    assert f'href="/services/mlflow/#/experiments/{exp.experiment_id}/runs/{run.info.run_id}"' in page
    assert "score.ipynb</a>" in page and "fraud-detector-lineage v1</a>" in page


def test_folds_merge_into_a_run_named_later_and_come_back_from_a_detach(client, tmp_path: Path) -> None:
    run = new_run(client, "folds")
    session = FeatureUsage()
    queue = TrackingQueue(lambda: client, spool_dir=tmp_path / "a", flush_interval=0.05)
    queue.hold("pending")
    reads = [
        Retrieval("online", ("b_view",), ("svc",)),
        Retrieval("online", ("a_view",), ()),
        Retrieval("online", ("b_view",), ("svc",)),
    ]
    for read in reads:
        if session.note(read):
            queue.fold("pending", session.merge, read)
    queue.fold("pending", lambda _: 1 / 0, None)  # a merge that fails costs itself only
    queue.log_metric("pending", "m", 1.0)
    assert queue.depth == 4, "two new reads, the failing fold and the metric"
    queue.release("pending", run)
    assert queue.close(30) and queue.depth == 0
    tags = client.get_run(run).data.tags
    assert (tags[VIEWS_TAG], tags[SERVICES_TAG]) == (",a_view,b_view,", ",svc,")
    assert PROJECT_TAG not in tags

    # MLflow never reached: what was folded comes back as tag records, for the server's replay.
    later = TrackingQueue(lambda: client, spool_dir=tmp_path / "b")
    later.hold("pending")
    other = FeatureUsage()
    read = Retrieval("historical", ("c_view",), (), project="fraud")
    other.note(read)
    later.fold("pending", other.merge, read)
    assert sorted(later.detach()) == sorted(
        [tag_item("pending", VIEWS_TAG, ",c_view,"), tag_item("pending", PROJECT_TAG, ",fraud,")]
    )


def test_an_mlflow_that_does_not_answer_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    found = lineage_runs(MlflowClient(f"http://127.0.0.1:{free_port()}"), "feature_view", "merchant_risk")
    assert found.runs == () and found.error.startswith("cannot read MLflow: ")
    assert "\n" not in found.error and "Traceback" not in found.error
    assert "cannot find the runs that used feature view merchant_risk" in lineage_html(found)
