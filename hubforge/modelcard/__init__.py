"""Model cards: a pure library shared by the governance service, the kernel widgets and the CLI.

- :mod:`hubforge.modelcard.card`: the canonical card (``card.schema.json``), its
  validation (:func:`validate_card`, :func:`check_card`), completeness against
  :data:`PRODUCTION_FIELDS`, canonical JSON and digest.
- :mod:`hubforge.modelcard.export`: Model Card Toolkit JSON (schema v0.0.2, vendored),
  a Hugging Face README and a standalone HTML page with sanitized markdown.
- :mod:`hubforge.modelcard.mlflow_store`: storage with a registered model version in
  MLflow through a caller's ``MlflowClient``. It imports MLflow, so it is not
  imported here: ``from hubforge.modelcard.mlflow_store import save_card``.

Nothing here imports the hub, the user's server or the widgets: each of them imports
this package. See docs/reference/modelcard.md.
"""

from .card import (
    MAX_CARD_BYTES,
    PRODUCTION_FIELDS,
    SCHEMA_VERSION,
    CardError,
    Completeness,
    InvalidCard,
    canonical_json,
    card_digest,
    check_card,
    completeness,
    empty_card,
    parse_card,
    schema,
    spdx_problem,
    validate_card,
)
from .export import MCT_SCHEMA_VERSION, mct_schema, render_markdown, sanitize_html, to_html, to_huggingface, to_mct

__all__ = [
    "MAX_CARD_BYTES",
    "MCT_SCHEMA_VERSION",
    "PRODUCTION_FIELDS",
    "SCHEMA_VERSION",
    "CardError",
    "Completeness",
    "InvalidCard",
    "canonical_json",
    "card_digest",
    "check_card",
    "completeness",
    "empty_card",
    "mct_schema",
    "parse_card",
    "render_markdown",
    "sanitize_html",
    "schema",
    "spdx_problem",
    "to_html",
    "to_huggingface",
    "to_mct",
    "validate_card",
]
