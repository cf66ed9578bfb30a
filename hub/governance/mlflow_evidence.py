"""The evidence of a model version read from MLflow: its model card and its run's metrics.

The governance service reads them as its own hub identity (the ``hubforge-governance`` role:
MLflow access and ``custom:audit:read``, read-only), through the MLflow service's own
permission gate, like any other client. The card is read with
:func:`hubforge.modelcard.mlflow_store.load_card`, which checks it against the digest saved
with it, so a card changed behind the registry's back counts as no evidence. The decision
page reads the same way which version the ``production`` (or ``staging``) alias names.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from hubforge.errors import HubforgeError, Unavailable
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


def _line(exc: MlflowException) -> str:
    """MLflow's message as one line that a policy's reason or a page can carry."""
    return (exc.message.splitlines() or [str(exc.error_code)])[0][:300]


class MlflowEvidence:
    """Reads model versions' cards and metrics, and models' aliases, from the MLflow service at ``url``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client = MlflowClient(tracking_uri=url, registry_uri=url)

    def evidence(self, model: str, version: str) -> Evidence:
        """The card (its completeness and risk, and itself) and the metrics of the version's source run."""
        what = f"model {model!r} version {version}"
        try:
            card = load_card(self.client, model, version)
            run_id = self.client.get_model_version(model, version).run_id
            metrics = dict(self.client.get_run(run_id).data.metrics) if run_id else {}
        except HubforgeError as exc:
            return unavailable(str(exc))
        except MlflowException as exc:
            return unavailable(f"MLflow cannot answer for {what}: {_line(exc)}")
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
            card=card,
        )

    def alias_version(self, model: str, alias: str) -> str | None:
        """The version ``alias`` names; None when it names none or there is no such model;
        :class:`~hubforge.errors.Unavailable` when MLflow cannot answer.

        Read from the registered model's aliases: MLflow answers a missing alias looked up
        directly as an invalid parameter, which would read like any other refusal.
        """
        try:
            aliases = self.client.get_registered_model(model).aliases or {}
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise Unavailable(f"MLflow cannot say which version of {model!r} is {alias}: {_line(exc)}") from exc
        version = aliases.get(alias)
        return str(version) if version is not None else None
