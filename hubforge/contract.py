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
from typing import Any, Final

__all__ = [
    "APPS_URL_ENV",
    "AUDIT_CELL_SOURCE_ENV",
    "AUDIT_DIR_ENV",
    "AUDIT_URL_ENV",
    "CLOSE_BUDGET_ENV",
    "CONFIG_ENV",
    "DATA_ENV",
    "DEMO_PASSWORD_ENV",
    "EX_TEMPFAIL",
    "FEATURES_URL_ENV",
    "FIT_LOGGER_MODULE",
    "GOVERNANCE_URL_ENV",
    "IMAGE_ENV",
    "INSTANCE_ENV",
    "ISOLATION_ENV",
    "ITEM_SCHEMA",
    "JOB_ENV",
    "JOB_RUN_ENV",
    "KERNEL_PYTHON_ENV",
    "KEY",
    "KIND",
    "METRIC",
    "MLFLOW_URL_ENV",
    "NOTEBOOK_ROOT_ENV",
    "ORIGIN_ENV",
    "OUTPUT_NOTEBOOK_ENV",
    "PARAM",
    "PARAMETERS_ENV",
    "PROXY_PEERS_ENV",
    "REPLAY_MODULE",
    "RUN",
    "RUNTIME_ENV",
    "RUN_ID_FILE_ENV",
    "RUN_SCHEMA",
    "RUN_VERSION",
    "SCHEDULER_RUN_SERVICES_ENV",
    "SCHEDULER_URL_ENV",
    "SERVER_NAME_ENV",
    "SERVER_PROGRAMS",
    "SERVICE_BIND_IP_ENV",
    "SERVING_URL_ENV",
    "SPOOL_DIR_ENV",
    "STEP",
    "STR_MAX",
    "SUPERVISED_ENV",
    "TAG",
    "TIER_ENV",
    "TIMESTAMP",
    "TRACKING_ENV",
    "VALUE",
    "Item",
    "item_refusal",
    "metric_item",
    "param_item",
    "switched_off",
    "tag_item",
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
#: Set by ``hubforge.hub.supervised`` on its command (and so on all it starts): the port of
#: the service they belong to, which the next start of that service clears of leftovers.
SUPERVISED_ENV = "HUBFORGE_SUPERVISED"
#: The address a service listens on when it differs from ``JUPYTERHUB_SERVICE_URL``'s host.
SERVICE_BIND_IP_ENV = "HUBFORGE_BIND_IP"
#: Host names (or addresses) of the proxy, comma-separated: a service believes the
#: ``X-Forwarded-For`` of a request only from these (:mod:`hubforge.proxies`).
PROXY_PEERS_ENV = "HUBFORGE_PROXY_PEERS"

# -- hub (spawner) -> a person's server ----------------------------------------------------------

#: The serving router's URL (``.../services/serving``) as the governance service reaches it.
SERVING_URL_ENV = "HUBFORGE_SERVING_URL"
#: The hub's MLflow service URL; set, runs go there under the server's hub token.
MLFLOW_URL_ENV = "HUBFORGE_MLFLOW_URL"
#: The governance service's audit API (``.../services/governance/api/audit/events``); set,
#: the server forwards what it and its kernels record there, under the server's hub token.
AUDIT_URL_ENV = "HUBFORGE_AUDIT_URL"
#: The governance service's URL (``.../services/governance``) as the server reaches it: the
#: widgets submit and follow approval requests there, under the server's hub token.
GOVERNANCE_URL_ENV = "HUBFORGE_GOVERNANCE_URL"
#: The features service's URL (``.../services/features``) as the server reaches it: the
#: feature browser reads the catalog there, under the server's hub token.
FEATURES_URL_ENV = "HUBFORGE_FEATURES_URL"
#: The apps service as a person's server reaches it (``hubforge apps``, and opening an app).
APPS_URL_ENV = "HUBFORGE_APPS_URL"
#: The scheduler as a person's server reaches it (``hubforge schedule``).
SCHEDULER_URL_ENV = "HUBFORGE_SCHEDULER_URL"
#: The services' addresses a scheduled run gets (what people's servers get), as a JSON object:
#: hub -> scheduler.
SCHEDULER_RUN_SERVICES_ENV = "HUBFORGE_SCHEDULER_RUN_SERVICES"
#: ``on`` to record each executed cell's source in the audit trail, not only its sha256.
AUDIT_CELL_SOURCE_ENV = "HUBFORGE_AUDIT_CELL_SOURCE"
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

#: What started the kernel: ``jupyterlab``, ``papermill``, ``scheduler`` or ``voila`` (the run's
#: origin tag).
ORIGIN_ENV = "HUBFORGE_ORIGIN"
#: The scheduled job and the job's run a papermill kernel executes for (``hubforge.job`` and
#: ``hubforge.job_run`` tags of its MLflow run).
JOB_ENV = "HUBFORGE_JOB"
JOB_RUN_ENV = "HUBFORGE_JOB_RUN"
#: The server's root folder, against which notebook paths are relative.
NOTEBOOK_ROOT_ENV = "HUBFORGE_NOTEBOOK_ROOT"
#: The hub's name of the server (``JUPYTERHUB_SERVER_NAME``; empty is the default server).
SERVER_NAME_ENV = "HUBFORGE_SERVER_NAME"
#: The spool root, where kernels leave what MLflow has not acknowledged (see ``pending``).
SPOOL_DIR_ENV = "HUBFORGE_SPOOL_DIR"
#: The server's audit spools root: each kernel keeps its spool in ``kernel-<id>/`` under it.
AUDIT_DIR_ENV = "HUBFORGE_AUDIT_DIR"
#: Seconds a kernel may spend ending its run at shutdown.
CLOSE_BUDGET_ENV = "HUBFORGE_CLOSE_BUDGET"
#: papermill's parameters, a JSON object.
PARAMETERS_ENV = "HUBFORGE_PARAMETERS"
#: A file the kernel writes its MLflow run id to (papermill).
RUN_ID_FILE_ENV = "HUBFORGE_RUN_ID_FILE"
#: Where papermill writes the output notebook.
OUTPUT_NOTEBOOK_ENV = "HUBFORGE_OUTPUT_NOTEBOOK"

# -- commands ------------------------------------------------------------------------------------

#: ``python -m`` this to send what kernels kept while MLflow was away (``--spool DIR``); a
#: person's server runs it, and so does the scheduler after a run, as the run's owner.
REPLAY_MODULE = "hubforge.server_extension.replay"
#: ``python -m`` this to log a kernel's fits beside it (``--spool DIR``): the kernel starts it
#: in a session of its own, and it goes on with its fits after the kernel; a platform stopping
#: waits for it (and for :data:`REPLAY_MODULE`'s runs) before it stops MLflow.
FIT_LOGGER_MODULE = "hubforge.server_extension.fit_logger"
#: The programs a person's server runs, in the local spawner's order of preference:
#: hubforge's (``hubforge.server_extension.singleuser``, which starts faster), then
#: JupyterHub's own; the hub's handover finds people's servers by either.
SERVER_PROGRAMS = ("hubforge-singleuser", "jupyterhub-singleuser")

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


# -- records on disk: kernel -> spool -> server (replay) ------------------------------------------
#
# A kernel spills what MLflow has not acknowledged as *items*, one JSON list per record
# (compact: a spool line holds thousands), and describes the run they belong to in a
# ``run.json`` object; the server's replayer reads both back, from files code run by
# the person could have written. The JSON Schemas below are the contract; the checks
# the readers run (:func:`item_refusal`, ``pending.PendingRun.parse``) are its fast
# implementation, and ``tests/test_contract.py`` holds the two to the same answers.

#: Item kinds, the first field of every item.
METRIC: Final = "m"
PARAM: Final = "p"
TAG: Final = "t"
#: Positions in an item: ``[kind, run id, key, value]``, and for a metric ``timestamp, step``.
KIND, RUN, KEY, VALUE, TIMESTAMP, STEP = range(6)
#: No MLflow field is longer; a longer string is not a record of ours.
STR_MAX = 100_000
#: The version of ``run.json`` this module describes.
RUN_VERSION: Final = 1

#: An item as it crosses the boundary: a JSON list (see :data:`ITEM_SCHEMA`).
Item = list[Any]


def metric_item(run_id: str, key: str, value: float, timestamp: int, step: int) -> Item:
    """A metric record: ``["m", run id, key, value, timestamp ms, step]``."""
    return [METRIC, run_id, key, value, timestamp, step]


def param_item(run_id: str, key: str, value: str) -> Item:
    """A param record: ``["p", run id, key, value]``."""
    return [PARAM, run_id, key, value]


def tag_item(run_id: str, key: str, value: str) -> Item:
    """A tag record: ``["t", run id, key, value]``."""
    return [TAG, run_id, key, value]


def _text(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= STR_MAX


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def item_refusal(item: Any) -> str | None:
    """Why ``item`` (parsed JSON) is not a record of :data:`ITEM_SCHEMA`, or None when it is."""
    if not isinstance(item, list) or not item:
        return "not a list"
    if item[KIND] not in (METRIC, PARAM, TAG):
        return f"kind {item[KIND]!r} is not m, p or t"
    if len(item) != (6 if item[KIND] == METRIC else 4):
        return f"{len(item)} fields, a {item[KIND]!r} record has {6 if item[KIND] == METRIC else 4}"
    if not (_text(item[RUN]) and _text(item[KEY])):
        return "run id and key must be strings"
    if item[KIND] != METRIC:
        return None if _text(item[VALUE]) else "the value must be a string"
    if not isinstance(item[VALUE], int | float) or isinstance(item[VALUE], bool):
        return "a metric's value must be a number"
    if not (_integer(item[TIMESTAMP]) and _integer(item[STEP])):
        return "a metric's timestamp and step must be integers"
    return None


_STRING = {"type": "string", "maxLength": STR_MAX}
_INTEGER = {"type": "integer"}
_NON_NEGATIVE = {"type": "integer", "minimum": 0}

#: One item (JSON Schema, draft 2020-12). NaN and the infinities are valid metric values
#: (MLflow stores them); JSON has no spelling for them, so the files use Python's.
ITEM_SCHEMA: Final[dict[str, Any]] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://hubforge.dev/schemas/spool/item/v1",
    "title": "A metric, param or tag an MLflow run has not acknowledged",
    "oneOf": [
        {
            "type": "array",
            "prefixItems": [{"const": METRIC}, _STRING, _STRING, {"type": "number"}, _INTEGER, _INTEGER],
            "items": False,
            "minItems": 6,
        },
        {
            "type": "array",
            "prefixItems": [{"enum": [PARAM, TAG]}, _STRING, _STRING, _STRING],
            "items": False,
            "minItems": 4,
        },
    ],
}

#: ``run.json`` of a pending entry (JSON Schema, draft 2020-12); a ``live/`` file is the
#: same object with the writing process's ``pid``, ``started``, ``host``, ``spool_file``
#: and ``requirements`` beside it.
RUN_SCHEMA: Final[dict[str, Any]] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://hubforge.dev/schemas/spool/run/v1",
    "title": "The run a pending entry's items belong to, and how it ends",
    "type": "object",
    "required": ["version", "tracking_uri"],
    "properties": {
        "version": {"const": RUN_VERSION},
        "tracking_uri": {**_STRING, "minLength": 1},
        "run_id": {"oneOf": [{"type": "string", "pattern": "^[A-Za-z0-9]{1,64}$"}, {"type": "null"}]},
        "experiment_name": _STRING,
        "tags": {"type": "object", "additionalProperties": {"type": "string"}},
        "start_time": _NON_NEGATIVE,
        "status": {"enum": ["FINISHED", "FAILED", "KILLED", None]},
        "end_time": _NON_NEGATIVE,
        "dropped": _NON_NEGATIVE,
        "id": _STRING,
        "notebook_file": _STRING,
    },
    # A run MLflow has not opened yet is opened by the replayer, in its experiment.
    "if": {"properties": {"run_id": {"type": "null"}}},
    "then": {"properties": {"experiment_name": {"minLength": 1}}, "required": ["experiment_name"]},
}
