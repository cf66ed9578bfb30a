"""Permissions where MLflow acts: its tracking and registry stores, guarded inside the MLflow server.

The request gate (:mod:`.gate`, deciding by :mod:`.rules`) decides on the parameters it parses, and
MLflow's handlers parse them their own way (camelCase, ``run_uuid``, the body
rather than the query string, a GET's body). So the stores MLflow's server
uses are guarded too: each public method is checked, with the arguments
MLflow itself calls it with, for the person behind the request, before it runs.
Whatever spelling reached the handler, the check sees the object MLflow touches.

:data:`TRACKING_RULES` and :data:`REGISTRY_RULES` classify every public method of
MLflow's tracking and model registry stores: a rule (a refusal sentence or None)
over the call's arguments by name. A method the tables do not name is refused to
people: an MLflow upgrade that adds one
cannot open a hole, and ``tests/integration/test_mlflow_store.py`` fails until it is
classified. Calls outside a person's request (the server's own work) and calls a
permitted call makes inside the store are not checked again.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from . import internals
from .policy import (
    USER_TAG,
    Check,
    Invalid,
    Principal,
    Resolver,
    StoreResolver,
    is_trusted,
    placement_refusal,
    trusted,
    user_tag_refusal,
)
from .rules import route

__all__ = [
    "REGISTRY_RULES",
    "STORE_DECIDES",
    "TRACKING_RULES",
    "guard",
    "guard_registry",
    "guarded",
    "install",
    "public_methods",
    "store_decides",
]

#: (check, the call's arguments by name) -> why not, or None.
Rule = Callable[[Check, Mapping[str, Any]], str | None]


def public_methods(cls: type) -> list[str]:
    """The names of ``cls``'s public methods (what a guard must classify)."""
    return sorted(name for name in dir(cls) if not name.startswith("_") and callable(getattr(cls, name, None)))


# --- the rules ------------------------------------------------------------------------


def _text(value: Any) -> str | None:
    return str(value) if isinstance(value, str | int) and not isinstance(value, bool) and str(value) else None


def _attr(obj: Any, name: str) -> Any:
    """A field of an MLflow entity (``RunTag``), or of the dict a caller passed instead."""
    return obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)


def _texts(value: Any) -> list[str]:
    """Ids from a list, or any iterable (MLflow hands on protobuf repeated fields), or one id."""
    if value is None:
        return []
    if isinstance(value, str | int | bytes):
        values: list[Any] = [value]
    else:
        try:
            values = list(value)
        except TypeError:
            values = [value]
    return [text for v in values if (text := _text(v)) is not None]


def _with(check: Check, **params: Any) -> Check:
    """``check`` asking about these parameters (the store's arguments, as the gate names them)."""
    return Check(check.who, params, check.resolver)


def _each(refuse: Callable[[str], str | None], ids: list[str]) -> str | None:
    for object_id in ids:
        if refusal := refuse(object_id):
            return refusal
    return None


def anyone(check: Check, args: Mapping[str, Any]) -> str | None:
    return None


def admin(check: Check, args: Mapping[str, Any]) -> str | None:
    return check.admin_only()


def read_run(check: Check, args: Mapping[str, Any]) -> str | None:
    return check.read_run(_text(args.get("run_id")) or "")


def read_runs(check: Check, args: Mapping[str, Any]) -> str | None:
    run_ids = _texts(args.get("run_ids"))
    return _each(check.read_run, run_ids) if run_ids else "name the runs (run_ids)"


def write_run(check: Check, args: Mapping[str, Any]) -> str | None:
    return check.write_run(_text(args.get("run_id")) or "")


def write_run_tags(check: Check, args: Mapping[str, Any], deleting: bool = False) -> str | None:
    """Tags of an existing run: its owner's, except ``mlflow.user`` (set when the run is made),
    and ``hubforge.server``/``hubforge.tier`` as the hub runs the person's servers."""
    if refusal := write_run(check, args):
        return refusal
    tags = [args.get("tag"), *(args.get("tags") or [])]
    pairs = [(_attr(t, "key"), _attr(t, "value")) for t in tags if t is not None]
    pairs.append((args.get("key"), None))  # delete_tag(run_id, key)
    return user_tag_refusal([key for key, _ in pairs]) or placement_refusal(check.who, pairs, deleting)


