"""``FeatureBrowser``: find a feature, see what it is and where it comes from, get the code to read it.

For data scientists: a search box over every object of the feature catalog (names,
descriptions, owners, tags, fields), a kind filter, and for the chosen object its schema,
TTL, freshness, owner, tags and lineage (data source -> feature view -> feature services),
with the ``get_historical_features`` / ``get_online_features`` code to read it and a
button that puts that code in a new cell.

The catalog is read once from the features service (:class:`~.client.FeaturesClient`, a
304 on Refresh when unchanged) and searched in the kernel with
:meth:`~hubforge.features.catalog.Catalog.search`, so a keystroke costs no call and renders
at most ``limit`` results as the options of one ``Select``: a catalog of thousands of views
never becomes thousands of widgets. Everything the catalog says was typed by people and
is escaped before it goes into HTML; in the code snippet it is only ever a quoted literal.
A restricted view is browsed like any other (the catalog is metadata); the notice says
that reading its data needs an approved data-access request, which the features service
enforces, not this widget.
"""

from __future__ import annotations

import html
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import ipywidgets as widgets

from hubforge.features.catalog import MAX_HITS, Catalog, Item

from .client import Background, FeaturesClient, WidgetError, one_line

__all__ = [
    "KIND_FILTERS",
    "CatalogSource",
    "FeatureBrowser",
    "ago",
    "detail_html",
    "freshness",
    "human_duration",
    "lineage_html",
    "notebook_insert",
    "snippet_for",
    "ttl_text",
]

log = logging.getLogger(__name__)

#: The kind filter's choices: label -> the kind searched ("" for every kind).
KIND_FILTERS = (
    ("all", ""),
    ("feature views", "feature_view"),
    ("feature services", "feature_service"),
    ("entities", "entity"),
    ("data sources", "data_source"),
)
_KIND_NAMES = {
    "feature_view": "feature view",
    "feature_service": "feature service",
    "entity": "entity",
    "data_source": "data source",
}
LOCK = "\N{LOCK}"
_SPINNER = '<i class="fa fa-spinner fa-spin"></i> '
_UNITS = (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1))
_HINT = "<p><i>Choose an item on the left to see what it holds, where it comes from and how to read it.</i></p>"
_RESTRICTED = (
    '<div style="background:#fff8c5;border:1px solid #d4a72c;padding:4px 8px;margin:4px 0">'
    "{lock} <b>Restricted</b> ({what}): reading its data needs an approved data-access request.</div>"
)
_esc = html.escape


class CatalogSource(Protocol):
    """What the browser reads the catalog from (:class:`~.client.FeaturesClient`, or a test's fake)."""

    def catalog(self) -> Catalog: ...


# --- text ---------------------------------------------------------------------------


def _plural(count: int, unit: str, units: str = "") -> str:
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
            words.append(_plural(count, unit))
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
    kind = _KIND_NAMES.get(item.kind, item.kind)
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
    kind = _KIND_NAMES.get(item.kind, item.kind)
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


