"""Kernel-side hubforge: ipywidgets panels for model governance.

- :class:`ModelCardEditor`: a form for every field of a model card, its completeness for
  production, inline validation errors, a rendered preview; saved with the model version
  in MLflow.
- :class:`DeployPanel`: ask for a model version's deployment (the deploy policy's
  pre-check first), then follow the request until it serves; score a sample.
- :class:`ApprovalQueue`: the requests awaiting one's decision, with the model card, the
  metrics and their difference to production; Approve and Reject open the request's
  decision page, where the person decides.
- :class:`FeatureBrowser`: the feature store's catalog, searched as you type: a view's
  schema, TTL, freshness and lineage, restricted data marked, and the code that reads it.

They run in a person's kernel and talk to the platform only through its REST APIs, with
the person's server token (:mod:`.client`): a widget can do nothing that token could not
do with ``curl``, and that token cannot decide a request. See docs/reference/widgets.md.

The names are imported on first use, so ``import hubforge.widgets`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .approval_queue import ApprovalQueue, metric_diff
    from .client import FeaturesClient, GovernanceClient, WidgetError, mlflow_client
    from .deploy_panel import DeployPanel, Progress, deploy_progress
    from .feature_browser import FeatureBrowser
    from .modelcard_editor import ModelCardEditor

__all__ = [
    "ApprovalQueue",
    "DeployPanel",
    "FeatureBrowser",
    "FeaturesClient",
    "GovernanceClient",
    "ModelCardEditor",
    "Progress",
    "WidgetError",
    "deploy_progress",
    "metric_diff",
    "mlflow_client",
]

#: Each public name -> the module defining it.
_HOMES = {
    "ApprovalQueue": "approval_queue",
    "metric_diff": "approval_queue",
    "FeaturesClient": "client",
    "GovernanceClient": "client",
    "WidgetError": "client",
    "mlflow_client": "client",
    "DeployPanel": "deploy_panel",
    "Progress": "deploy_panel",
    "deploy_progress": "deploy_panel",
    "ModelCardEditor": "modelcard_editor",
    "FeatureBrowser": "feature_browser",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