def delete_run_tag(check: Check, args: Mapping[str, Any]) -> str | None:
    return write_run_tags(check, args, deleting=True)


def delete_run(check: Check, args: Mapping[str, Any]) -> str | None:
    """Delete or restore: the run's owner, or an admin."""
    if check.who.admin and _text(args.get("run_id")):
        return None
    return write_run(check, args)


def create_run(check: Check, args: Mapping[str, Any]) -> str | None:
    if (refusal := check.add_to_experiment(_text(args.get("experiment_id")))) is not None:
        return refusal
    if args.get("user_id") != check.who.name:
        return f"a run of {check.who.name}'s is created as {check.who.name}'s"
    named = {_attr(t, "value") for t in args.get("tags") or [] if _attr(t, "key") == USER_TAG} - {check.who.name}
    if named:
        return Invalid(f"a run of {check.who.name}'s names {check.who.name} in its {USER_TAG} tag, not {sorted(named)}")
    return placement_refusal(check.who, [(_attr(t, "key"), _attr(t, "value")) for t in args.get("tags") or []])


def read_experiment(check: Check, args: Mapping[str, Any]) -> str | None:
    return check.read_experiment(_text(args.get("experiment_id")))


def read_experiments(check: Check, args: Mapping[str, Any]) -> str | None:
    return check.read_experiments(_texts(args.get("experiment_ids")))


def read_experiment_by_name(check: Check, args: Mapping[str, Any]) -> str | None:
    found = check.resolver.experiment_by_name(_text(args.get("experiment_name")) or "")
    return None if found is None else check.read_experiment(found.key)


def add_to_experiment(check: Check, args: Mapping[str, Any]) -> str | None:
    return check.add_to_experiment(_text(args.get("experiment_id")))


def manage_experiment(check: Check, args: Mapping[str, Any]) -> str | None:
    return check.manage_experiment(_text(args.get("experiment_id")))


def create_experiment(check: Check, args: Mapping[str, Any]) -> str | None:
    tags = [{"key": tag.key, "value": tag.value} for tag in args.get("tags") or []]
    return _with(
        check, name=args.get("name"), artifact_location=args.get("artifact_location"), tags=tags
    ).create_experiment()


def rename_experiment(check: Check, args: Mapping[str, Any]) -> str | None:
    return manage_experiment(check, args) or _with(check, new_name=args.get("new_name")).folder("new_name")


def experiment_tag(check: Check, args: Mapping[str, Any]) -> str | None:
    tag = args.get("tag")
    key = getattr(tag, "key", None) if tag is not None else args.get("key")
    return _with(check, experiment_id=args.get("experiment_id"), key=key).experiment_tag()


def read_logged_model(check: Check, args: Mapping[str, Any]) -> str | None:
    return _with(check, model_id=args.get("model_id")).logged(False)


def write_logged_model(check: Check, args: Mapping[str, Any]) -> str | None:
    return _with(check, model_id=args.get("model_id")).logged(True)


def create_logged_model(check: Check, args: Mapping[str, Any]) -> str | None:
    return _with(
        check, experiment_id=args.get("experiment_id"), source_run_id=args.get("source_run_id")
    ).create_logged_model()


def read_trace(check: Check, args: Mapping[str, Any]) -> str | None:
    return check.trace(False, _text(args.get("trace_id", args.get("request_id"))) or "")


def write_trace(check: Check, args: Mapping[str, Any]) -> str | None:
    return check.trace(True, _text(args.get("trace_id", args.get("request_id"))) or "")


def read_traces(check: Check, args: Mapping[str, Any]) -> str | None:
    trace_ids = _texts(args.get("trace_ids"))
    return _each(lambda trace_id: check.trace(False, trace_id), trace_ids) if trace_ids else None


def search_traces(check: Check, args: Mapping[str, Any]) -> str | None:
    return check.read_experiments(_texts(args.get("experiment_ids")) + _texts(args.get("locations")))