def _calls(features: str, keys: Mapping[str, str], restricted: bool) -> str:
    columns = "".join(f"        {_literal(k)}: [{_example(t, 0)}, {_example(t, 1)}],\n" for k, t in keys.items())
    row = ", ".join(f"{_literal(k)}: {_example(t, 0)}" for k, t in keys.items())
    note = "# Restricted features: reading them needs an approved data-access request.\n" if restricted else ""
    return (
        "import pandas as pd\n\n"
        "# store: your feast.FeatureStore\n"
        f"{note}"
        "# Training data: each row of entity_df gets the values as of its event_timestamp.\n"
        "entity_df = pd.DataFrame(\n"
        "    {\n"
        f"{columns}"
        '        "event_timestamp": [pd.Timestamp.now(tz="UTC")] * 2,\n'
        "    }\n"
        ")\n"
        "training_df = store.get_historical_features(\n"
        "    entity_df=entity_df,\n"
        f"    features={features},\n"
        ").to_df()\n\n"
        "# Serving: the latest values of each entity.\n"
        "online = store.get_online_features(\n"
        f"    features={features},\n"
        f"    entity_rows=[{{{row}}}],\n"
        ").to_dict()\n"
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
        features = f"store.get_feature_service({_literal(item.name)})"
        return _calls(features, _keys(catalog, views), restricted)
    return ""


def notebook_insert(code: str) -> None:
    """Put ``code`` in a new notebook cell through IPython's ``set_next_input``; WidgetError without a notebook.

    The kernel sends it with the reply to the next cell run: the new cell appears then.
    """
    try:
        from IPython import get_ipython
    except ImportError:
        get_ipython = None
    shell = get_ipython() if get_ipython is not None else None
    if shell is None:
        raise WidgetError("Insert into notebook needs a notebook's kernel: copy the code above instead")
    shell.set_next_input(code, replace=False)


# --- the widget ---------------------------------------------------------------------


class FeatureBrowser(widgets.VBox):
    """The feature catalog: search, details, lineage and the code to read a view or service.

    ``client``: where the catalog comes from (default: :meth:`FeaturesClient.from_env`,
    made when it is first read, so a kernel without the platform shows one line).
    ``now``: the clock freshness is measured against. ``insert``: puts code in a new cell
    (default :func:`notebook_insert`). ``limit``: the most results listed.
    """

    def __init__(
        self,
        client: CatalogSource | None = None,
        *,
        now: Callable[[], datetime] | None = None,
        insert: Callable[[str], None] = notebook_insert,
        limit: int = MAX_HITS,
        load: bool = True,
    ) -> None:
        self._client, self._insert, self._limit = client, insert, limit
        self._now = now or (lambda: datetime.now(UTC))
        self._catalog: Catalog | None = None
        self._results: list[tuple[str, str]] = []
        self._selected: tuple[str, str] | None = None
        self._snippet = ""
        self._quiet = False  # set while the browser itself changes the list or the box
        self._build()
        self._work = Background(self._busy)
        if load:
            self.refresh()

    def _build(self) -> None:
        self.title = widgets.HTML("<h3>Feature catalog</h3>")
        self.refresh_button = widgets.Button(description="Refresh", icon="refresh")
        self.refresh_button.on_click(lambda _: self.refresh())
        self.activity, self.status = widgets.HTML(""), widgets.HTML("")
        self.query = widgets.Text(placeholder="Search names, descriptions, owners, tags", continuous_update=True)
        self.query.observe(lambda change: self._typed(change["new"]), "value")
        self.kind = widgets.ToggleButtons(options=KIND_FILTERS, value="", style={"button_width": "auto"})
        self.kind.observe(lambda _: self._search(self.query.value), "value")
        self.list = widgets.Select(options=[], rows=16, layout=widgets.Layout(width="100%"))
        self.list.observe(self._chosen, "value")
        self.note = widgets.HTML("")
        self.detail = widgets.HTML(_HINT)
        self.code = widgets.HTML("")
        self.insert_button = widgets.Button(description="Insert into notebook", icon="plus", disabled=True)
        self.insert_button.on_click(lambda _: self.insert())
        self.insert_status = widgets.HTML("")
        left = widgets.VBox([self.query, self.list, self.note], layout=widgets.Layout(width="40%"))
        snippet = widgets.VBox([self.code, widgets.HBox([self.insert_button, self.insert_status])])
        right = widgets.VBox([self.detail, snippet], layout=widgets.Layout(width="60%", padding="0 0 0 12px"))
        header = widgets.HBox([self.title, self.refresh_button])
        super().__init__([header, self.activity, self.status, self.kind, widgets.HBox([left, right])])

    # -- reading the catalog

    def refresh(self) -> None:
        """Read the catalog again (a 304 when it has not changed)."""
        self._work.run("Reading the feature catalog", self._read, self._loaded, self._failed)

    def _read(self) -> Catalog:
        if self._client is None:
            self._client = FeaturesClient.from_env()
        return self._client.catalog()

    def _busy(self, what: str) -> None:
        self.refresh_button.disabled = bool(what)
        self.activity.value = _SPINNER + _esc(what) + "…" if what else ""

    def _loaded(self, catalog: Catalog) -> None:
        self._catalog = catalog
        counts = ", ".join(
            _plural(len(catalog.of_kind(kind)), name, "entities" if kind == "entity" else "")
            for kind, name in _KIND_NAMES.items()
        )
        project = str(catalog.project.get("name") or "the catalog")
        when = str(catalog.data.get("generated") or "")[:16].replace("T", " ")
        self.status.value = _esc(f"{project}: {counts}" + (f" (applied {when} UTC)." if when else "."))
        self._search(self.query.value)
        if self._selected is not None:
            self.select(*self._selected)

    def _failed(self, message: str) -> None:
        kept = " (showing the catalog read before)" if self._catalog is not None else ""
        self.status.value = f'<span style="color:#cf222e">{_esc(one_line(message, 400))}{kept}</span>'

    # -- searching

    def _typed(self, text: str) -> None:
        # A keystroke while the catalog loads shows nothing yet: the load searches for the box's text when done.
        if not self._quiet:
            self._search(text)

    def search(self, text: str, timeout: float = 60.0) -> list[tuple[str, str]]:
        """Show the items matching ``text`` (of the chosen kind), best first; the (kind, name) of each.

        Called from code (a test, a benchmark, a cell), it first waits up to ``timeout``
        seconds for a read of the catalog under way, so the answer is the catalog's.
        """
        if self._work.running:
            self._work.wait(timeout)
        return self._search(text)

    def _search(self, text: str) -> list[tuple[str, str]]:
        if self.query.value != text:
            self._quietly(lambda: setattr(self.query, "value", text))
        catalog = self._catalog
        if catalog is None:
            return []
        kinds = [self.kind.value] if self.kind.value else None
        hits = catalog.search(text, kinds, self._limit + 1)
        more, hits = len(hits) > self._limit, hits[: self._limit]
        self._results = [(hit.item.kind, hit.item.name) for hit in hits]
        options = [(result_label(hit.item), (hit.item.kind, hit.item.name)) for hit in hits]
        keep = self._selected if self._selected in self._results else None
        self._quietly(lambda: self._set_options(options, keep))
        if more:
            self.note.value = f"<i>The first {self._limit} matches: type more words to narrow.</i>"
        elif not hits:
            words = text.strip()
            self.note.value = f"<i>Nothing matches {_esc(words)}.</i>" if words else "<i>The catalog is empty.</i>"
        else:
            self.note.value = f"<i>{_plural(len(hits), 'match', 'matches')}.</i>"
        return list(self._results)

    def _set_options(self, options: list[tuple[str, tuple[str, str]]], keep: tuple[str, str] | None) -> None:
        self.list.options = options
        self.list.value = keep

    def _quietly(self, change: Callable[[], None]) -> None:
        self._quiet = True
        try:
            change()
        finally:
            self._quiet = False

    # -- the chosen item

    def _chosen(self, change: Mapping[str, Any]) -> None:
        if not self._quiet and change["new"] is not None:
            self.select(*change["new"])

    def select(self, kind: str, name: str) -> None:
        """Show the item ``name`` of ``kind``: its details and, for a view or service, its code."""
        catalog = self._catalog
        item = catalog.get(kind, name) if catalog is not None else None
        if catalog is None or item is None:
            self._selected, self._snippet = None, ""
            self.detail.value, self.code.value = _HINT, ""
            self.insert_button.disabled = True
            return
        self._selected = (kind, name)
        if self.list.value != self._selected and self._selected in self._results:
            self._quietly(lambda: setattr(self.list, "value", self._selected))
        try:
            self.detail.value = detail_html(catalog, item, self._now())
            self._snippet = snippet_for(catalog, item)
        except Exception as exc:  # a malformed entry shows one line, never a traceback in the kernel log
            log.debug("hubforge feature browser: cannot show %s %s", kind, name, exc_info=True)
            self.detail.value = f'<span style="color:#cf222e">{_esc(one_line(f"cannot show {name}: {exc}"))}</span>'
            self._snippet = ""
        self.code.value = f'<pre style="overflow-x:auto">{_esc(self._snippet)}</pre>' if self._snippet else ""
        self.insert_button.disabled = not self._snippet
        self.insert_status.value = ""

    def insert(self) -> None:
        """Put the code shown in a new notebook cell, or say in one line why not."""
        if not self._snippet:
            self.insert_status.value = "Choose a feature view or service first."
            return
        try:
            self._insert(self._snippet)
        except WidgetError as exc:
            self.insert_status.value = f'<span style="color:#cf222e">{_esc(one_line(str(exc)))}</span>'
            return
        self.insert_status.value = "The code goes into a new cell below the next cell you run."

    # -- what the panel shows, for tests and benchmarks

    @property
    def catalog(self) -> Catalog | None:
        """The catalog shown (None until one was read)."""
        return self._catalog

    @property
    def results(self) -> list[tuple[str, str]]:
        """The (kind, name) of each result listed, best first."""
        return list(self._results)

    @property
    def selected(self) -> tuple[str, str] | None:
        """The (kind, name) of the item shown in detail."""
        return self._selected

    @property
    def detail_html(self) -> str:
        """The detail pane's HTML."""
        return str(self.detail.value)

    @property
    def snippet(self) -> str:
        """The code shown for the item ("" for an entity or a data source)."""
        return self._snippet

    def wait(self, timeout: float = 60.0) -> bool:
        """Wait for the read under way; whether it ended within ``timeout`` seconds."""
        return self._work.wait(timeout)
