"""Which request needs which permission: MLflow's routes, each with its rule.

:func:`authorize` decides one request from its method, its path under the service
prefix and its parameters (the query merged with the JSON body), asking a
:class:`~.policy.Resolver` for the objects they name. A route not named here is for
platform admins only, so an MLflow upgrade that adds one opens nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from .policy import WRITE, Check, Params, Principal, Resolver

__all__ = ["PAGES", "PATTERNS", "RULES", "authorize", "route"]

_API = re.compile(r"(?:ajax-)?api/[23]\.0/")


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