def link_traces(check: Check, args: Mapping[str, Any]) -> str | None:
    """Link (or unlink) traces and a run: write access to both."""
    trace_ids = _texts(args.get("trace_ids"))
    return write_run(check, args) or _each(lambda trace_id: check.trace(True, trace_id), trace_ids)


def start_trace(check: Check, args: Mapping[str, Any]) -> str | None:
    info = args.get("trace_info")
    location = getattr(getattr(info, "trace_location", None), "mlflow_experiment", None)
    experiment_id = getattr(location, "experiment_id", None) or getattr(info, "experiment_id", None)
    return check.add_to_experiment(_text(experiment_id))


def log_spans(check: Check, args: Mapping[str, Any]) -> str | None:
    return check.add_to_experiment(_text(args.get("location")))


def create_assessment(check: Check, args: Mapping[str, Any]) -> str | None:
    return check.trace(True, _text(getattr(args.get("assessment"), "trace_id", None)) or "")


def _table(rule: Rule, names: str) -> dict[str, Rule]:
    return dict.fromkeys(names.split(), rule)


#: Every public method of MLflow's tracking store, and who may call it.
TRACKING_RULES: dict[str, Rule] = {
    # No data of anybody's, or the client side of async logging.
    **_table(anyone, "sanitize_metric_value flush_async_logging end_async_logging shut_down_async_logging"),
    # Filtered where MLflow answers it (search.install pages through readable ones).
    **_table(anyone, "search_experiments"),
    # experiments
    "create_experiment": create_experiment,
    **_table(read_experiment, "get_experiment find_completed_sessions"),
    "get_experiment_by_name": read_experiment_by_name,
    **_table(manage_experiment, "delete_experiment restore_experiment delete_traces"),
    "rename_experiment": rename_experiment,
    **_table(experiment_tag, "set_experiment_tag delete_experiment_tag"),
    **_table(
        read_experiments,
        "search_runs search_logged_models search_datasets filter_active_experiment_ids "
        "calculate_trace_filter_correlation query_trace_metrics",
    ),
    # runs
    "create_run": create_run,
    **_table(
        read_run, "get_run get_metric_history get_max_step_for_metric get_metric_history_bulk_interval_from_steps"
    ),
    **_table(read_runs, "get_metric_history_bulk get_metric_history_bulk_interval"),
    **_table(
        write_run,
        "log_metric log_param update_run_info log_inputs log_outputs record_logged_model log_metric_async "
        "log_param_async",
    ),
    **_table(write_run_tags, "log_batch set_tag log_batch_async set_tag_async"),
    "delete_tag": delete_run_tag,
    **_table(delete_run, "delete_run restore_run"),
    # logged models (MLflow 3)
    "create_logged_model": create_logged_model,
    "get_logged_model": read_logged_model,
    **_table(
        write_logged_model,
        "delete_logged_model set_logged_model_tags delete_logged_model_tag log_logged_model_params "
        "finalize_logged_model",
    ),
    # traces, their spans and assessments: the experiment's
    "start_trace": start_trace,
    "deprecated_start_trace_v2": add_to_experiment,
    **_table(read_trace, "get_trace get_trace_info get_assessment"),
    **_table(read_traces, "batch_get_traces batch_get_trace_infos"),
    "search_traces": search_traces,
    **_table(
        write_trace,
        "set_trace_tag delete_trace_tag deprecated_end_trace_v2 update_assessment delete_assessment "
        "link_prompts_to_trace",
    ),
    **_table(link_traces, "link_traces_to_run unlink_traces_from_run"),
    **_table(log_spans, "log_spans log_spans_async"),
    "create_assessment": create_assessment,
    # MLflow's GenAI platform (the AI gateway and its secrets, MCP servers, budgets,
    # evaluation datasets, scorers, review queues, issues, label schemas, trace archival):
    # platform admins', as the request gate has it.
    **_table(
        admin,
        "add_dataset_to_experiments remove_dataset_from_experiments create_dataset get_dataset "
        "get_dataset_experiment_ids delete_dataset delete_dataset_records delete_dataset_tag set_dataset_tags "
        "upsert_dataset_records "
        "add_guardrail_to_endpoint attach_model_to_endpoint create_endpoint_binding create_gateway_endpoint "
        "create_gateway_guardrail create_gateway_model_definition create_gateway_secret delete_endpoint_binding "
        "delete_gateway_endpoint delete_gateway_endpoint_tag delete_gateway_guardrail "
        "delete_gateway_model_definition delete_gateway_secret detach_model_from_endpoint get_gateway_endpoint "
        "get_gateway_guardrail get_gateway_model_definition get_secret_info list_endpoint_bindings "
        "list_endpoint_guardrail_configs list_gateway_endpoints list_gateway_guardrails "
        "list_gateway_model_definitions list_secret_infos remove_guardrail_from_endpoint set_gateway_endpoint_tag "
        "update_endpoint_guardrail_config update_gateway_endpoint update_gateway_model_definition "
        "update_gateway_secret sum_gateway_trace_cost resolve_endpoint_in_scorer "
        "create_budget_policy delete_budget_policy get_budget_policy list_budget_policies update_budget_policy "
        "create_mcp_access_endpoint create_mcp_server create_mcp_server_version delete_mcp_access_endpoint "
        "delete_mcp_server delete_mcp_server_alias delete_mcp_server_tag delete_mcp_server_version "
        "delete_mcp_server_version_tag get_latest_mcp_server_version get_mcp_access_endpoint get_mcp_server "
        "get_mcp_server_version get_mcp_server_version_by_alias get_mcp_server_versions_for_trace "
        "link_mcp_server_versions_to_trace search_mcp_access_endpoints search_mcp_server_versions "
        "search_mcp_servers set_mcp_server_alias set_mcp_server_tag set_mcp_server_version_tag "
        "update_mcp_access_endpoint update_mcp_server update_mcp_server_version "
        "register_scorer get_scorer list_scorers list_scorer_versions list_scorers_across_experiments "
        "delete_scorer get_active_online_scorers get_online_scoring_configs upsert_online_scoring_config "
        "create_review_queue delete_review_queue get_review_queue get_review_queue_by_name list_review_queues "
        "update_review_queue add_items_to_review_queue remove_items_from_review_queue list_review_queue_items "
        "set_review_queue_item_status get_or_create_user_queue "
        "create_issue get_issue search_issues update_issue "
        "create_label_schema delete_label_schema get_label_schema get_label_schema_by_name list_label_schemas "
        "update_label_schema "
        "archive_traces resolve_trace_archival_config get_online_trace_details "
        "search_entities_by_source search_entities_by_destination",
    ),
    # What registering a logged model writes back onto it (MLflow's own bookkeeping, right
    # after model-versions/create): whoever may add a version to the model, of that logged model.
    "set_model_versions_tags": lambda check, args: (
        edit_model(check, args) or read_source(check, None, _text(args.get("model_id")), "")
    ),
}


