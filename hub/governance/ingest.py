"""What a person's server reports to the audit trail, checked before the trail keeps it.

A person's server (and the kernels and papermill runs under it) is where the person's
own code runs: anything it sends may have been written by that code. So the ingest
API (``POST api/audit/events``) keeps a reported record only as what it is, a report
by the authenticated user's server:

- who is the token's user: a record naming anyone else is refused;
- the emitter id is made here, ``server:<user>/<server>:<source>``, so that a report
  can never take a sequence number of the hub's, a service's or another person's
  emitter (stored once per emitter and number, a forged one would hide the real one);
- the observer must be one that runs under the person (``server``, ``kernel``,
  ``papermill``): a report cannot pass as seen by the hub or a service;
- ``origin.server`` is set to the server the report names, of the caller's own;
- the record is checked against its schema after the same cleaning a spool does, and
  gets ``__reported_by__`` and ``__received__`` (when the service took it).

Pure: :func:`reported_records` takes the parsed body and the caller's name; any
refusal is an :class:`~hubforge.events.EventRefused` (400) or
:class:`~hubforge.errors.Forbidden` (403) naming the record and what is wrong.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from hubforge.errors import Forbidden
from hubforge.events import ENVELOPE, MAX_EVENT_BYTES, EventRefused, clean, event_schemas, refusal

__all__ = ["INGEST_BODY", "MAX_RECORDS", "REPORTING_OBSERVERS", "emitter_id", "reported_records"]

#: The most records one ingest request may carry.
MAX_RECORDS = 1000
#: The parts of the platform that run under the person, and so may report events.
REPORTING_OBSERVERS = frozenset({"server", "kernel", "papermill"})
#: The longest emitter id the trail keeps, with room for a spool id (``/`` and 32 digits).
EMITTER_MAX = 255 - 33

_SOURCE = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_SERVER = r"^[^/\x00-\x1f\x7f]{0,255}$"
_SPOOL_ID = re.compile(r"^[0-9a-f]{8,32}$")
_STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?(Z|[+-]\d\d:\d\d)$")

#: The request body: which of the caller's servers reports, from which of its spools, what.
INGEST_BODY: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["server", "source", "records"],
    "properties": {
        "server": {
            "type": "string",
            "pattern": _SERVER,
            "description": "The reporting server's name, of the caller's servers ('' for the default one).",
        },
        "source": {
            "type": "string",
            "pattern": _SOURCE,
            "description": "The spool in that server the records come from (``server``, ``kernel-<id>``).",
        },
        "records": {
            "type": "array",
            "maxItems": MAX_RECORDS,
            "items": {
                "type": "object",
                "required": ["__seq__", "__timestamp__", "__schema__", *ENVELOPE],
                "properties": {
                    "__seq__": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
                    "__timestamp__": {"type": "string", "pattern": _STAMP.pattern},
                    "__schema__": {"type": "string", "enum": sorted(event_schemas())},
                    "__spool__": {"type": "string", "pattern": _SPOOL_ID.pattern},
                    "user": {"type": "string"},
                    "origin": {
                        "type": "object",
                        "required": ["observer"],
                        "properties": {"observer": {"enum": sorted(REPORTING_OBSERVERS)}},
                    },
                },
                "description": "A spool record, checked against its own event schema (``__schema__``).",
            },
            "description": "Spool records, in their emitter's order (``__seq__`` 1, 2, 3, ...).",
        },
    },
}


def emitter_id(user: str, server: str, source: str) -> str:
    """The trail's emitter id of a spool of ``user``'s server ``server``."""
    return f"server:{user}/{server}:{source}"


def reported_records(body: Mapping[str, Any], user: str, now: datetime | None = None) -> list[dict[str, Any]]:
    """The records of an ingest ``body`` (already valid against :data:`INGEST_BODY`) as the
    trail keeps them, reported by ``user``; refused whole if any one is refused."""
    emitter = emitter_id(user, body["server"], body["source"])
    if len(emitter) > EMITTER_MAX:
        raise EventRefused(f"the user, server and source make an emitter id over {EMITTER_MAX} characters")
    received = (now or datetime.now(UTC)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    server = f"{user}/{body['server']}"
    kept = []
    for index, record in enumerate(body["records"]):
        try:
            kept.append(_record(record, user, emitter, server, received))
        except (EventRefused, Forbidden) as exc:
            raise type(exc)(f"records[{index}]: {exc}") from None
    return kept


def _record(record: Mapping[str, Any], user: str, emitter: str, server: str, received: str) -> dict[str, Any]:
    seq, stamp, schema_id = record.get("__seq__"), record.get("__timestamp__"), record.get("__schema__")
    if isinstance(seq, bool) or not isinstance(seq, int) or not 1 <= seq < 2**63:
        raise EventRefused("__seq__ must be a whole number from 1")
    if not isinstance(stamp, str) or not _STAMP.match(stamp):
        raise EventRefused("__timestamp__ must be an ISO 8601 UTC time")
    if not isinstance(schema_id, str) or schema_id not in event_schemas():
        raise EventRefused("__schema__ names no event schema")
    spool = record.get("__spool__")
    if spool is not None and not (isinstance(spool, str) and _SPOOL_ID.match(spool)):
        raise EventRefused("__spool__ must be 8 to 32 lowercase hex digits")
    event = {key: value for key, value in record.items() if not key.startswith("__")}
    if event.get("user") != user:
        raise Forbidden(f"an event reported by {user!r}'s server may only name {user!r}")
    origin = event.get("origin")
    if not isinstance(origin, dict) or origin.get("observer") not in REPORTING_OBSERVERS:
        raise EventRefused(f"origin.observer must be one of {', '.join(sorted(REPORTING_OBSERVERS))}")
    event["origin"] = {**origin, "server": server}
    cleaned = clean(event, event_schemas()[schema_id])
    if why := refusal(schema_id)(cleaned):
        raise EventRefused(why)
    kept = {
        "__timestamp__": stamp,
        "__emitter__": emitter,
        "__seq__": seq,
        **({"__spool__": spool} if spool else {}),
        "__schema__": schema_id,
        "__schema_version__": event_schemas()[schema_id]["version"],
        "__metadata_version__": 1,
        "__reported_by__": user,
        "__received__": received,
        **cleaned,
    }
    if len(json.dumps(kept, ensure_ascii=False).encode()) > MAX_EVENT_BYTES:
        raise EventRefused(f"the event is over {MAX_EVENT_BYTES} bytes")
    return kept
