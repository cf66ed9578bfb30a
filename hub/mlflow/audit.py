"""What the MLflow service records in the audit trail: runs created and finished, models
registered, versions created, aliases set and removed.

:class:`~.gate.HubGate` asks :meth:`Recorder.watch` about every request; only the few
routes of :data:`ROUTES`, under every API spelling the gate's rules know
(``api/2.0/``, ``ajax-api/2.0/``, ``api/3.0/``, ``ajax-api/3.0/``), get a
:class:`Watch`: one dict lookup on the method and path, so logging a metric pays
nothing more. A watch learns from the gate who asks (the hub user behind the token,
never a name in the body) and the parameters as the gate parsed them (the query under
the JSON body, any spelling :func:`~.policy.canonical_name` folds: ``experimentId``,
``run_uuid``), keeps the answer's status and, when MLflow succeeded, its small JSON
body (the new run's id is only there), and queues one event just before the answer's
last bytes go out: a client that has its answer can find the event in the spool (once
the writer has it on disk), after those of its earlier requests.

How it ended: ``success`` for a 2xx; ``denied`` for what the hub's policy refused, in
the gate (403, and 400 for what may never be written) or in the guarded stores (403);
``failure`` for anything else MLflow answered.

Spools: ``<data folder>/events/mlflow/`` (emitter ``mlflow``). A second uvicorn worker
would number its events over the first's, and the trail keeps one record per emitter
and number, so each worker holds a lock on its own spool folder: the first free of
``mlflow``, ``mlflow-2``, ``mlflow-3``, ... (the hub runs one worker).
"""

from __future__ import annotations

import atexit
import fcntl
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from starlette.types import Message, Scope, Send

from hubforge.events.spool import EventSpool, open_spool, platform_spool_dir
from hubforge.proxies import ProxyPeers

from .policy import canonical_name

__all__ = [
    "EMITTER",
    "MODEL_SCHEMA",
    "ROUTES",
    "RUN_SCHEMA",
    "Recorder",
    "Watch",
    "outcome",
    "server_of",
    "service_spool",
]

log = logging.getLogger(__name__)

RUN_SCHEMA = "https://events.hubforge.dev/mlflow/run/v1"
MODEL_SCHEMA = "https://events.hubforge.dev/mlflow/model/v1"
EMITTER = "mlflow"
#: The API spellings the gate's rules read as one (``rules.route``).
API_VERSIONS = ("api/2.0/", "ajax-api/2.0/", "api/3.0/", "ajax-api/3.0/")
#: Statuses that end a run (``RunStatus``): an update to one of these finishes it.
TERMINAL = frozenset({"FINISHED", "FAILED", "KILLED"})
#: The most of an answer kept to read ids from; these answers are a few KiB.
MAX_ANSWER = 256 * 1024
#: How many workers' spools a service looks through for a free one.
MAX_WORKERS = 64
LOCK_FILE = ".worker.lock"

Params = Mapping[str, Any]
#: (parameters as the gate parsed them, MLflow's JSON answer or {}) -> (schema, event
#: fields beyond user, outcome and origin), or None when the request records nothing.
Build = Callable[[Params, Mapping[str, Any]], "tuple[str, dict[str, Any]] | None"]


# --- reading parameters and answers -------------------------------------------------------


def _text(value: Any) -> str | None:
    return str(value) if isinstance(value, str | int) and not isinstance(value, bool) and str(value) else None


def _param(params: Params, name: str) -> str | None:
    """``name`` in whichever spelling was sent (the gate refuses two spellings that differ)."""
    key = canonical_name(name)
    for given, value in params.items():
        if canonical_name(given) == key and (text := _text(value)) is not None:
            return text
    return None


def _object(answer: Mapping[str, Any], *path: str) -> Mapping[str, Any]:
    for key in path:
        found = answer.get(key)
        answer = found if isinstance(found, dict) else {}
    return answer


def _fields(**fields: str | None) -> dict[str, str]:
    return {key: value for key, value in fields.items() if value is not None}


# --- the events of each route -------------------------------------------------------------


