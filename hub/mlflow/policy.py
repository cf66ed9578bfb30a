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

:class:`Check` holds these decisions for one person and one request, asking a
:class:`Resolver` for the objects it names. It is asked three ways: by the route
rules (:mod:`.rules`) the gate runs before MLflow sees the request, by the search
filters (:mod:`.search`), and inside MLflow's stores on the arguments MLflow calls
them with (:mod:`.store`).
"""

from __future__ import annotations

import contextvars
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import internals

__all__ = [
    "GOVERNANCE_SERVICE",
    "OWNER_TAG",
    "SHARED_TAG",
    "USER_TAG",
    "Check",
    "Invalid",
    "Principal",
    "Resolver",
    "StoreResolver",
    "can_manage",
    "can_read",
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
#: The governance service as the gate names it (a hub service's token; no person's name has a colon).
GOVERNANCE_SERVICE = "service:governance"
DEFAULT_EXPERIMENT = "0"
_USERS_FOLDER = re.compile(r"/Users/([^/]+)/")


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
    calls a permitted store call makes inside the store (see :mod:`.store`)."""
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
            self._tracking = internals.tracking_store()
        return self._tracking

    @property
    def registry(self) -> Any:
        if self._registry is None:
            self._registry = internals.registry_store()
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
        """Set or delete an alias: registry managers, but never a reserved one (deployments'),
        which only the governance service sets, on models it may read."""
        alias = self.param("alias") or ""
        if alias.lower() in RESERVED_ALIASES:
            if self.who.name == GOVERNANCE_SERVICE:
                return self.read_model()
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
