"""Compliance reports from the audit trail: what happened in a time range, for an auditor.

:func:`build_report` is pure: from the stored records of ``[start, end)`` it lists every
deployment request (who asked, who decided, a separation-of-duties breach when the
decider is the requester), every data-access request, every read of restricted feature
data (served or refused, with the grant that allowed it), every failed login, every role
or group change and every policy denial, counts events per user and per action, and
draws a timeline of events per hour (per day, or per several days, on longer ranges)
by category. :func:`load_report` reads the records from the store; :func:`to_json`
and :func:`to_csv` render it (HTML: :mod:`.report_html`). The audit page shares
:func:`timeline` and :func:`timeline_rows`.

Every value comes from an event, and many events' values from people (names,
datasets, reasons, or anything a person's own server reported), so the renderers
escape what their format needs; CSV cells that a spreadsheet would run as a formula
are prefixed with ``'``.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from hubforge.errors import Invalid
from hubforge.events.record import EVENT_IDS

from .audit import EVENTS, AuditQuery, matching
from .events import DATA_ACCESS_SCHEMA, DEPLOYMENT_SCHEMA, POLICY_SCHEMA
from .store import GovernanceStore

__all__ = [
    "CATEGORIES",
    "CSV_COLUMNS",
    "EVENT_IDS",
    "SECTIONS",
    "Timeline",
    "build_report",
    "category",
    "event_type",
    "iso",
    "load_report",
    "parse_when",
    "timeline",
    "timeline_rows",
    "to_csv",
    "to_json",
]

LOGIN_SCHEMA = EVENT_IDS + "hub/authentication/v1"
ACCESS_SCHEMA = EVENT_IDS + "hub/access_change/v1"
READ_SCHEMA = EVENT_IDS + "features/read/v1"
#: The schemas of the events the report lists one by one.
_LISTED = (DEPLOYMENT_SCHEMA, DATA_ACCESS_SCHEMA, READ_SCHEMA, LOGIN_SCHEMA, ACCESS_SCHEMA, POLICY_SCHEMA)

#: The timeline's categories, in the order they are stacked and listed; an event's
#: kind (its schema without the version) -> its category, where one kind is one category.
CATEGORIES = ("deployments", "data access", "policy denials", "policy decisions", "failed logins", "logins",
              "access changes", "servers", "files", "kernels", "cells", "MLflow runs", "MLflow models",
              "apps", "scheduled runs", "other")  # fmt: skip
_KIND_CATEGORY = {"governance/deployment": "deployments", "governance/data_access": "data access",
                  "features/read": "data access",
                  "hub/access_change": "access changes", "hub/server": "servers", "server/contents": "files",
                  "server/kernel": "kernels", "kernel/cell": "cells", "mlflow/run": "MLflow runs",
                  "mlflow/model": "MLflow models", "apps/app": "apps", "scheduler/run": "scheduled runs"}  # fmt: skip

#: The listed sections: name -> their items' fields, in column order.
SECTIONS: dict[str, tuple[str, ...]] = {
    "deployments": ("request_id", "model_name", "version", "stage", "requester", "requested_at", "status",
                    "decided_by", "decided_at", "executed_at", "rolled_back_at", "sod_breach"),
    "data_access": ("request_id", "dataset", "requester", "requested_at", "status", "decided_by", "decided_at",
                    "sod_breach"),
    "restricted_reads": ("time", "user", "dataset", "mode", "rows", "outcome", "request_id", "reason"),
    "failed_logins": ("time", "user", "client_address", "authenticator"),
    "access_changes": ("time", "user", "action", "target_user", "role", "group", "outcome"),
    "policy_denials": ("time", "user", "policy", "resource", "reasons"),
}  # fmt: skip
#: The CSV header: ``section``, every section's fields once, then those of the counts and the timeline.
CSV_COLUMNS = (
    "section",
    *dict.fromkeys(f for fields in SECTIONS.values() for f in fields),
    "type",
    "category",
    "count",
)

#: Most timeline buckets: longer ranges get buckets of several days.
MAX_BUCKETS = 400
HOUR, DAY = timedelta(hours=1), timedelta(days=1)
#: A cell starting with one of these is a formula to a spreadsheet.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def iso(moment: datetime) -> str:
    """``moment`` as ISO 8601 UTC with milliseconds and ``Z`` (as the audit API writes times)."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_when(text: str, name: str) -> datetime:
    """An ISO 8601 date or date and time as an aware UTC datetime (UTC when it names no zone).

    Invalid, naming ``name``, for anything else. A time beyond what Python can hold once
    moved to UTC is the earliest or latest time there is.
    """
    value = text.strip().upper().replace("Z", "+00:00")
    value = value[:17] + "59" + value[19:] if value[17:19] == "60" else value  # a leap second (RFC 3339)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise Invalid(f"{name} must be an ISO 8601 date or time, such as 2026-05-01 or 2026-05-01T12:00Z") from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        return (datetime.min if parsed.year == 1 else datetime.max).replace(tzinfo=UTC)


