"""Model cards stored with registered model versions in MLflow.

A card is the canonical JSON (:func:`~hubforge.modelcard.card.canonical_json`) logged
as an artifact of the model version's source run, at :func:`card_path`, plus summary
tags on the model version (:data:`CARD_TAGS`). The digest tag makes a later change
to the artifact visible: :func:`load_card` refuses a card whose bytes no longer
match it.

Only MLflow's public client API is used, through the client the caller passes: the
services call MLflow through the platform's MLflow gate as the person, so MLflow's
permissions decide who may read or write a card. MLflow errors are translated into
hubforge's refusals (:mod:`hubforge.errors`).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow.exceptions import MlflowException

from hubforge.errors import Conflict, Forbidden, Invalid, NotFound, Refusal, Unavailable

from .card import MAX_CARD_BYTES, canonical_json, check_card, completeness, empty_card, parse_card

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import DatasetInput, Run

__all__ = [
    "CARD_TAGS",
    "TAG_COMPLETENESS",
    "TAG_DIGEST",
    "TAG_PATH",
    "TAG_RISK",
    "TAG_UPDATED",
    "CardAltered",
    "SavedCard",
    "card_path",
    "load_card",
    "prefill_from_run",
    "save_card",
]

#: sha256 (hex) of the card artifact's bytes.
TAG_DIGEST = "hubforge.card.digest"
#: ``completeness(card).score`` over PRODUCTION_FIELDS, as text ("1.0", "0.8182").
TAG_COMPLETENESS = "hubforge.card.completeness"
#: The card's risk_rating, or "unrated".
TAG_RISK = "hubforge.card.risk"
#: The artifact path of the card in the source run (:func:`card_path`).
TAG_PATH = "hubforge.card.path"
#: When the card was saved: ISO 8601, UTC, to the second.
TAG_UPDATED = "hubforge.card.updated"
#: The model version tags :func:`save_card` sets (the digest last).
CARD_TAGS = (TAG_PATH, TAG_COMPLETENESS, TAG_RISK, TAG_UPDATED, TAG_DIGEST)

#: MLflow error codes -> the refusal each becomes; any other code: Unavailable.
_REFUSALS: Mapping[str, type[Refusal]] = {
    "RESOURCE_DOES_NOT_EXIST": NotFound,
    "NOT_FOUND": NotFound,
    "PERMISSION_DENIED": Forbidden,
    "UNAUTHENTICATED": Forbidden,
    "INVALID_PARAMETER_VALUE": Invalid,
    "BAD_REQUEST": Invalid,
    "RESOURCE_ALREADY_EXISTS": Conflict,
}
#: Run inputs' ``mlflow.data.context`` -> the card's dataset split.
_SPLITS = {"train": "training", "training": "training", "val": "validation", "validation": "validation"}
_SPLITS |= {"eval": "evaluation", "evaluation": "evaluation", "test": "test", "testing": "test"}
#: Run tags and params that name the model's architecture, by preference.
_ARCHITECTURE_TAGS = ("estimator_class", "estimator_name")
_ARCHITECTURE_PARAMS = ("model_architecture", "architecture", "model_type", "model_class", "estimator", "model")
_SHORT = 500


class CardAltered(Conflict):
    """The stored card no longer matches what was saved (digest, path or artifact): 409."""


@dataclass(frozen=True)
class SavedCard:
    """Where :func:`save_card` put a card, and the summary it tagged the model version with."""

    name: str
    version: str
    run_id: str
    path: str
    digest: str
    completeness: float
    risk: str
    updated: str


def card_path(version: str | int) -> str:
    """The card's artifact path in the model version's source run."""
    return f"model_card/{version}/card.json"


@contextmanager
def _translated(what: str) -> Iterator[None]:
    """MLflow's errors inside as hubforge refusals whose message starts with ``what``."""
    try:
        yield
    except MlflowException as exc:
        refusal = _REFUSALS.get(str(exc.error_code), Unavailable)
        raise refusal(f"{what}: {_line(str(exc.message), 300)}") from exc


