"""The evidence of a model version read from MLflow: its model card and its run's metrics.

The governance service reads them as its own hub identity (the ``hubforge-governance`` role:
MLflow access and ``custom:audit:read``, read-only), through the MLflow service's own
permission gate, like any other client. The card is read with
:func:`hubforge.modelcard.mlflow_store.load_card`, which checks it against the digest saved
with it, so a card changed behind the registry's back counts as no evidence.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from hubforge.errors import HubforgeError
from hubforge.modelcard.card import completeness
from hubforge.modelcard.mlflow_store import load_card

from .evidence import Evidence, unavailable

__all__ = ["MlflowEvidence", "configure_mlflow_client"]

#: MLflow's client retries and waits for minutes by default; a policy check must answer.
CLIENT_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "15"}


def configure_mlflow_client(token: str, environ: Mapping[str, str] | None = None) -> None:
    """Let MLflow's client in this process call the MLflow service with the hub ``token``."""
    env = os.environ if environ is None else environ
    os.environ["MLFLOW_TRACKING_TOKEN"] = token
    for name, value in CLIENT_ENV.items():
        os.environ[name] = env.get(name, value)


class MlflowEvidence:
    """Reads a model version's card and metrics from the MLflow service at ``url``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client = MlflowClient(tracking_uri=url, registry_uri=url)

    def evidence(self, model: str, version: str) -> Evidence:
        """The card's completeness and risk, and the metrics of the version's source run."""
        what = f"model {model!r} version {version}"
        try:
            card = load_card(self.client, model, version)
            run_id = self.client.get_model_version(model, version).run_id
            metrics = dict(self.client.get_run(run_id).data.metrics) if run_id else {}
        except HubforgeError as exc:
            return unavailable(str(exc))
        except MlflowException as exc:
            return unavailable(f"MLflow cannot answer for {what}: {exc.message.splitlines()[0][:300]}")
        if card is None:
            return Evidence(available=True, metrics=metrics)
        filled = completeness(card)
        return Evidence(
            available=True,
            card_present=True,
            completeness=filled.score,
            missing=tuple(filled.missing),
            risk=card.get("risk_rating"),
            metrics=metrics,
        )