def run_created(params: Params, answer: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The run (its id from MLflow's answer); until it exists, the experiment it was to go into."""
    info = _object(answer, "run", "info")
    run_id = _text(info.get("run_id"))
    experiment_id = _text(info.get("experiment_id")) or _param(params, "experiment_id")
    resource = {"type": "run", "id": run_id} if run_id else {"type": "experiment", "id": experiment_id or ""}
    return RUN_SCHEMA, {
        "action": "created",
        "resource": resource,
        **_fields(run_id=run_id, experiment_id=experiment_id),
    }


def run_finished(params: Params, answer: Mapping[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """An update that ends the run: the status MLflow stored, or (refused, failed) the one asked."""
    info = _object(answer, "run_info")
    status = _text(info.get("status")) if answer else _param(params, "status")
    if status not in TERMINAL:
        return None  # a rename, or a run still running
    run_id = _text(info.get("run_id")) or _param(params, "run_id")
    experiment_id = _text(info.get("experiment_id"))
    return RUN_SCHEMA, {
        "action": "finished",
        "resource": {"type": "run", "id": run_id or ""},
        **_fields(run_id=run_id, experiment_id=experiment_id, status=status),
    }


def model_registered(params: Params, answer: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    name = _text(_object(answer, "registered_model").get("name")) or _param(params, "name")
    return MODEL_SCHEMA, {
        "action": "registered",
        "resource": {"type": "model", "id": name or ""},
        **_fields(model_name=name),
    }


def version_created(params: Params, answer: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The new version (``<name>/<version>``), numbered by MLflow; until then, the model."""
    version_info = _object(answer, "model_version")
    name = _text(version_info.get("name")) or _param(params, "name")
    version = _text(version_info.get("version"))
    resource_id = f"{name or ''}/{version}" if version else name or ""
    return MODEL_SCHEMA, {
        "action": "version_created",
        "resource": {"type": "model", "id": resource_id},
        **_fields(model_name=name, version=version),
    }


def _alias(action: str) -> Build:
    def build(params: Params, answer: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        name = _param(params, "name")
        fields = _fields(model_name=name, alias=_param(params, "alias"), version=_param(params, "version"))
        return MODEL_SCHEMA, {"action": action, "resource": {"type": "model", "id": name or ""}, **fields}

    return build


#: (method, route under the API version) -> its event.
ROUTES: dict[tuple[str, str], Build] = {
    ("POST", "mlflow/runs/create"): run_created,
    ("POST", "mlflow/runs/create-promptlab-run"): run_created,
    ("POST", "mlflow/runs/update"): run_finished,
    ("POST", "mlflow/registered-models/create"): model_registered,
    ("POST", "mlflow/model-versions/create"): version_created,
    ("POST", "mlflow/registered-models/alias"): _alias("alias_set"),
    ("DELETE", "mlflow/registered-models/alias"): _alias("alias_removed"),
}


def outcome(status: int | None, refused: bool = False) -> str:
    """How a request ended, from its answer's status (None: no answer) and whether the gate
    refused it by the hub's policy."""
    if refused or status == 403:
        return "denied"
    return "success" if status is not None and 200 <= status < 300 else "failure"


def server_of(user: str, scopes: Iterable[str]) -> str | None:
    """The server (``<user>/<name>``) whose hub token carries ``scopes``, or None.

    A server's own token reaches that one server (``access:servers!server=alice/``); a
    person's token reaches all their servers (``access:servers!user=alice``), or none.
    """
    servers = set()
    for scope in scopes:
        name, _, target = scope.partition("!")
        if name != "access:servers":
            continue
        if not target.startswith(f"server={user}/"):
            return None
        servers.add(target.removeprefix("server="))
    return servers.pop() if len(servers) == 1 else None


# --- one request, watched ----------------------------------------------------------------


def _forwarded_for(scope: Scope) -> str | None:
    """The request's ``X-Forwarded-For``, its lines joined as one list."""
    values = [value.decode("latin-1") for name, value in scope.get("headers", ()) if name == b"x-forwarded-for"]
    return ",".join(values) if values else None


class Watch:
    """One audited request: who, with what parameters, and MLflow's answer; emits when done."""

    def __init__(self, spool: EventSpool, build: Build, scope: Scope, peers: ProxyPeers | None = None) -> None:
        self.spool, self.build = spool, build
        client = scope.get("client")
        # On one machine uvicorn has put the proxy's X-Forwarded-For (its peer on loopback,
        # FORWARDED_ALLOW_IPS) into the scope; on Kubernetes ``peers`` knows the proxy pods.
        peer = str(client[0]) if client else None
        self.client_address = peer if peers is None else peers.client_address(peer, _forwarded_for(scope))
        self.user: str | None = None
        self.server: str | None = None
        self.params: Params = {}
        self.status: int | None = None
        self.answer = bytearray()
        self.keep = False
        self.emitted = False

    def seen(self, user: str, scopes: Iterable[str], params: Params) -> None:
        """The gate's word on the request: the hub user, their token's scopes, the parameters."""
        self.user, self.params = user, params
        self.server = server_of(user, scopes)

    def answered(self, status: int, refused: bool = False) -> None:
        """The gate answered itself (``refused``: by the hub's policy); emit now."""
        self.status = status
        self.emit(refused)

    def sending(self, send: Send) -> Send:
        """``send``, keeping the answer's status and its body when it succeeded."""

        async def watched(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.status = message["status"]
                encoded = any(key.lower() == b"content-encoding" for key, _ in message.get("headers", ()))
                self.keep = 200 <= self.status < 300 and not encoded
            elif message["type"] == "http.response.body":
                body = message.get("body", b"")
                if self.keep and len(self.answer) + len(body) <= MAX_ANSWER:
                    self.answer += body
                elif self.keep:
                    self.keep, self.answer = False, bytearray()
                if not message.get("more_body", False):
                    self.emit()
            await send(message)

        return watched

    def emit(self, refused: bool = False) -> None:
        """Queue the request's event, once (nothing when the gate never learnt who asked)."""
        if self.emitted or self.user is None:
            return
        self.emitted = True
        ended = outcome(self.status, refused)
        made = self.build(self.params, _json(self.answer) if ended == "success" else {})
        if made is None:
            return
        schema, fields = made
        origin = _fields(observer="mlflow", server=self.server, client_address=self.client_address)
        self.spool.emit(schema, {"user": self.user, "outcome": ended, "origin": origin, **fields})


def _json(body: bytes | bytearray) -> Mapping[str, Any]:
    try:
        answer = json.loads(body) if body else {}
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}


class Recorder:
    """Which requests the service records, in ``spool``, for a gate serving under ``prefix``."""

    def __init__(self, spool: EventSpool, prefix: str, peers: ProxyPeers | None = None) -> None:
        self.spool, self.peers = spool, peers
        self.routes = {
            (method, prefix + version + route): build
            for (method, route), build in ROUTES.items()
            for version in API_VERSIONS
        }

    def watch(self, scope: Scope) -> Watch | None:
        """A watch of this request, or None when it records nothing (a dict lookup)."""
        build = self.routes.get((scope["method"], scope["path"]))
        return None if build is None else Watch(self.spool, build, scope, self.peers)


# --- the service's spool -----------------------------------------------------------------

_held: list[int] = []  # the lock on this worker's spool folder, held while the process lives


def _claim(folder: Path) -> bool:
    """Whether this process now holds ``folder`` (no other worker does)."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    _held.append(fd)
    return True


def service_spool(data_dir: str | os.PathLike[str] | None) -> EventSpool | None:
    """This worker's audit spool under the platform's ``data_dir``; None (logged) when there is
    no data folder (MLflow not started by the hub: nothing is recorded) or it cannot be written."""
    if data_dir is None:
        log.warning("MLflow's audit events are not recorded: HUBFORGE_DATA is unset (not started by the hub)")
        return None
    try:
        for slot in range(1, MAX_WORKERS + 1):
            emitter = EMITTER if slot == 1 else f"{EMITTER}-{slot}"
            folder = platform_spool_dir(data_dir, emitter)
            if _claim(folder):
                spool = open_spool(folder, emitter)
                if spool is not None:
                    atexit.register(spool.flush, 5.0)  # what is queued reaches the disk at shutdown
                return spool
    except OSError as exc:
        log.error("MLflow's audit events cannot be spooled under %s: %s", data_dir, exc)
        return None
    log.error("MLflow's audit events are not recorded: %d workers hold every spool", MAX_WORKERS)
    return None
