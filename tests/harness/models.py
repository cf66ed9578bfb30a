"""A real scikit-learn model logged and registered through MLflow, as a person does it."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["Registered", "as_person", "register_model"]


@dataclass(frozen=True)
class Registered:
    name: str
    version: str
    run_id: str


@contextlib.contextmanager
def as_person(tracking: str, token: str) -> Iterator[None]:
    """MLflow's client in this process talks to ``tracking`` with ``token``, then as before."""
    import mlflow.tracking._model_registry.utils as registry
    import mlflow.tracking._tracking_service.utils as tracking_utils

    names = ("MLFLOW_TRACKING_TOKEN", "MLFLOW_HTTP_REQUEST_MAX_RETRIES")
    saved_env = {name: os.environ.get(name) for name in names}
    saved = (tracking_utils._tracking_uri, registry._registry_uri)
    os.environ.update({"MLFLOW_TRACKING_TOKEN": token, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"})
    tracking_utils._tracking_uri, registry._registry_uri = tracking, tracking
    try:
        yield
    finally:
        tracking_utils._tracking_uri, registry._registry_uri = saved
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def register_model(
    tracking: str, token: str, user: str, prefix: str = "model", slope: float = 1.0, name: str | None = None
) -> Registered:
    """Fit a one-feature linear model (``y = slope * x``), log and register it as ``user``
    (a new version of ``name``, or a new model named ``<prefix>-<random>``)."""
    import mlflow
    from sklearn.linear_model import LinearRegression

    name = name or f"{prefix}-{uuid.uuid4().hex[:8]}"
    fitted = LinearRegression().fit([[0.0], [1.0], [2.0]], [0.0, slope, 2 * slope])
    with as_person(tracking, token):
        mlflow.set_experiment(f"/Users/{user}/{name}")
        with mlflow.start_run(tags={"mlflow.user": user}) as run:
            mlflow.log_metric("accuracy", 0.9)
            # The flavor's own requirements, named: inferring them loads the model in a new
            # Python (about 2 s of CPU) for an answer these tests never read.
            requirements = mlflow.sklearn.get_default_pip_requirements(include_skops=True)
            info = mlflow.sklearn.log_model(
                fitted, name="model", registered_model_name=name, pip_requirements=requirements
            )
    return Registered(name, str(info.registered_model_version), run.info.run_id)
