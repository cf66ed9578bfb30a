"""Feast, at its boundary: apply a repository's definitions, fill its online store, read it.

This is the only module of :mod:`hubforge.features` that imports Feast (6-8 s), and only
:mod:`hubforge.features.apply` imports it, inside the steps that need it. Whatever Feast
raises is translated into one :class:`~hubforge.features.repo.FeaturesError` line;
what Feast prints (progress bars, colours) is kept out of the command's own lines.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd
import pyarrow as pa
from feast import (
    Entity,
    FeatureService,
    FeatureStore,
    FeatureView,
    OnDemandFeatureView,
    Project,
    StreamFeatureView,
)
from feast.data_source import DataSource
from feast.feature_view import DUMMY_ENTITY
from feast.infra.offline_stores.file_source import FileSource
from feast.repo_contents import RepoContents
from feast.repo_operations import extract_objects_for_apply_delete, get_repo_files, is_valid_name

from .frames import column_values
from .repo import FeaturesError, StoreUnreachable

__all__ = [
    "Applied",
    "apply_repo",
    "catalog_of",
    "historical_values",
    "load_repo",
    "materialize_repo",
    "online_values",
    "open_store",
]

_modules = itertools.count()


@dataclass(frozen=True)
class Applied:
    """How many objects of each kind a repository defines (as applied)."""

    entities: int
    data_sources: int
    feature_views: int
    on_demand_feature_views: int
    feature_services: int

    def __str__(self) -> str:
        counts = (
            (self.entities, "entity", "entities"),
            (self.data_sources, "data source", "data sources"),
            (self.feature_views, "feature view", "feature views"),
            (self.on_demand_feature_views, "on-demand feature view", "on-demand feature views"),
            (self.feature_services, "feature service", "feature services"),
        )
        return ", ".join(f"{n} {one if n == 1 else many}" for n, one, many in counts)


#: The longest reason a message quotes (some of Feast's messages print whole objects).
REASON_MAX = 300


def _reason(exc: BaseException) -> str:
    """One line saying what went wrong, as Feast or Python put it."""
    if isinstance(exc, SyntaxError):
        return f"{Path(exc.filename or '?').name} line {exc.lineno}: {exc.msg}"
    text = " ".join(str(exc).split())
    if len(text) > REASON_MAX:
        text = text[: REASON_MAX - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@contextlib.contextmanager
def _translated(step: str, *, quiet: bool = True) -> Iterator[None]:
    """Run a step with Feast's output kept aside (unless not ``quiet``) and any error turned into one line."""
    kept = io.StringIO()
    try:
        with (
            contextlib.redirect_stdout(kept) if quiet else contextlib.nullcontext(),
            contextlib.redirect_stderr(kept) if quiet else contextlib.nullcontext(),
        ):
            yield
    except FeaturesError:
        raise
    # Feast and the code of a repository raise anything (ValueError, its own exceptions,
    # SyntaxError, ImportError, redis' errors): each ends here as one line for a person.
    except Exception as exc:
        if _unreachable(exc):
            raise StoreUnreachable(f"features: {step}: a store cannot be reached: {_reason(exc)}") from exc
        raise FeaturesError(f"features: {step}: {_reason(exc)}") from exc


#: What the clients of the stores raise when their server is away (redis' own classes are
#: not the builtins': they are known by name).
_UNREACHABLE_NAMES = frozenset({"ConnectionError", "TimeoutError", "BusyLoadingError"})


