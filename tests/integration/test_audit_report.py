"""The compliance report from the real trail, and the audit page behind the fake hub.

On SQLite and PostgreSQL (``backend_store``): a month of events is ingested with
:class:`AuditLog`, with events just before and at the end of the month (the end is
excluded); ``hubforge audit report`` reports that month in HTML, JSON and CSV. The
service's audit page (``running``, HubOAuth unpatched) is for holders of
``custom:audit-trail:read`` only: a data steward and a platform admin see it, a data scientist
gets 403, a browser without a session goes to the hub login; its filters and its pages
find exactly the events they should.
"""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from tornado import web

from harness.governance import COOKIE_SECRET, PREFIX, Running
from hubforge.cli import main
from hubforge.hub.governance.audit import AuditLog, load_signing_key
from hubforge.hub.governance.pages import PAGE_SIZE
from hubforge.hub.governance.report import _stored
from hubforge.hub.governance.store import GovernanceStore

IDS = "https://events.hubforge.dev/"
SCRIPT = "<script>alert('x')</script>"
#: People's file saves in January: more than two pages of them.
SAVES = 2 * PAGE_SIZE + 37


class Records:
    """Stored records as emitters' spools write them, at the times the tests choose."""

    def __init__(self, emitter: str) -> None:
        self.emitter, self.seq, self.records = emitter, 0, []

    def add(self, kind: str, at: str, user: str, action: str, outcome: str = "success", **fields: Any) -> None:
        self.seq += 1
        self.records.append({
            "__schema__": f"{IDS}{kind}/v1", "__schema_version__": 1, "__metadata_version__": 1,
            "__timestamp__": at, "__emitter__": self.emitter, "__seq__": self.seq,
            "user": user, "action": action, "outcome": outcome,
            "resource": fields.pop("resource", {"type": "user", "id": user}),
            "origin": fields.pop("origin", {"observer": "governance", "client_address": "10.0.0.9"}),
            **fields,
        })  # fmt: skip

    def request(self, kind: str, at: str, user: str, action: str, request_id: str, **fields: Any) -> None:
        self.add(kind, at, user, action, resource={"type": "request", "id": request_id}, request_id=request_id,
                 **fields)  # fmt: skip


def march(records: Records) -> None:
    """March 2026 on the platform, and one failed login on each side of it."""
    deploy = "governance/deployment"
    records.add("hub/authentication", "2026-02-28T23:59:59.999Z", "before", "login_failed", "failure")
    records.request(deploy, "2026-03-02T09:00:00Z", "alice", "requested", "r1", requester="alice", model_name="churn")
    records.request(deploy, "2026-03-02T10:00:00Z", "carol", "approved", "r1", requester="alice", approver="carol")
    records.request(deploy, "2026-03-03T09:00:00Z", "bob", "requested", "r2", requester="bob", model_name="ranker")
    records.request(deploy, "2026-03-03T09:30:00Z", "bob", "approved", "r2", requester="bob", approver="bob")
    records.request("governance/data_access", "2026-03-04T11:00:00Z", "alice", "requested", "d1",
                    requester="alice", dataset="features/pii")  # fmt: skip
    records.request("governance/data_access", "2026-03-04T12:00:00Z", "dan", "denied", "d1",
                    requester="alice", approver="dan", dataset="features/pii")  # fmt: skip
    records.add("hub/authentication", "2026-03-05T08:00:00Z", "alice", "login")
    records.add("hub/authentication", "2026-03-05T08:01:00Z", SCRIPT, "login_failed", "failure")
    records.add("hub/access_change", "2026-03-06T13:00:00Z", "erin", "role_granted", target_user="alice", role="x")
    reasons = ["nobody decides their own request"]
    records.add("governance/policy_decision", "2026-03-07T14:00:00Z", "carol", "evaluate", "denied",
                policy="approve deploy-production", decision="deny", reasons=reasons)  # fmt: skip
    records.add("hub/authentication", "2026-04-01T00:00:00Z", "after", "login_failed", "failure")


