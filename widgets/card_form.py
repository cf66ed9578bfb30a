"""The model card as a form, and back: pure functions over the card's JSON schema.

:func:`card_form` walks :func:`hubforge.modelcard.schema` once and gives one
:class:`Field` per value a person types (nested objects flattened to dotted paths:
``model_details.version.date``) and one :class:`ItemList` per list of objects (owners,
metrics, datasets...), whose items have fields of their own. A form's values are text,
as the inputs hold them (:data:`FormValues`); :func:`form_to_card` turns them into a
card without judging them, so that :func:`hubforge.modelcard.validate_card` names every
problem by its path, and :func:`error_anchor` finds the input to show it beside.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from hubforge.modelcard import PRODUCTION_FIELDS, SCHEMA_VERSION, CardError, Completeness, schema

__all__ = [
    "Field",
    "FormValues",
    "ItemList",
    "anchors",
    "card_form",
    "card_to_form",
    "completeness_text",
    "error_anchor",
    "errors_by_anchor",
    "form_to_card",
    "label",
    "sections",
]

#: Kinds of field: one line, markdown (several lines), one of ``choices``, a number, a
#: date (YYYY-MM-DD), a URL, or words (a list of lines, typed comma-separated).
KINDS = ("line", "markdown", "choice", "number", "date", "url", "words")
#: A form's values: a field's path -> its text; an item list's path -> one {field: text} per item.
FormValues = dict[str, Any]

#: The form's sections: the card's top-level names -> the section they are shown in.
_SECTION_OF = {"intended_use": "use", "out_of_scope_use": "use", "risk_rating": "risk", "risk_notes": "risk"}
_TITLES = {"quantitative_analysis": "Metrics", "use": "Intended use", "risk": "Risk"}
_INTEGER = re.compile(r"[+-]?[0-9]+")


@dataclass(frozen=True)
class Field:
    """One value of the card a person types; ``path`` is dotted (within its item, for items)."""

    path: str
    kind: str
    help: str = ""
    choices: tuple[str, ...] = ()
    required: bool = False
    #: An empty text is a value (a hyperparameter's value may be ""), within a filled item.
    blank_ok: bool = False

    @property
    def label(self) -> str:
        """How the form names it."""
        return label(self.path)


@dataclass(frozen=True)
class ItemList:
    """A list of objects of the card (owners, metrics, datasets...): each item has ``fields``."""

    path: str
    help: str
    fields: tuple[Field, ...]

    @property
    def label(self) -> str:
        """How the form names it."""
        return label(self.path)


Entry = Field | ItemList


def label(path: str) -> str:
    """A path as a person reads it: its last two names, in words (``version date``)."""
    parts = path.split(".")
    words = " ".join(parts[-2:] if len(parts) > 2 else parts[-1:]).replace("_", " ")
    return words[:1].upper() + words[1:]


def _resolve(node: Mapping[str, Any]) -> dict[str, Any]:
    """A schema node with its ``$ref`` (``#/$defs/...``) merged in; its own keys win."""
    ref = node.get("$ref")
    if not ref:
        return dict(node)
    target = schema()["$defs"][ref.rsplit("/", 1)[-1]]
    return {**_resolve(target), **{k: v for k, v in node.items() if k != "$ref"}}


def _field(path: str, spec: Mapping[str, Any], required: bool) -> Field:
    help_ = " ".join(str(spec.get("description", "")).split())
    if "enum" in spec:
        return Field(path, "choice", help_, tuple(map(str, spec["enum"])), required)
    if spec.get("type") == "number":
        return Field(path, "number", help_, required=required)
    if spec.get("format") in ("date", "uri"):
        return Field(path, "date" if spec["format"] == "date" else "url", help_, required=required)
    kind = "markdown" if spec.get("maxLength", 0) > 500 else "line"
    return Field(path, kind, help_, required=required, blank_ok=required and "pattern" not in spec)


def _entries(node: Mapping[str, Any], prefix: str = "", *, in_item: bool = False) -> Iterator[Entry]:
    """The form's entries of an object node of the schema, depth first, in schema order."""
    required = set(node.get("required", ()))
    for name, raw in node.get("properties", {}).items():
        path, spec = f"{prefix}.{name}" if prefix else name, _resolve(raw)
        if "const" in spec:
            continue  # schema_version: the form writes it
        if spec.get("type") == "object":
            yield from _entries(spec, path, in_item=in_item)
        elif spec.get("type") == "array":
            items = _resolve(spec["items"])
            help_ = " ".join(str(spec.get("description", "")).split())
            if items.get("type") != "object":
                yield Field(path, "words", help_ or "Comma-separated.", required=name in required)
            elif in_item:
                raise ValueError(f"{path}: a list of objects inside a list item has no form")
            else:
                fields = tuple(e for e in _entries(items, in_item=True) if isinstance(e, Field))
                yield ItemList(path, help_, fields)
        else:
            yield _field(path, spec, name in required)


@cache
def card_form() -> tuple[Entry, ...]:
    """Every entry of the form, in the schema's order."""
    return tuple(_entries(schema()))


def sections(entries: Sequence[Entry]) -> list[tuple[str, list[Entry]]]:
    """The entries grouped into titled sections, in order of first appearance."""
    grouped: dict[str, list[Entry]] = {}
    for entry in entries:
        top = entry.path.split(".")[0]
        grouped.setdefault(_SECTION_OF.get(top, top), []).append(entry)
    return [(_TITLES.get(name, label(name)), members) for name, members in grouped.items()]


# --- card -> form -------------------------------------------------------------------


def _get(data: Any, path: str) -> Any:
    for key in path.split("."):
        data = data.get(key) if isinstance(data, dict) else None
    return data


def _text(value: Any, field: Field) -> str:
    """A card's value as its input shows it."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if field.kind == "words" and isinstance(value, list):
        return ", ".join(str(item) for item in value)
    return json.dumps(value, ensure_ascii=False)  # numbers, and whatever a field should not hold


def card_to_form(card: Mapping[str, Any], entries: Sequence[Entry] | None = None) -> FormValues:
    """The form's values showing ``card``."""
    values: FormValues = {}
    for entry in card_form() if entries is None else entries:
        raw = _get(card, entry.path)
        if isinstance(entry, ItemList):
            items = [item for item in raw if isinstance(item, dict)] if isinstance(raw, list) else []
            values[entry.path] = [{f.path: _text(_get(item, f.path), f) for f in entry.fields} for item in items]
        else:
            values[entry.path] = _text(raw, entry)
    return values


# --- form -> card -------------------------------------------------------------------


def _value(text: str, field: Field) -> Any:
    """What a field's text puts in the card; None for nothing. Never judges: a number field's
    text that is no number goes in as text, for validation to name it."""
    if field.kind == "markdown":
        return text if text.strip() else None
    text = text.strip()
    if not text:
        return None
    if field.kind == "words":
        return [word.strip() for word in text.split(",") if word.strip()] or None
    if field.kind == "number":
        try:
            return int(text) if _INTEGER.fullmatch(text) else float(text)
        except ValueError:
            return text
    return text


def _put(data: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for key in parents:
        data = data.setdefault(key, {})
    data[last] = value


def _item(row: Mapping[str, str], fields: Sequence[Field]) -> dict[str, Any] | None:
    item: dict[str, Any] = {}
    for field in fields:
        value = _value(row.get(field.path, ""), field)
        if value is not None:
            _put(item, field.path, value)
    if not item:
        return None
    for field in fields:
        if field.blank_ok and _get(item, field.path) is None:
            _put(item, field.path, "")
    return item


def form_to_card(values: Mapping[str, Any], entries: Sequence[Entry] | None = None) -> dict[str, Any]:
    """The card the form's ``values`` make: empty fields, items and sections left out."""
    card: dict[str, Any] = {"schema_version": SCHEMA_VERSION}
    for entry in card_form() if entries is None else entries:
        if isinstance(entry, ItemList):
            rows = values.get(entry.path) or []
            items = [item for row in rows if (item := _item(row, entry.fields)) is not None]
            if items:
                _put(card, entry.path, items)
        else:
            value = _value(str(values.get(entry.path) or ""), entry)
            if value is not None:
                _put(card, entry.path, value)
    # A required section stays, even empty: its missing fields are then named (model_details.name).
    for name in schema().get("required", ()):
        if _resolve(schema()["properties"][name]).get("type") == "object":
            card.setdefault(name, {})
    return card


# --- errors and completeness --------------------------------------------------------


def anchors(values: Mapping[str, Any], entries: Sequence[Entry] | None = None) -> set[str]:
    """The paths an error can be shown at: each field, each list, each item and its fields."""
    found: set[str] = set()
    for entry in card_form() if entries is None else entries:
        found.add(entry.path)
        if isinstance(entry, ItemList):
            for i in range(len(values.get(entry.path) or [])):
                found.add(f"{entry.path}[{i}]")
                found.update(f"{entry.path}[{i}].{field.path}" for field in entry.fields)
    return found


def error_anchor(path: str, known: Collection[str]) -> str:
    """The deepest of ``known`` at or above ``path`` (``a.b[0].c`` -> ``a.b[0]`` -> ``a.b`` -> ``a``); "" if none."""
    while path:
        if path in known:
            return path
        cut = max(path.rfind("."), path.rfind("["))
        path = path[:cut] if cut > 0 else ""
    return ""


def errors_by_anchor(errors: Sequence[CardError], known: Collection[str]) -> dict[str, list[str]]:
    """Each error's message, by the input it is shown at ("" for the card as a whole).

    A message shown above its own field names the rest of its path.
    """
    shown: dict[str, list[str]] = {}
    for error in errors:
        anchor = error_anchor(error.path, known)
        message = error.message if anchor == error.path else f"{error.path}: {error.message}"
        shown.setdefault(anchor, []).append(message)
    return shown


def completeness_text(found: Completeness, fields: Collection[str] = tuple(PRODUCTION_FIELDS)) -> str:
    """How complete a card is for production, in words."""
    total = len(fields)
    if not found.missing:
        return f"Complete: all {total} fields production needs are filled."
    missing = ", ".join(name.replace(".", " ").replace("_", " ") for name in found.missing)
    return f"{total - len(found.missing)} of {total} fields production needs are filled; missing: {missing}."
