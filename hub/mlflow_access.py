"""Who may do what in MLflow: per-experiment, per-run and per-model permissions.

MLflow has no owners of its own that a hub could trust, so hubforge keeps them:

- an experiment belongs to the person who created it (tag ``hubforge.owner``, set by
  the gate on create; an older experiment under ``/Users/<name>/`` belongs to
  ``<name>``); its owner shares it with hub groups in the tag ``hubforge.shared_with``
  (comma-separated group names);
- a run belongs to the person who created it (``user_id``, which the gate forces);
- a registered model belongs to its creator (``hubforge.owner``) and is shared the same way.

Who may read: the owner, members of a group it is shared with, holders of
``custom:audit:read`` (read-only, everything) and platform admins; registered models
also registry managers (``custom:registry:manage``). Who may write: a run, only its
owner; an experiment (rename, tags, delete), its owner or an admin; new runs in an
experiment, anybody who may read it and holds ``custom:experiments:write``; the
registry's lifecycle (stages, aliases, renames, deletes), registry managers; a model's
description, tags and new versions, its owner too. MLflow features outside tracking
and the registry (the AI gateway, review queues, workspaces, ...) are platform admins'.

:func:`authorize` decides one request from its method, path and parameters, asking a
:class:`Resolver` for the objects it names; the gate calls it before MLflow sees the
request. Searches are filtered where MLflow answers them (:func:`install`): a search
returns only what the person may read, page by page. The same :class:`Check` decides
again inside MLflow's tracking store, on the arguments MLflow calls it with
(:mod:`.mlflow_store`).
"""

from __future__ import annotations

import contextvars
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "OWNER_TAG",
    "SHARED_TAG",
    "USER_TAG",
    "Invalid",
    "Principal",
    "Resolver",
    "StoreResolver",
    "authorize",
    "filtered_page",
    "install",
    "is_trusted",
    "trusted",
]

OWNER_TAG = "hubforge.owner"
SHARED_TAG = "hubforge.shared_with"
ADMIN_ROLE = "platform-admin"
WRITE = "custom:experiments:write"
AUDIT = "custom:audit:read"
REGISTRY = "custom:registry:manage"
PROTECTED_TAGS = frozenset({OWNER_TAG})
#: A run's creator, as MLflow's UI and searches show it: set by the platform when the run is made.
USER_TAG = "mlflow.user"


#: Spellings MLflow's handlers read as another parameter's (after :func:`canonical_name`).
ALIASES = {"runuuid": "runid", "requestid": "traceid"}


def canonical_name(name: str) -> str:
    """One name for every spelling MLflow reads as the same parameter (``run_id``, ``runId``, ``run_uuid``)."""
    key = name.replace("_", "").lower()
    return ALIASES.get(key, key)


class Invalid(str):
    """A refusal of what a request would write, not of who asks: answered 400, not 403."""


#: Tags that say where a run ran, the person's server and its tier: they must be what the
#: hub's record of the person's running servers says (``Principal.servers``).
SERVER_TAG = "hubforge.server"
TIER_TAG = "hubforge.tier"
PLACEMENT_TAGS = (SERVER_TAG, TIER_TAG)


def placement_refusal(who: Principal, tags: Iterable[tuple[Any, Any]], deleting: bool = False) -> Invalid | None:
    """Refuse ``hubforge.server``/``hubforge.tier`` values (of ``(key, value)`` pairs) that the
    hub's record of ``who``'s running servers does not bear out; deleting them always.

    ``hubforge.server`` names one of the person's running servers (``default`` for the
    unnamed one) and ``hubforge.tier`` its tier, or, without a server named alongside,
    the tier of one of them.
    """
    given = {key: value for key, value in tags if key in PLACEMENT_TAGS}
    if not given:
        return None
    if deleting:
        return Invalid(f"the {' and '.join(sorted(given))} tags say where the run ran and are not removed")
    running = dict(who.servers)
    listed = ", ".join(sorted(f"{name or 'default'} ({tier})" for name, tier in running.items())) or "none"
    tiers = set(running.values())
    if SERVER_TAG in given:
        server = str(given[SERVER_TAG])
        name = "" if server == "default" else server
        if name not in running:
            return Invalid(f"{SERVER_TAG} {server!r} is not a running server of {who.name}'s (running: {listed})")
        tiers = {running[name]}
    if TIER_TAG in given and str(given[TIER_TAG]) not in tiers:
        return Invalid(f"{TIER_TAG} {given[TIER_TAG]!r} is not the tier the hub runs it on (running: {listed})")
    return None


def tag_pairs(body: Any) -> list[tuple[Any, Any]]:
    """The (key, value) of the tags a request body sets: its ``tags`` list, and its ``key``/``value``."""
    if not isinstance(body, Mapping):
        return []
    tags = body.get("tags")
    pairs = [(t.get("key"), t.get("value")) for t in tags if isinstance(t, dict)] if isinstance(tags, list) else []
    return [*pairs, (body.get("key"), body.get("value"))]


