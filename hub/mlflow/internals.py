"""Every touchpoint hubforge has with MLflow's private APIs, in one module.

MLflow's tracking server offers no public hook for what the platform needs: its
stores to guard, its request parsing to filter searches with, its GraphQL auth
middleware, and the names of its Flask views. Each function here is one such use,
named for what it does, with the private name it relies on in its body. An MLflow
upgrade that renames one breaks here first, and ``tests/integration/test_mlflow_store.py``
(which reads MLflow's handlers) and ``test_mlflow_app.py`` fail on it.

Pinned to MLflow 3.17 (setup.cfg). Public MLflow APIs are used directly elsewhere.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

__all__ = [
    "SCORING_APP",
    "SCORING_MODEL_ENV",
    "SEARCH_VIEWS",
    "catch_mlflow_exception",
    "registry_store",
    "request_message",
    "server_interface",
    "set_graphql_middleware",
    "static_prefix",
    "tracking_store",
    "wrap_response",
]

#: The Flask view functions (by endpoint name) of the searches the platform filters.
SEARCH_VIEWS = {
    "experiments": "_search_experiments",
    "registered_models": "_search_registered_models",
    "model_versions": "_search_model_versions",
}


#: MLflow's scoring server as an ASGI app (what ``mlflow models serve`` has uvicorn run), and
#: the variable naming the model it loads (``mlflow.pyfunc.scoring_server._SERVER_MODEL_PATH``,
#: which ``mlflow models serve`` sets for it). The serving service runs uvicorn with these
#: itself: the CLI would otherwise stay alive for every served version as uvicorn's idle
#: parent, one more MLflow import (seconds of CPU) and its memory per model.
SCORING_APP = "mlflow.pyfunc.scoring_server.app:app"
SCORING_MODEL_ENV = "__pyfunc_model_path__"


def tracking_store() -> Any:
    """The tracking store this server's handlers use (opened on first use)."""
    from mlflow.server import handlers

    return handlers._get_tracking_store()


def registry_store() -> Any:
    """The model registry store this server's handlers use (opened on first use)."""
    from mlflow.server import handlers

    return handlers._get_model_registry_store()


def request_message(message: Any) -> Any:
    """The current Flask request parsed into ``message`` (a protobuf) as MLflow's handlers parse it."""
    from mlflow.server import handlers

    return handlers._get_request_message(message)


def wrap_response(response: Any) -> Any:
    """A protobuf answer as the Flask response MLflow's handlers send."""
    from mlflow.server import handlers

    return handlers._wrap_response(response)


def catch_mlflow_exception(view: Callable[..., Any]) -> Callable[..., Any]:
    """``view`` answering MLflow's errors as MLflow's own handlers do."""
    from mlflow.server import handlers

    wrapped: Callable[..., Any] = handlers.catch_mlflow_exception(view)
    return wrapped


def set_graphql_middleware(factory: Callable[[], list[Any]]) -> None:
    """Make MLflow's GraphQL endpoint run the middlewares ``factory`` returns on every field."""
    from mlflow.server import handlers

    handlers._get_graphql_auth_middleware = factory


def static_prefix() -> str:
    """The ``--static-prefix`` ``mlflow server`` passed to its workers ('' when none)."""
    from mlflow.server.handlers import STATIC_PREFIX_ENV_VAR

    return os.environ.get(STATIC_PREFIX_ENV_VAR, "")


def server_interface() -> str:
    """The server ``mlflow server`` runs the app under: uvicorn (the default), gunicorn or waitress."""
    return os.environ.get("_MLFLOW_SGI_NAME", "uvicorn")
