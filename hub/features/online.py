"""Online reads through the features service: ``POST api/online``.

A notebook reads feature values for a few entities (``get_online_features``) through the
service rather than opening the online store itself: the store lives in the platform's
private data folder, and restricted views must be read only where the platform decides.
The body names either ``features`` (``view:feature`` references) or a ``feature_service``,
and the ``entity_rows``; :func:`parse` checks it against the catalog before Feast sees
it, so what is malformed or unknown is a 400 naming it. The views a read touches are in
the query, for the handler to check the reader's data-access grants on the restricted
ones (:mod:`.access`) before anything is read.

:class:`OnlineReader` holds the Feast store, opened on the first read (importing Feast
takes seconds; the catalog requests never pay it), and reads on one thread of its own.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from hubforge.errors import Invalid
from hubforge.features.catalog import Catalog

log = logging.getLogger(__name__)

__all__ = [
    "MAX_FEATURES",
    "MAX_ROWS",
    "OnlineQuery",
    "OnlineReader",
    "StoreReader",
    "check_value",
    "parse",
    "read_target",
    "touched",
]

MAX_FEATURES = 200
MAX_ROWS = 1000
#: The longest text of a key's value or a feature reference.
MAX_TEXT = 256
Scalar = str | int | float | bool


@dataclass(frozen=True)
class OnlineQuery:
    """A checked read: feature references or a service, the views they touch, the rows."""

    features: tuple[str, ...]
    service: str | None
    views: tuple[str, ...]
    rows: tuple[Mapping[str, Scalar], ...]


def check_value(key: str, item: Any) -> None:
    """Invalid unless ``item``, an entity row's value of ``key``, is a number, a boolean or a short string."""
    if not isinstance(item, str | int | float | bool) or (isinstance(item, str) and len(item) > MAX_TEXT):
        raise Invalid(f"entity_rows: {key[:MAX_TEXT]!r} must be a number, a string or a boolean")


def _rows(value: Any) -> tuple[Mapping[str, Scalar], ...]:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_ROWS:
        raise Invalid(f"entity_rows: a list of 1 to {MAX_ROWS} objects")
    for row in value:
        if not isinstance(row, dict) or not row:
            raise Invalid("entity_rows: each row is an object of join keys and their values")
        for key, item in row.items():
            check_value(key, item)
    return tuple(value)


def parse(body: Any, catalog: Catalog) -> OnlineQuery:
    """The read ``body`` asks for, checked against ``catalog``; Invalid (400) naming what is
    wrong. Restricted views are the caller's to check (:mod:`.access`)."""
    if not isinstance(body, dict):
        raise Invalid("the body must be a JSON object")
    extra = sorted(set(body) - {"features", "feature_service", "entity_rows"})
    if extra:
        raise Invalid(f"{extra[0][:MAX_TEXT]}: not a field of an online read")
    rows = _rows(body.get("entity_rows"))
    features, service, views = read_target(body, catalog)
    return OnlineQuery(features=features, service=service, views=touched(catalog, views), rows=rows)


def touched(catalog: Catalog, views: Iterable[str]) -> tuple[str, ...]:
    """The views a read touches: those named, and the views each on-demand one computes from."""
    found = list(views)
    for name in list(found):
        item = catalog.get("feature_view", name)
        if item is None or item.data.get("kind") != "on_demand":
            continue
        for source in item.data.get("sources") or ():
            if catalog.get("feature_view", source) is not None and source not in found:
                found.append(source)
    return tuple(found)


def read_target(body: Mapping[str, Any], catalog: Catalog) -> tuple[tuple[str, ...], str | None, tuple[str, ...]]:
    """What a read's ``body`` names, checked against ``catalog``: its feature references or
    its feature service, and the views they are of; Invalid (400) naming what is wrong."""
    if ("features" in body) == ("feature_service" in body):
        raise Invalid("name either features (view:feature, ...) or a feature_service")
    if "feature_service" in body:
        name = body["feature_service"]
        service = catalog.get("feature_service", name) if isinstance(name, str) else None
        if service is None:
            raise Invalid(f"feature_service: no feature service {str(name)[:MAX_TEXT]!r} in the catalog")
        return (), service.name, tuple(service.data.get("views") or {})
    refs = body["features"]
    if not isinstance(refs, list) or not 1 <= len(refs) <= MAX_FEATURES:
        raise Invalid(f"features: a list of 1 to {MAX_FEATURES} references view:feature")
    views: list[str] = []
    for ref in refs:
        if not isinstance(ref, str) or ref.count(":") != 1 or len(ref) > MAX_TEXT:
            raise Invalid(f"features: {str(ref)[:MAX_TEXT]!r} is not a reference view:feature")
        view_name, feature = ref.split(":")
        view = catalog.get("feature_view", view_name)
        if view is None:
            raise Invalid(f"features: no feature view {view_name!r} in the catalog")
        if feature not in {column.get("name") for column in view.data.get("features") or ()}:
            raise Invalid(f"features: {view_name} has no feature {feature!r}")
        if view_name not in views:
            views.append(view_name)
    return tuple(refs), None, tuple(views)


class StoreReader:
    """A store of the repository at ``repo``, opened on the first read or once somebody starts
    using the features (:meth:`warm`), and read on a thread of its own. Importing Feast takes
    seconds, a minute on a busy machine: a service nobody reads from never pays it, and the
    person who browses the catalog has the store open by the time they read a value."""

    #: The :mod:`hubforge.features.store` function a read calls, and the thread's name.
    function: ClassVar[str]
    thread_name: ClassVar[str]

    def __init__(self, repo: Path) -> None:
        self.repo = repo
        self._store: Any = None
        self._lock = threading.Lock()
        self._warming = False
        self._warm_lock = threading.Lock()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self.thread_name)

    def warm(self) -> None:
        """Start opening the store, if nobody has (returns at once).
        A failure is left to the first read, which reports it as a read does."""
        # Not the store's lock: the opening holds that for as long as Feast imports.
        with self._warm_lock:
            if self._store is not None or self._warming:
                return
            self._warming = True
        # A thread of its own, a daemon: a service stopping meanwhile does not wait for Feast's
        # import to end (the reader's pool thread would be joined at exit). A read waits for
        # the opening on the store's lock.
        threading.Thread(target=self._open_quietly, name=f"{self.thread_name}-open", daemon=True).start()

    def _open_quietly(self) -> None:
        try:
            self._open()
        except Exception as exc:
            log.info("the feature store did not open ahead of a read: %s", exc)

    def _open(self) -> Any:
        with self._lock:
            if self._store is None:
                from hubforge.features.store import open_store  # Feast: seconds, on the first read only

                self._store = open_store(self.repo)
            return self._store

    def _read(self, query: Any) -> bytes:
        from hubforge.features import store

        values = getattr(store, self.function)(self._open(), query.features, query.service, query.rows)
        return json.dumps({"features": values}, default=str).encode()

    async def read(self, query: Any) -> bytes:
        """The values as JSON ``{"features": {name: [value per row]}}``; FeaturesError (one
        line) for what Feast refuses (say, a join key the views do not have)."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._read, query)

    def close(self) -> None:
        self._thread.shutdown(wait=False, cancel_futures=True)


class OnlineReader(StoreReader):
    """The online store, read on a thread of its own."""

    function = "online_values"
    thread_name = "feast-online"
