"""What the feature browser shows for a catalog item: its facts, lineage and freshness as
HTML, and the code that reads it.

Pure functions of the catalog (:mod:`hubforge.features.catalog`) and a clock, so the
widget (:mod:`.feature_browser`) and its tests share them. Everything the catalog says
was typed by people: it is escaped wherever it goes into HTML, and in the code it is only
ever a quoted literal.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from hubforge.features.catalog import Catalog, Item

from .client import one_line

__all__ = [
    "HINT",
    "KIND_FILTERS",
    "KIND_NAMES",
    "LOCK",
    "SPINNER",
    "ago",
    "detail_html",
    "freshness",
    "human_duration",
    "lineage_html",
    "plural",
    "result_label",
    "row_keys",
    "snippet_for",
    "ttl_text",
]

#: The kind filter's choices: label -> the kind searched ("" for every kind).
KIND_FILTERS = (
    ("all", ""),
    ("feature views", "feature_view"),
    ("feature services", "feature_service"),
    ("entities", "entity"),
    ("data sources", "data_source"),
)
KIND_NAMES = {
    "feature_view": "feature view",
    "feature_service": "feature service",
    "entity": "entity",
    "data_source": "data source",
}
LOCK = "\N{LOCK}"
SPINNER = '<i class="fa fa-spinner fa-spin"></i> '
_UNITS = (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1))
HINT = "<p><i>Choose an item on the left to see what it holds, where it comes from and how to read it.</i></p>"
_RESTRICTED = (
    '<div style="background:#fff8c5;border:1px solid #d4a72c;padding:4px 8px;margin:4px 0">'
    "{lock} <b>Restricted</b> ({what}): reading its data needs an approved data-access request.</div>"
)
_esc = html.escape


def plural(count: int, unit: str, units: str = "") -> str:
    return f"{count} {unit}" if count == 1 else f"{count} {units or unit + 's'}"


def human_duration(seconds: float, parts: int = 2) -> str:
    """``seconds`` in its largest ``parts`` units from the first non-zero one: "90 days", "1 day 6 hours"."""
    left = round(abs(seconds))
    words: list[str] = []
    started = 0
    for unit, size in _UNITS:
        count, left = divmod(left, size)
        started += bool(started or count)
        if count:
            words.append(plural(count, unit))
        if started >= parts:
            break
    return " ".join(words) or "0 seconds"


def ago(moment: datetime, now: datetime) -> str:
    """How long before ``now`` ``moment`` was, in its largest unit: "3 hours ago", "just now"."""
    seconds = (now - moment).total_seconds()
    if abs(seconds) < 60:
        return "just now"
    text = human_duration(seconds, parts=1)
    return f"{text} ago" if seconds > 0 else f"{text} from now"


def ttl_text(view: Mapping[str, Any]) -> str:
    """A view's TTL: how far back a point-in-time join looks for a value."""
    if view.get("kind") == "on_demand":
        return "none: computed at request time"
    ttl = view.get("ttl_seconds")
    if not isinstance(ttl, int | float) or ttl <= 0:
        return "no limit: values never expire"
    return human_duration(ttl)


def freshness(view: Mapping[str, Any], now: datetime) -> str:
    """How recent a view's online values are: the end of its last materialization, relative to ``now``."""
    if view.get("kind") == "on_demand":
        return "computed at request time"
    if not view.get("online", True):
        return "offline store only (not materialized online)"
    raw = view.get("materialized_to")
    if not raw:
        return "never materialized"
    try:
        moment = datetime.fromisoformat(str(raw))
    except ValueError:
        return f"materialized up to {raw}"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    stamp = moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"materialized up to {ago(moment, now)} ({stamp})"


def result_label(item: Item) -> str:
    """One result as the list shows it (plain text: the list renders no HTML)."""
    kind = KIND_NAMES.get(item.kind, item.kind)
    if item.kind == "feature_view" and item.data.get("kind") == "on_demand":
        kind = "on-demand feature view"
    lock = f"{LOCK} " if item.restricted else ""
    owner = f"  ·  {one_line(item.owner, 60)}" if item.owner else ""
    return f"{lock}{one_line(item.name, 80)}  ·  {kind}{owner}"


# --- the detail pane (HTML; everything from the catalog escaped) ---------------------


def _list(data: Mapping[str, Any], key: str) -> list[Any]:
    value = data.get(key)
    return list(value) if isinstance(value, list | tuple) else []


def _code(names: Iterable[Any]) -> str:
    return ", ".join(f"<code>{_esc(str(name))}</code>" for name in names) or "<i>none</i>"


def _tags(tags: Any) -> str:
    pairs = tags.items() if isinstance(tags, Mapping) else ()
    return " ".join(f"<code>{_esc(str(k))}: {_esc(str(v))}</code>" for k, v in pairs) or "<i>none</i>"


def _facts(rows: Sequence[tuple[str, str]]) -> str:
    """A two-column table; the values are HTML already."""
    body = "".join(f'<tr><th style="text-align:left;padding-right:1em">{k}</th><td>{v}</td></tr>' for k, v in rows)
    return f"<table>{body}</table>"