def _unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) says a store's server cannot be reached."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, ConnectionError | TimeoutError) or type(seen).__name__ in _UNREACHABLE_NAMES:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _load_module(path: Path) -> ModuleType:
    """Run one Python file of a repository as a module of its own.

    It is not left in ``sys.modules``, so dill pickles the on-demand views' functions
    by value, and a second repository's ``definitions.py`` is never the first one's.
    """
    spec = importlib.util.spec_from_file_location(f"_hubforge_feature_repo_{next(_modules)}", path)
    if spec is None or spec.loader is None:
        raise FeaturesError(f"features: {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _collect(modules: list[ModuleType], project: Project) -> RepoContents:
    """The Feast objects the modules define, each once (as ``feast apply`` collects them)."""
    found: list[object] = []
    for module in modules:
        for name in dir(module):
            obj = getattr(module, name)
            if not any(obj is seen for seen in found):
                found.append(obj)
    views = [o for o in found if isinstance(o, FeatureView) and not isinstance(o, StreamFeatureView)]
    sources = [o for o in found if isinstance(o, DataSource)]
    sources += [v.batch_source for v in views if v.batch_source is not None and v.batch_source not in sources]
    return RepoContents(
        projects=[project],
        data_sources=sources,
        entities=[o for o in found if isinstance(o, Entity)] + [DUMMY_ENTITY],
        feature_views=views,
        feature_services=[o for o in found if isinstance(o, FeatureService)],
        on_demand_feature_views=[o for o in found if isinstance(o, OnDemandFeatureView)],
        stream_feature_views=[o for o in found if isinstance(o, StreamFeatureView)],
        label_views=[],
        permissions=[],
    )


def open_store(repo: Path) -> FeatureStore:
    """The Feast store of the repository at ``repo`` (its ``feature_store.yaml``)."""
    with _translated("feature_store.yaml"):
        return FeatureStore(repo_path=str(repo))


def load_repo(repo: Path, store: FeatureStore) -> RepoContents:
    """The objects the repository's Python files define, under the store's project."""
    config = store.config
    if not is_valid_name(config.project):
        raise FeaturesError(f"features: feature_store.yaml: project: {config.project!r} is not a valid Feast name")
    with _translated("definitions"):
        modules = [_load_module(path) for path in get_repo_files(repo)]
        project = Project(name=config.project, description=config.project_description or "")
        return _collect(modules, project)


def _check_files(repo: Path, contents: RepoContents) -> None:
    """Refuse a Parquet source that is not there (Feast 0.67 only logs a warning, and fails later)."""
    for source in contents.data_sources:
        if not isinstance(source, FileSource):
            continue
        path = FileSource.get_uri_for_file_path(repo, source.path)
        if "://" not in path and not Path(path).exists():
            raise FeaturesError(f"features: apply: data source {source.name}: no such file {path}")


def apply_repo(repo: Path) -> Applied:
    """Register the repository's objects (and delete what it no longer defines), as ``feast apply``."""
    store = open_store(repo)
    contents = load_repo(repo, store)
    _check_files(repo, contents)
    with _translated("apply"):
        provider = store._get_provider()  # feast apply checks the sources the same way
        for view in contents.feature_views:
            if view.batch_source is not None:
                provider.validate_data_source(store.config, view.batch_source)
        to_apply, to_delete, _, _ = extract_objects_for_apply_delete(store.project, store.registry, contents)
        store.apply(to_apply, objects_to_delete=to_delete, partial=False)
    return Applied(
        entities=len(contents.entities) - 1,  # less Feast's placeholder for entity-less views
        data_sources=len(contents.data_sources),
        feature_views=len(contents.feature_views),
        on_demand_feature_views=len(contents.on_demand_feature_views),
        feature_services=len(contents.feature_services),
    )


def materialize_repo(repo: Path, start: datetime, end: datetime) -> int:
    """Fill the online store with each feature view's latest values in [start, end); how many views."""
    store = open_store(repo)
    with _translated("materialize"):
        views = [view for view in store.list_feature_views() if view.online]
        store.materialize(start_date=start, end_date=end, feature_views=[view.name for view in views])
    return len(views)


def _columns(fields: Any) -> list[dict[str, str]]:
    return [{"name": f.name, "dtype": str(f.dtype), "description": f.description or ""} for f in fields]


def _common(obj: Any) -> dict[str, Any]:
    return {"name": obj.name, "description": obj.description or "", "owner": obj.owner or "", "tags": dict(obj.tags)}


def _source(source: DataSource) -> dict[str, Any]:
    fields = getattr(source, "schema", None) or []
    return {
        **_common(source),
        "type": type(source).__name__,
        "path": getattr(source, "path", "") or "",
        "timestamp_field": source.timestamp_field or "",
        "fields": _columns(fields),
    }


def _view(view: FeatureView) -> dict[str, Any]:
    ends = [end for _, end in view.materialization_intervals]
    return {
        **_common(view),
        "kind": "batch",
        "entities": [name for name in view.entities if name != DUMMY_ENTITY.name],
        "features": _columns(view.features),
        "ttl_seconds": int(view.ttl.total_seconds()) if view.ttl else None,
        "sources": [view.batch_source.name] if view.batch_source is not None else [],
        "online": bool(view.online),
        "materialized_to": max(ends).isoformat() if ends else None,
    }


def _on_demand(view: OnDemandFeatureView, views: dict[str, FeatureView]) -> dict[str, Any]:
    read = view.source_feature_view_projections
    # An on-demand view is about the entities of the views it reads.
    entities = {e for name in read if name in views for e in views[name].entities} - {DUMMY_ENTITY.name}
    return {
        **_common(view),
        "kind": "on_demand",
        "entities": sorted(entities),
        "features": _columns(view.features),
        "ttl_seconds": None,
        "sources": [*view.source_request_sources, *read],
        "online": True,
        "materialized_to": None,
    }


def _by_name(objects: Any) -> list[Any]:
    return sorted(objects, key=lambda obj: obj.name)


def catalog_of(store: FeatureStore, generated: datetime) -> dict[str, Any]:
    """The registry's objects as the catalog's plain data (:mod:`hubforge.features.catalog`)."""
    with _translated("catalog"):
        views = {view.name: view for view in store.list_feature_views()}
        return {
            "version": 1,
            "generated": generated.isoformat(),
            "project": {"name": store.project, "description": store.config.project_description or ""},
            "entities": [
                {**_common(e), "join_keys": [e.join_key], "value_type": e.value_type.name}
                for e in _by_name(store.list_entities())
                if e.name != DUMMY_ENTITY.name
            ],
            "data_sources": [_source(source) for source in _by_name(store.list_data_sources())],
            "feature_views": [_view(view) for view in _by_name(views.values())]
            + [_on_demand(view, views) for view in _by_name(store.list_on_demand_feature_views())],
            "feature_services": [
                {
                    **_common(service),
                    "views": {p.name: [f.name for f in p.features] for p in service.feature_view_projections},
                }
                for service in _by_name(store.list_feature_services())
            ],
        }


def online_values(
    store: FeatureStore, features: Sequence[str], service: str | None, rows: Sequence[Mapping[str, Any]]
) -> dict[str, list[Any]]:
    """The online values of ``features`` (or of the feature ``service``) for ``rows``, by name."""
    with _translated("online read"):
        refs: Any = store.get_feature_service(service) if service else list(features)
        return dict(store.get_online_features(features=refs, entity_rows=[dict(row) for row in rows]).to_dict())


#: The entity rows' time column (Feast's default name, the one it looks for first).
TIMESTAMP = "event_timestamp"
#: Which distinct entity key and time a row of the frame Feast is given stands for.
_KEY = "__hubforge_key"


def _asked(store: FeatureStore, features: Sequence[str], service: str | None) -> dict[str, list[str]]:
    """The features read, by view, in order: the service's projections or the references."""
    if service:
        projections = store.get_feature_service(service).feature_view_projections
        return {p.name: [feature.name for feature in p.features] for p in projections}
    asked: dict[str, list[str]] = {}
    for ref in features:
        view, name = ref.split(":", 1)
        asked.setdefault(view, []).append(name)
    return asked


def _batch_needs(asked: Mapping[str, list[str]], on_demand: Mapping[str, OnDemandFeatureView]) -> dict[str, list[str]]:
    """The batch views' features to read: those asked, and those the on-demand views asked compute from."""
    needs: dict[str, list[str]] = {}
    for view, names in asked.items():
        if view in on_demand:
            projections = on_demand[view].source_feature_view_projections.values()
            sources = [(p.name, [f.name for f in p.features]) for p in projections]
        else:
            sources = [(view, names)]
        for name, wanted in sources:
            have = needs.setdefault(name, [])
            have.extend(feature for feature in wanted if feature not in have)
    return needs


@dataclass(frozen=True)
class _AsOf:
    """A batch view's values as of each distinct key and time (``frame``), and which of them
    each entity row is (``key``)."""

    frame: pd.DataFrame
    key: Any

    def values(self, name: str) -> list[Any]:
        """A feature's JSON values, a value per row (an int stays an int where others are missing)."""
        found = dict(zip(self.frame.index, column_values(self.frame[name]), strict=True))
        return [found.get(key) for key in self.key]

    def rows(self, names: list[str]) -> pd.DataFrame:
        """The features ``names``, a row per entity row, as Feast's retrieval job holds them."""
        return self.frame[names].reindex(self.key).reset_index(drop=True)


def _as_of(store: FeatureStore, entity: pd.DataFrame, view_name: str, names: list[str]) -> _AsOf:
    """The batch view's ``names`` as of each entity row's time.

    Feast is asked once per view, for each distinct key and time once. Its file offline
    store (0.67) drops an entity row when one view holds rows for the row's key but none
    in the TTL before its time, the other views' values with it; and of rows sharing a
    key and a time it keeps one (feast-dev/feast#6787). Asked so, neither happens: a key
    and time Feast leaves out has no value of this view, which is what it should answer.
    """
    view = store.get_feature_view(view_name)
    on = [column.name for column in view.entity_columns] + [TIMESTAMP]
    absent = [key for key in on if key not in entity.columns]
    if absent:
        raise FeaturesError(f"features: historical read: the entity rows have no {absent[0]} ({view_name} needs it)")
    key = entity.groupby(on, sort=False, dropna=False).ngroup().to_numpy()
    asked = entity[on].assign(**{_KEY: key}).drop_duplicates(_KEY)
    refs = [f"{view_name}:{name}" for name in names]
    got = store.get_historical_features(entity_df=asked, features=refs).to_df()
    return _AsOf(got.drop_duplicates(_KEY, keep="last").set_index(_KEY)[names], key)


def _computed(view: OnDemandFeatureView, entity: pd.DataFrame, read: Mapping[str, _AsOf],
              names: list[str]) -> pd.DataFrame:  # fmt: skip
    """An on-demand view's ``names``, computed from the entity rows (its request fields) and the
    values read of its sources, as Feast's retrieval job computes them."""
    sources = [read[p.name].rows([f.name for f in p.features]) for p in view.source_feature_view_projections.values()]
    inputs = pd.concat([entity, *sources], axis=1)
    inputs = inputs.loc[:, ~inputs.columns.duplicated()]
    missing = [field.name for source in view.source_request_sources.values() for field in source.schema
               if field.name not in inputs.columns]  # fmt: skip
    if missing:
        raise FeaturesError(f"features: historical read: the entity rows have no {missing[0]} ({view.name} needs it)")
    out = view.transform_arrow(pa.Table.from_pandas(inputs, preserve_index=False), False).to_pandas()
    return out[names]


def historical_values(
    store: FeatureStore, features: Sequence[str], service: str | None, rows: Sequence[Mapping[str, Any]]
) -> dict[str, list[Any]]:
    """The values of ``features`` (or of the feature ``service``) as of each row's
    ``event_timestamp``, by name: the rows' own columns, then the features; a value per row,
    in the rows' order, JSON's (:mod:`.frames`), missing where the view has none in its TTL."""
    # Not quiet: the features service reads online on another thread, inside a redirection of
    # sys.stdout, which is the whole process's; two threads swapping it could leave it swapped.
    with _translated("historical read", quiet=False):
        entity = pd.DataFrame([dict(row) for row in rows])
        if TIMESTAMP not in entity.columns:
            raise FeaturesError(f"features: historical read: the entity rows have no {TIMESTAMP}")
        entity[TIMESTAMP] = pd.to_datetime(entity[TIMESTAMP], utc=True)
        asked = _asked(store, features, service)
        on_demand = {view.name: view for view in store.list_on_demand_feature_views() if view.name in asked}
        read = {view: _as_of(store, entity, view, names) for view, names in _batch_needs(asked, on_demand).items()}
        values = {str(name): column_values(entity[name]) for name in entity.columns}
        for view, names in asked.items():
            computed = _computed(on_demand[view], entity, read, names) if view in on_demand else None
            for name in names:
                if name in values:
                    raise FeaturesError(f"features: historical read: more than one column is named {name!r}")
                values[name] = column_values(computed[name]) if computed is not None else read[view].values(name)
        return values
