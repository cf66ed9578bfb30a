"""The feature catalog: what a Feast registry holds, as plain data anyone can read and search.

``import feast`` alone takes seconds, so nothing that browses features imports it: the
apply (in the Feast environment, :func:`hubforge.features.store.catalog_of`) writes the
registry's objects as ``catalog.json`` beside the repository, and the features service,
the widgets and the benchmarks read that with :func:`load` and :meth:`Catalog.search`,
which are plain Python (no Feast, no pandas).

The file (``version`` 1)::

    {"version": 1, "generated": ISO time, "project": {"name", "description"},
     "entities":         [{name, join_keys, value_type, description, owner, tags}],
     "data_sources":     [{name, type, path, timestamp_field, description, owner, tags, fields}],
     "feature_views":    [{name, kind ("batch" | "on_demand"), entities, features, ttl_seconds,
                           sources, online, materialized_to, description, owner, tags}],
     "feature_services": [{name, views: {view: [feature, ...]}, description, owner, tags}]}

``features`` and ``fields`` are ``[{name, dtype, description}]``; ``sources`` names the
data sources a view reads (a batch view one, an on-demand view its request sources and
the views it reads); ``materialized_to`` is the end of the view's last materialization
(ISO, or null). A view or source is **restricted** when its ``sensitivity`` tag says
``confidential`` or ``restricted``: its data is read only through the features service,
with an approved data-access request.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .repo import FeaturesError

__all__ = [
    "CATALOG_FILE",
    "KINDS",
    "RESTRICTED",
    "Catalog",
    "Hit",
    "Item",
    "load",
]

CATALOG_FILE = "catalog.json"
VERSION = 1
#: The catalog's lists, as the kinds of :class:`Item` they hold.
KINDS = {
    "entities": "entity",
    "data_sources": "data_source",
    "feature_views": "feature_view",
    "feature_services": "feature_service",
}
#: The order of kinds among equally good hits: what people look for first.
KIND_ORDER = {"feature_view": 0, "feature_service": 1, "entity": 2, "data_source": 3}
#: ``sensitivity`` tag values that make a view or source restricted.
RESTRICTED = frozenset({"confidential", "restricted"})
#: Most hits a search returns (a person reads the first few; a long list only costs).
MAX_HITS = 50


@dataclass(frozen=True)
class Item:
    """One object of the catalog: its kind, its fields as written, and its search text."""

    kind: str
    name: str
    data: Mapping[str, Any]
    #: Lower-cased text a query is looked for in: name, description, owner, tags, fields.
    text: str = field(repr=False)

    @property
    def restricted(self) -> bool:
        return str(self.data.get("tags", {}).get("sensitivity", "")).lower() in RESTRICTED

    @property
    def owner(self) -> str:
        return str(self.data.get("owner", ""))

    @property
    def description(self) -> str:
        return str(self.data.get("description", ""))

    @property
    def tags(self) -> Mapping[str, str]:
        return self.data.get("tags", {})


@dataclass(frozen=True)
class Hit:
    """A search result: the item and how well it matched (lower is better)."""

    rank: int
    item: Item


def _text(kind: str, data: Mapping[str, Any]) -> str:
    parts: list[str] = [str(data.get("name", "")), str(data.get("description", "")), str(data.get("owner", ""))]
    for key, value in (data.get("tags") or {}).items():
        parts.append(f"{key}:{value}")
    for column in (*data.get("features", ()), *data.get("fields", ())):
        parts.append(str(column.get("name", "")))
        parts.append(str(column.get("description", "")))
    if kind == "entity":
        parts.extend(str(key) for key in data.get("join_keys", ()))
    return "\n".join(parts).lower()


def _rank(item: Item, words: Sequence[str]) -> int | None:
    """How well ``item`` matches every one of ``words`` (None: it does not)."""
    name = item.name.lower()
    rank = 0
    for word in words:
        if name.startswith(word):
            continue
        if word in name:
            rank += 1
        elif word in item.text:
            rank += 3
        else:
            return None
    return rank


class Catalog:
    """A feature catalog, read from its JSON, with a search over every object."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        if not isinstance(data, Mapping) or data.get("version") != VERSION:
            raise FeaturesError(f"features: catalog: not a version {VERSION} catalog")
        self.data = data
        self.project: Mapping[str, Any] = data.get("project", {})
        self.items: list[Item] = []
        self._by: dict[tuple[str, str], Item] = {}
        for key, kind in KINDS.items():
            for obj in data.get(key) or ():
                try:
                    item = Item(kind, str(obj["name"]), obj, _text(kind, obj))
                except (KeyError, TypeError, AttributeError) as exc:
                    what = obj.get("name", "?") if isinstance(obj, Mapping) else "?"
                    raise FeaturesError(f"features: catalog: {kind} {what}: malformed ({exc})") from exc
                self.items.append(item)
                self._by[(kind, item.name)] = item

    @classmethod
    def from_json(cls, text: str | bytes) -> Catalog:
        try:
            return cls(json.loads(text))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise FeaturesError(f"features: catalog: unreadable ({exc})") from exc

    def get(self, kind: str, name: str) -> Item | None:
        """The object ``name`` of ``kind`` (``feature_view``, ...), or None."""
        return self._by.get((kind, name))

    def of_kind(self, kind: str) -> list[Item]:
        return [item for item in self.items if item.kind == kind]

    def search(self, query: str, kinds: Iterable[str] | None = None, limit: int = MAX_HITS) -> list[Hit]:
        """Objects matching every word of ``query`` in their name, description, owner, tags
        (``key:value``) or fields, best first: the name starting with the words, then
        containing them, then the rest; ties by kind (views first) and name. An empty query
        lists all."""
        words = query.lower().split()
        wanted = set(kinds) if kinds is not None else None
        hits = []
        for item in self.items:
            if wanted is not None and item.kind not in wanted:
                continue
            rank = _rank(item, words)
            if rank is not None:
                hits.append(Hit(rank, item))
        hits.sort(key=lambda hit: (hit.rank, KIND_ORDER[hit.item.kind], hit.item.name))
        return hits[:limit]

    def lineage(self, view: str) -> dict[str, list[str]]:
        """What a feature view reads (``sources``) and which feature services use it (``services``)."""
        item = self.get("feature_view", view)
        if item is None:
            return {"sources": [], "services": []}
        services = [s.name for s in self.of_kind("feature_service") if view in (s.data.get("views") or {})]
        return {"sources": list(item.data.get("sources") or ()), "services": services}


def load(path: str | Path) -> Catalog:
    """The catalog in ``path`` (a ``catalog.json``), or one line saying why not."""
    try:
        text = Path(path).read_bytes()
    except OSError as exc:
        raise FeaturesError(f"features: catalog: cannot read {path}: {exc.strerror}") from exc
    return Catalog.from_json(text)
