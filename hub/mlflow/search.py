"""Searches filtered where MLflow answers them, and GraphQL fields checked as they resolve.

A search returns only what the person may read, page by page (:func:`filtered_page`),
so the page size and page tokens MLflow's UI and clients rely on still hold. MLflow's
GraphQL endpoint answers several objects in one request: :class:`GraphQLGate` checks
each field against the same :class:`~.policy.Check` as the REST routes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import internals
from .policy import Check, Principal, Resolver, StoreResolver, can_read, owned

__all__ = ["GraphQLGate", "filtered_page", "install"]


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
    from mlflow.utils.search_utils import SearchUtils

    resolver = StoreResolver

    def search(kind: str) -> Callable[[], Any]:
        message: Any = {
            "experiments": SearchExperiments,
            "registered_models": SearchRegisteredModels,
            "model_versions": SearchModelVersions,
        }[kind]
        original = flask_app.view_functions[internals.SEARCH_VIEWS[kind]]

        @internals.catch_mlflow_exception
        def view() -> Any:
            who = principal()
            if who is None or who.sees_all or (kind != "experiments" and who.manages_registry):
                return original()
            request = internals.request_message(message())
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
            return internals.wrap_response(response)

        return view

    for kind, view in internals.SEARCH_VIEWS.items():
        if view in flask_app.view_functions:
            flask_app.view_functions[view] = search(kind)
    internals.set_graphql_middleware(lambda: [GraphQLGate(principal, resolver)])


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
