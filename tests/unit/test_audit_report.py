"""The compliance report and the audit page, as pure functions: records in, report and HTML out.

No store and no hub: records are dicts as the trail stores them (full spool records).
What the report must get right for an auditor: who asked and who decided each request,
the separation-of-duties breach when they are the same person, the failed logins, access
changes and policy denials and nothing else in those sections, counts and timeline
buckets that add up, and output in which people's values cannot act: escaped in HTML,
no formula in CSV.
"""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any

import pytest

from hubforge.errors import Invalid
from hubforge.hub.governance.audit import AuditQuery
from hubforge.hub.governance.pages import PAGE_SIZE, Filters, parse_filters, render_page
from hubforge.hub.governance.report import (
    CATEGORIES,
    CSV_COLUMNS,
    MAX_BUCKETS,
    build_report,
    category,
    parse_when,
    timeline,
    to_csv,
    to_json,
)
from hubforge.hub.governance.report_html import render_html, timeline_svg

IDS = "https://events.hubforge.dev/"
START, END = datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 2, tzinfo=UTC)
SCRIPT = "<script>alert('x')</script>"


def record(kind: str, at: str, user: str, action: str, outcome: str = "success", **fields: Any) -> dict[str, Any]:
    """A stored record of ``kind`` (``hub/authentication``) at ``at`` (``HH:MM`` on START's day)."""
    return {
        "__schema__": f"{IDS}{kind}/v1",
        "__timestamp__": f"2026-03-01T{at}:00.000000Z",
        "__emitter__": "test",
        "__seq__": 1,
        "user": user,
        "action": action,
        "outcome": outcome,
        "resource": fields.pop("resource", {"type": "user", "id": user}),
        "origin": fields.pop("origin", {"observer": "governance", "client_address": "10.0.0.9"}),
        **fields,
    }


def deployment(at: str, user: str, action: str, request_id: str, requester: str, **fields: Any) -> dict[str, Any]:
    resource = {"type": "request", "id": request_id}
    return record("governance/deployment", at, user, action, resource=resource, request_id=request_id,
                  requester=requester, model_name="churn", stage="production", **fields)  # fmt: skip


TRAIL = [
    deployment("09:00", "alice", "requested", "r1", "alice"),
    deployment("10:00", "carol", "approved", "r1", "alice", approver="carol"),
    deployment("09:10", "bob", "requested", "r2", "bob"),
    deployment("09:40", "bob", "approved", "r2", "bob", approver="bob"),  # nobody may decide their own
    deployment("11:00", "dan", "requested", "r3", "dan"),
    deployment("11:30", "carol", "rejected", "r3", "dan", approver="carol"),
    record("governance/data_access", "12:00", "alice", "requested", resource={"type": "request", "id": "d1"},
           request_id="d1", requester="alice", dataset="features/pii"),
    record("governance/data_access", "12:05", "dan", "denied", resource={"type": "request", "id": "d1"},
           request_id="d1", requester="alice", approver="dan", dataset="features/pii"),
    record("hub/authentication", "08:00", "alice", "login", authenticator="DemoAuthenticator"),
    record("hub/authentication", "08:01", SCRIPT, "login_failed", "failure", authenticator="DemoAuthenticator"),
    record("hub/authentication", "08:02", "=HYPERLINK(1)", "login_failed", "failure"),
    record("hub/access_change", "13:00", "erin", "role_granted", target_user="alice", role="ml-lead"),
    record("governance/policy_decision", "14:00", "carol", "evaluate", "denied", policy="approve deploy-production",
           decision="deny", reasons=["separation of duties: nobody may decide their own request", "-2+3"]),
    record("governance/policy_decision", "14:30", "carol", "evaluate", policy="p", decision="allow"),
    record("server/contents", "15:59", "alice", "save", resource={"type": "file", "id": "a.ipynb"}, path="a.ipynb"),
]  # fmt: skip


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    return build_report(TRAIL, START, END)


