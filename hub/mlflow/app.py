"""MLflow's tracking server behind JupyterHub auth: ``mlflow server --app-name hubforge``.

``--app-name`` makes MLflow run ``uvicorn --factory ...:create_app`` in every worker
(the ``mlflow.app`` entry point ``hubforge``); ``--static-prefix /services/mlflow``
puts MLflow's UI and its API (``.../api/2.0/mlflow/...``, ``.../ajax-api/...``) under
the path the proxy forwards. :func:`create_app` puts MLflow behind
:class:`~.gate.HubGate`, filters its searches (:mod:`.search`), guards its stores
(:mod:`.store`) and records runs and models in the audit trail (:mod:`.audit`) when the
hub started it (``HUBFORGE_DATA`` names the platform's data folder).
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from contextlib import contextmanager

from jupyterhub.services.auth import HubOAuth

from hubforge.contract import DATA_ENV
from hubforge.errors import ConfigError

from . import internals
from .audit import service_spool
from .gate import SERVICE_ENV, TOKEN_CACHE_SECONDS, HubGate, current_principal, install_flask_hook
from .store import install as guard_stores

__all__ = ["create_app"]


def _hub_auth() -> HubOAuth:
    """HubOAuth from the hub-service environment; ConfigError naming what is missing."""
    for name in SERVICE_ENV:
        if not os.environ.get(name):
            raise ConfigError(f"{name} is unset: run MLflow as a hub-managed service")
    hub_auth = HubOAuth(cache_max_age=TOKEN_CACHE_SECONDS)
    if not hub_auth.access_scopes:
        raise ConfigError(
            "JUPYTERHUB_OAUTH_ACCESS_SCOPES and JUPYTERHUB_SERVICE_NAME are unset: "
            "no scope would grant access to MLflow"
        )
    return hub_auth


def _check_server(prefix: str) -> None:
    """Refuse to start when MLflow serves another prefix or runs under WSGI."""
    static_prefix = internals.static_prefix()
    if static_prefix.rstrip("/") + "/" != prefix:
        raise ConfigError(
            f"start mlflow server with --static-prefix {prefix.rstrip('/')} "
            f"(JUPYTERHUB_SERVICE_PREFIX), not {static_prefix or 'none'!r}"
        )
    if internals.server_interface() != "uvicorn":
        raise ConfigError("the hubforge MLflow app runs under uvicorn only: drop --gunicorn-opts and --waitress-opts")


def create_app() -> HubGate:
    """The ``mlflow.app`` entry point ``hubforge``: MLflow behind :class:`~.gate.HubGate`."""
    with _startup_heap():
        hub_auth = _hub_auth()
        _check_server(hub_auth.base_url)  # imports MLflow's server package
        from mlflow.server import app as flask_app
        from mlflow.server.fastapi_app import create_fastapi_app

        from hubforge import proxies
        from hubforge.config import load_config

        cfg = load_config()
        audit = service_spool(cfg.data_dir if os.environ.get(DATA_ENV) else None)
        gate = HubGate(create_fastapi_app(flask_app), hub_auth, cfg.group_personas(), audit, proxies.from_env())
        install_flask_hook(flask_app, gate.exempt)
        guard_stores(current_principal)
    return gate


@contextmanager
def _startup_heap() -> Iterator[None]:
    """Build the server without collecting as it grows, then keep what it built (about half a
    million objects: MLflow's app, its stores, SQLAlchemy's mappers) out of every later full
    garbage collection.

    CPython scans its whole heap each time the objects that survived since the last scan
    reach a quarter of it: five to seven times while MLflow's server imports, 0.65 s of a
    1.8 s import, where the whole build leaves some 2,600 unreachable objects. So
    collections wait until the app is built (and resume however the build ends), and one
    collection follows.

    Afterwards each request leaves long-lived objects behind (caches, pooled connections),
    and every so many of them CPython would scan the whole heap: 0.3 s on two idle cores,
    twice that on busy ones, during which this worker answers nobody. Frozen, the scan
    covers what came after the start only.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
    gc.collect()
    gc.freeze()
