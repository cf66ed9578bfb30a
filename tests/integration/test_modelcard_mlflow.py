"""Model cards stored in a real MLflow server (hubforge.modelcard.mlflow_store).

A tiny scikit-learn model is trained, logged with ``mlflow.sklearn.log_model`` and
registered on a plain ``mlflow server``; its card is pre-filled from the run, saved
with the model version, loaded back, and refused once its artifact is altered. The
card as pure data is tested in tests/unit/test_modelcard.py.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import mlflow
import pytest
from mlflow import MlflowClient
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from hubforge.errors import Conflict, NotFound
from hubforge.modelcard import InvalidCard, canonical_json, card_digest, completeness, validate_card
from hubforge.modelcard.mlflow_store import (
    CARD_TAGS,
    TAG_COMPLETENESS,
    TAG_DIGEST,
    TAG_PATH,
    TAG_RISK,
    TAG_UPDATED,
    CardAltered,
    card_path,
    load_card,
    prefill_from_run,
    save_card,
)


@dataclass(frozen=True)
class Trained:
    client: MlflowClient
    name: str
    run_id: str
    model_uri: str
    accuracy: float

    def new_version(self) -> str:
        """Another version of the registered model, from the same run."""
        return str(mlflow.register_model(self.model_uri, self.name).version)


@pytest.fixture(scope="module")
def trained(mlflow_server: Any) -> Iterator[Trained]:
    """A logistic regression on iris, logged and registered as version 1 (the fluent API, as a notebook does)."""
    name = f"iris-{os.urandom(4).hex()}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
        assert mlflow.get_tracking_uri() == mlflow_server.url
        features, target = load_iris(return_X_y=True, as_frame=True)
        frame = features.assign(target=target.astype("float64"))
        client = MlflowClient(mlflow_server.url)
        experiment = client.create_experiment(name)
        note = "Iris species from **four** measurements."
        with mlflow.start_run(experiment_id=experiment, run_name="iris-logreg", description=note) as run:
            mlflow.log_params({"C": 0.5, "max_iter": 300, "model_type": "LogisticRegression"})
            mlflow.log_input(mlflow.data.from_pandas(frame, name="iris-train", targets="target"), context="training")
            holdout = mlflow.data.from_pandas(frame.sample(30, random_state=0), name="iris-holdout", targets="target")
            mlflow.log_input(holdout, context="eval")
            model = LogisticRegression(C=0.5, max_iter=300).fit(features, target)
            accuracy = float(model.score(features, target))
            mlflow.log_metrics({"accuracy": accuracy, "broken": float("nan")})
            info = mlflow.sklearn.log_model(model, name="model", registered_model_name=name)
        yield Trained(client, name, run.info.run_id, info.model_uri, accuracy)


def completed(card: dict[str, Any]) -> dict[str, Any]:
    """The pre-filled card with what a person adds on the governance page."""
    card = json.loads(json.dumps(card))
    card["model_details"]["licenses"] = [{"identifier": "MIT"}]
    card["model_details"]["version"] = {"name": "1", "date": "2025-01-15"}
    card["intended_use"] = "Teaching: telling iris species apart."
    card["out_of_scope_use"] = "Any decision about people."
    card["risk_rating"] = "low"
    card["considerations"] = {
        "limitations": [{"description": "Three species only."}],
        "ethical_considerations": [{"name": "None known", "mitigation_strategy": "Reviewed by carol."}],
    }
    card["fairness"] = {"evaluations": [{"group": "species", "metric": "recall_gap", "value": 0.02}]}
    return card


def test_prefill_reads_params_metrics_datasets_and_owner(trained: Trained) -> None:
    card = prefill_from_run(trained.client, trained.run_id, name=trained.name)
    assert validate_card(card) == []
    run = trained.client.get_run(trained.run_id)
    details, params = card["model_details"], card["model_parameters"]
    assert details["name"] == trained.name
    assert details["owners"] == [{"name": run.data.tags["mlflow.user"]}]
    assert details["overview"] == "Iris species from **four** measurements."
    assert params["model_architecture"] == "LogisticRegression"
    assert {"name": "C", "value": "0.5"} in params["hyperparameters"]
    # The NaN metric is left out: a card holds finite numbers only.
    assert card["quantitative_analysis"]["performance_metrics"] == [{"type": "accuracy", "value": trained.accuracy}]
    [training] = card["training_data"]["datasets"]
    assert (training["name"], training["split"]) == ("iris-train", "training")
    assert training["digest"] == run.inputs.dataset_inputs[0].dataset.digest
    assert [(d["name"], d["split"]) for d in params["data"]] == [("iris-holdout", "evaluation")]


def test_prefill_names_the_card_after_the_run_by_default(trained: Trained) -> None:
    assert prefill_from_run(trained.client, trained.run_id)["model_details"]["name"] == "iris-logreg"


def test_save_logs_the_canonical_card_and_tags_the_version(trained: Trained) -> None:
    card = completed(prefill_from_run(trained.client, trained.run_id, name=trained.name))
    when = datetime(2025, 1, 15, 9, 30, tzinfo=UTC)
    saved = save_card(trained.client, trained.name, 1, card, now=when)

    assert (saved.version, saved.run_id, saved.path) == ("1", trained.run_id, "model_card/1/card.json")
    assert saved.digest == card_digest(card) and saved.completeness == 1.0 == completeness(card).score
    tags = trained.client.get_model_version(trained.name, "1").tags
    assert {key: tags[key] for key in CARD_TAGS} == {
        TAG_DIGEST: card_digest(card),
        TAG_COMPLETENESS: "1.0",
        TAG_RISK: "low",
        TAG_PATH: "model_card/1/card.json",
        TAG_UPDATED: "2025-01-15T09:30:00+00:00",
    }
    artifacts = [a.path for a in trained.client.list_artifacts(trained.run_id, "model_card/1")]
    assert artifacts == ["model_card/1/card.json"]
    assert load_card(trained.client, trained.name, "1") == card


def test_an_incomplete_card_is_saved_with_its_score(trained: Trained) -> None:
    version = trained.new_version()
    card = prefill_from_run(trained.client, trained.run_id, name=trained.name)
    saved = save_card(trained.client, trained.name, version, card)
    tags = trained.client.get_model_version(trained.name, version).tags
    assert float(tags[TAG_COMPLETENESS]) == pytest.approx(completeness(card).score, abs=1e-4) == saved.completeness
    assert 0 < saved.completeness < 1
    assert tags[TAG_RISK] == "unrated"
    # Each version's card is its own artifact in the shared source run.
    assert load_card(trained.client, trained.name, version) == card
    assert load_card(trained.client, trained.name, version) != load_card(trained.client, trained.name, "1")


def test_a_card_altered_after_saving_is_refused(trained: Trained) -> None:
    version = trained.new_version()
    card = completed(prefill_from_run(trained.client, trained.run_id, name=trained.name))
    save_card(trained.client, trained.name, version, card)

    forged = json.loads(canonical_json(card))
    forged["risk_rating"] = "high"
    trained.client.log_text(trained.run_id, canonical_json(forged).decode(), card_path(version))
    with pytest.raises(CardAltered, match="altered after it was saved") as caught:
        load_card(trained.client, trained.name, version)
    assert isinstance(caught.value, Conflict) and "\n" not in str(caught.value)

    # Saving again (through the card store, as a person would) makes it whole.
    save_card(trained.client, trained.name, version, forged)
    assert load_card(trained.client, trained.name, version) == forged


def test_a_digest_tag_without_its_artifact_is_refused(trained: Trained) -> None:
    version = trained.new_version()
    trained.client.set_model_version_tag(trained.name, version, TAG_DIGEST, "0" * 64)
    with pytest.raises(CardAltered, match="missing"):
        load_card(trained.client, trained.name, version)


def test_a_version_without_a_card_has_none(trained: Trained) -> None:
    assert load_card(trained.client, trained.name, trained.new_version()) is None


def test_an_invalid_card_is_refused_before_anything_is_written(trained: Trained) -> None:
    version = trained.new_version()
    card = completed(prefill_from_run(trained.client, trained.run_id, name=trained.name))
    card["quantitative_analysis"]["performance_metrics"][0]["value"] = "0.97"
    with pytest.raises(InvalidCard, match=r"performance_metrics\[0\]\.value: must be a number"):
        save_card(trained.client, trained.name, version, card)
    assert not set(CARD_TAGS) & set(trained.client.get_model_version(trained.name, version).tags)
    assert trained.client.list_artifacts(trained.run_id, f"model_card/{version}") == []


def test_mlflow_errors_become_refusals(trained: Trained) -> None:
    with pytest.raises(NotFound, match="cannot read model 'no-such-model' version 1"):
        load_card(trained.client, "no-such-model", 1)
    with pytest.raises(NotFound, match="cannot read run"):
        prefill_from_run(trained.client, "0" * 32)
