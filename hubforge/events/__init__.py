"""hubforge's audit events: their schemas, and what makes a reported value safe to keep.

Every event the platform records is described by a versioned `jupyter_events
<https://jupyter-events.readthedocs.io>`_ schema under ``schemas/<area>/<name>.v<N>.yaml``
(``$id`` ``https://events.hubforge.dev/<area>/<name>/v<N>``). Each one carries the same
envelope: who (``user``), what (``action``), on what (``resource``), how it ended
(``outcome``) and where from (``origin``); when is the record's ``__timestamp__`` (UTC,
milliseconds). jupyter_events checks the schemas themselves (its meta-schema) and the
events against them; emitting goes through :mod:`.spool`, not jupyter_events' logger,
whose ``emit()`` is too slow for the cells' path. For the same reason each schema is
also compiled (:func:`refusal`) into a check of the few JSON Schema keywords the
schemas use, about ten times faster than jsonschema's validator; a test holds the two
to the same answers on every schema.

Values that come from people (paths, names, titles) are made safe before they are
kept (:func:`clean`): control characters (newlines, ANSI escapes) are escaped and
strings cut to their schema's ``maxLength``. An event over :data:`MAX_EVENT_BYTES` is
refused.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from hubforge.errors import Invalid

__all__ = [
    "ENVELOPE",
    "MAX_EVENT_BYTES",
    "SCHEMA_DIR",
    "EventRefused",
    "clean",
    "event_schemas",
    "refusal",
    "schema_registry",
]

#: Where the schemas are: ``<area>/<name>.v<version>.yaml``.
SCHEMA_DIR = Path(__file__).with_name("schemas")
#: The properties every event carries, and must: who, what, on what, how it ended, where from.
ENVELOPE = ("user", "action", "resource", "outcome", "origin")
#: The largest event (its JSON) the platform keeps.
MAX_EVENT_BYTES = 64 * 1024

#: C0 and C1 control characters and DEL: a newline or an ANSI escape in a log is an injection.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class EventRefused(Invalid):
    """An event that is not kept: it fails its schema, is too large, or names no schema (400)."""


@functools.cache
def event_schemas() -> dict[str, dict[str, Any]]:
    """Every event schema, by ``$id``."""
    schemas: dict[str, dict[str, Any]] = {}
    for path in sorted(SCHEMA_DIR.rglob("*.yaml")):
        schema = yaml.safe_load(path.read_text())
        schemas[schema["$id"]] = schema
    return schemas


@functools.cache
def schema_registry() -> Any:
    """A ``jupyter_events.SchemaRegistry`` of every schema (each checked against its meta-schema)."""
    from jupyter_events.schema_registry import SchemaRegistry

    registry = SchemaRegistry()
    for schema in event_schemas().values():
        registry.register(schema)
    return registry


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(char, f"\\x{ord(char):02x}")


def clean(value: Any, schema: Mapping[str, Any]) -> Any:
    """``value`` made safe to keep under ``schema`` (a property's schema).

    Strings lose their control characters (escaped as ``\\n``, ``\\x1b``) and are cut
    to ``maxLength``; objects and lists are cleaned item by item. Anything else is
    returned as it is, for the schema to judge.
    """
    if isinstance(value, str):
        text = _CONTROL.sub(_escape, value)
        limit = schema.get("maxLength")
        return text[:limit] if isinstance(limit, int) else text
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        return {key: clean(item, properties.get(key, {})) for key, item in value.items()}
    if isinstance(value, list):
        items = schema.get("items", {})
        return [clean(item, items) for item in value]
    return value


#: The JSON Schema keywords :func:`refusal` compiles; a schema using another is refused.
KEYWORDS = frozenset(
    {
        "$id",
        "version",
        "title",
        "description",
        "type",
        "required",
        "additionalProperties",
        "properties",
        "enum",
        "maxLength",
        "pattern",
        "minimum",
        "maximum",
        "items",
        "maxItems",
    }
)

Check = Callable[[Any], "str | None"]


def _compile(schema: Mapping[str, Any], where: str) -> Check:
    unknown = set(schema) - KEYWORDS
    if unknown:
        raise ValueError(f"{where}: keyword(s) {sorted(unknown)} are not compiled")
    checks: list[Check] = []
    kind = schema.get("type")
    if "enum" in schema:
        allowed = list(schema["enum"])
        checks.append(
            lambda v: None if any(v == a and type(v) is type(a) for a in allowed) else f"{where}: not one of {allowed}"
        )
    if kind == "string":
        limit, pattern = schema.get("maxLength"), schema.get("pattern")
        compiled = re.compile(pattern) if pattern else None

        def string(v: Any) -> str | None:
            if not isinstance(v, str):
                return f"{where}: not a string"
            if limit is not None and len(v) > limit:
                return f"{where}: longer than {limit}"
            if compiled is not None and not compiled.search(v):
                return f"{where}: does not match {pattern}"
            return None

        checks.append(string)
    elif kind == "integer":
        low, high = schema.get("minimum"), schema.get("maximum")

        def integer(v: Any) -> str | None:
            if isinstance(v, bool) or not (isinstance(v, int) or (isinstance(v, float) and v.is_integer())):
                return f"{where}: not an integer"
            if (low is not None and v < low) or (high is not None and v > high):
                return f"{where}: out of range"
            return None

        checks.append(integer)
    elif kind == "array":
        item = _compile(schema.get("items", {}), f"{where}[]")
        most = schema.get("maxItems")

        def array(v: Any) -> str | None:
            if not isinstance(v, list):
                return f"{where}: not a list"
            if most is not None and len(v) > most:
                return f"{where}: more than {most} items"
            return next((why for why in map(item, v) if why), None)

        checks.append(array)
    elif kind == "object":
        properties = {k: _compile(v, f"{where}.{k}" if where else k) for k, v in schema.get("properties", {}).items()}
        required = list(schema.get("required", ()))
        closed = schema.get("additionalProperties") is False

        def obj(v: Any) -> str | None:
            if not isinstance(v, dict):
                return f"{where or 'the event'}: not an object"
            for key in required:
                if key not in v:
                    return f"{where + '.' if where else ''}{key}: missing"
            for key, value in v.items():
                check = properties.get(key)
                if check is None:
                    if closed:
                        return f"{where + '.' if where else ''}{str(key)[:64]}: not a field of this event"
                    continue
                if why := check(value):
                    return why
            return None

        checks.append(obj)
    elif kind is not None:
        raise ValueError(f"{where}: type {kind!r} is not compiled")
    return lambda v: next((why for check in checks if (why := check(v))), None)


@functools.cache
def refusal(schema_id: str) -> Check:
    """The compiled check of schema ``schema_id``: ``check(event)`` says why the event is
    refused (one line), or None. ``EventRefused`` for an unknown schema."""
    schema = event_schemas().get(schema_id)
    if schema is None:
        raise EventRefused(f"no event schema {schema_id[:200]!r}")
    return _compile(schema, "")
