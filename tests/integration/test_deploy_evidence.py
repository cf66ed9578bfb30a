"""What the deploy policy weighs, read from MLflow as the governance service's own identity.

A gated MLflow (``mlflow server --app-name hubforge`` behind the tests' fake hub): alice
trains, registers and documents a model with her token; the governance service reads
the card and the run's metrics with its own service token (read-only, every model), as
:class:`~hubforge.hub.governance.mlflow_evidence.MlflowEvidence` does on the platform, and
which version the ``production`` alias (set by governance's deployments) names; the decision
page shows them, read that way (``running``: the governance service of tests/harness).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from mlflow import MlflowClient

from harness.cards import complete_card, partial_card
from harness.governance import Running, cookie_client
from harness.mlflow_app import PREFIX
from harness.models import register_model
from hubforge.errors import Unavailable
from hubforge.hub.governance.mlflow_evidence import MlflowEvidence
from hubforge.modelcard.mlflow_store import card_path, save_card


@contextmanager
def as_token(monkeypatch: pytest.MonkeyPatch, token: str) -> Iterator[None]:
    with monkeypatch.context() as m:
        m.setenv("MLFLOW_TRACKING_TOKEN", token)
        m.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        yield


@pytest.fixture
def tracking(mlflow_url: str) -> str:
    return mlflow_url + PREFIX.rstrip("/")


def alices_model(tracking: str, monkeypatch: pytest.MonkeyPatch, card: dict | None) -> tuple[str, str]:
    """A model version of alice's, from a run that logged accuracy, with ``card`` saved."""
    name = f"churn-{uuid.uuid4().hex[:8]}"
    with as_token(monkeypatch, "alice-token"):
        client = MlflowClient(tracking, registry_uri=tracking)
        client.create_experiment(f"/Users/alice/{name}")
        client.create_registered_model(name)
    return name, alices_version(tracking, monkeypatch, name, card)


def alices_version(
    tracking: str, monkeypatch: pytest.MonkeyPatch, name: str, card: dict | None, accuracy: float = 0.91
) -> str:
    """Another version of alice's model ``name``, from a new run that logged ``accuracy``."""
    with as_token(monkeypatch, "alice-token"):
        client = MlflowClient(tracking, registry_uri=tracking)
        experiment = client.get_experiment_by_name(f"/Users/alice/{name}").experiment_id
        run = client.create_run(experiment).info.run_id
        client.log_metric(run, "accuracy", accuracy)
        client.log_text(run, "weights", "model/weights.txt")
        version = client.create_model_version(name, f"runs:/{run}/model", run_id=run).version
        if card is not None:
            save_card(client, name, version, card)
    return str(version)


def evidence_of(
    tracking: str, monkeypatch: pytest.MonkeyPatch, name: str, version: str, token: str = "governance-token"
):
    with as_token(monkeypatch, token):
        return MlflowEvidence(tracking).evidence(name, version)


def test_the_service_reads_a_complete_card_and_the_runs_metrics(tracking, monkeypatch):
    name, version = alices_model(tracking, monkeypatch, None)
    with as_token(monkeypatch, "alice-token"):
        save_card(MlflowClient(tracking, registry_uri=tracking), name, version, complete_card(name))
    found = evidence_of(tracking, monkeypatch, name, version)
    assert (found.available, found.card_present, found.completeness, found.missing) == (True, True, 1.0, ())
    assert (found.risk, dict(found.metrics)) == ("medium", {"accuracy": 0.91})


def test_a_partial_card_is_read_with_what_it_misses(tracking, monkeypatch):
    name, version = alices_model(tracking, monkeypatch, partial_card("x"))
    found = evidence_of(tracking, monkeypatch, name, version)
    assert found.card_present and found.completeness < 1
    assert found.missing == ("fairness.evaluations", "risk_rating")


def test_a_version_without_a_card_is_evidence_of_no_card(tracking, monkeypatch):
    name, version = alices_model(tracking, monkeypatch, None)
    found = evidence_of(tracking, monkeypatch, name, version)
    assert (found.available, found.card_present, dict(found.metrics)) == (True, False, {"accuracy": 0.91})


def test_a_card_changed_behind_the_registrys_back_is_no_evidence(tracking, monkeypatch):
    name, version = alices_model(tracking, monkeypatch, complete_card("x"))
    with as_token(monkeypatch, "alice-token"):
        client = MlflowClient(tracking, registry_uri=tracking)
        run = client.get_model_version(name, version).run_id
        # alice owns the run: she can overwrite the card's file, not its digest tag's meaning
        client.log_text(run, '{"schema_version": "1", "model_details": {"name": "forged"}}', card_path(version))
    found = evidence_of(tracking, monkeypatch, name, version)
    assert not found.available
    assert "altered" in found.problems[0]


