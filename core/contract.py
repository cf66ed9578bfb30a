"""What the platform's processes tell each other: one home for every name they share.

The platform runs as several processes that never import each other's state:
``hubforge up`` (the launcher) starts the hub and the services; the hub's spawner
starts each person's server; the server extension starts kernels; kernels leave
spool entries that a server replays later. Everything that crosses one of those
boundaries is named here, so that a reader finds each producer and consumer with
one search, and a change of spelling is one change::

    launcher ──env──▶ hub ──env──▶ services (MLflow, governance)
                       └──spawner env──▶ server ──kernel env──▶ kernel
                                           ▲                       │
                                           └──── spool on disk ◀───┘

This module imports only the standard library: the kernel side imports it on
every kernel start, and the wheel test imports it with nothing else installed.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "CLOSE_BUDGET_ENV",
    "CONFIG_ENV",
    "DATA_ENV",
    "DEMO_PASSWORD_ENV",
    "EX_TEMPFAIL",
    "IMAGE_ENV",
    "INSTANCE_ENV",
    "ISOLATION_ENV",
    "KERNEL_PYTHON_ENV",
    "MLFLOW_URL_ENV",
    "NOTEBOOK_ROOT_ENV",
    "ORIGIN_ENV",
    "OUTPUT_NOTEBOOK_ENV",
    "PARAMETERS_ENV",
    "RUNTIME_ENV",
    "RUN_ID_FILE_ENV",
    "SERVER_NAME_ENV",
    "SERVICE_BIND_IP_ENV",
    "SPOOL_DIR_ENV",
    "TIER_ENV",
    "TRACKING_ENV",
    "switched_off",
    "tracking_on",
]

# -- launcher -> hub and services --------------------------------------------------------------

#: The platform.yaml every process reads (absent: the shipped default alone).
CONFIG_ENV = "HUBFORGE_CONFIG"
#: Overrides the config's ``data_dir``.
DATA_ENV = "HUBFORGE_DATA"
#: JSON of the ports and programs ``hubforge up`` chose, for the hub's config file.
RUNTIME_ENV = "HUBFORGE_RUNTIME"
#: The data folder of the platform a process belongs to: how a later ``hubforge up``
#: finds what a crashed one left running (hub, services, people's servers).
INSTANCE_ENV = "HUBFORGE_INSTANCE"
#: The demo authenticator's shared password.
DEMO_PASSWORD_ENV = "HUBFORGE_DEMO_PASSWORD"
#: How people's servers are isolated (``users``, ``none``, ``pods``), as ``hubforge up`` decided.
ISOLATION_ENV = "HUBFORGE_ISOLATION"
#: The address a service listens on when it differs from ``JUPYTERHUB_SERVICE_URL``'s host.
SERVICE_BIND_IP_ENV = "HUBFORGE_BIND_IP"

# -- hub (spawner) -> a person's server ----------------------------------------------------------

#: The hub's MLflow service URL; set, runs go there under the server's hub token.
MLFLOW_URL_ENV = "HUBFORGE_MLFLOW_URL"
#: The tier the server runs on (its slug).
TIER_ENV = "HUBFORGE_TIER"
#: The tier's tracking switch, ``on`` or ``off`` (:func:`tracking_on` reads it); handed on
#: to every kernel, where it is the kernel's own switch.
TRACKING_ENV = "HUBFORGE_TRACKING"
#: The image key the person chose.
IMAGE_ENV = "HUBFORGE_IMAGE"
#: The Python of the image's environment on one machine, for the server's Python kernels.
KERNEL_PYTHON_ENV = "HUBFORGE_KERNEL_PYTHON"

# -- server -> kernel ------------------------------------------------------------------------------

#: What started the kernel: ``jupyterlab``, ``papermill`` or ``voila`` (the run's origin tag).
ORIGIN_ENV = "HUBFORGE_ORIGIN"
#: The server's root folder, against which notebook paths are relative.
NOTEBOOK_ROOT_ENV = "HUBFORGE_NOTEBOOK_ROOT"
#: The hub's name of the server (``JUPYTERHUB_SERVER_NAME``; empty is the default server).
SERVER_NAME_ENV = "HUBFORGE_SERVER_NAME"
#: The spool root, where kernels leave what MLflow has not acknowledged (see ``pending``).
SPOOL_DIR_ENV = "HUBFORGE_SPOOL_DIR"
#: Seconds a kernel may spend ending its run at shutdown.
CLOSE_BUDGET_ENV = "HUBFORGE_CLOSE_BUDGET"
#: papermill's parameters, a JSON object.
PARAMETERS_ENV = "HUBFORGE_PARAMETERS"
#: A file the kernel writes its MLflow run id to (papermill).
RUN_ID_FILE_ENV = "HUBFORGE_RUN_ID_FILE"
#: Where papermill writes the output notebook.
OUTPUT_NOTEBOOK_ENV = "HUBFORGE_OUTPUT_NOTEBOOK"

# -- exit statuses -------------------------------------------------------------------------------

#: ``hubforge-replay``: data is left because MLflow is away; try again later (sysexits.h).
EX_TEMPFAIL = 75

# -- switches --------------------------------------------------------------------------------------

_OFF = frozenset({"off", "0", "false", "no"})


def switched_off(value: str | None) -> bool:
    """Whether a switch's value says off (``off``, ``0``, ``false``, ``no``; any case, spaces ignored)."""
    return (value or "").strip().lower() in _OFF


def tracking_on(env: Mapping[str, str]) -> bool:
    """Whether ``env`` leaves tracking on: anything but an off value of :data:`TRACKING_ENV`."""
    return not switched_off(env.get(TRACKING_ENV))