def event_type(schema: str) -> str:
    """The short type of a schema id: ``hub/server/v1``."""
    return schema.removeprefix(EVENT_IDS)


def category(schema: str, action: str, outcome: str, decision: str = "") -> str:
    """The timeline category of an event of ``schema``."""
    kind = event_type(schema).rpartition("/")[0]
    if kind == "hub/authentication":
        return "failed logins" if _failed_login(action, outcome) else "logins"
    if kind == "governance/policy_decision":
        return "policy denials" if outcome == "denied" or decision == "deny" else "policy decisions"
    return _KIND_CATEGORY.get(kind, "other")


def _failed_login(action: str, outcome: str) -> bool:
    return action == "login_failed" or (action == "login" and outcome != "success")


def _time(record: Mapping[str, Any]) -> datetime:
    return parse_when(str(record.get("__timestamp__", "")), "__timestamp__")


# --- the timeline -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Timeline:
    """Events per bucket and category over ``[first, last]``: ``counts[i]`` is the bucket from
    ``start + i * step``. Made empty by :meth:`over`, filled by :meth:`add`."""

    start: datetime
    step: timedelta
    unit: str
    first: datetime
    last: datetime
    counts: list[Counter[str]] = field(default_factory=list)

    @classmethod
    def over(cls, first: datetime, last: datetime) -> Timeline:
        """An empty timeline of ``[first, last]``: by hour up to three days, by day up to
        MAX_BUCKETS days, else by as many days as keep to MAX_BUCKETS buckets."""
        start, step, unit = _bucketing(first, last)
        size = (last - start) // step + 1
        return cls(start, step, unit, first, last, [Counter() for _ in range(size)])

    def add(self, moment: datetime, name: str) -> None:
        """Count an event of category ``name`` at ``moment`` (outside ``[first, last]``: not at all)."""
        if self.first <= moment <= self.last:
            self.counts[min((moment - self.start) // self.step, len(self.counts) - 1)][name] += 1

    def to_json(self) -> dict[str, Any]:
        """The timeline as plain data: its bucket unit and every bucket, empty ones included."""
        present = {name for bucket in self.counts for name in bucket}
        return {
            "bucket": self.unit,
            "categories": [name for name in CATEGORIES if name in present],
            "buckets": [
                {"start": iso(self.start + i * self.step), "total": sum(c.values()),
                 "counts": {name: c[name] for name in CATEGORIES if c[name]}}
                for i, c in enumerate(self.counts)
            ],
        }  # fmt: skip


def _bucketing(start: datetime, end: datetime) -> tuple[datetime, timedelta, str]:
    """The first bucket's start, the bucket length and its name, for ``[start, end]``."""
    if end - start < 72 * HOUR:
        return start.replace(minute=0, second=0, microsecond=0), HOUR, "hour"
    origin = start.replace(hour=0, minute=0, second=0, microsecond=0)
    days = (end - origin) // DAY + 1
    if days <= MAX_BUCKETS:
        return origin, DAY, "day"
    width = math.ceil(days / MAX_BUCKETS)
    return origin, width * DAY, f"{width} days"


def timeline(items: Iterable[tuple[datetime, str]], first: datetime, last: datetime) -> Timeline:
    """The :class:`Timeline` of ``(time, category)`` items over ``[first, last]`` (the audit page's
    span ends at its newest event, included)."""
    line = Timeline.over(first, last)
    for moment, name in items:
        line.add(moment, name)
    return line


# --- the report, from records -------------------------------------------------------------------


def _request_entry(entry: dict[str, Any], record: Mapping[str, Any]) -> None:
    """Fold one deployment or data-access event, in chain order, into its request's entry."""
    for name in entry.keys() & {"model_name", "version", "stage", "dataset", "requester"}:
        entry[name] = str(record.get(name) or entry[name])
    if record.get("outcome", "success") != "success":
        return  # a step that failed or was refused changed nothing
    action, when = str(record.get("action", "")), iso(_time(record))
    if action == "requested":
        entry["requested_at"] = when
        entry["requester"] = entry["requester"] or str(record.get("user", ""))
        entry["status"] = entry["status"] or "pending"
    elif action in ("approved", "rejected", "denied"):
        entry["decided_by"] = str(record.get("approver") or record.get("user", ""))
        entry["decided_at"], entry["status"] = when, action
    elif f"{action}_at" in entry:  # executed, rolled_back
        entry[f"{action}_at"], entry["status"] = when, action.replace("_", " ")


def _requests(records: Iterable[Mapping[str, Any]], section: str) -> list[dict[str, Any]]:
    """One entry per request of ``section`` (deployments, data_access) seen in ``records``."""
    fields = SECTIONS[section][:-1]  # sod_breach is worked out last
    entries: dict[str, dict[str, Any]] = {}
    for record in records:
        key = str(record.get("request_id") or (record.get("resource") or {}).get("id", ""))
        entry = entries.setdefault(key, {**dict.fromkeys(fields, ""), "request_id": key})
        _request_entry(entry, record)
    for entry in entries.values():
        # Separation of duties: nobody decides their own request.
        entry["sod_breach"] = bool(entry["decided_by"]) and entry["decided_by"] == entry["requester"]
    return list(entries.values())


def _restricted_reads(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"time": iso(_time(r)), "user": str(r.get("user", "")),
         "dataset": str((r.get("resource") or {}).get("id", "")), "mode": str(r.get("mode", "")),
         "rows": r.get("rows") if isinstance(r.get("rows"), int) else "", "outcome": str(r.get("outcome", "")),
         "request_id": str(r.get("request_id", "")), "reason": str(r.get("reason", ""))}
        for r in records
    ]  # fmt: skip


def _failed_logins(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"time": iso(_time(r)), "user": str(r.get("user", "")),
         "client_address": str((r.get("origin") or {}).get("client_address", "")),
         "authenticator": str(r.get("authenticator", ""))}
        for r in records
        if _failed_login(str(r.get("action", "")), str(r.get("outcome", "")))
    ]  # fmt: skip


