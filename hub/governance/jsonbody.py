"""Strict parsing of JSON request bodies: what ``json.loads`` lets through and the API must not.

A body is UTF-8 JSON (RFC 8259), and beyond what ``json.loads`` checks it has
no lone surrogate escapes (``"\\ud800"`` parses to a str that no encoder or
database can hold), no repeated field (which copy counts would depend on the
reader), no ``NaN``/``Infinity`` nor a number beyond a 64-bit integer or a
finite double, and at most :data:`MAX_DEPTH` levels of nesting. Each refusal
is a :class:`BodyError` whose message is one line naming what is wrong, for a
400. Pure: no request, no store.
"""

from __future__ import annotations

import json
import math
from typing import Any

from .schemas import field_label

__all__ = ["MAX_DEPTH", "BodyError", "parse_json_body"]

#: Bodies are flat objects; deeper nesting is refused before the schema check walks it.
MAX_DEPTH = 32

_INT_RANGE = range(-(2**63), 2**63)
# More digits than any 64-bit integer: refused before int() reads them.
_MAX_INT_DIGITS = 20


class BodyError(ValueError):
    """A request body that is not strict JSON; the message is one line for a 400."""


def parse_json_body(raw: bytes) -> Any:
    """The JSON value in ``raw``, or :class:`BodyError` saying why it is refused."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyError(f"request body is not UTF-8: {exc.reason} at byte {exc.start}") from None
    if text.startswith("\ufeff"):
        raise BodyError("request body starts with a byte order mark: send UTF-8 without one")
    try:
        data = json.loads(
            text,
            object_pairs_hook=_object,
            parse_constant=_constant,
            parse_float=_float,
            parse_int=_int,
        )
    except json.JSONDecodeError as exc:
        raise BodyError(f"malformed JSON body: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise BodyError(_too_deep()) from None
    _check_values(data)
    return data


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for key, value in pairs:
        if key in data:
            raise BodyError(f"request body repeats field {field_label([key])}")
        data[key] = value
    return data


def _constant(name: str) -> Any:
    raise BodyError(f"malformed JSON body: {name} is not valid JSON")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BodyError(_out_of_range())
    return value


def _int(text: str) -> int:
    value = int(text) if len(text.lstrip("-")) <= _MAX_INT_DIGITS else None
    if value is None or value not in _INT_RANGE:
        raise BodyError(_out_of_range())
    return value


def _out_of_range() -> str:
    return "request body has a number out of range (beyond a 64-bit integer or a double)"


def _too_deep() -> str:
    return f"request body is nested too deeply (more than {MAX_DEPTH} levels)"


def _check_values(data: Any) -> None:
    """Refuse lone surrogates in any key or string and nesting deeper than MAX_DEPTH.

    Iterative, so that a body nested as deep as the parser allows cannot
    exhaust the stack here; the first problem in document order is named.
    """
    stack: list[tuple[Any, list[str]]] = [(data, [])]
    while stack:
        value, path = stack.pop()
        if len(path) > MAX_DEPTH:
            raise BodyError(_too_deep())
        if isinstance(value, str):
            _check_text(value, path)
        elif isinstance(value, dict):
            for key in value:
                _check_text(key, path, key=True)
            stack.extend((item, [*path, key]) for key, item in reversed(value.items()))
        elif isinstance(value, list):
            stack.extend((item, [*path, str(i)]) for i, item in reversed(list(enumerate(value))))


def _check_text(text: str, path: list[str], *, key: bool = False) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        if key:
            subject = f"a field name in field {field_label(path)}" if path else "a field name"
        else:
            subject = f"field {field_label(path)}" if path else "request body"
        raise BodyError(f"{subject} is not valid Unicode: lone surrogate \\u{ord(text[exc.start]):04x}") from None