# --- the model registry ----------------------------------------------------------------

_SOURCE_RUN = re.compile(r"^runs:/([0-9a-f]{32})(?:/|$)|/\d+/([0-9a-f]{32})/artifacts(?:/|$)")
_SOURCE_MODEL = re.compile(r"^models:/(m-[0-9a-f]{32})(?:/|$)|/\d+/models/(m-[0-9a-f]{32})/artifacts(?:/|$)")


def read_model(check: Check, args: Mapping[str, Any]) -> str | None:
    return check.read_model(_text(args.get("name")) or "")


def edit_model(check: Check, args: Mapping[str, Any]) -> str | None:
    tag = args.get("tag")
    key = getattr(tag, "key", None) if tag is not None else args.get("key")
    return _with(check, name=args.get("name"), key=key).edit_model()


def manage_model(check: Check, args: Mapping[str, Any]) -> str | None:
    """Renames, deletes, stages, aliases: registry managers, on a model they may read."""
    return check.manage_registry() or read_model(check, args)


def create_registered_model(check: Check, args: Mapping[str, Any]) -> str | None:
    tags = [{"key": tag.key, "value": tag.value} for tag in args.get("tags") or []]
    return _with(check, name=args.get("name"), tags=tags).create_model()


def read_source(check: Check, run_id: str | None, model_id: str | None, source: str) -> str | None:
    """Read access to what a model version is made of, for everybody, registry managers too:
    the run and the logged model it names, and those its ``source`` points into."""
    runs = [run_id] if run_id else []
    models = [model_id] if model_id else []
    for match in _SOURCE_RUN.finditer(source):
        runs.append(match.group(1) or match.group(2))
    for match in _SOURCE_MODEL.finditer(source):
        models.append(match.group(1) or match.group(2))
    for run in runs:
        if refusal := check.read_run(run):
            return f"{refusal}: a model version is made only of what its creator may read"
    for model in models:
        if refusal := _with(check, model_id=model).logged(False):
            return f"{refusal}: a model version is made only of what its creator may read"
    return None