def _access_changes(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    fields = ("user", "action", "target_user", "role", "group", "outcome")
    return [{"time": iso(_time(r)), **{name: str(r.get(name, "")) for name in fields}} for r in records]


def _policy_denials(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"time": iso(_time(r)), "user": str(r.get("user", "")), "policy": str(r.get("policy", "")),
         "resource": _resource(r), "reasons": [str(reason) for reason in r.get("reasons") or []]}
        for r in records
        if r.get("outcome") == "denied" or r.get("decision") == "deny"
    ]  # fmt: skip


def _resource(record: Mapping[str, Any]) -> str:
    resource = record.get("resource") or {}
    return f"{resource.get('type', '')}:{resource.get('id', '')}"


def _counts(per_action: Counter[tuple[str, str, str]]) -> dict[str, Any]:
    per_user: Counter[str] = Counter()
    for (user, _kind, _action), count in per_action.items():
        per_user[user] += count
    return {
        "per_user": [{"user": u, "events": n} for u, n in sorted(per_user.items(), key=lambda i: (-i[1], i[0]))],
        "per_user_action": [
            {"user": u, "type": t, "action": a, "count": n} for (u, t, a), n in sorted(per_action.items())
        ],
    }


def build_report(
    records: Iterable[Mapping[str, Any]],
    start: datetime,
    end: datetime,
) -> dict[str, Any]:
    """The compliance report of the stored ``records`` (full spool records, in chain order) of
    ``[start, end)``; ``positions`` (the chain positions read) is left to :func:`load_report`."""
    # Only the listed sections' records are kept: a month of cells and files is counted, not held.
    by_schema: dict[str, list[Mapping[str, Any]]] = {schema: [] for schema in _LISTED}
    per_action: Counter[tuple[str, str, str]] = Counter()
    line = Timeline.over(start, end - timedelta(microseconds=1))
    for record in records:
        schema, action = str(record.get("__schema__", "")), str(record.get("action", ""))
        if schema in by_schema:
            by_schema[schema].append(record)
        per_action[(str(record.get("user", "")), event_type(schema), action)] += 1
        outcome, decision = str(record.get("outcome", "")), str(record.get("decision", ""))
        line.add(_time(record), category(schema, action, outcome, decision))
    sections = {
        "deployments": _requests(by_schema[DEPLOYMENT_SCHEMA], "deployments"),
        "data_access": _requests(by_schema[DATA_ACCESS_SCHEMA], "data_access"),
        "restricted_reads": _restricted_reads(by_schema[READ_SCHEMA]),
        "failed_logins": _failed_logins(by_schema[LOGIN_SCHEMA]),
        "access_changes": _access_changes(by_schema[ACCESS_SCHEMA]),
        "policy_denials": _policy_denials(by_schema[POLICY_SCHEMA]),
    }
    counts = _counts(per_action)
    summary = {name: len(items) for name, items in sections.items()}
    summary["sod_breaches"] = sum(e["sod_breach"] for e in sections["deployments"] + sections["data_access"])
    summary["users"] = len(counts["per_user"])
    return {
        "from": iso(start),
        "to": iso(end),
        "generated": iso(datetime.now(UTC)),
        "events": sum(per_action.values()),
        "positions": None,
        "summary": summary,
        **sections,
        "counts": counts,
        "timeline": line.to_json(),
    }


