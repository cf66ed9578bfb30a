"""``ModelCardEditor``: a form for every field of a model card, saved with the model version in MLflow.

The form is made from the card's schema (:mod:`.card_form`). Every change shows at once
the card's completeness for production, each validation error beside the input it is
about, and the rendered card (:func:`hubforge.modelcard.to_html`, in a sandboxed frame
that runs no script). Loading, prefilling from a run and saving go through MLflow as the
person (:mod:`hubforge.modelcard.mlflow_store`, with :func:`.client.mlflow_client`), off
the kernel's thread.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from hubforge.modelcard import CardError, completeness, empty_card, to_html, validate_card

from .card_form import (
    Field,
    FormValues,
    ItemList,
    anchors,
    card_form,
    card_to_form,
    completeness_text,
    errors_by_anchor,
    form_to_card,
    sections,
)
from .client import Background, WidgetError, mlflow_client, one_line, translated

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from hubforge.modelcard.mlflow_store import SavedCard

__all__ = ["ModelCardEditor", "preview_html"]

_WIDE = widgets.Layout(width="98%")
_LABEL = {"description_width": "11em"}
_SPINNER = '<i class="fa fa-spinner fa-spin"></i> '


def preview_html(card: Mapping[str, Any], errors: list[CardError]) -> str:
    """The card rendered in a frame that may run no script; a hint while it has errors."""
    if errors:
        return f"<p><i>The preview shows once the card is valid ({len(errors)} problem(s) to fix).</i></p>"
    page = html.escape(to_html(card), quote=True)
    return f'<iframe sandbox="" srcdoc="{page}" style="width:100%;height:32em;border:1px solid #d0d7de"></iframe>'


def _input(field: Field, value: str, changed: Callable[[Any], None]) -> widgets.ValueWidget:
    """The input of one field, showing ``value``; ``changed`` observes its value."""
    common: dict[str, Any] = {"description": field.label, "style": _LABEL, "layout": _WIDE, "tooltip": field.help}
    made: widgets.ValueWidget
    if field.kind == "choice":
        made = widgets.Dropdown(options=[("—", ""), *((c, c) for c in field.choices)], **common)
        made.value = value if value in field.choices else ""
    elif field.kind == "markdown":
        made = widgets.Textarea(value=value, rows=3, continuous_update=False, placeholder="Markdown", **common)
    else:
        hints = {"date": "YYYY-MM-DD", "number": "a number", "url": "https://…", "words": "comma-separated"}
        placeholder = hints.get(field.kind, field.help[:80])
        made = widgets.Text(value=value, continuous_update=False, placeholder=placeholder, **common)
    made.observe(changed, names="value")
    return made


def _error_box() -> widgets.HTML:
    return widgets.HTML("", layout=widgets.Layout(display="none", margin="0 0 0 11em"))


def _show_errors(box: widgets.HTML, messages: list[str]) -> None:
    text = "".join(f'<div style="color:#cf222e">{html.escape(m)}</div>' for m in messages)
    box.value = text
    box.layout.display = "" if messages else "none"


class _ItemsEditor(widgets.VBox):
    """The items of one list of the card: a box of inputs per item, Add and Remove buttons."""

    def __init__(self, entry: ItemList, changed: Callable[[], None]) -> None:
        self.entry = entry
        self._changed = changed
        self.add_button = widgets.Button(description="Add", icon="plus", tooltip=f"Add to {entry.label.lower()}")
        self.add_button.on_click(lambda _: self.add())
        self.inputs: dict[str, widgets.ValueWidget] = {}
        self.errors: dict[str, widgets.HTML] = {entry.path: _error_box()}
        self._rows: list[dict[str, str]] = []
        super().__init__()
        self._build()

    def values(self) -> list[dict[str, str]]:
        """One {field: text} per item, as typed."""
        return [
            {f.path: str(self.inputs[f"{self.entry.path}[{i}].{f.path}"].value) for f in self.entry.fields}
            for i in range(len(self._rows))
        ]

    def set_values(self, rows: list[dict[str, str]]) -> None:
        """Show ``rows`` (without telling the editor: it set them)."""
        self._rows = [dict(row) for row in rows]
        self._build()

    def add(self, row: Mapping[str, str] | None = None) -> int:
        """Add an item (empty, or ``row``); its index."""
        self._rows = [*self.values(), {f.path: (row or {}).get(f.path, "") for f in self.entry.fields}]
        self._build()
        self._changed()
        return len(self._rows) - 1

    def remove(self, index: int) -> None:
        """Remove item ``index``."""
        rows = self.values()
        del rows[index]
        self._rows = rows
        self._build()
        self._changed()

    def _build(self) -> None:
        path = self.entry.path
        self.inputs = {}
        self.errors = {path: self.errors[path]}
        boxes: list[widgets.Widget] = [widgets.HTML(f"<b>{html.escape(self.entry.label)}</b>"), self.errors[path]]
        for i, row in enumerate(self._rows):
            parts: list[widgets.Widget] = []
            self.errors[f"{path}[{i}]"] = item_errors = _error_box()
            for field in self.entry.fields:
                anchor = f"{path}[{i}].{field.path}"
                self.inputs[anchor] = _input(field, row.get(field.path, ""), lambda _: self._changed())
                self.errors[anchor] = _error_box()
                parts += [self.inputs[anchor], self.errors[anchor]]
            remove = widgets.Button(description="Remove", icon="trash", layout=widgets.Layout(width="auto"))
            remove.on_click(lambda _, at=i: self.remove(at))
            box = widgets.VBox([*parts, item_errors, remove])
            box.layout = widgets.Layout(border="1px solid #d0d7de", padding="4px", margin="2px 0")
            boxes.append(box)
        self.children = (*boxes, self.add_button)


class ModelCardEditor(widgets.VBox):
    """Edit the model card of registered model ``model`` version ``version`` and save it to MLflow.

    With ``card``, the form starts from it; else, with ``model`` and ``version``, it loads
    the saved card (or, without one, a card prefilled from the version's source run);
    else, with ``run_id``, a card prefilled from that run. ``mlflow`` makes the MLflow
    client (default :func:`.client.mlflow_client`: the person's).
    """

    def __init__(
        self,
        model: str = "",
        version: str | int = "",
        *,
        card: Mapping[str, Any] | None = None,
        run_id: str = "",
        mlflow: Callable[[], MlflowClient] = mlflow_client,
    ) -> None:
        self._mlflow = mlflow
        self._quiet = False
        self._shown: dict[str, list[str]] = {}
        self.saved: SavedCard | None = None
        self._init_header(model, str(version), run_id)
        self._init_form()
        super().__init__(
            [
                widgets.HBox([self.model, self.version, self.load_button]),
                widgets.HBox([self.run_id, self.prefill_button, self.save_button]),
                self.status,
                widgets.HBox([self.progress, self.completeness]),
                self.general_errors,
                self.tabs,
            ]
        )
        self._work = Background(self._busy)
        if card is not None:
            self.set_card(card)
        elif model and str(version):
            self.load()
        elif run_id:
            self.prefill()
        else:
            self.set_card(empty_card(model))  # no name yet: the form says it is required

    def _init_header(self, model: str, version: str, run_id: str) -> None:
        self.model = widgets.Text(value=model, description="Model", placeholder="registered model")
        self.version = widgets.Text(value=version, description="Version", placeholder="1")
        self.run_id = widgets.Text(value=run_id, description="Run", placeholder="MLflow run id")
        self.load_button = widgets.Button(description="Load", icon="download", tooltip="Load the saved card")
        self.prefill_button = widgets.Button(description="Prefill from run", icon="magic")
        self.save_button = widgets.Button(description="Save", icon="save", button_style="primary")
        self.load_button.on_click(lambda _: self.load())
        self.prefill_button.on_click(lambda _: self.prefill())
        self.save_button.on_click(lambda _: self.save())
        self.status = widgets.HTML("")
        self.progress = widgets.FloatProgress(value=0.0, min=0.0, max=1.0, description="Completeness")
        self.completeness = widgets.HTML("")
        self.general_errors = _error_box()
        self.general_errors.layout.margin = "0"

    def _init_form(self) -> None:
        self.entries = card_form()
        self.fields: dict[str, widgets.ValueWidget] = {}
        self.lists: dict[str, _ItemsEditor] = {}
        self._field_errors: dict[str, widgets.HTML] = {}
        pages, titles = [], []
        for title, members in sections(self.entries):
            parts: list[widgets.Widget] = []
            for entry in members:
                if isinstance(entry, ItemList):
                    self.lists[entry.path] = _ItemsEditor(entry, self._changed)
                    parts.append(self.lists[entry.path])
                else:
                    self.fields[entry.path] = _input(entry, "", lambda _: self._changed())
                    self._field_errors[entry.path] = _error_box()
                    parts += [self.fields[entry.path], self._field_errors[entry.path]]
            pages.append(widgets.VBox(parts))
            titles.append(title)
        self.preview = widgets.HTML("")
        self.tabs = widgets.Tab(children=[*pages, self.preview])
        self.tabs.titles = (*titles, "Preview")

    # --- the form -------------------------------------------------------------------

    def values(self) -> FormValues:
        """The form's values, as typed."""
        found: FormValues = {path: str(w.value) for path, w in self.fields.items()}
        found |= {path: editor.values() for path, editor in self.lists.items()}
        return found

    @property
    def card(self) -> dict[str, Any]:
        """The card the form makes now (valid or not)."""
        return form_to_card(self.values(), self.entries)

    @property
    def errors(self) -> list[CardError]:
        """Every problem of :attr:`card`, shallowest first."""
        return validate_card(self.card)

    def set_card(self, card: Mapping[str, Any]) -> None:
        """Show ``card`` in the form."""
        values = card_to_form(card, self.entries)
        self._quiet = True
        try:
            for path, widget in self.fields.items():
                text = values[path]
                widget.value = _choice(widget, text) if isinstance(widget, widgets.Dropdown) else text
            for path, editor in self.lists.items():
                editor.set_values(values[path])
        finally:
            self._quiet = False
        self._changed()

    def input(self, path: str) -> widgets.ValueWidget:
        """The input of ``path``: a field (``intended_use``) or an item's (``...performance_metrics[0].value``)."""
        if path in self.fields:
            return self.fields[path]
        for editor in self.lists.values():
            if path in editor.inputs:
                return editor.inputs[path]
        raise KeyError(f"no input {path!r}")

    def error_text(self, path: str = "") -> str:
        """The errors shown at ``path`` ("": those about the card as a whole), one a line."""
        return "\n".join(self._shown.get(path, []))

    def _error_boxes(self) -> dict[str, widgets.HTML]:
        boxes = {"": self.general_errors, **self._field_errors}
        for editor in self.lists.values():
            boxes |= editor.errors
        return boxes

    def _changed(self) -> None:
        """Show the card's completeness, its errors at their inputs and its preview."""
        if self._quiet:
            return
        values = self.values()
        card = form_to_card(values, self.entries)
        errors = validate_card(card)
        found = completeness(card)
        self.progress.value = found.score
        self.progress.bar_style = "success" if found.score == 1.0 else "warning"
        self.completeness.value = html.escape(completeness_text(found))
        self._shown = shown = errors_by_anchor(errors, anchors(values, self.entries))
        for anchor, box in self._error_boxes().items():
            _show_errors(box, shown.get(anchor, []))
        self.preview.value = preview_html(card, errors)

    # --- MLflow ---------------------------------------------------------------------

    def _busy(self, what: str) -> None:
        for button in (self.load_button, self.prefill_button, self.save_button):
            button.disabled = bool(what)
        if what:
            self.status.value = _SPINNER + html.escape(what) + "…"

    def _say(self, text: str, error: bool = False) -> None:
        color = "#cf222e" if error else "#1a7f37"
        self.status.value = f'<span style="color:{color}">{html.escape(text)}</span>'

    def _target(self) -> tuple[str, str]:
        model, version = self.model.value.strip(), self.version.value.strip()
        if not model or not version:
            raise WidgetError("name the registered model and its version first")
        return model, version

    def load(self) -> None:
        """Load the card saved with the model version (none saved: prefill from its source run)."""
        try:
            model, version = self._target()
        except WidgetError as exc:
            self._say(str(exc), error=True)
            return

        def job() -> tuple[dict[str, Any], str]:
            from hubforge.modelcard.mlflow_store import load_card, prefill_from_run

            client = self._mlflow()
            card = load_card(client, model, version)
            if card is not None:
                return card, f"Loaded the card of {model} version {version}."
            with translated(f"cannot read {model} version {version}"):
                run_id = client.get_model_version(model, version).run_id
            if not run_id:
                return empty_card(model), f"{model} version {version} has no card and no source run: a new card."
            self.run_id.value = run_id
            return prefill_from_run(client, run_id, model), f"No card saved yet: prefilled from run {run_id}."

        self._work.run(f"Loading the card of {model} version {version}", job, self._loaded, self._failed)

    def prefill(self, run_id: str | None = None) -> None:
        """Replace the form with a card prefilled from run ``run_id`` (default: the Run input)."""
        run = (run_id or self.run_id.value).strip()
        if not run:
            self._say("give the MLflow run to prefill from", error=True)
            return
        name = self.model.value.strip() or None

        def job() -> tuple[dict[str, Any], str]:
            from hubforge.modelcard.mlflow_store import prefill_from_run

            return prefill_from_run(self._mlflow(), run, name), f"Prefilled from run {run}."

        self._work.run(f"Prefilling from run {run}", job, self._loaded, self._failed)

    def save(self) -> None:
        """Save the card with the model version, if it is valid."""
        errors = self.errors
        if errors:
            self._say(f"Fix {len(errors)} problem(s) before saving; the first: {errors[0]}", error=True)
            return
        try:
            model, version = self._target()
        except WidgetError as exc:
            self._say(str(exc), error=True)
            return
        card = self.card

        def job() -> SavedCard:
            from hubforge.modelcard.mlflow_store import save_card

            return save_card(self._mlflow(), model, version, card)

        self._work.run(f"Saving the card of {model} version {version}", job, self._saved, self._failed)

    def _loaded(self, found: tuple[dict[str, Any], str]) -> None:
        card, message = found
        self.set_card(card)
        self._say(message)

    def _saved(self, saved: SavedCard) -> None:
        self.saved = saved
        score = f"{saved.completeness:.0%}"
        self._say(
            f"Saved with {saved.name} version {saved.version} (completeness {score}, sha256 {saved.digest[:12]})."
        )

    def _failed(self, message: str) -> None:
        self._say(one_line(message, 400), error=True)

    def wait(self, timeout: float = 60.0) -> bool:
        """Wait for the load, prefill or save under way; whether it ended within ``timeout`` s."""
        return self._work.wait(timeout)


def _choice(widget: widgets.Dropdown, value: str) -> str:
    values = [option[1] if isinstance(option, tuple) else option for option in widget.options]
    return value if value in values else ""