def test_a_missing_model_version_is_unavailable_saying_so(tracking, monkeypatch):
    found = evidence_of(tracking, monkeypatch, "no-such-model", "1")
    assert not found.available and "no-such-model" in found.problems[0]


def test_a_person_named_like_the_service_reads_nothing(tracking, monkeypatch):
    name, version = alices_model(tracking, monkeypatch, complete_card("x"))
    found = evidence_of(tracking, monkeypatch, name, version, token="imposter-token")
    assert not found.available


def set_production(tracking: str, monkeypatch: pytest.MonkeyPatch, name: str, version: str) -> None:
    """Point ``production`` at ``version``, as governance's deployments do (people may not)."""
    with as_token(monkeypatch, "governance-token"):
        MlflowClient(tracking, registry_uri=tracking).set_registered_model_alias(name, "production", version)


def test_the_service_reads_the_card_itself_and_what_the_production_alias_names(tracking, monkeypatch):
    name, first = alices_model(tracking, monkeypatch, complete_card("x"))
    with as_token(monkeypatch, "governance-token"):
        source = MlflowEvidence(tracking)
        assert source.alias_version(name, "production") is None
        assert source.alias_version("no-such-model", "production") is None
    set_production(tracking, monkeypatch, name, first)
    with as_token(monkeypatch, "governance-token"):
        assert (source.alias_version(name, "production"), source.alias_version(name, "staging")) == (first, None)
        assert source.evidence(name, first).card == complete_card("x")
    with as_token(monkeypatch, "imposter-token"), pytest.raises(Unavailable, match="cannot say which version"):
        source.alias_version(name, "production")


def test_the_decision_page_weighs_the_version_against_production_read_from_mlflow(
    tracking, monkeypatch, running: Running
):
    name, first = alices_model(tracking, monkeypatch, complete_card("ranker"))  # its run logged 0.91
    second = alices_version(tracking, monkeypatch, name, complete_card("ranker", accuracy=0.93), accuracy=0.93)
    set_production(tracking, monkeypatch, name, first)
    monkeypatch.setitem(running.app.settings, "evidence", MlflowEvidence(tracking))
    body = {"kind": "deploy-production", "model": name, "version": second, "justification": "better"}
    with running.client("alice-token") as c:
        created = c.post("api/requests", json=body).json()
    with as_token(monkeypatch, "governance-token"), cookie_client(running, "carol-token") as carol:
        page = carol.get(f"requests/{created['id']}", headers={"Sec-Fetch-Mode": "navigate"})
    assert page.status_code == 200
    assert "100% filled for production (complete); risk: medium." in page.text
    assert "<th>Owners</th><td>alice (alice@example.com)</td>" in page.text
    assert f"In production: version {first} (the registered model&#x27;s alias)." in page.text
    assert "<tr><td>accuracy</td><td>0.93</td><td>0.91</td><td>+0.02</td></tr>" in page.text


# --- the approved copy ---------------------------------------------------------------------------


def test_the_approved_copy_is_governances_own_and_its_digest_binds_it(tracking, monkeypatch, tmp_path):
    from hubforge.hub.governance.snapshots import ModelSnapshots
    from hubforge.hub.serving.digest import tree_digest

    # registered with MLflow's process-wide URIs put back after, as in the service (where none is set)
    model = register_model(tracking, "alice-token", "alice", prefix="ranker")
    name, version = model.name, model.version
    snapshots = ModelSnapshots(tmp_path / "deployments", tracking)
    with as_token(monkeypatch, "governance-token"):
        first = snapshots.take(name, version)
        again = snapshots.take(name, version)
    assert (first.path / "MLmodel").is_file()
    assert first.digest == again.digest == tree_digest(first.path) and first.path == again.path
    assert first.digest.startswith("sha256:") and len(first.digest) == 71
    # a copy altered on disk is noticed, not served
    (first.path / "MLmodel").write_text("flavors: {}\n")
    with as_token(monkeypatch, "governance-token"), pytest.raises(Exception, match="altered"):
        snapshots.take(name, version)


def test_no_copy_of_a_version_that_does_not_exist(tracking, monkeypatch, tmp_path):
    from hubforge.hub.governance.snapshots import ModelSnapshots, SnapshotFailed

    with as_token(monkeypatch, "governance-token"), pytest.raises(SnapshotFailed, match="cannot copy"):
        ModelSnapshots(tmp_path, tracking).take("no-such-model", "1")