def user_tag_refusal(keys: Iterable[Any]) -> Invalid | None:
    """Refuse writing or deleting ``mlflow.user`` on an existing run (a request's tag ``keys``)."""
    if USER_TAG in keys:
        return Invalid(f"the {USER_TAG} tag names the run's creator and is set by hubforge when the run is made")
    return None


#: Aliases deployments set (through the governance service): nobody sets them by hand.
RESERVED_ALIASES = frozenset({"production", "staging", "canary"})
DEFAULT_EXPERIMENT = "0"
_USERS_FOLDER = re.compile(r"/Users/([^/]+)/")
_API = re.compile(r"(?:ajax-)?api/[23]\.0/")


@dataclass(frozen=True)
class Principal:
    """The person behind a request: name, the token's scopes, their groups and roles."""

    name: str
    scopes: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    roles: frozenset[str] = frozenset()
    #: (server name, tier) of each server the hub runs for them ("" is the unnamed server).
    servers: frozenset[tuple[str, str]] = frozenset()

    @property
    def admin(self) -> bool:
        """Platform admins read and manage everything, but write no one's runs."""
        return ADMIN_ROLE in self.roles

    @property
    def sees_all(self) -> bool:
        """Whether every experiment and model is readable without a check."""
        return self.admin or AUDIT in self.scopes

    @property
    def writes(self) -> bool:
        return WRITE in self.scopes

    @property
    def manages_registry(self) -> bool:
        return self.admin or REGISTRY in self.scopes


# --- the objects a decision looks at -------------------------------------------------


@dataclass(frozen=True)
class Owned:
    """An experiment or registered model, as far as permissions go."""

    key: str
    owner: str | None
    shared_with: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class RunRef:
    run_id: str
    owner: str
    experiment_id: str


@dataclass(frozen=True)
class LoggedModelRef:
    model_id: str
    experiment_id: str
    source_run_id: str | None


def owned(key: str, name: str, tags: Mapping[str, str]) -> Owned:
    """Owner and sharing from an object's tags (and, for old experiments, its name)."""
    owner = tags.get(OWNER_TAG)
    if owner is None and (match := _USERS_FOLDER.match(name + "/")):
        owner = match.group(1)
    groups = frozenset(g.strip() for g in tags.get(SHARED_TAG, "").split(",") if g.strip())
    return Owned(key, owner, groups)


class Resolver(Protocol):
    """Looks up what a request names; None when it does not exist."""

    def experiment(self, experiment_id: str) -> Owned | None: ...
    def experiment_by_name(self, name: str) -> Owned | None: ...
    def run(self, run_id: str) -> RunRef | None: ...
    def model(self, name: str) -> Owned | None: ...
    def logged_model(self, model_id: str) -> LoggedModelRef | None: ...
    def trace_experiment(self, trace_id: str) -> str | None: ...


_trusted: contextvars.ContextVar[bool] = contextvars.ContextVar("hubforge_store_trusted", default=False)


@contextmanager
def trusted() -> Iterator[None]:
    """MLflow store calls made here are the platform's own: lookups for a decision, and the
    calls a permitted store call makes inside the store (see :mod:`.mlflow_store`)."""
    token = _trusted.set(True)
    try:
        yield
    finally:
        _trusted.reset(token)


def is_trusted() -> bool:
    return _trusted.get()


RUN_CACHE_SIZE = 10_000
_RUNS: dict[str, RunRef] = {}
_RUNS_LOCK = threading.Lock()


class StoreResolver:
    """A :class:`Resolver` over MLflow's own tracking and registry stores."""

    def __init__(self, tracking: Any = None, registry: Any = None) -> None:
        self._tracking, self._registry = tracking, registry

    @property
    def tracking(self) -> Any:
        """The tracking store; MLflow server's own unless given (opened on first use)."""
        if self._tracking is None:
            from mlflow.server.handlers import _get_tracking_store

            self._tracking = _get_tracking_store()
        return self._tracking

    @property
    def registry(self) -> Any:
        if self._registry is None:
            from mlflow.server.handlers import _get_model_registry_store

            self._registry = _get_model_registry_store()
        return self._registry

    @staticmethod
    def _get(fetch: Callable[[], Any]) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            with trusted():
                return fetch()
        except MlflowException as exc:
            if exc.error_code in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"}:
                return None
            raise

    def experiment(self, experiment_id: str) -> Owned | None:
        exp = self._get(lambda: self.tracking.get_experiment(experiment_id))
        return owned(exp.experiment_id, exp.name, exp.tags) if exp else None

    def experiment_by_name(self, name: str) -> Owned | None:
        exp = self._get(lambda: self.tracking.get_experiment_by_name(name))
        return owned(exp.experiment_id, exp.name, exp.tags) if exp else None

    def run(self, run_id: str) -> RunRef | None:
        # A run's owner and experiment never change: a logging client's every batch
        # asks about the same run, so it is looked up once per process.
        if (known := _RUNS.get(run_id)) is not None:
            return known
        run = self._get(lambda: self.tracking.get_run(run_id))
        if run is None:
            return None
        ref = RunRef(run_id, run.info.user_id or "", run.info.experiment_id)
        with _RUNS_LOCK:
            _RUNS[run_id] = ref
            while len(_RUNS) > RUN_CACHE_SIZE:
                _RUNS.pop(next(iter(_RUNS)))
        return ref

    def model(self, name: str) -> Owned | None:
        model = self._get(lambda: self.registry.get_registered_model(name))
        return owned(model.name, model.name, model.tags) if model else None

    def logged_model(self, model_id: str) -> LoggedModelRef | None:
        model = self._get(lambda: self.tracking.get_logged_model(model_id))
        return LoggedModelRef(model_id, model.experiment_id, model.source_run_id) if model else None

    def trace_experiment(self, trace_id: str) -> str | None:
        info = self._get(lambda: self.tracking.get_trace_info(trace_id))
        return info.experiment_id if info else None