def _line(text: str, limit: int = _SHORT) -> str:
    """``text`` as one line of at most ``limit`` characters (control characters become spaces)."""
    flat = " ".join(re.sub(r"[\x00-\x1f\x7f]", " ", text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


# --- prefill ------------------------------------------------------------------------


def prefill_from_run(client: MlflowClient, run_id: str, name: str | None = None) -> dict[str, Any]:
    """A new valid card filled from what an MLflow run recorded.

    ``name`` (default: the run's name) names the model; the run's description becomes
    the overview, ``mlflow.user`` the owner, params the hyperparameters (and the
    architecture, from sklearn autolog's ``estimator_class`` tag or a param such as
    ``model_type``), finite metrics the performance metrics, and the dataset inputs
    the training datasets (context ``training`` or none) or evaluation data (other
    contexts). A person completes the rest.
    """
    with _translated(f"cannot read run {run_id}"):
        run = client.get_run(run_id)
    card = empty_card(_line(name or run.info.run_name or run_id) or run_id)
    tags = run.data.tags
    if tags.get("mlflow.note.content", "").strip():
        card["model_details"]["overview"] = tags["mlflow.note.content"][:20_000]
    if tags.get("mlflow.user", "").strip():
        card["model_details"]["owners"] = [{"name": _line(tags["mlflow.user"])}]
    training, other = _datasets(run)
    parameters = {"model_architecture": _architecture(tags, run.data.params), "hyperparameters": _params(run)}
    parameters["data"] = other
    _put(card, "model_parameters", parameters)
    _put(card, "quantitative_analysis", {"performance_metrics": _metrics(run.data.metrics)})
    _put(card, "training_data", {"datasets": training})
    return check_card(card)


def _put(card: dict[str, Any], section: str, fields: Mapping[str, Any]) -> None:
    filled = {key: value for key, value in fields.items() if value}
    if filled:
        card[section] = filled


def _architecture(tags: Mapping[str, str], params: Mapping[str, str]) -> str | None:
    for source, keys in ((tags, _ARCHITECTURE_TAGS), (params, _ARCHITECTURE_PARAMS)):
        for key in keys:
            if source.get(key, "").strip():
                return _line(source[key])
    return None


def _params(run: Run) -> list[dict[str, str]]:
    items = sorted(run.data.params.items())[:1000]
    return [{"name": _line(key), "value": _line(value)} for key, value in items if _line(key)]


def _metrics(metrics: Mapping[str, float]) -> list[dict[str, Any]]:
    finite = [(key, value) for key, value in sorted(metrics.items()) if math.isfinite(value) and _line(key)]
    return [{"type": _line(key), "value": value} for key, value in finite[:1000]]


def _datasets(run: Run) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The run's dataset inputs as card datasets: (training, every other split)."""
    training: list[dict[str, Any]] = []
    other: list[dict[str, Any]] = []
    seen: set[tuple[str, str, str]] = set()
    for item in _inputs(run):
        dataset = _dataset(item)
        key = (dataset["name"], dataset.get("digest", ""), dataset["split"])
        if key not in seen:
            seen.add(key)
            (training if dataset["split"] == "training" else other).append(dataset)
    return training[:200], other[:200]


def _inputs(run: Run) -> Iterable[DatasetInput]:
    inputs = run.inputs.dataset_inputs if run.inputs is not None else None
    return inputs or []


def _dataset(item: DatasetInput) -> dict[str, Any]:
    context = next((tag.value for tag in item.tags or [] if tag.key == "mlflow.data.context"), "")
    split = _SPLITS.get(context.strip().lower(), "other" if context.strip() else "training")
    found = item.dataset
    out = {"name": _line(found.name or "") or "unnamed", "split": split}
    source, digest = _source(found.source_type, found.source), _line(found.digest or "")
    return out | ({"source": source} if source else {}) | ({"digest": digest} if digest else {})


def _source(source_type: str | None, source: str | None) -> str:
    """Where an MLflow dataset was read from: the URI or table in its source JSON, or its type."""
    try:
        details = json.loads(source or "")
    except ValueError:
        details = source
    if isinstance(details, dict):
        found = next((details[key] for key in ("uri", "url", "path", "table_name") if details.get(key)), None)
        details = found if isinstance(found, str) else None
    return _line(details if isinstance(details, str) and details.strip() else (source_type or ""))


# --- save and load ------------------------------------------------------------------


def save_card(
    client: MlflowClient, name: str, version: str | int, card: Mapping[str, Any], *, now: datetime | None = None
) -> SavedCard:
    """Validate ``card`` and store it with model version ``name`` ``version``.

    Logs the canonical JSON at :func:`card_path` in the version's source run, then
    sets :data:`CARD_TAGS` on the version (the digest last). Raises
    :class:`~hubforge.modelcard.card.InvalidCard` for an invalid card, ``Conflict``
    for a version with no source run, and MLflow's refusals translated.
    """
    check_card(card)
    body, version = canonical_json(card), str(version)
    what = f"model {name!r} version {version}"
    with _translated(f"cannot read {what}"):
        model_version = client.get_model_version(name, version)
    if not model_version.run_id:
        raise Conflict(f"{what} has no source run to store its model card in")
    path = card_path(version)
    with _translated(f"cannot store the model card of {what}"):
        client.log_text(model_version.run_id, body.decode("utf-8"), path)
    saved = SavedCard(
        name=name,
        version=version,
        run_id=model_version.run_id,
        path=path,
        digest=hashlib.sha256(body).hexdigest(),
        completeness=completeness(card).score,
        risk=str(card.get("risk_rating") or "unrated"),
        updated=(now or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="seconds"),
    )
    _tag(client, saved)
    return saved


def _tag(client: MlflowClient, saved: SavedCard) -> None:
    values = {
        TAG_PATH: saved.path,
        TAG_COMPLETENESS: str(round(saved.completeness, 4)),
        TAG_RISK: saved.risk,
        TAG_UPDATED: saved.updated,
        TAG_DIGEST: saved.digest,
    }
    with _translated(f"cannot tag model {saved.name!r} version {saved.version}"):
        for key in CARD_TAGS:
            client.set_model_version_tag(saved.name, saved.version, key, values[key])


def load_card(client: MlflowClient, name: str, version: str | int) -> dict[str, Any] | None:
    """The card stored with model version ``name`` ``version``; None if it has none.

    Raises :class:`CardAltered` when the artifact is missing or its bytes do not
    match the version's digest tag: the card was changed after it was saved.
    """
    version, what = str(version), f"model {name!r} version {version}"
    with _translated(f"cannot read {what}"):
        model_version = client.get_model_version(name, version)
    tags = model_version.tags or {}
    digest, path = tags.get(TAG_DIGEST), card_path(version)
    if not digest:
        return None
    if tags.get(TAG_PATH, path) != path or not model_version.run_id:
        raise CardAltered(f"the model card of {what} is not where it was saved ({path} in its source run)")
    raw = _download(client, model_version.run_id, path, what)
    if hashlib.sha256(raw).hexdigest() != digest:
        raise CardAltered(f"the model card of {what} was altered after it was saved: it does not match {TAG_DIGEST}")
    return parse_card(raw)


def _download(client: MlflowClient, run_id: str, path: str, what: str) -> bytes:
    missing = CardAltered(f"the model card of {what} is missing from its source run ({path})")
    with tempfile.TemporaryDirectory(prefix="hubforge-card-") as folder:
        try:
            with _translated(f"cannot read the model card of {what}"):
                local = Path(client.download_artifacts(run_id, path, folder))
        except NotFound as exc:
            raise missing from exc
        if not local.is_file():
            raise missing
        if local.stat().st_size > MAX_CARD_BYTES:
            raise CardAltered(f"the model card of {what} is over {MAX_CARD_BYTES} bytes: it was not saved so")
        return local.read_bytes()