def january(records: Records) -> None:
    """Paula saves a notebook every hour for ten days (her server reported it)."""
    for i in range(SAVES):
        at = datetime(2026, 1, 1 + i // 24, i % 24, 30, tzinfo=UTC).isoformat().replace("+00:00", "Z")
        path = f"notebooks/{i}.ipynb"
        records.add("server/contents", at, "paula", "save", resource={"type": "file", "id": path},
                    origin={"observer": "server", "server": "paula/"}, path=path)  # fmt: skip


@pytest.fixture(scope="module")
def trail(backend_store: GovernanceStore, tmp_path_factory: pytest.TempPathFactory) -> GovernanceStore:
    """The module's store holding March's and January's events."""
    log = AuditLog(backend_store, load_signing_key(tmp_path_factory.mktemp("key") / "key.pem", create=True))
    governance, paula = Records("report-governance"), Records("server:paula/:contents")
    march(governance)
    january(paula)
    assert log.ingest(governance.records + paula.records).stored == len(governance.records) + SAVES
    return backend_store


# --- hubforge audit report ------------------------------------------------------------------------

MARCH = ["--from", "2026-03-01", "--to", "2026-04-01T00:00Z"]


def report(trail: GovernanceStore, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["audit", "report", *MARCH, "--db-url", trail.url, *args]) == 0
    return capsys.readouterr().out


def test_the_json_report_holds_the_month_and_flags_the_breach(trail: GovernanceStore, capsys) -> None:
    data = json.loads(report(trail, capsys, "--format", "json"))
    assert (data["from"], data["to"], data["events"]) == ("2026-03-01T00:00:00.000Z", "2026-04-01T00:00:00.000Z", 10)
    deployments = {d["request_id"]: d for d in data["deployments"]}
    assert (deployments["r1"]["requester"], deployments["r1"]["decided_by"]) == ("alice", "carol")
    assert (deployments["r1"]["sod_breach"], deployments["r2"]["sod_breach"]) == (False, True)
    assert [(d["dataset"], d["status"], d["decided_by"]) for d in data["data_access"]] == [
        ("features/pii", "denied", "dan")
    ]
    assert [f["user"] for f in data["failed_logins"]] == [SCRIPT]  # not the ones before and at the end
    assert [c["target_user"] for c in data["access_changes"]] == ["alice"]
    assert [p["reasons"] for p in data["policy_denials"]] == [["nobody decides their own request"]]
    assert data["timeline"]["bucket"] == "day" and len(data["timeline"]["buckets"]) == 31
    assert sum(b["total"] for b in data["timeline"]["buckets"]) == 10
    assert data["positions"]["last"] - data["positions"]["first"] == 9


def test_the_csv_report_goes_to_a_file(trail: GovernanceStore, capsys, tmp_path: Path) -> None:
    out = tmp_path / "march.csv"
    said = report(trail, capsys, "--format", "csv", "--output", str(out))
    assert said.startswith(f"wrote {out}: 10 events")
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    breach = [row["request_id"] for row in rows if row["section"] == "deployments" and row["sod_breach"] == "yes"]
    assert breach == ["r2"]
    assert [row["user"] for row in rows if row["section"] == "failed_logins"] == [SCRIPT]
    per_user = {row["user"]: int(row["count"]) for row in rows if row["section"] == "events_per_user"}
    assert per_user == {"alice": 3, "bob": 2, "carol": 2, "dan": 1, "erin": 1, SCRIPT: 1}


def test_the_html_report_is_one_page_with_values_escaped(trail: GovernanceStore) -> None:
    command = [sys.executable, "-m", "hubforge.cli", "audit", "report", *MARCH, "--db-url", trail.url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    page = done.stdout
    assert page.startswith("<!DOCTYPE html>") and page.count("<svg ") == 1
    assert SCRIPT not in page and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert re.search(r'<tr class="breach"><td>r2</td>', page)


@pytest.mark.parametrize(
    ("dates", "message"),
    [
        (["--from", "last week", "--to", "2026-04-01"], "hubforge: error: --from must be an ISO 8601 date or time"),
        (["--from", "2026-04-01", "--to", "2026-03-01"], "hubforge: error: --from must come before --to"),
        (["--from", "2026-04-01", "--to", "2026-04-01T02:00+02:00"], "hubforge: error: --from must come before --to"),
    ],
)
def test_a_bad_range_is_one_line_and_exit_2(trail: GovernanceStore, dates: list[str], message: str) -> None:
    command = [sys.executable, "-m", "hubforge.cli", "audit", "report", *dates, "--db-url", trail.url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.startswith(message) and done.stderr.count("\n") == 1


def test_the_trail_is_read_in_chunks_each_record_once(trail: GovernanceStore) -> None:
    start, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 4, 2, tzinfo=UTC)
    positions = [row.position for row in _stored(trail, start, end, chunk=7)]
    assert len(positions) == SAVES + 12 and positions == sorted(set(positions))


# --- the audit page -------------------------------------------------------------------------------


class Rows(HTMLParser):
    """The events table of the page: each row's cells as text; and the next page's link."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.next: str | None = None
        self._body = self._cell = False
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tbody":
            self._body = True
        elif tag == "tr" and self._body:
            self.rows.append([])
        elif tag == "td" and self._body:
            self._cell = True
            self.rows[-1].append("")
        elif tag == "a" and ("rel", "next") in attrs:
            self.next = dict(attrs)["href"]

    def handle_endtag(self, tag: str) -> None:
        self._body = self._body and tag != "tbody"
        self._cell = self._cell and tag != "td"

    def handle_data(self, data: str) -> None:
        if self._cell:
            self.rows[-1][-1] += data


COLUMNS = ("position", "time", "user", "type", "action", "outcome", "resource", "observed")


def page(running: Running, token: str | None, path: str = "audit", **params: str) -> httpx.Response:
    with running.client(token) as c:
        return c.get(path, params=params or None)  # params={} would drop the path's own query


def events(answer: httpx.Response) -> list[dict[str, str]]:
    assert answer.status_code == 200, answer.text
    return [dict(zip(COLUMNS, row, strict=False)) for row in Rows(answer.text).rows]


@pytest.fixture(scope="module")
def served(running: Running, trail: GovernanceStore) -> Iterator[Running]:
    yield running


@pytest.mark.parametrize("token", ["dan-token", "erin-token"])
def test_stewards_and_admins_see_the_page(served: Running, token: str) -> None:
    answer = page(served, token)
    assert answer.headers["content-type"] == "text/html; charset=utf-8"
    assert "script-src" not in answer.headers["content-security-policy"]  # default-src 'none': no script at all
    assert answer.headers["cache-control"] == "no-store"
    listed = events(answer)
    assert len(listed) == PAGE_SIZE
    assert [int(e["position"]) for e in listed] == sorted((int(e["position"]) for e in listed), reverse=True)
    assert "<svg " in answer.text and '<form method="get"' in answer.text


@pytest.mark.parametrize("token", ["alice-token", "carol-token"])  # a data scientist, an ML lead
def test_people_who_do_not_audit_get_403(served: Running, token: str) -> None:
    answer = page(served, token)
    assert answer.status_code == 403
    assert answer.json() == {"status": 403, "message": "missing scope: this needs custom:audit-trail:read"}


def test_a_browser_without_a_session_is_sent_to_the_hub_login(served: Running) -> None:
    answer = page(served, None)
    assert answer.status_code == 302
    assert httpx.URL(answer.headers["location"]).path == "/hub/api/oauth2/authorize"


def test_a_steward_browsing_with_the_service_cookie_sees_it(served: Running) -> None:
    auth = served.app.settings["hub_auth"]
    cookie = web.create_signed_value(COOKIE_SECRET, auth.cookie_name, "dan-token").decode()
    with served.client() as c:
        c.cookies.set(auth.cookie_name, cookie, path=PREFIX)
        answer = c.get("audit", params={"user": "bob"})
    assert {e["user"] for e in events(answer)} == {"bob"}


def test_filters_find_exactly_the_matching_events(served: Running) -> None:
    found = events(page(served, "dan-token", type="governance/deployment/v1", user="bob"))
    assert [(e["user"], e["action"], e["resource"]) for e in found] == [
        ("bob", "approved", "request:r2"),
        ("bob", "requested", "request:r2"),
    ]
    day = events(page(served, "dan-token", since="2026-03-04", until="2026-03-05"))
    assert [e["action"] for e in day] == ["denied", "requested"]
    failed = events(page(served, "dan-token", action="login_failed", type=IDS + "hub/authentication/v1"))
    assert [e["user"] for e in failed] == ["after", SCRIPT, "before"]  # shown as text, not run
    assert events(page(served, "dan-token", resource="request:r1", user="")) != []
    assert events(page(served, "dan-token", user="nobody")) == []


def test_the_page_escapes_what_people_wrote(served: Running) -> None:
    answer = page(served, "erin-token", action="login_failed")
    assert SCRIPT not in answer.text and "&lt;script&gt;" in answer.text


def test_the_timeline_covers_every_matching_event(served: Running) -> None:
    answer = page(served, "dan-token", user="paula")
    assert f"all {SAVES} matching events" in answer.text
    assert "Events per day by category" in answer.text  # ten days of saves
    assert len(re.findall(r"\(day\): files \d+</title>", answer.text)) == -(-SAVES // 24)
    hours = page(served, "dan-token", user="bob")
    assert "all 2 matching events" in hours.text and "Events per hour by category" in hours.text


def test_next_page_links_walk_every_matching_event_once(served: Running) -> None:
    seen: list[int] = []
    link: str | None = "audit?user=paula"
    while link is not None:
        assert len(seen) <= SAVES, "the pages repeat"
        answer = page(served, "dan-token", path=link.removeprefix(PREFIX))
        rows = Rows(answer.text)
        assert {row[2] for row in rows.rows} == {"paula"}
        seen += [int(row[0]) for row in rows.rows]
        link = rows.next
    assert len(seen) == SAVES and seen == sorted(set(seen), reverse=True)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"since": "yesterday"}, "query parameter 'since' must be an ISO 8601 date or time"),
        ({"type": "hub/nothing/v1"}, "query parameter 'type' names no event schema"),
        ({"cursor": "-1"}, "query parameter 'cursor' must be a whole number"),
    ],
)
def test_a_bad_filter_is_400_naming_it(served: Running, params: dict[str, str], message: str) -> None:
    answer = page(served, "dan-token", **params)
    assert answer.status_code == 400 and answer.json()["message"].startswith(message)


def test_the_page_is_in_the_openapi_document_as_html(served: Running) -> None:
    with served.client() as c:
        spec = c.get("api/openapi.json").json()
    operation = spec["paths"]["/audit"]["get"]
    assert list(operation["responses"]["200"]["content"]) == ["text/html"]
    assert operation["x-hubforge-scopes"] == ["custom:audit-trail:read"]
    assert {p["name"] for p in operation["parameters"]} == {"user", "type", "action", "resource", "since", "until",
                                                           "cursor"}  # fmt: skip
