"""Historical (point-in-time) reads through the features service: ``POST api/historical``.

A notebook builds a training set (``get_historical_features``) through the service, as it
reads online values (:mod:`.online`): the offline store's files are the platform's, and
restricted views are read only where the platform decides. The body names ``features`` or
a ``feature_service``, as an online read does, and ``entity_rows``: up to
:data:`MAX_ROWS` objects, each with the join keys (and the request fields an on-demand
view computes from) and an ``event_timestamp``, an ISO 8601 date and time (without a zone:
UTC); other columns (a label, say) pass through, ``null`` allowed. Each row gets the
values as they were at its time, within each view's TTL, never later ones.
:func:`parse_historical` checks the body against the catalog before Feast sees it. The
views a read touches include those an on-demand view computes from: its values are made
of theirs, so their grants are checked too.

:class:`HistoricalReader` reads on a thread of its own, with a Feast store of its own
(opened on its first read), so that a long historical read never holds up an online one,
and no Feast store is used by two threads (Feast does not say one may be).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from hubforge.errors import Invalid
from hubforge.features.catalog import Catalog

from .online import MAX_TEXT, StoreReader, check_value, read_target, touched

__all__ = ["MAX_ROWS", "TIMESTAMP", "HistoricalQuery", "HistoricalReader", "parse_historical"]

#: The most entity rows one read takes (a kernel sends a larger training set in parts).
MAX_ROWS = 10_000
#: Each row's time column.
TIMESTAMP = "event_timestamp"
#: The years a row's time may fall in: pandas' nanosecond times hold 1677-09-21 to 2262-04-11.
YEARS = (1678, 2261)


@dataclass(frozen=True)
class HistoricalQuery:
    """A checked read: feature references or a service, the views it touches, the rows (each
    ``event_timestamp`` a datetime in UTC)."""

    features: tuple[str, ...]
    service: str | None
    views: tuple[str, ...]
    rows: tuple[Mapping[str, Any], ...]


def _timestamp(value: Any, n: int) -> datetime:
    """A row's time: ISO 8601, a date and time (or a date: its midnight), in UTC."""
    stamp = None
    if isinstance(value, str) and len(value) <= MAX_TEXT:
        try:
            stamp = datetime.fromisoformat(value)
        except ValueError:
            stamp = None
    if stamp is None:
        shown = value[:MAX_TEXT] if isinstance(value, str) else json.dumps(value)[:MAX_TEXT]
        raise Invalid(
            f"entity_rows[{n}].{TIMESTAMP}: {shown!r} is not an ISO 8601 date and time (say 2026-12-01T09:30:00Z)"
        )
    if not YEARS[0] <= stamp.year <= YEARS[1]:
        raise Invalid(f"entity_rows[{n}].{TIMESTAMP}: a time in the years {YEARS[0]} to {YEARS[1]}")
    return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)


def _rows(value: Any) -> tuple[Mapping[str, Any], ...]:
    """The entity rows: objects of scalars (or nulls) with the same columns, each with its time."""
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_ROWS:
        raise Invalid(f"entity_rows: a list of 1 to {MAX_ROWS:,} objects")
    rows: list[Mapping[str, Any]] = []
    for n, row in enumerate(value):
        if not isinstance(row, dict) or not row:
            raise Invalid("entity_rows: each row is an object of join keys, request fields and an event_timestamp")
        if TIMESTAMP not in row:
            raise Invalid(f"entity_rows[{n}]: no {TIMESTAMP}, the time to read the values as of")
        if n and row.keys() != value[0].keys():
            raise Invalid(f"entity_rows[{n}]: not the columns of entity_rows[0]; each row has the same")
        for key, item in row.items():
            if key != TIMESTAMP and item is not None:  # null: a column passed through (a label, say)
                check_value(key, item)
        rows.append({**row, TIMESTAMP: _timestamp(row[TIMESTAMP], n)})
    return tuple(rows)


def _needed(catalog: Catalog, views: Iterable[str]) -> dict[str, str]:
    """The columns each row needs, with the view needing it: the join keys of the views'
    entities, and the fields of the request sources an on-demand view reads."""
    needed: dict[str, str] = {}
    for name in views:
        item = catalog.get("feature_view", name)
        if item is None:
            continue
        for entity_name in item.data.get("entities") or ():
            entity = catalog.get("entity", entity_name)
            for key in (entity.data.get("join_keys") or ()) if entity is not None else ():
                needed.setdefault(str(key), name)
        for source_name in item.data.get("sources") or ():
            source = catalog.get("data_source", source_name)
            if source is not None and source.data.get("type") == "RequestSource":
                for field in source.data.get("fields") or ():
                    needed.setdefault(str(field.get("name")), name)
    return needed


def parse_historical(body: Any, catalog: Catalog) -> HistoricalQuery:
    """The historical read ``body`` asks for, checked against ``catalog``; Invalid (400)
    naming what is wrong. Restricted views are the caller's to check (:mod:`.access`)."""
    if not isinstance(body, dict):
        raise Invalid("the body must be a JSON object")
    extra = sorted(set(body) - {"features", "feature_service", "entity_rows"})
    if extra:
        raise Invalid(f"{extra[0][:MAX_TEXT]}: not a field of a historical read")
    rows = _rows(body.get("entity_rows"))
    features, service, named = read_target(body, catalog)
    views = touched(catalog, named)
    for key, view in _needed(catalog, views).items():
        if key not in rows[0]:
            raise Invalid(f"entity_rows: each row needs {key!r} ({view} reads by it)")
        for n, row in enumerate(rows):
            if row[key] is None:
                raise Invalid(f"entity_rows[{n}]: {key[:MAX_TEXT]!r} must be a number, a string or a boolean")
    return HistoricalQuery(features=features, service=service, views=views, rows=rows)


class HistoricalReader(StoreReader):
    """The offline store, read on a thread of its own (its own store: a long historical read never
    holds up online reads); the answer has the rows' columns first."""

    function = "historical_values"
    thread_name = "feast-historical"