def _columns(columns: Iterable[Any], *, view: bool = False) -> str:
    head = ("<th>view</th>" if view else "") + "<th>name</th><th>dtype</th><th>description</th>"
    rows = "".join(
        "<tr>"
        + (f"<td><code>{_esc(str(c.get('view', '')))}</code></td>" if view else "")
        + f"<td><code>{_esc(str(c.get('name', '')))}</code></td><td>{_esc(str(c.get('dtype', '')))}</td>"
        + f"<td>{_esc(str(c.get('description', '')))}</td></tr>"
        for c in columns
        if isinstance(c, Mapping)
    )
    if not rows:
        return "<p><i>No fields.</i></p>"
    return f'<table style="border-collapse:collapse" border="1" cellpadding="3"><tr>{head}</tr>{rows}</table>'


def _node(catalog: Catalog, name: str, kind: str, *, this: bool = False) -> str:
    item = catalog.get(kind, name)
    lock = f"{LOCK} " if item is not None and item.restricted else ""
    style = "background:#ddf4ff;font-weight:bold" if this else "background:#f6f8fa"
    return f'<span style="{style};border:1px solid #d0d7de;padding:1px 6px">{lock}{_esc(name)}</span>'


def lineage_html(catalog: Catalog, view: str) -> str:
    """Data source(s) -> the view -> the feature services using it, as one line of boxes."""
    found = catalog.lineage(view)
    # An on-demand view reads request sources and other views.
    sources = [
        _node(catalog, s, "data_source" if catalog.get("feature_view", s) is None else "feature_view")
        for s in found["sources"]
    ]
    services = [_node(catalog, s, "feature_service") for s in found["services"]]
    none = "<i>none</i>"
    steps = [", ".join(sources) or none, _node(catalog, view, "feature_view", this=True), ", ".join(services) or none]
    return '<div style="margin:6px 0"><b>Lineage:</b> ' + " &rarr; ".join(steps) + "</div>"


def _head(item: Item) -> str:
    lock = f"{LOCK} " if item.restricted else ""
    kind = KIND_NAMES.get(item.kind, item.kind)
    notice = ""
    if item.restricted:
        notice = _RESTRICTED.format(lock=LOCK, what=_esc(f"sensitivity: {item.tags.get('sensitivity')}"))
    description = _esc(item.description) or "<i>No description.</i>"
    return (
        f"<h4 style='margin:4px 0'>{lock}{_esc(item.name)} <small>({kind})</small></h4>{notice}"
        f'<div style="white-space:pre-wrap;margin:4px 0">{description}</div>'
    )


def _common(item: Item) -> list[tuple[str, str]]:
    return [("owner", _esc(item.owner) or "<i>none</i>"), ("tags", _tags(item.tags))]


def _view_html(catalog: Catalog, item: Item, now: datetime) -> str:
    data = item.data
    rows = [
        ("entities", _code(_list(data, "entities"))),
        ("TTL", _esc(ttl_text(data))),
        ("sources", _code(_list(data, "sources"))),
        ("freshness", _esc(freshness(data, now))),
        *_common(item),
    ]
    return _head(item) + _facts(rows) + lineage_html(catalog, item.name) + _columns(_list(data, "features"))


def _service_views(item: Item) -> dict[str, list[str]]:
    views = item.data.get("views")
    if not isinstance(views, Mapping):
        return {}
    return {str(view): [str(f) for f in features] for view, features in views.items() if isinstance(features, list)}


def _service_columns(view: str, features: list[str], found: Item | None) -> list[dict[str, Any]]:
    """The features a service takes from ``view``, described as the view describes them."""
    known = {str(c.get("name")): c for c in _list(found.data, "features") if isinstance(c, Mapping)} if found else {}
    return [{**known.get(name, {"name": name}), "view": view} for name in features]


def _service_html(catalog: Catalog, item: Item) -> str:
    views = _service_views(item)
    columns: list[dict[str, Any]] = []
    restricted: list[str] = []
    for view, features in views.items():
        found = catalog.get("feature_view", view)
        columns += _service_columns(view, features, found)
        if found is not None and found.restricted:
            restricted.append(view)
    notice = ""
    if restricted:
        notice = _RESTRICTED.format(lock=LOCK, what="it uses " + ", ".join(_esc(v) for v in restricted))
    rows = [("feature views", _code(views)), *_common(item)]
    return _head(item) + notice + _facts(rows) + _columns(columns, view=True)


def _entity_html(catalog: Catalog, item: Item) -> str:
    views = [v.name for v in catalog.of_kind("feature_view") if item.name in _list(v.data, "entities")]
    rows = [
        ("join keys", _code(_list(item.data, "join_keys"))),
        ("value type", _esc(str(item.data.get("value_type", "")))),
        ("feature views keyed by it", _code(views)),
        *_common(item),
    ]
    return _head(item) + _facts(rows)


