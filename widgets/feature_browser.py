"""``FeatureBrowser``: find a feature, see what it is and where it comes from, get the code to read it.

For data scientists: a search box over every object of the feature catalog (names,
descriptions, owners, tags, fields), a kind filter, and for the chosen object its schema,
TTL, freshness, owner, tags and lineage (data source -> feature view -> feature services
-> the MLflow runs and models that read them, :mod:`.feature_lineage`), with the code that
reads it through the platform (training sets and online values) and a button that puts
that code in a new cell.

The catalog is read once from the features service (:class:`~.client.FeaturesClient`, a
304 on Refresh when unchanged) and searched in the kernel with
:meth:`~hubforge.features.catalog.Catalog.search`, so a keystroke costs no call and renders
at most ``limit`` results as the options of one ``Select``: a catalog of thousands of views
never becomes thousands of widgets. Everything the catalog says was typed by people and
is escaped before it goes into HTML; in the code snippet it is only ever a quoted literal.
A restricted view is browsed like any other (the catalog is metadata); reading its data
needs an approved data-access request, which the features service enforces, not this
widget. For such a view, or a service reading one, the access panel
(:class:`~.feature_access.AccessPanel`) says where the person stands and sends the request.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

import ipywidgets as widgets

from hubforge.features.catalog import MAX_HITS, Catalog, Item

from .client import Background, FeaturesClient, WidgetError, mlflow_client, one_line
from .feature_access import AccessPanel, GovernanceLike
from .feature_lineage import Lineage, lineage_runs, mlflow_ui_url
from .feature_lineage import lineage_html as runs_html
from .feature_sample import OnlineLike, SamplePanel
from .feature_text import (
    HINT,
    KIND_FILTERS,
    KIND_NAMES,
    SPINNER,
    ago,
    detail_html,
    freshness,
    human_duration,
    lineage_html,
    plural,
    result_label,
    snippet_for,
    ttl_text,
)
from .notebook_insert import INSERTED, Insertion, notebook_insert

__all__ = [
    "KIND_FILTERS",
    "CatalogSource",
    "FeatureBrowser",
    "ago",
    "detail_html",
    "freshness",
    "human_duration",
    "insert_text",
    "lineage_html",
    "notebook_insert",
    "snippet_for",
    "ttl_text",
]

log = logging.getLogger(__name__)


class CatalogSource(Protocol):
    """What the browser reads the catalog from (:class:`~.client.FeaturesClient`, or a test's fake)."""

    def catalog(self) -> Catalog: ...


# --- text ---------------------------------------------------------------------------


def insert_text(outcome: str | None) -> str:
    """The line beside Insert into notebook once the notebook has answered (:mod:`.notebook_insert`)."""
    if outcome == INSERTED:
        return "Inserted below."
    return "The code goes into a new cell below the next cell you run."


def restricted_of(catalog: Catalog, item: Item) -> list[str]:
    """The restricted feature views ``item`` reads: itself (a view) or those of a service."""
    if item.kind == "feature_view":
        return [item.name] if item.restricted else []
    if item.kind != "feature_service":
        return []
    views = item.data.get("views")
    names = list(views) if isinstance(views, dict) else []
    return [n for n in names if (v := catalog.get("feature_view", str(n))) is not None and v.restricted]


# --- the widget ---------------------------------------------------------------------


class FeatureBrowser(widgets.VBox):
    """The feature catalog: search, details, lineage and the code to read a view or service.

    ``client``: where the catalog comes from (default: :meth:`FeaturesClient.from_env`,
    made when it is first read, so a kernel without the platform shows one line).
    ``now``: the clock freshness is measured against. ``insert(code)``: puts code in a new
    cell and returns the :class:`~.notebook_insert.Insertion` the line beside the button
    follows, or None when the code goes in with the next cell run (default:
    :func:`~.notebook_insert.notebook_insert`, below this browser's cell). ``limit``: the
    most results listed. ``governance``: makes the client the access panel asks (default:
    the kernel's governance service).
    ``mlflow``: makes the MLflow client the runs that used a view are found with (default:
    the platform's MLflow, as the person). ``online``: makes the reader of online samples
    (default: the features service, as the server).
    """

    def __init__(
        self,
        client: CatalogSource | None = None,
        *,
        now: Callable[[], datetime] | None = None,
        insert: Callable[[str], Insertion | None] | None = None,
        limit: int = MAX_HITS,
        load: bool = True,
        governance: Callable[[], GovernanceLike] | None = None,
        mlflow: Callable[[], Any] | None = None,
        online: Callable[[], OnlineLike] | None = None,
    ) -> None:
        self._client, self._limit = client, limit
        self._insert = insert or (lambda code: notebook_insert(code, near=self.model_id))
        self._insertion: Insertion | None = None  # the latest, whose answer the line shows
        self._governance = governance
        self._online = online
        self._mlflow = mlflow or mlflow_client
        self._mlflow_client: Any = None
        self._lineage: Lineage | None = None
        self._now = now or (lambda: datetime.now(UTC))
        self._catalog: Catalog | None = None
        self._results: list[tuple[str, str]] = []
        self._selected: tuple[str, str] | None = None
        self._snippet = ""
        self._quiet = False  # set while the browser itself changes the list or the box
        self._build()
        self._work = Background(self._busy)
        # Its own worker: finding runs never cancels a catalog read, nor is cancelled by one.
        self._runs_work = Background(lambda _: None)
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
        self.detail = widgets.HTML(HINT)
        self.runs = widgets.HTML("")
        self.code = widgets.HTML("")
        self.insert_button = widgets.Button(description="Insert into notebook", icon="plus", disabled=True)
        self.insert_button.on_click(lambda _: self.insert())
        self.insert_status = widgets.HTML("")
        self.access = AccessPanel(self._governance)
        self.sample = SamplePanel(self._online)
        left = widgets.VBox([self.query, self.list, self.note], layout=widgets.Layout(width="40%"))
        snippet = widgets.VBox([self.code, widgets.HBox([self.insert_button, self.insert_status])])
        right = widgets.VBox(
            [self.detail, self.sample, self.runs, self.access, snippet],
            layout=widgets.Layout(width="60%", padding="0 0 0 12px"),
        )
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
        self.activity.value = SPINNER + html.escape(what) + "…" if what else ""

    def _loaded(self, catalog: Catalog) -> None:
        self._catalog = catalog
        counts = ", ".join(
            plural(len(catalog.of_kind(kind)), name, "entities" if kind == "entity" else "")
            for kind, name in KIND_NAMES.items()
        )
        project = str(catalog.project.get("name") or "the catalog")
        when = str(catalog.data.get("generated") or "")[:16].replace("T", " ")
        self.status.value = html.escape(f"{project}: {counts}" + (f" (applied {when} UTC)." if when else "."))
        self._search(self.query.value)
        if self._selected is not None:
            self.select(*self._selected)

    def _failed(self, message: str) -> None:
        kept = " (showing the catalog read before)" if self._catalog is not None else ""
        self.status.value = f'<span style="color:#cf222e">{html.escape(one_line(message, 400))}{kept}</span>'

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
            self.note.value = (
                f"<i>Nothing matches {html.escape(words)}.</i>" if words else "<i>The catalog is empty.</i>"
            )
        else:
            self.note.value = f"<i>{plural(len(hits), 'match', 'matches')}.</i>"
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
            self.detail.value, self.code.value = HINT, ""
            self.insert_button.disabled = True
            self.access.show("", [])
            self.sample.layout.display = "none"
            self.runs.value = ""
            return
        self._selected = (kind, name)
        if self.list.value != self._selected and self._selected in self._results:
            self._quietly(lambda: setattr(self.list, "value", self._selected))
        try:
            self.detail.value = detail_html(catalog, item, self._now())
            self._snippet = snippet_for(catalog, item)
        except Exception as exc:  # a malformed entry shows one line, never a traceback in the kernel log
            log.debug("hubforge feature browser: cannot show %s %s", kind, name, exc_info=True)
            self.detail.value = (
                f'<span style="color:#cf222e">{html.escape(one_line(f"cannot show {name}: {exc}"))}</span>'
            )
            self._snippet = ""
        self.access.show(str(catalog.project.get("name") or ""), restricted_of(catalog, item))
        self.sample.show(catalog, item)
        self._find_runs(catalog, item)
        self.code.value = f'<pre style="overflow-x:auto">{html.escape(self._snippet)}</pre>' if self._snippet else ""
        self.insert_button.disabled = not self._snippet
        self._insertion, self.insert_status.value = None, ""

    def _find_runs(self, catalog: Catalog, item: Item) -> None:
        """Look up, off the kernel's thread, the MLflow runs (and their models) that read ``item``."""
        self._lineage = None
        if item.kind not in ("feature_view", "feature_service"):
            self.runs.value = ""
            return
        # A read through a feature service records the service only: a view's runs include its services'.
        via = catalog.lineage(item.name)["services"] if item.kind == "feature_view" else []
        self.runs.value = f"<div>{SPINNER}<i>Finding the runs that used {html.escape(item.name)}…</i></div>"

        def find() -> Lineage:
            if self._mlflow_client is None:
                self._mlflow_client = self._mlflow()
            return lineage_runs(self._mlflow_client, item.kind, item.name, via_services=via)

        def found(lineage: Lineage) -> None:
            self._lineage = lineage
            self.runs.value = runs_html(lineage, mlflow_ui_url())

        def failed(message: str) -> None:
            self.runs.value = f'<span style="color:#cf222e">{html.escape(one_line(message))}</span>'

        self._runs_work.run(f"Finding the runs that used {item.name}", find, found, failed)

    def insert(self) -> None:
        """Put the code shown in a new notebook cell, or say in one line why not.

        The line says where the code went once the notebook has answered (JupyterLab's
        extension answers at once; the fallback is the next cell run).
        """
        if not self._snippet:
            self.insert_status.value = "Choose a feature view or service first."
            return
        try:
            insertion = self._insert(self._snippet)
        except WidgetError as exc:
            self.insert_status.value = f'<span style="color:#cf222e">{html.escape(one_line(str(exc)))}</span>'
            return
        self._insertion = insertion
        if insertion is None:
            self.insert_status.value = insert_text(None)
            return
        self.insert_status.value = SPINNER + "Inserting…"
        insertion.then(lambda outcome: self._inserted(insertion, outcome))

    def _inserted(self, insertion: Insertion, outcome: str) -> None:
        # An answer to an earlier click, or for an item no longer shown, changes nothing.
        if insertion is self._insertion:
            self.insert_status.value = insert_text(outcome)

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

    @property
    def lineage(self) -> Lineage | None:
        """The runs and models found for the item shown (None while looking, or for other kinds)."""
        return self._lineage

    def wait(self, timeout: float = 60.0) -> bool:
        """Wait for the read under way; whether it ended within ``timeout`` seconds."""
        return self._work.wait(timeout)

    def wait_runs(self, timeout: float = 60.0) -> bool:
        """Wait for the lookup of runs under way."""
        return self._runs_work.wait(timeout)
