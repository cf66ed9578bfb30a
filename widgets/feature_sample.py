"""The feature browser's online sample: a feature view's latest values for one entity key.

For an online feature view the panel asks for the row a read needs (the join keys of its
entities, and the request fields of an on-demand view) and reads the view's features
through the features service (:class:`~hubforge.features.reader.OnlineFeatures`, nothing
kept), so a person sees real values before writing any code. Keys are typed as text and
turned into the key's type (a whole number for an ``INT64`` key). A restricted view is
read only under a grant, like any read: without one, the service's refusal is the one
line shown. Every failure (the service or its online store away, a key of the wrong
type) is one red line.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import httpx
import ipywidgets as widgets

from hubforge.features.catalog import Catalog, Item

from .client import Background, WidgetError, one_line
from .feature_text import SPINNER, row_keys

__all__ = ["OnlineLike", "SamplePanel", "key_value", "sample_html"]

MAX_KEY = 256


class OnlineLike(Protocol):
    """What the panel reads with (:class:`~hubforge.features.reader.OnlineFeatures`)."""

    def get(
        self,
        features: Sequence[str] = (),
        entity_rows: Sequence[Mapping[str, Any]] = (),
        *,
        feature_service: str | None = None,
    ) -> dict[str, list[Any]]: ...


#: How long a glance may take: it runs beside the person's work with its progress shown, and
#: the first read after a platform start waits for the features service to open its feature
#: store (Feast's import: tens of seconds on a loaded machine, past a code read's 30 s).
GLANCE_TIMEOUT = httpx.Timeout(120.0, connect=5.0)


def _online() -> OnlineLike:
    from hubforge.features.reader import OnlineFeatures

    # A glance, not a use: the run is not told.
    return OnlineFeatures.from_env(ttl=0, record=False, timeout=GLANCE_TIMEOUT)


def key_value(name: str, text: str, dtype: str) -> Any:
    """The typed text of key ``name`` as its ``dtype`` asks; WidgetError naming the key."""
    text = text.strip()
    if not text:
        raise WidgetError(f"Give a value for {name}.")
    if len(text) > MAX_KEY:
        raise WidgetError(f"{name}: at most {MAX_KEY} characters.")
    kind = dtype.lower()
    try:
        if "int" in kind:
            return int(text)
        if "float" in kind or "double" in kind:
            return float(text)
    except ValueError:
        what = "whole number" if "int" in kind else "number"
        raise WidgetError(f"{name} is a {what} ({dtype}), not {text!r}.") from None
    if "bool" in kind:
        if text.lower() not in ("true", "false"):
            raise WidgetError(f"{name} is true or false, not {text!r}.")
        return text.lower() == "true"
    return text


def sample_html(values: Mapping[str, list[Any]], keys: Sequence[str]) -> str:
    """The values read, a row per feature; a line when the online store holds none for the key."""
    rows = [(name, column[0] if column else None) for name, column in values.items() if name not in keys]
    if rows and all(value is None for _, value in rows):
        return "<i>The online store holds no values for this key (not materialized, or no such entity).</i>"
    cells = "".join(
        f"<tr><td><code>{html.escape(str(name))}</code></td>"
        f"<td>{'<i>missing</i>' if value is None else html.escape(one_line(str(value), 200))}</td></tr>"
        for name, value in rows
    )
    return f'<table style="border-collapse:collapse"><tr><th>feature</th><th>value</th></tr>{cells}</table>'


class SamplePanel(widgets.VBox):
    """A box per key the view reads by, Read, and the values. ``online``: makes the reader."""

    def __init__(self, online: Callable[[], OnlineLike] | None = None) -> None:
        self._make = online or _online
        self._reader: OnlineLike | None = None
        self._view = ""
        self._features: list[str] = []
        self._keys: dict[str, str] = {}
        self._values: dict[str, list[Any]] | None = None
        self.heading = widgets.HTML("<b>Online sample</b>")
        self.inputs = widgets.HBox([])
        self.read_button = widgets.Button(description="Read", icon="search")
        self.read_button.on_click(lambda _: self.read())
        self.activity, self.result = widgets.HTML(""), widgets.HTML("")
        self._work = Background(self._busy)
        super().__init__([self.heading, widgets.HBox([self.inputs, self.read_button]), self.activity, self.result])
        self.layout.display = "none"

    def _busy(self, what: str) -> None:
        self.read_button.disabled = bool(what)
        self.activity.value = SPINNER + html.escape(what) + "…" if what else ""

    def show(self, catalog: Catalog, item: Item) -> None:
        """Offer a sample of ``item`` when it is an online feature view; hide otherwise."""
        self.result.value, self._values = "", None
        features = [str(c.get("name")) for c in item.data.get("features") or () if isinstance(c, Mapping)]
        if item.kind != "feature_view" or not item.data.get("online", True) or not features:
            self.layout.display = "none"
            self._view = ""
            return
        self._view, self._features = item.name, [f"{item.name}:{name}" for name in features]
        self._keys = row_keys(catalog, [item.name])
        style, layout = {"description_width": "initial"}, widgets.Layout(width="300px")
        self.inputs.children = [
            widgets.Text(description=key, placeholder=dtype or "value", style=style, layout=layout)
            for key, dtype in self._keys.items()
        ]
        self.layout.display = ""

    def read(self) -> None:
        """Read the view's features for the key typed, in the background."""
        if not self._view:
            return
        try:
            row = {box.description: key_value(box.description, box.value, self._keys.get(box.description, ""))
                   for box in self.inputs.children}  # fmt: skip
        except WidgetError as exc:
            self._failed(str(exc))
            return
        features, keys = list(self._features), list(self._keys)

        def get() -> dict[str, list[Any]]:
            if self._reader is None:
                self._reader = self._make()
            return self._reader.get(features, [row])

        def done(values: dict[str, list[Any]]) -> None:
            self._values = values
            self.result.value = sample_html(values, keys)

        self._work.run(f"Reading {self._view} online", get, done, self._failed)

    def _failed(self, message: str) -> None:
        self.result.value = f'<span style="color:#cf222e">{html.escape(one_line(message, 400))}</span>'

    # -- for tests

    @property
    def values(self) -> dict[str, list[Any]] | None:
        """The last values read (None before a read, or after a failure)."""
        return self._values

    def set_key(self, **values: str) -> None:
        """Type ``values`` into the key boxes (by key name), as a person would."""
        for box in self.inputs.children:
            if box.description in values:
                box.value = values[box.description]

    def wait(self, timeout: float = 60.0) -> bool:
        """Wait for the read under way."""
        return self._work.wait(timeout)