# --- predicates ------------------------------------------------------------------------


def can_read(who: Principal, obj: Owned, *, registry: bool = False) -> bool:
    """Owner, a group it is shared with, auditors and admins; registry managers for models."""
    if who.sees_all or (registry and who.manages_registry):
        return True
    return obj.owner == who.name or bool(obj.shared_with & who.groups)


def can_manage(who: Principal, obj: Owned) -> bool:
    """Rename, retag, share, delete: the owner (holding the write scope) or an admin."""
    return who.admin or (who.writes and obj.owner == who.name)


# --- the request table -------------------------------------------------------------------

Params = Mapping[str, Any]


class Check:
    """One request's decision: a refusal (a sentence) or None."""

    def __init__(self, who: Principal, params: Params, resolver: Resolver) -> None:
        self.who, self.params, self.resolver = who, params, resolver
        # The gate refuses one parameter given twice with different values, so every
        # spelling of a name here has the same value: read whichever was sent.
        self._spelled = {canonical_name(name): value for name, value in params.items()}

    def _get(self, name: str) -> Any:
        value = self.params.get(name)
        return self._spelled.get(canonical_name(name)) if value is None else value

    def param(self, *names: str) -> str | None:
        for name in names:
            value = self._get(name)
            if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
                return str(value)
        return None

    def ids(self, name: str) -> list[str]:
        value = self._get(name)
        values = value if isinstance(value, list) else [value] if value is not None else []
        return [str(v) for v in values if isinstance(v, str | int) and not isinstance(v, bool)]

    # experiments

    def read_experiment(self, experiment_id: str | None) -> str | None:
        if experiment_id is None:
            return "name the experiment (experiment_id)"
        exp = self.resolver.experiment(experiment_id)
        if exp is None or can_read(self.who, exp):
            return None  # MLflow answers a missing experiment itself
        return f"{self.who.name} may not read experiment {experiment_id}"

    def read_experiments(self, experiment_ids: list[str]) -> str | None:
        if not experiment_ids and not self.who.sees_all:
            return "name the experiments to search (experiment_ids)"
        for experiment_id in experiment_ids:
            if refusal := self.read_experiment(experiment_id):
                return refusal
        return None

    def add_to_experiment(self, experiment_id: str | None) -> str | None:
        if not self.who.writes:
            return f"{self.who.name} may not log to MLflow (needs {WRITE})"
        experiment_id = experiment_id or DEFAULT_EXPERIMENT
        exp = self.resolver.experiment(experiment_id)
        if exp is None:
            return None
        if experiment_id == DEFAULT_EXPERIMENT and exp.owner is None and not self.who.admin:
            return (
                f"the Default experiment is nobody's: call mlflow.set_experiment('/Users/{self.who.name}/<name>') first"
            )
        if self.who.admin or exp.owner == self.who.name or exp.shared_with & self.who.groups:
            return None
        return f"{self.who.name} may not add to experiment {experiment_id}"

    def manage_experiment(self, experiment_id: str | None) -> str | None:
        if experiment_id is None:
            return "name the experiment (experiment_id)"
        exp = self.resolver.experiment(experiment_id)
        if exp is None or can_manage(self.who, exp):
            return None
        return f"only the owner of experiment {experiment_id} ({exp.owner or 'nobody'}) may change it"

    def folder(self, key: str) -> str | None:
        """Refuse a name in another person's ``/Users/<name>/`` folder."""
        match = _USERS_FOLDER.match((self.param(key) or "") + "/")
        if match and match.group(1) != self.who.name and not self.who.admin:
            return f"/Users/{match.group(1)}/ is {match.group(1)}'s folder: use /Users/{self.who.name}/"
        return None

    def create_experiment(self) -> str | None:
        if not self.who.writes:
            return f"{self.who.name} may not create experiments (needs {WRITE})"
        if refusal := self.folder("name"):
            return refusal
        if self.param("artifact_location") and not self.who.admin:
            # A chosen location could point into another experiment's artifacts.
            return "artifact_location is chosen by the platform: leave it out"
        return self.tags_ok()

    def tags_ok(self) -> str | None:
        for tag in self.params.get("tags") or []:
            key = tag.get("key") if isinstance(tag, dict) else None
            if key == OWNER_TAG and tag.get("value") != self.who.name and not self.who.admin:
                return f"the {OWNER_TAG} tag is set by hubforge"
        return None

    def experiment_tag(self) -> str | None:
        if self.param("key") in PROTECTED_TAGS and not self.who.admin:
            return f"the {OWNER_TAG} tag is set by hubforge"
        return self.manage_experiment(self.param("experiment_id"))

    # runs

    def run_or_none(self, run_id: str | None) -> RunRef | None:
        return self.resolver.run(run_id) if run_id else None

    def read_run(self, run_id: str | None = None) -> str | None:
        run_id = run_id or self.param("run_id", "run_uuid")
        if run_id is None:
            return "name the run (run_id)"
        run = self.resolver.run(run_id)
        if run is None or run.owner == self.who.name:
            return None  # the owner's own run: no experiment to look up
        exp = self.resolver.experiment(run.experiment_id)
        if exp is None or can_read(self.who, exp):
            return None
        return f"{self.who.name} may not read run {run_id}"

    def read_runs(self, name: str) -> str | None:
        run_ids = self.ids(name)
        if not run_ids:
            return f"name the runs ({name})"
        for run_id in run_ids:
            if refusal := self.read_run(run_id):
                return refusal
        return None

    def write_run(self, run_id: str | None = None) -> str | None:
        run_id = run_id or self.param("run_id", "run_uuid")
        if run_id is None:
            return "name the run (run_id)"
        if not self.who.writes:
            return f"{self.who.name} may not log to MLflow (needs {WRITE})"
        run = self.resolver.run(run_id)
        if run is None or run.owner == self.who.name:
            return None
        return f"run {run_id} is {run.owner or 'nobody'}'s: nobody writes into another person's run"

    def write_run_tags(self, deleting: bool = False) -> str | None:
        """set-tag, delete-tag, log-batch: the run's owner, never its ``mlflow.user``, and
        ``hubforge.server``/``hubforge.tier`` only as the hub runs the person's servers."""
        if refusal := self.write_run():
            return refusal
        pairs = [*tag_pairs({"tags": self.params.get("tags")}), (self.param("key"), self.param("value"))]
        return user_tag_refusal([key for key, _ in pairs]) or placement_refusal(self.who, pairs, deleting)

    def delete_run(self) -> str | None:
        if self.who.admin and self.param("run_id"):
            return None
        return self.write_run()

    def create_run(self) -> str | None:
        return self.add_to_experiment(self.param("experiment_id"))

    # registry

    def read_model(self, name: str | None = None) -> str | None:
        name = name or self.param("name")
        if name is None:
            return "name the registered model (name)"
        model = self.resolver.model(name)
        if model is None or can_read(self.who, model, registry=True):
            return None
        return f"{self.who.name} may not read registered model {name!r}"

    def edit_model(self) -> str | None:
        name = self.param("name")
        if name is None:
            return "name the registered model (name)"
        if self.param("key") in PROTECTED_TAGS and not self.who.manages_registry:
            return f"the {OWNER_TAG} tag is set by hubforge"
        model = self.resolver.model(name)
        if model is None or self.who.manages_registry or (self.who.writes and model.owner == self.who.name):
            return None
        return f"only {model.owner or 'a registry manager'} or a registry manager may change {name!r}"

    def alias(self) -> str | None:
        """Set or delete an alias: registry managers, but never a reserved one (deployments')."""
        alias = self.param("alias") or ""
        if alias.lower() in RESERVED_ALIASES:
            return f"the {alias!r} alias is set by the governance service's deployments, not by people"
        return self.manage_registry() or self.read_model()

    def manage_registry(self) -> str | None:
        if self.who.manages_registry:
            return None
        return f"{self.who.name} may not manage the model registry (needs {REGISTRY})"

    def create_model(self) -> str | None:
        if not (self.who.writes or self.who.manages_registry):
            return f"{self.who.name} may not register models (needs {WRITE} or {REGISTRY})"
        return self.tags_ok()

    def create_version(self) -> str | None:
        if refusal := self.edit_model():
            return refusal
        if self.who.manages_registry:
            return None
        return self.read_run() if self.param("run_id") else None

    # logged models and traces

    def logged(self, write: bool) -> str | None:
        model_id = self.param("model_id")
        if model_id is None:
            return "name the logged model (model_id)"
        model = self.resolver.logged_model(model_id)
        if model is None:
            return None
        if not write:
            return self.read_experiment(model.experiment_id)
        if model.source_run_id:
            return self.write_run(model.source_run_id)
        return self.manage_experiment(model.experiment_id)

    def create_logged_model(self) -> str | None:
        if refusal := self.add_to_experiment(self.param("experiment_id")):
            return refusal
        source = self.param("source_run_id")
        return self.write_run(source) if source else None

    def trace(self, write: bool, trace_id: str | None = None) -> str | None:
        trace_id = trace_id or self.param("trace_id", "request_id")
        if trace_id is None:
            return "name the trace (trace_id)"
        experiment_id = self.resolver.trace_experiment(trace_id)
        if experiment_id is None:
            return None
        return self.add_to_experiment(experiment_id) if write else self.read_experiment(experiment_id)

    def traces(self, name: str) -> str | None:
        trace_ids = self.ids(name)
        if not trace_ids:
            return f"name the traces ({name})"
        for trace_id in trace_ids:
            if refusal := self.trace(False, trace_id):
                return refusal
        return None

    def start_trace(self) -> str | None:
        info = _dig(self.params, "trace", "trace_info") or {}
        experiment_id = _dig(info, "trace_location", "mlflow_experiment", "experiment_id")
        return self.add_to_experiment(str(experiment_id) if experiment_id is not None else None)

    def search_traces(self) -> str | None:
        ids = self.ids("experiment_ids")
        for location in self.params.get("locations") or []:
            if (exp := _dig(location, "mlflow_experiment", "experiment_id")) is not None:
                ids.append(str(exp))
        return self.read_experiments(ids)

    # everything else

    def anyone(self) -> str | None:
        return None

    def admin_only(self) -> str | None:
        return None if self.who.admin else "this MLflow feature is reserved to platform admins on this hub"