def by_id(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {item["request_id"]: item for item in items}


def test_each_deployment_names_who_asked_and_who_decided(report: dict[str, Any]) -> None:
    deployments = by_id(report["deployments"])
    assert list(deployments) == ["r1", "r2", "r3"]
    r1 = deployments["r1"]
    assert (r1["requester"], r1["decided_by"], r1["status"]) == ("alice", "carol", "approved")
    assert (r1["requested_at"], r1["decided_at"]) == ("2026-03-01T09:00:00.000Z", "2026-03-01T10:00:00.000Z")
    assert (r1["model_name"], r1["stage"], r1["sod_breach"]) == ("churn", "production", False)
    assert (deployments["r3"]["status"], deployments["r3"]["decided_by"]) == ("rejected", "carol")


def test_a_request_decided_by_its_requester_is_a_separation_of_duties_breach(report: dict[str, Any]) -> None:
    flags = {item["request_id"]: item["sod_breach"] for item in report["deployments"] + report["data_access"]}
    assert flags == {"r1": False, "r2": True, "r3": False, "d1": False}
    assert report["summary"]["sod_breaches"] == 1
    page = render_html(report)
    summary, breach_row = re.findall(r'<tr class="breach">(.*?)</tr>', page)
    assert "Separation-of-duties breaches" in summary and '<td class="n">1</td>' in summary
    assert "<td>r2</td>" in breach_row and "BREACH" in breach_row


def test_a_request_still_pending_is_listed_as_pending() -> None:
    (only,) = build_report([deployment("09:00", "alice", "requested", "r9", "alice")], START, END)["deployments"]
    assert (only["status"], only["decided_by"], only["sod_breach"]) == ("pending", "", False)


def test_data_access_requests_and_their_decisions(report: dict[str, Any]) -> None:
    (d1,) = report["data_access"]
    assert (d1["dataset"], d1["requester"]) == ("features/pii", "alice")
    assert (d1["status"], d1["decided_by"]) == ("denied", "dan")
    assert set(d1) == {"request_id", "dataset", "requester", "requested_at", "status", "decided_by", "decided_at",
                       "sod_breach"}  # fmt: skip


def test_only_failed_logins_access_changes_and_denials_are_listed(report: dict[str, Any]) -> None:
    assert [(f["user"], f["client_address"]) for f in report["failed_logins"]] == [
        (SCRIPT, "10.0.0.9"),
        ("=HYPERLINK(1)", "10.0.0.9"),
    ]
    (change,) = report["access_changes"]
    assert (change["user"], change["action"], change["target_user"], change["role"]) == (
        "erin", "role_granted", "alice", "ml-lead"
    )  # fmt: skip
    (denial,) = report["policy_denials"]  # the allowed decision is not one
    assert (denial["user"], denial["policy"]) == ("carol", "approve deploy-production")
    assert denial["reasons"][0] == "separation of duties: nobody may decide their own request"


def test_counts_per_user_and_action_add_up_to_every_event(report: dict[str, Any]) -> None:
    per_user = {row["user"]: row["events"] for row in report["counts"]["per_user"]}
    assert per_user["alice"] == 4 and per_user["carol"] == 4 and sum(per_user.values()) == len(TRAIL)
    assert report["events"] == len(TRAIL) and report["summary"]["users"] == len(per_user)
    actions = {(r["user"], r["type"], r["action"]): r["count"] for r in report["counts"]["per_user_action"]}
    assert actions[("carol", "governance/policy_decision/v1", "evaluate")] == 2
    assert actions[("alice", "hub/authentication/v1", "login")] == 1


def test_the_timeline_counts_every_event_in_its_hour(report: dict[str, Any]) -> None:
    line = report["timeline"]
    assert line["bucket"] == "hour" and len(line["buckets"]) == 24
    assert line["buckets"][0]["start"] == "2026-03-01T00:00:00.000Z"
    assert sum(b["total"] for b in line["buckets"]) == len(TRAIL)
    at_eight = line["buckets"][8]
    assert at_eight["counts"] == {"failed logins": 2, "logins": 1} and at_eight["total"] == 3
    assert line["buckets"][14]["counts"] == {"policy denials": 1, "policy decisions": 1}
    assert line["buckets"][15]["counts"] == {"files": 1}
    assert set(line["categories"]) <= set(CATEGORIES)


@pytest.mark.parametrize(
    ("span", "unit", "most"),
    [(timedelta(hours=71), "hour", 72), (timedelta(days=10), "day", 11),
     (timedelta(days=399), "day", MAX_BUCKETS), (timedelta(days=3 * 365), "3 days", MAX_BUCKETS),
     (datetime.max.replace(tzinfo=UTC) - datetime.min.replace(tzinfo=UTC), "9131 days", MAX_BUCKETS)],
)  # fmt: skip
def test_long_ranges_get_longer_buckets_never_too_many(span: timedelta, unit: str, most: int) -> None:
    start = datetime(2026, 1, 1, 0, 30, tzinfo=UTC) if span.days < 10_000 else datetime.min.replace(tzinfo=UTC)
    end = start + span
    after = [(end + timedelta(seconds=1), "cells")] if end.year < 9999 else []
    line = timeline([(start, "logins"), (end, "files"), *after], start, end)
    data = line.to_json()
    assert data["bucket"] == unit and len(data["buckets"]) <= most
    assert data["buckets"][0]["counts"] == {"logins": 1} and data["buckets"][-1]["counts"] == {"files": 1}
    assert sum(b["total"] for b in data["buckets"]) == 2  # the one after the end is not counted


def test_the_report_end_is_excluded() -> None:
    at_end = dict(TRAIL[0], __timestamp__="2026-03-02T00:00:00Z")
    assert build_report([at_end], START, END)["timeline"]["buckets"][-1]["total"] == 0


def test_categories_tell_failures_and_denials_apart() -> None:
    assert category(IDS + "hub/authentication/v1", "login", "success") == "logins"
    assert category(IDS + "hub/authentication/v1", "login_failed", "failure") == "failed logins"
    assert category(IDS + "governance/policy_decision/v1", "evaluate", "denied") == "policy denials"
    assert category(IDS + "governance/policy_decision/v1", "evaluate", "success", "allow") == "policy decisions"
    assert category(IDS + "kernel/cell/v1", "execute", "success") == "cells"
    assert category(IDS + "someone/else/v1", "x", "success") == "other"


class Text(HTMLParser):
    """The page as a browser reads it: its elements and its text."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_html_escapes_every_value_from_an_event(report: dict[str, Any]) -> None:
    page = render_html(report)
    parsed = Text(page)
    assert "script" not in parsed.tags and "img" not in parsed.tags
    assert SCRIPT in parsed.text  # shown as text, twice (the failed login, the counts)
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page and SCRIPT not in page
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert "<link" not in page and "src=" not in page  # self-contained: nothing fetched


def test_html_report_holds_the_timeline_as_inline_svg(report: dict[str, Any]) -> None:
    page = render_html(report)
    (svg,) = re.findall(r"<svg .*?</svg>", page, re.S)
    bars = re.findall(r"<rect [^>]*><title>([^<]*)</title></rect>", svg)
    assert len(bars) == sum(len(b["counts"]) for b in report["timeline"]["buckets"])
    assert "2026-03-01 08:00 (hour): failed logins 2" in bars
    assert "Events per hour by category" in svg


def test_timeline_svg_escapes_its_labels() -> None:
    svg = timeline_svg({"bucket": "<b>", "categories": ["logins"],
                        "buckets": [{"start": "2026-03-01T00:00", "total": 1, "counts": {"logins": 1}}]})  # fmt: skip
    assert "<b>" not in svg and "&lt;b&gt;" in svg


def test_csv_has_one_row_per_item_with_its_section(report: dict[str, Any]) -> None:
    rows = list(csv.DictReader(io.StringIO(to_csv(report))))
    assert tuple(rows[0]) == CSV_COLUMNS and CSV_COLUMNS[0] == "section"
    sections = [row["section"] for row in rows]
    assert sections.count("deployments") == 3 and sections.count("data_access") == 1
    assert sections.count("failed_logins") == 2 and sections.count("policy_denials") == 1
    assert sections.count("events_per_user") == len(report["counts"]["per_user"])
    timeline_rows = [row for row in rows if row["section"] == "timeline"]
    assert sum(int(row["count"]) for row in timeline_rows) == len(TRAIL)
    r2 = next(row for row in rows if row["request_id"] == "r2")
    assert (r2["requester"], r2["decided_by"], r2["sod_breach"]) == ("bob", "bob", "yes")


def test_csv_cells_cannot_run_as_formulas(report: dict[str, Any]) -> None:
    rows = list(csv.DictReader(io.StringIO(to_csv(report))))
    users = {row["user"] for row in rows if row["section"] == "failed_logins"}
    assert "'=HYPERLINK(1)" in users and "=HYPERLINK(1)" not in users
    (denial,) = [row for row in rows if row["section"] == "policy_denials"]
    assert denial["reasons"] == "separation of duties: nobody may decide their own request; -2+3"
    assert not any(cell.startswith(("=", "+", "-", "@")) for row in rows for cell in row.values() if cell)


def test_json_has_stable_keys(report: dict[str, Any]) -> None:
    data = json.loads(to_json(report))
    assert list(data) == ["from", "to", "generated", "events", "positions", "summary", "deployments", "data_access",
                          "restricted_reads", "failed_logins", "access_changes", "policy_denials", "counts",
                          "timeline"]  # fmt: skip
    assert (data["from"], data["to"]) == ("2026-03-01T00:00:00.000Z", "2026-03-02T00:00:00.000Z")
    assert list(data["deployments"][0]) == ["request_id", "model_name", "version", "stage", "requester",
                                            "requested_at", "status", "decided_by", "decided_at", "executed_at",
                                            "rolled_back_at", "sod_breach"]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-01", datetime(2026, 3, 1, tzinfo=UTC)),
        ("2026-03-01T12:30", datetime(2026, 3, 1, 12, 30, tzinfo=UTC)),
        ("2026-03-01t12:30:00z", datetime(2026, 3, 1, 12, 30, tzinfo=UTC)),
        ("2026-03-01T12:30:00+02:00", datetime(2026, 3, 1, 10, 30, tzinfo=UTC)),
        ("2016-12-31T23:59:60Z", datetime(2016, 12, 31, 23, 59, 59, tzinfo=UTC)),
        ("0001-01-01T00:00:00+01:00", datetime.min.replace(tzinfo=UTC)),
    ],
)
def test_dates_and_times_are_read_as_utc(text: str, expected: datetime) -> None:
    assert parse_when(text, "--from") == expected


@pytest.mark.parametrize("text", ["yesterday", "", "2026-13-01", "01/03/2026", "2026-03-01T25:00"])
def test_a_bad_date_is_refused_naming_the_option(text: str) -> None:
    with pytest.raises(Invalid, match=r"^--to must be an ISO 8601 date or time"):
        parse_when(text, "--to")


# --- the audit page ---------------------------------------------------------------------------


def test_empty_filters_filter_nothing() -> None:
    filters, query = parse_filters({"user": "", "type": "", "since": "", "cursor": ""})
    assert filters == Filters() and query == AuditQuery(limit=PAGE_SIZE)


def test_filters_become_the_trail_query() -> None:
    args = {"user": "bob", "type": "hub/server/v1", "action": "spawn", "resource": "server:bob/",
            "since": "2026-03-01", "until": "2026-03-02T00:00Z", "cursor": "42"}  # fmt: skip
    filters, query = parse_filters(args)
    assert query == AuditQuery(user="bob", schema=IDS + "hub/server/v1", action="spawn", resource="server:bob/",
                               since=START, until=END, before=42, limit=PAGE_SIZE)  # fmt: skip
    assert parse_filters({"type": IDS + "hub/server/v1"})[1].schema == IDS + "hub/server/v1"
    assert "cursor=7" in filters.link(7) and "user=bob" in filters.link(7) and "cursor" not in filters.link()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"type": "hub/nothing/v1"}, "query parameter 'type' names no event schema"),
        ({"since": "yesterday"}, "query parameter 'since' must be an ISO 8601 date or time"),
        ({"cursor": "0"}, "query parameter 'cursor' must be a whole number"),
        ({"cursor": "٣"}, "query parameter 'cursor' must be a whole number"),
        ({"user": "u" * 257}, "query parameter 'user' must be at most 256 characters"),
    ],
)
def test_a_bad_filter_is_refused_naming_it(args: dict[str, str], message: str) -> None:
    with pytest.raises(Invalid, match="^" + re.escape(message)):
        parse_filters(args)


def listed(position: int, user: str, **event: Any) -> dict[str, Any]:
    """An event as :func:`query_events` lists it."""
    return {"position": position, "time": "2026-03-01T08:01:00.000Z", "schema": IDS + "hub/authentication/v1",
            "user": user, "action": "login_failed", "outcome": "failure", "resource": {"type": "user", "id": user},
            "observed": "platform", "emitter": "hub",
            "event": {"user": user, "origin": {"observer": "hub", "client_address": "10.0.0.9"}, **event}}  # fmt: skip


def test_the_page_escapes_events_and_filters() -> None:
    filters = Filters(user='"><script>alert(1)</script>')
    events = [listed(7, SCRIPT, authenticator='"><img src=x onerror=alert(1)>')]
    page = render_page("/services/governance/audit", filters, events, 3, [], False)
    parsed = Text(page)
    assert "script" not in parsed.tags and "img" not in parsed.tags
    assert SCRIPT in parsed.text
    assert 'value="&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"' in page  # the form keeps the filter, inert
    (following,) = re.findall(r'<a rel="next" href="([^"]*)"', page)
    assert following.startswith("/services/governance/audit?") and "cursor=3" in following
    assert "user=%22%3E%3Cscript%3E" in following  # the filter goes on, URL-encoded


def test_the_page_shows_the_timeline_of_the_matching_events() -> None:
    moments = [(START + timedelta(hours=h), "logins") for h in (1, 1, 5)]
    page = render_page("/a", Filters(), [listed(1, "alice")], None, moments, False)
    (svg,) = re.findall(r"<svg .*?</svg>", page, re.S)
    assert "2026-03-01 01:00 (hour): logins 2" in svg and "all 3 matching events" in page
    assert 'rel="next"' not in page
    capped = render_page("/a", Filters(), [], None, moments, True)
    assert "the newest 3 matching events" in capped and "No events match." in capped


def test_reads_of_restricted_data_are_listed_served_and_refused() -> None:
    view = {"type": "feature_view", "id": "feature_view:payments/customer_profile"}
    origin = {"observer": "features", "client_address": "10.0.0.7"}
    reads = [
        record("features/read", "14:00", "alice", "read", "denied", resource=view, origin=origin, mode="online",
               rows=2, features="customer_profile:plan", reason="customer_profile is restricted"),
        record("features/read", "14:30", "alice", "read", resource=view, origin=origin, mode="historical",
               rows=500, features="service:churn_model_v1", request_id="d9"),
    ]  # fmt: skip
    report = build_report(reads, START, END)
    assert report["restricted_reads"] == [
        {"time": "2026-03-01T14:00:00.000Z", "user": "alice", "dataset": view["id"], "mode": "online", "rows": 2,
         "outcome": "denied", "request_id": "", "reason": "customer_profile is restricted"},
        {"time": "2026-03-01T14:30:00.000Z", "user": "alice", "dataset": view["id"], "mode": "historical",
         "rows": 500, "outcome": "success", "request_id": "d9", "reason": ""},
    ]  # fmt: skip
    assert report["summary"]["restricted_reads"] == 2
    assert category(f"{IDS}features/read/v1", "read", "success") == "data access"
    assert "Reads of restricted data" in render_html(report)
    assert "feature_view:payments/customer_profile" in to_csv(report)