# --- reading the trail -------------------------------------------------------------------------


def _fetch(query: sa.Select[Any]) -> Callable[[Session], list[Any]]:
    def run(session: Session) -> list[Any]:
        return list(session.execute(query).all())

    return run


def _stored(store: GovernanceStore, start: datetime, end: datetime, chunk: int = 5000) -> Iterator[Any]:
    """The rows (position, record) of ``[start, end)`` in chain order, a chunk per transaction."""
    t, after = EVENTS, 0
    while True:
        query = (
            sa.select(t.c.position, t.c.record)
            .where(t.c.time >= start, t.c.time < end, t.c.position > after)
            .order_by(t.c.position)
            .limit(chunk)
        )
        rows = store._run("reading audit events", _fetch(query))
        yield from rows
        if len(rows) < chunk:
            return
        after = rows[-1].position


def load_report(store: GovernanceStore, start: datetime, end: datetime) -> dict[str, Any]:
    """The compliance report of the trail's events of ``[start, end)``."""
    if start >= end:
        raise Invalid("the report's start must come before its end")
    first = last = 0

    def records() -> Iterator[dict[str, Any]]:
        nonlocal first, last
        for row in _stored(store, start, end):
            first, last = first or row.position, row.position
            yield json.loads(row.record)

    report = build_report(records(), start, end)
    report["positions"] = {"first": first, "last": last} if first else None
    return report


def timeline_rows(store: GovernanceStore, q: AuditQuery, cap: int) -> tuple[list[tuple[datetime, str]], bool]:
    """``(time, category)`` of the newest ``cap`` events ``q``'s filters match (its cursor and
    limit ignored), and whether more matched: the audit page's timeline."""
    t = EVENTS
    columns = sa.select(t.c.time, t.c.schema, t.c.action, t.c.outcome)
    select = matching(columns.order_by(t.c.position.desc()).limit(cap + 1), q)

    rows = store._run("reading the audit timeline", _fetch(select))
    items = [(row.time, category(row.schema, row.action, row.outcome)) for row in rows[:cap]]
    return items, len(rows) > cap


# --- renderers ---------------------------------------------------------------------------------


def to_json(report: Mapping[str, Any]) -> str:
    """The report as JSON text (keys in a stable order)."""
    return json.dumps(report, indent=2, ensure_ascii=False) + "\n"


def _cell(value: Any) -> Any:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        value = "; ".join(str(v) for v in value)
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value  # a spreadsheet shows it; it does not run it
    return value


def _csv_rows(report: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    for section in SECTIONS:
        for item in report[section]:
            yield {"section": section, **item}
    for row in report["counts"]["per_user"]:
        yield {"section": "events_per_user", "user": row["user"], "count": row["events"]}
    for row in report["counts"]["per_user_action"]:
        yield {"section": "events_per_user_action", **row}
    for bucket in report["timeline"]["buckets"]:
        for name, count in bucket["counts"].items():
            yield {"section": "timeline", "time": bucket["start"], "category": name, "count": count}


def to_csv(report: Mapping[str, Any]) -> str:
    """The report as CSV: one row per listed item, count and timeline cell, ``section`` first."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, extrasaction="raise", lineterminator="\n")
    writer.writeheader()
    for row in _csv_rows(report):
        writer.writerow({name: _cell(value) for name, value in row.items()})
    return out.getvalue()