def _dig(value: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _artifact_rule(check: Check, method: str, path: str) -> str | None:
    """``mlflow-artifacts`` paths: ``<experiment>/<run>/artifacts/...``, ``<experiment>/models/<logged
    model>/...`` and ``<experiment>/traces/<trace>/...``.

    Reads need read access to the experiment. Writes go only into a run, logged model
    or trace that exists in the experiment the path names, and that the caller may
    write: nothing is created under an object that does not exist.
    """
    parts = [p for p in path.split("/") if p]
    if not parts or not parts[0].isdigit() or ".." in parts:
        return check.admin_only()
    if method in {"GET", "HEAD"}:
        return check.read_experiment(parts[0])
    if not check.who.writes:
        return f"{check.who.name} may not write artifacts (needs {WRITE})"
    experiment_id, kind, key = parts[0], parts[1] if len(parts) > 1 else "", parts[2] if len(parts) > 2 else ""
    if kind == "models":
        model = check.resolver.logged_model(key) if key else None
        if model is None or model.experiment_id != experiment_id:
            return f"no logged model {key!r} in experiment {experiment_id}: artifacts go into existing objects only"
        return Check(check.who, {"model_id": key}, check.resolver).logged(write=True)
    if kind == "traces":
        if not key or check.resolver.trace_experiment(key) != experiment_id:
            return f"no trace {key!r} in experiment {experiment_id}: artifacts go into existing objects only"
        return check.trace(write=True, trace_id=key)
    run = check.resolver.run(kind) if kind else None
    if run is not None and run.experiment_id == experiment_id:
        return check.write_run(kind)
    return check.admin_only()


Rule = Callable[[Check], str | None]

#: (method, path under ``api/2.0/`` or ``api/3.0/``) -> rule. Anything missing: admins only.
RULES: dict[tuple[str, str], Rule] = {}


def _rules(methods: str, paths: Iterable[str], rule: Rule) -> None:
    for method in methods.split():
        for path in paths:
            RULES[(method, path)] = rule


_rules("GET POST", ["mlflow/experiments/search"], Check.anyone)  # filtered where answered
_rules("POST", ["mlflow/experiments/create"], Check.create_experiment)
_rules("GET", ["mlflow/experiments/get"], lambda c: c.read_experiment(c.param("experiment_id")))
_rules(
    "GET",
    ["mlflow/experiments/get-by-name"],
    lambda c: (
        None
        if (exp := c.resolver.experiment_by_name(c.param("experiment_name") or "")) is None
        else c.read_experiment(exp.key)
    ),
)
_rules(
    "POST",
    ["mlflow/experiments/delete", "mlflow/experiments/restore"],
    lambda c: c.manage_experiment(c.param("experiment_id")),
)
_rules(
    "POST",
    ["mlflow/experiments/update"],
    lambda c: c.manage_experiment(c.param("experiment_id")) or c.folder("new_name"),
)
_rules(
    "POST", ["mlflow/experiments/set-experiment-tag", "mlflow/experiments/delete-experiment-tag"], Check.experiment_tag
)
_rules("POST", ["mlflow/experiments/search-datasets"], lambda c: c.read_experiments(c.ids("experiment_ids")))
_rules("POST", ["mlflow/runs/create", "mlflow/runs/create-promptlab-run"], Check.create_run)
_rules("GET", ["mlflow/runs/get", "mlflow/metrics/get-history", "mlflow/artifacts/list"], Check.read_run)
_rules(
    "GET",
    ["mlflow/metrics/get-history-bulk", "mlflow/metrics/get-history-bulk-interval"],
    lambda c: c.read_runs("run_ids") if c.ids("run_ids") else c.read_runs("run_id"),
)
_rules("POST", ["mlflow/runs/search"], lambda c: c.read_experiments(c.ids("experiment_ids")))
_rules(
    "POST",
    [
        "mlflow/runs/update",
        "mlflow/runs/log-metric",
        "mlflow/runs/log-parameter",
        "mlflow/runs/log-model",
        "mlflow/runs/log-inputs",
        "mlflow/runs/outputs",
        "mlflow/upload-artifact",
    ],
    Check.write_run,
)
_rules("POST", ["mlflow/runs/log-batch", "mlflow/runs/set-tag"], Check.write_run_tags)
_rules("POST", ["mlflow/runs/delete-tag"], lambda c: c.write_run_tags(deleting=True))
_rules("POST", ["mlflow/runs/delete", "mlflow/runs/restore"], Check.delete_run)
# registry
_rules("GET", ["mlflow/registered-models/search", "mlflow/model-versions/search"], Check.anyone)  # filtered
_rules("POST", ["mlflow/registered-models/create"], Check.create_model)
_rules(
    "GET",
    [
        "mlflow/registered-models/get",
        "mlflow/registered-models/alias",
        "mlflow/model-versions/get",
        "mlflow/model-versions/get-download-uri",
        "model-versions/get-artifact",
    ],
    Check.read_model,
)
_rules("GET POST", ["mlflow/registered-models/get-latest-versions"], Check.read_model)
_rules("PATCH", ["mlflow/registered-models/update", "mlflow/model-versions/update"], Check.edit_model)
_rules("POST", ["mlflow/registered-models/set-tag", "mlflow/model-versions/set-tag"], Check.edit_model)
_rules("DELETE", ["mlflow/registered-models/delete-tag", "mlflow/model-versions/delete-tag"], Check.edit_model)
_rules("POST", ["mlflow/model-versions/create"], Check.create_version)
_rules(
    "POST",
    ["mlflow/registered-models/rename", "mlflow/model-versions/transition-stage"],
    lambda c: c.manage_registry() or c.read_model(),
)
_rules(
    "DELETE",
    ["mlflow/registered-models/delete", "mlflow/model-versions/delete"],
    lambda c: c.manage_registry() or c.read_model(),
)
_rules("POST DELETE", ["mlflow/registered-models/alias"], Check.alias)
_rules("GET POST", ["mlflow/webhooks"], Check.manage_registry)
# logged models (MLflow 3)
_rules("POST", ["mlflow/logged-models"], Check.create_logged_model)
_rules("POST", ["mlflow/logged-models/search"], lambda c: c.read_experiments(c.ids("experiment_ids")))
# traces (experiment-scoped)
_rules("POST", ["mlflow/traces"], Check.start_trace)
_rules("POST", ["mlflow/traces/search"], Check.search_traces)
# the UI's trace charts and its Traces tab's evaluation datasets: the named experiments' own
_rules(
    "POST", ["mlflow/traces/metrics", "mlflow/datasets/search"], lambda c: c.read_experiments(c.ids("experiment_ids"))
)
_rules("GET", ["mlflow/traces/get", "mlflow/get-trace-artifact"], lambda c: c.trace(False))
_rules("GET", ["mlflow/traces/batchGet"], lambda c: c.traces("trace_ids"))
_rules("POST", ["mlflow/traces/batchGetInfos"], lambda c: c.traces("trace_ids"))
_rules("POST", ["mlflow/traces/link-to-run"], Check.write_run)
_rules("POST", ["mlflow/traces/delete-traces"], lambda c: c.manage_experiment(c.param("experiment_id")))
# the UI's own needs
_rules("GET", ["mlflow/server-info", "mlflow/ui-telemetry"], Check.anyone)
_rules("POST", ["mlflow/ui-telemetry"], Check.anyone)

# Paths with an object id inside them: (method, pattern) -> rule given the match.
PATTERNS: list[tuple[str, re.Pattern[str], Callable[[Check, re.Match[str]], str | None]]] = []


def _pattern(methods: str, pattern: str, rule: Callable[[Check, re.Match[str]], str | None]) -> None:
    for method in methods.split():
        PATTERNS.append((method, re.compile(pattern), rule))


def _logged(write: bool) -> Callable[[Check, re.Match[str]], str | None]:
    def rule(check: Check, match: re.Match[str]) -> str | None:
        check.params = {**check.params, "model_id": match.group(1)}
        return check.logged(write)

    return rule


_ID = r"([^/]+)"
_pattern("GET", rf"mlflow/logged-models/{_ID}", _logged(False))
_pattern("GET", rf"mlflow/logged-models/{_ID}/artifacts/(?:directories|files)", _logged(False))
_pattern("PATCH DELETE", rf"mlflow/logged-models/{_ID}", _logged(True))
_pattern("PATCH", rf"mlflow/logged-models/{_ID}/tags", _logged(True))
_pattern("DELETE", rf"mlflow/logged-models/{_ID}/tags/[^/]+", _logged(True))
_pattern("POST", rf"mlflow/logged-models/{_ID}/params", _logged(True))
_pattern("GET", rf"mlflow/traces/{_ID}", lambda c, m: c.trace(False, m.group(1)))
_pattern("PATCH DELETE", rf"mlflow/traces/{_ID}/tags", lambda c, m: c.trace(True, m.group(1)))
_pattern("GET", rf"mlflow/webhooks/{_ID}", lambda c, m: c.manage_registry())
_pattern("PATCH DELETE", rf"mlflow/webhooks/{_ID}", lambda c, m: c.manage_registry())
_pattern("POST", rf"mlflow/webhooks/{_ID}/test", lambda c, m: c.manage_registry())

#: Paths under the prefix (not under an API version) any hub user with access may GET.
PAGES = re.compile(r"(?:|static-files/.*|version|graphql|get-artifact|favicon\.ico)")


def route(path: str) -> tuple[str, bool]:
    """A path under the prefix without its API version, and whether it had one."""
    if match := _API.match(path):
        return path[match.end() :], True
    return path, False


def authorize(who: Principal, method: str, path: str, params: Params, resolver: Resolver) -> str | None:
    """Why ``who`` may not make this request (a sentence), or None when they may.

    ``path`` is relative to the service prefix; ``params`` are the query arguments
    merged with the JSON body. Anything this module does not know is for admins only.
    """
    check = Check(who, params, resolver)
    rest, versioned = route(path)
    method = "GET" if method == "HEAD" else method
    if method == "OPTIONS":
        return None
    if not versioned:
        if path == "graphql" and method in {"GET", "POST"}:
            return None  # fields are checked one by one as they resolve: see install()
        if path == "get-artifact" and method == "GET":
            return check.read_run()
        if path == "model-versions/get-artifact" and method == "GET":
            return check.read_model()
        if path.startswith("v1/traces") and method == "POST":
            return check.add_to_experiment(params.get("x-mlflow-experiment-id") or None)
        if method == "GET" and PAGES.fullmatch(path):
            return None
        return check.admin_only()
    if rest.startswith("mlflow-artifacts/"):
        return _artifacts(check, method, rest)
    if rule := RULES.get((method, rest)):
        return rule(check)
    for rule_method, pattern, pattern_rule in PATTERNS:
        if rule_method == method and (match := pattern.fullmatch(rest)):
            return pattern_rule(check, match)
    return check.admin_only()


def _artifacts(check: Check, method: str, rest: str) -> str | None:
    """The proxied artifact store: uploads, downloads, listings, multipart uploads."""
    if rest == "mlflow-artifacts/artifacts" and method == "GET":  # a listing: ?path=
        return _artifact_rule(check, method, check.param("path") or "")
    for prefix in (
        "mlflow-artifacts/artifacts/",
        "mlflow-artifacts/mpu/create/",
        "mlflow-artifacts/mpu/complete/",
        "mlflow-artifacts/mpu/abort/",
    ):
        if rest.startswith(prefix):
            write = method if prefix.endswith("artifacts/") else "PUT"
            return _artifact_rule(check, write, rest[len(prefix) :])
    return check.admin_only()


# --- searches: filtered where MLflow answers them ----------------------------------------


def filtered_page(
    fetch: Callable[[int, int], list[Any]],
    readable: Callable[[Any], bool],
    max_results: int,
    offset: int,
) -> tuple[list[Any], int | None]:
    """Up to ``max_results`` readable items from ``offset`` on, and the next offset.

    ``fetch(offset, count)`` returns up to ``count`` items of the unfiltered result from
    ``offset``; fewer than asked means the end. The next offset is None at the end.
    """
    kept: list[Any] = []
    while True:
        page = fetch(offset, max_results)
        for index, item in enumerate(page):
            if readable(item):
                kept.append(item)
                if len(kept) == max_results:
                    following = offset + index + 1
                    more = index + 1 < len(page) or bool(fetch(following, 1))
                    return kept, following if more else None
        offset += len(page)
        if len(page) < max_results:
            return kept, None


def install(flask_app: Any, principal: Callable[[], Principal | None]) -> None:
    """Filter MLflow's experiment and registry searches, and its GraphQL fields."""
    from mlflow.protos.model_registry_pb2 import SearchModelVersions, SearchRegisteredModels
    from mlflow.protos.service_pb2 import SearchExperiments
    from mlflow.server import handlers
    from mlflow.utils.search_utils import SearchUtils

    resolver = StoreResolver

    def search(kind: str) -> Callable[[], Any]:
        message: Any = {
            "experiments": SearchExperiments,
            "registered_models": SearchRegisteredModels,
            "model_versions": SearchModelVersions,
        }[kind]
        original = flask_app.view_functions[_VIEWS[kind]]

        @handlers.catch_mlflow_exception
        def view() -> Any:
            who = principal()
            if who is None or who.sees_all or (kind != "experiments" and who.manages_registry):
                return original()
            request = handlers._get_request_message(message())
            limit = (
                request.max_results or {"experiments": 1000, "registered_models": 100, "model_versions": 10_000}[kind]
            )
            lookups = resolver()
            if kind == "experiments":
                store = lookups.tracking

                def fetch(offset: int, count: int) -> list[Any]:
                    token = SearchUtils.create_page_token(offset) if offset else None
                    return store.search_experiments(
                        view_type=request.view_type or 1,
                        max_results=count,
                        order_by=request.order_by,
                        filter_string=request.filter,
                        page_token=token,
                    )

                def ok(item: Any) -> bool:
                    return can_read(who, owned(item.experiment_id, item.name, item.tags))
            else:
                registry = lookups.registry
                searcher = getattr(registry, f"search_{kind}")
                models: dict[str, bool] = {}

                def fetch(offset: int, count: int) -> list[Any]:
                    token = SearchUtils.create_page_token(offset) if offset else None
                    return searcher(
                        filter_string=request.filter, max_results=count, order_by=request.order_by, page_token=token
                    )

                def ok(item: Any) -> bool:
                    if item.name not in models:
                        model = (
                            lookups.model(item.name)
                            if kind == "model_versions"
                            else owned(item.name, item.name, item.tags)
                        )
                        models[item.name] = model is not None and can_read(who, model, registry=True)
                    return models[item.name]

            start = SearchUtils.parse_start_offset_from_page_token(request.page_token or None)
            items, following = filtered_page(fetch, ok, limit, start)
            response = message.Response()
            getattr(response, kind).extend(item.to_proto() for item in items)
            if following is not None:
                response.next_page_token = SearchUtils.create_page_token(following)
            return handlers._wrap_response(response)

        return view

    for kind, view in _VIEWS.items():
        if view in flask_app.view_functions:
            flask_app.view_functions[view] = search(kind)
    handlers._get_graphql_auth_middleware = lambda: [GraphQLGate(principal, resolver)]


_VIEWS = {
    "experiments": "_search_experiments",
    "registered_models": "_search_registered_models",
    "model_versions": "_search_model_versions",
}


class GraphQLGate:
    """Graphene middleware: the MLflow UI's GraphQL fields, checked like their REST twins."""

    ROOT_FIELDS = {
        "mlflowGetExperiment": lambda c, i: c.read_experiment(_attr(i, "experiment_id")),
        "mlflowGetRun": lambda c, i: c.read_run(_attr(i, "run_id") or _attr(i, "run_uuid")),
        "mlflowListArtifacts": lambda c, i: c.read_run(_attr(i, "run_id") or _attr(i, "run_uuid")),
        "mlflowGetMetricHistoryBulkInterval": lambda c, i: (
            next((r for run in (_attr(i, "run_ids", []) or []) if (r := c.read_run(run))), None)
            if _attr(i, "run_ids", [])
            else "name the runs (run_ids)"
        ),
        "mlflowSearchRuns": lambda c, i: c.read_experiments(list(_attr(i, "experiment_ids", []) or [])),
        "mlflowSearchDatasets": lambda c, i: c.read_experiments(list(_attr(i, "experiment_ids", []) or [])),
        "mlflowSearchModelVersions": lambda c, i: None,  # rows filtered below
        "test": lambda c, i: None,
        "__typename": lambda c, i: None,
    }

    def __init__(self, principal: Callable[[], Principal | None], resolver: Callable[[], Resolver]) -> None:
        self.principal, self.resolver = principal, resolver

    def resolve(self, next_: Callable[..., Any], root: Any, info: Any, **args: Any) -> Any:
        name, parent = info.field_name, info.parent_type.name
        nested_versions = name == "modelVersions" and parent == "MlflowRunExtension"
        if parent not in {"Query", "Mutation"} and not nested_versions:
            return next_(root, info, **args)
        who = self.principal()
        if who is None:
            return None
        if who.sees_all:
            return next_(root, info, **args)
        if nested_versions:
            return self._readable_versions(who, next_(root, info, **args))
        rule = self.ROOT_FIELDS.get(name)
        if rule is None or (parent == "Mutation" and name != "test"):
            return None
        if refusal := rule(Check(who, {}, self.resolver()), args.get("input")):
            from graphql import GraphQLError

            # An error, not a silent null: the UI shows the reason instead of an empty page.
            raise GraphQLError(f"PERMISSION_DENIED: {refusal}")
        result = next_(root, info, **args)
        if name == "mlflowSearchModelVersions" and result is not None and not who.manages_registry:
            versions = getattr(result, "model_versions", None)
            if versions is not None:
                kept = [_copy(version) for version in self._readable_versions(who, versions)]
                result.ClearField("model_versions")
                result.model_versions.extend(kept)
        return result

    def _readable_versions(self, who: Principal, versions: Any) -> list[Any]:
        if versions is None or who.manages_registry:
            return versions
        lookups, seen = self.resolver(), {}
        kept = []
        for version in versions:
            if version.name not in seen:
                model = lookups.model(version.name)
                seen[version.name] = model is not None and can_read(who, model, registry=True)
            if seen[version.name]:
                kept.append(version)
        return kept


def _copy(message: Any) -> Any:
    duplicate = type(message)()
    duplicate.CopyFrom(message)
    return duplicate


def _attr(obj: Any, name: str, default: Any = None) -> Any:
    if obj is None:
        return default
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)