def create_model_version(check: Check, args: Mapping[str, Any]) -> str | None:
    if refusal := edit_model(check, args):
        return refusal
    return read_source(check, _text(args.get("run_id")), _text(args.get("model_id")), _text(args.get("source")) or "")


def copy_model_version(check: Check, args: Mapping[str, Any]) -> str | None:
    src = args.get("src_mv")
    return read_model(check, {"name": getattr(src, "name", None)}) or edit_model(check, {"name": args.get("dst_name")})


#: Every public method of MLflow's model registry store, and who may call it.
REGISTRY_RULES: dict[str, Rule] = {
    # Filtered where MLflow answers them (search.install, and its GraphQL gate).
    **_table(anyone, "search_registered_models search_model_versions"),
    "create_registered_model": create_registered_model,
    **_table(
        read_model,
        "get_registered_model get_latest_versions get_model_version get_model_version_by_alias "
        "get_model_version_download_uri",
    ),
    **_table(
        edit_model,
        "update_registered_model set_registered_model_tag delete_registered_model_tag update_model_version "
        "set_model_version_tag delete_model_version_tag",
    ),
    "create_model_version": create_model_version,
    "copy_model_version": copy_model_version,
    **_table(
        manage_model,
        "rename_registered_model delete_registered_model delete_model_version transition_model_version_stage",
    ),
    **_table(
        lambda check, args: _with(check, name=args.get("name"), alias=args.get("alias")).alias(),
        "set_registered_model_alias delete_registered_model_alias",
    ),
    **_table(
        lambda check, args: check.manage_registry(),
        "create_webhook delete_webhook get_webhook list_webhooks test_webhook update_webhook",
    ),
    # MLflow's own webhook delivery after a registry change, on the changer's request: no
    # REST route reaches it, and its answer goes to no one.
    "list_webhooks_by_event": anyone,
    # Prompts (MLflow's GenAI prompt registry): platform admins', as the request gate has it.
    **_table(
        admin,
        "create_prompt create_prompt_version delete_prompt delete_prompt_alias delete_prompt_tag "
        "delete_prompt_version delete_prompt_version_tag get_prompt get_prompt_version get_prompt_version_by_alias "
        "link_prompt_version_to_model link_prompt_version_to_run link_prompts_to_trace search_prompt_versions "
        "search_prompts set_prompt_alias set_prompt_tag set_prompt_version_tag",
    ),
}


# --- routes the store decides alone ------------------------------------------------

#: (method, path under ``api/2.0/`` or ``api/3.0/``) -> the one tracking store method its
#: MLflow handler calls, after parsing and checking the request message and before
#: anything else: the store's rule for that method is the request gate's rule for the
#: route, applied to the arguments MLflow parsed. The gate does not decide these twice
#: (the hot paths of a logging client: a thread hop and the lookups, per request).
#: ``tests/integration/test_mlflow_store.py`` reads each handler's source and fails when it calls
#: anything else, so an MLflow upgrade that changes a handler puts its route back
#: before the gate.
STORE_DECIDES: dict[tuple[str, str], str] = {
    ("GET", "mlflow/runs/get"): "get_run",
    ("GET", "mlflow/experiments/get"): "get_experiment",
    ("GET", "mlflow/metrics/get-history"): "get_metric_history",
    ("POST", "mlflow/runs/update"): "update_run_info",
    ("POST", "mlflow/runs/log-metric"): "log_metric",
    ("POST", "mlflow/runs/log-parameter"): "log_param",
    ("POST", "mlflow/runs/log-batch"): "log_batch",
    ("POST", "mlflow/runs/set-tag"): "set_tag",
    ("POST", "mlflow/runs/delete-tag"): "delete_tag",
}