def _source_html(catalog: Catalog, item: Item) -> str:
    views = [v.name for v in catalog.of_kind("feature_view") if item.name in _list(v.data, "sources")]
    rows = [
        ("type", _esc(str(item.data.get("type", "")))),
        ("timestamp field", _esc(str(item.data.get("timestamp_field", ""))) or "<i>none</i>"),
        ("path", _esc(str(item.data.get("path", ""))) or "<i>none</i>"),
        ("read by", _code(views)),
        *_common(item),
    ]
    fields = _list(item.data, "fields")
    return _head(item) + _facts(rows) + (_columns(fields) if fields else "")


def detail_html(catalog: Catalog, item: Item, now: datetime) -> str:
    """What the detail pane shows for ``item``; every value from the catalog escaped."""
    if item.kind == "feature_view":
        return _view_html(catalog, item, now)
    if item.kind == "feature_service":
        return _service_html(catalog, item)
    if item.kind == "entity":
        return _entity_html(catalog, item)
    return _source_html(catalog, item)


# --- the code snippet ---------------------------------------------------------------


def _literal(value: str) -> str:
    """``value`` as a Python string literal (JSON's escapes are Python's): catalog text never becomes code."""
    return json.dumps(value, ensure_ascii=False)


def _example(dtype: str, row: int) -> str:
    kind = dtype.lower()
    if "int" in kind:
        return str(1001 + row)
    if "float" in kind or "double" in kind:
        return f"{10.0 * (row + 1):.1f}"
    if "bool" in kind:
        return "False"
    return _literal(f"id-{row + 1}")


def _keys(catalog: Catalog, views: Iterable[str]) -> dict[str, str]:
    """The columns an entity row needs for ``views``: each entity's join keys (a Feast entity's
    default is its name) and the fields of the request sources an on-demand view reads, with their types."""
    keys: dict[str, str] = {}
    for name in views:
        view = catalog.get("feature_view", name)
        if view is None:
            continue
        for entity in _list(view.data, "entities"):
            found = catalog.get("entity", str(entity))
            value_type = str(found.data.get("value_type", "")) if found else ""
            for key in _list(found.data, "join_keys") if found else [entity]:
                keys.setdefault(str(key), value_type)
        for source in _list(view.data, "sources"):
            request = catalog.get("data_source", str(source))
            if request is not None and request.data.get("type") == "RequestSource":
                for column in _list(request.data, "fields"):
                    keys.setdefault(str(column.get("name")), str(column.get("dtype", "")))
    return keys


def row_keys(catalog: Catalog, views: Iterable[str]) -> dict[str, str]:
    """The columns an entity row needs to read ``views`` (join keys, request fields), with their types."""
    return _keys(catalog, views)


def _calls(what: str, keys: Mapping[str, str], restricted: bool) -> str:
    """The code reading ``what`` (feature references, or ``feature_service="name"``) for
    training and for serving, through the platform: the kernel has no Feast."""
    columns = "".join(f"        {_literal(k)}: [{_example(t, 0)}, {_example(t, 1)}],\n" for k, t in keys.items())
    row = ", ".join(f"{_literal(k)}: {_example(t, 0)}" for k, t in keys.items())
    note = "# Restricted features: reading them needs an approved data-access request.\n" if restricted else ""
    return (
        "import pandas as pd\n\n"
        f"{note}"
        "# Training data: each row of entity_df gets the values as of its event_timestamp,\n"
        "# read through the platform (no Feast needed), as get_historical_features(...).to_df().\n"
        "from hubforge.features.historical import HistoricalFeatures\n\n"
        "entity_df = pd.DataFrame(\n"
        "    {\n"
        f"{columns}"
        '        "event_timestamp": [pd.Timestamp.now(tz="UTC")] * 2,\n'
        "    }\n"
        ")\n"
        "training_df = HistoricalFeatures.from_env().get(\n"
        f"    {what},\n"
        "    entity_df=entity_df,\n"
        ")\n\n"
        "# Serving: the latest values of each entity, read through the platform (no Feast\n"
        "# needed), as get_online_features(...).to_dict() answers.\n"
        "from hubforge.features.reader import OnlineFeatures\n\n"
        "online = OnlineFeatures.from_env().get(\n"
        f"    {what},\n"
        f"    entity_rows=[{{{row}}}],\n"
        ")\n"
    )


def snippet_for(catalog: Catalog, item: Item) -> str:
    """The Python code reading a feature view's or feature service's features ("" for other kinds)."""
    if item.kind == "feature_view":
        refs = [f"{item.name}:{c.get('name')}" for c in _list(item.data, "features") if isinstance(c, Mapping)]
        features = "[\n" + "".join(f"        {_literal(ref)},\n" for ref in refs) + "    ]"
        return _calls(features, _keys(catalog, [item.name]), item.restricted)
    if item.kind == "feature_service":
        views = list(_service_views(item))
        restricted = any(v.restricted for v in (catalog.get("feature_view", n) for n in views) if v is not None)
        return _calls(f"feature_service={_literal(item.name)}", _keys(catalog, views), restricted)
    return ""