def store_decides(method: str, relative: str) -> bool:
    """Whether the guarded store alone decides this request (``relative``: the path under
    the service prefix)."""
    rest, versioned = route(relative)
    return versioned and ("GET" if method == "HEAD" else method, rest) in STORE_DECIDES


# --- the guard ------------------------------------------------------------------------


def _refusal(name: str, rule: Rule | None, who: Principal, arguments: Mapping[str, Any], resolver: Resolver):
    if rule is None:
        return f"MLflow's {name} is not open to people on this hub"
    return rule(Check(who, {}, resolver), arguments)


def guarded(
    name: str,
    function: Callable[..., Any],
    rule: Rule | None,
    principal: Callable[[], Principal | None],
    resolver: Callable[[Any], Resolver],
) -> Callable[..., Any]:
    """``function`` (a store method) checked for the person behind the request, if any;
    ``resolver(store)`` looks up what the check asks about."""
    signature = inspect.signature(function)

    @functools.wraps(function)
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        who = principal()
        if who is None or is_trusted():
            return function(self, *args, **kwargs)
        try:
            bound = signature.bind(self, *args, **kwargs)
        except TypeError:
            bound = None  # MLflow's own call error, raised by the call below
        if bound is not None:
            # A one-shot iterator is read once, by the check, and handed on as a list.
            for key, value in bound.arguments.items():
                if isinstance(value, Iterator):
                    bound.arguments[key] = list(value)
            args, kwargs = bound.args[1:], bound.kwargs
        if bound is not None or rule is None:
            with trusted():
                arguments = bound.arguments if bound is not None else {}
                refusal = _refusal(name, rule, who, arguments, resolver(self))
            if refusal:
                from mlflow.exceptions import MlflowException
                from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, PERMISSION_DENIED

                code = INVALID_PARAMETER_VALUE if isinstance(refusal, Invalid) else PERMISSION_DENIED
                raise MlflowException(refusal, error_code=code)
        with trusted():
            return function(self, *args, **kwargs)

    method.__hubforge_rule__ = rule  # type: ignore[attr-defined]
    return method


_GUARDED: dict[type, type] = {}


def _tracking_resolver(store: Any) -> Resolver:
    return StoreResolver(tracking=store)


def guard(
    store: Any,
    principal: Callable[[], Principal | None],
    rules: Mapping[str, Rule] = TRACKING_RULES,
    resolver: Callable[[Any], Resolver] = _tracking_resolver,
) -> Any:
    """``store`` with every public method checked (its class becomes a checked subclass of its own)."""
    cls = type(store)
    if getattr(cls, "__hubforge_guarded__", False):
        return store
    sub = _GUARDED.get(cls)
    if sub is None:
        namespace: dict[str, Any] = {"__hubforge_guarded__": True, "__module__": __name__}
        for name in public_methods(cls):
            function = inspect.getattr_static(cls, name)
            if inspect.isfunction(function):
                namespace[name] = guarded(name, function, rules.get(name), principal, resolver)
        sub = _GUARDED[cls] = type(f"Guarded{cls.__name__}", (cls,), namespace)
    store.__class__ = sub
    return store


def guard_registry(store: Any, principal: Callable[[], Principal | None], tracking: Any = None) -> Any:
    """``store`` (MLflow's model registry store) with every public method checked; runs and
    logged models are looked up in ``tracking`` (the server's tracking store by default)."""
    return guard(store, principal, REGISTRY_RULES, lambda registry: StoreResolver(tracking, registry))


def install(principal: Callable[[], Principal | None]) -> Any:
    """Guard the tracking and model registry stores of this MLflow server (opened now if they
    are not yet); the tracking store is returned."""
    tracking = guard(internals.tracking_store(), principal)
    guard_registry(internals.registry_store(), principal, tracking)
    return tracking
