"""The governance API, served for real on a free port, against a fake hub API on another.

The service runs once on SQLite and once on the local PostgreSQL (the
``backend_store`` fixture): hostile input must be refused the same on both.

The fake hub (``harness.governance``) is a tiny tornado server answering ``GET /hub/api/user`` for a
few known tokens (403 for others), so HubOAuth runs unpatched: faked at the
transport, not in its internals. Both servers run on an asyncio loop in a
background thread; the tests are plain synchronous httpx clients.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from typing import Any

import httpx
import jsonschema
import pytest
from openapi_spec_validator import validate as validate_openapi
from tornado import web

from harness.governance import ACCESS, COOKIE_SECRET, PREFIX, USERS, Running
from harness.platform import PROBE, free_port
from hubforge.hub.governance import schemas
from hubforge.hub.governance.app import make_app, make_hub_auth
from hubforge.hub.governance.auth import HubAuthHandler, declared_scopes, is_public
from hubforge.hub.governance.handlers import ROUTES
from hubforge.hub.governance.openapi import implemented_methods
from hubforge.hub.governance.store import GovernanceStore, InvalidText, RequestNotFound
from hubforge.spawner_profiles.local.accounts import WORDS

NEW = {"kind": "data-access", "target": "x", "justification": "y"}


def assert_error(response: httpx.Response, status: int, *needles: str) -> str:
    """The response is the JSON error shape with ``status``; its message contains ``needles``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    jsonschema.validate(body, schemas.ERROR)
    assert body["status"] == status
    for needle in needles:
        assert needle in body["message"]
    assert "Traceback" not in response.text
    return body["message"]


def submit(
    running: Running,
    token: str,
    kind: str = "deploy-production",
    target: str = "churn v3",
) -> dict:
    """Submit a request; a deploy request names ``target`` as "<model> v<version>"."""
    if kind.startswith("deploy-"):
        model, _, version = target.rpartition(" v")
        body = {"kind": kind, "model": model, "version": version, "justification": "AUC +4"}
    else:
        body = {"kind": kind, "target": target, "justification": "AUC +4"}
    with running.client(token) as c:
        r = c.post("api/requests", json=body)
    assert r.status_code == 201, r.text
    return r.json()


# --- health, whoami, authentication ---------------------------------------------------------


def test_health_needs_no_auth_and_never_asks_the_hub(running):
    before = len(running.hub_calls)
    with running.client() as c:
        r = c.get("api/health")
    assert (r.status_code, r.json()) == (200, {"status": "ok"})
    assert len(running.hub_calls) == before


@pytest.mark.parametrize(
    ("token", "name", "personas", "admin"),
    [
        ("alice-token", "alice", ["data-scientist"], False),
        ("bob-token", "bob", ["ml-engineer"], False),
        ("carol-token", "carol", ["ml-lead"], False),
        ("dan-token", "dan", ["data-steward"], False),
        ("erin-token", "erin", ["platform-admin"], True),
        ("ana-token", "ana", ["analyst"], False),
        ("max-token", "max", ["data-scientist", "data-steward"], False),
    ],
)
def test_whoami_per_persona(running, token, name, personas, admin):
    with running.client(token) as c:
        r = c.get("api/whoami")
    assert r.status_code == 200, r.text
    body = r.json()
    jsonschema.validate(body, schemas.WHOAMI)
    assert (body["name"], body["personas"], body["admin"]) == (name, personas, admin)
    assert body["groups"] == sorted(USERS[token]["groups"])
    expected = sorted({s for s in USERS[token]["scopes"] if s.startswith("custom:")})
    assert body["scopes"] == expected
    assert expected, "every persona holds some custom scope"
    # A service started without HUBFORGE_ISOLATION says what a platform not run as root does.
    assert body["isolation"] == {"mode": "none", "words": WORDS["none"]}
    assert body["isolation"]["words"].startswith("notebooks are not isolated")


def test_no_token_is_401_on_api_paths(running):
    with running.client() as c:
        r = c.get("api/whoami")
    assert_error(r, 401, "authentication required")
    assert r.headers["www-authenticate"].startswith("token")


def test_unknown_token_is_401(running):
    with running.client("forged-token") as c:
        assert_error(c.get("api/requests"), 401)
    assert "forged-token" in running.hub_calls  # asked the hub, which said no


def test_user_without_service_access_is_403(running):
    with running.client("mallory-token") as c:
        assert_error(c.get("api/whoami"), 403, "mallory", ACCESS)


def test_browser_without_session_is_sent_to_hub_login(running):
    with running.client() as c:
        r = c.get("")
    assert r.status_code == 302
    location = httpx.URL(r.headers["location"])
    assert location.path == "/hub/api/oauth2/authorize"
    assert location.params["client_id"] == "service-governance"
    assert location.params["redirect_uri"] == PREFIX + "oauth_callback"
    assert location.params["state"]
    assert "service-governance-oauth-state" in r.headers["set-cookie"]


def test_api_url_opened_in_a_browser_logged_in_to_the_hub_goes_through_oauth(running):
    # The hub's session-id cookie (path /) tells a hub-logged-in browser from a script.
    with running.client(cookies={"jupyterhub-session-id": "abc123"}) as c:
        r = c.get("api/whoami")
        assert r.status_code == 302
        assert httpx.URL(r.headers["location"]).path == "/hub/api/oauth2/authorize"
        # ...but not for fetch() calls, nor for writes: those get 401
        assert_error(c.get("api/whoami", headers={"Sec-Fetch-Mode": "cors"}), 401)
        assert_error(c.post("api/requests", json=NEW), 401)


def test_index_with_token(running):
    with running.client("alice-token") as c:
        r = c.get("")
    assert r.status_code == 200
    assert r.json()["user"] == "alice"
    assert r.json()["openapi"] == PREFIX + "api/openapi.json"


def test_oauth_callback_without_code_is_json_400(running):
    with running.client() as c:
        assert_error(c.get("oauth_callback"), 400, "without a token")


# --- scopes -------------------------------------------------------------------------------


def test_submit_without_scope_is_403_naming_it(running):
    with running.client("ana-token") as c:
        r = c.post(
            "api/requests",
            json={"kind": "data-access", "target": "x", "justification": "y"},
        )
    assert_error(r, 403, "custom:requests:submit")


def test_decide_without_any_approver_scope_is_403(running):
    request = submit(running, "bob-token")
    r = running.decide("alice-token", request["id"])
    assert_error(r, 403, "custom:approve:production")


def test_filtered_approver_scope_does_not_grant(running):
    request = submit(running, "bob-token")
    r = running.decide("fran-token", request["id"])
    assert r.status_code in (403, 404)
    with running.client("erin-token") as c:
        assert c.get(f"api/requests/{request['id']}").json()["status"] == "pending"


def test_viewer_lacking_the_kinds_approver_scope_is_403(running):
    request = submit(running, "bob-token", kind="deploy-production")
    with running.client("dan-token") as c:  # steward: sees it (audit), approves data access only
        assert c.get(f"api/requests/{request['id']}").status_code == 200
    r = running.decide("dan-token", request["id"])
    assert_error(r, 403, "custom:approve:production")


# --- lifecycle ----------------------------------------------------------------------------


def test_request_lifecycle(running):
    with running.client("alice-token") as alice:
        r = alice.post(
            "api/requests",
            json={
                "kind": "deploy-production",
                "model": "churn",
                "version": "3",
                "justification": "AUC +4",
            },
        )
        assert r.status_code == 201, r.text
        created = r.json()
        jsonschema.validate(created, schemas.APPROVAL_REQUEST)
        assert r.headers["location"] == f"{PREFIX}api/requests/{created['id']}"
        assert (created["status"], created["requester"], created["decided"]) == (
            "pending",
            "alice",
            None,
        )
        assert alice.get(f"api/requests/{created['id']}").json() == created
        assert created["id"] in [x["id"] for x in alice.get("api/requests").json()]

    with running.client("carol-token") as carol:
        queue = carol.get("api/requests", params={"status": "pending", "kind": "deploy-production"}).json()
        assert created["id"] in [x["id"] for x in queue]
        r = running.decide("carol-token", created["id"], "approve", "ship it")
        assert r.status_code == 200, r.text
        decided = r.json()
        jsonschema.validate(decided, schemas.APPROVAL_REQUEST)
        assert (decided["status"], decided["decided_by"], decided["comment"]) == (
            "approved",
            "carol",
            "ship it",
        )
        assert decided["decided"] >= decided["created"]

    with running.client("alice-token") as alice:
        assert alice.get(f"api/requests/{created['id']}").json() == decided


def test_list_shows_only_what_the_caller_may_see(running):
    mine = submit(running, "alice-token", kind="data-access", target="customers")
    theirs = submit(running, "bob-token", kind="data-access", target="orders")
    with running.client("alice-token") as c:
        listed = c.get("api/requests").json()
    assert mine["id"] in [x["id"] for x in listed]
    assert theirs["id"] not in [x["id"] for x in listed]
    assert all(x["requester"] == "alice" for x in listed)
    with running.client("dan-token") as c:  # the steward approves data access
        ids = [x["id"] for x in c.get("api/requests").json()]
    assert {mine["id"], theirs["id"]} <= set(ids)


def test_rejecting_with_a_reason(running):
    request = submit(running, "alice-token", kind="data-access", target="salaries")
    r = running.decide("dan-token", request["id"], "reject", "PII")
    assert (r.status_code, r.json()["status"], r.json()["comment"]) == (
        200,
        "rejected",
        "PII",
    )


def test_separation_of_duties(running):
    request = submit(running, "carol-token", kind="deploy-production")
    r = running.decide("carol-token", request["id"])
    assert assert_error(r, 403).startswith("separation of duties: ")
    r = running.decide("cathy-token", request["id"])
    assert (r.status_code, r.json()["decided_by"]) == (200, "cathy")


def test_deciding_twice_is_409(running):
    request = submit(running, "bob-token", kind="deploy-staging")
    assert running.decide("carol-token", request["id"]).status_code == 200
    assert_error(running.decide("erin-token", request["id"], "reject"), 409, "already decided")
    with running.client("erin-token") as c:
        assert c.get(f"api/requests/{request['id']}").json()["status"] == "approved"


def test_invisible_request_is_exactly_like_a_missing_one(running):
    secret = submit(running, "alice-token", kind="data-access", target="secret-dataset")
    with running.client("bob-token") as bob:  # engineer: approves staging, cannot see data access
        hidden = bob.get(f"api/requests/{secret['id']}")
        missing = bob.get("api/requests/0000000000000000000000")
    hidden_decision = running.decide("bob-token", secret["id"])
    missing_decision = running.decide("bob-token", "0000000000000000000000")
    for a, b in ((hidden, missing), (hidden_decision, missing_decision)):
        assert a.status_code == b.status_code == 404
        assert a.content == b.content
        assert a.headers["content-type"] == b.headers["content-type"]
        assert a.headers["content-length"] == b.headers["content-length"]
    assert "secret" not in hidden.text


# --- bad input: 400/415, never 500 ------------------------------------------------------------


def post_raw(running: Running, token: str, path: str, content: bytes) -> httpx.Response:
    """POST ``content`` exactly as given, as JSON."""
    with running.client(token) as c:
        return c.post(path, content=content, headers={"Content-Type": "application/json"})


def all_requests(running: Running) -> list[tuple[str, str]]:
    """(id, status) of every request, as the admin sees them: what a refused write must leave alone."""
    with running.client("erin-token") as c:
        return sorted((r["id"], r["status"]) for r in c.get("api/requests").json())


DEEP = b'{"kind": ' + b"[" * 40 + b"]" * 40 + b"}"


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b'{"kind": "data-access", ', "malformed JSON body: Expecting"),
        (b"", "malformed JSON body: Expecting value at line 1 column 1"),
        (b'{"kind": NaN}', "malformed JSON body: NaN is not valid JSON"),
        (b'{"kind": -Infinity}', "malformed JSON body: -Infinity is not valid JSON"),
        (b'["kind"]', "request body must be of type object"),
        # nested deeper than any body needs, and deeper than the parser's stack
        (DEEP, "request body is nested too deeply (more than 32 levels)"),
        (b"[" * 30000 + b"]" * 30000, "request body is nested too deeply"),
        # numbers beyond a double or a 64-bit integer, however long
        (b'{"kind": 1e999}', "number out of range"),
        (b'{"kind": -1e400}', "number out of range"),
        (b'{"kind": 9223372036854775808}', "number out of range"),
        (b'{"kind": 1' + b"0" * 5000 + b"}", "number out of range"),
        # which copy would count depends on the reader: refuse both
        (
            b'{"kind": "data-access", "kind": "deploy-production", "target": "x", "justification": "y"}',
            "request body repeats field 'kind'",
        ),
        (b'\xef\xbb\xbf{"kind": "data-access"}', "byte order mark"),
    ],
)
def test_malformed_json_is_400(running, content, needle):
    before = all_requests(running)
    message = assert_error(post_raw(running, "alice-token", "api/requests", content), 400, needle)
    assert "\n" not in message and len(message) < 200
    assert all_requests(running) == before


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"\xff\xfe{}", "request body is not UTF-8: invalid start byte at byte 0"),
        ('{"kind": "data-access", "target": "café"}'.encode("latin-1"), "is not UTF-8: invalid continuation byte"),
        # a surrogate encoded as UTF-8 bytes (CESU-8) is not UTF-8 either
        (b'{"target": "\xed\xa0\x80"}', "is not UTF-8: invalid continuation byte at byte 12"),
        (b'{"target": "\xc0\xaf"}', "is not UTF-8: invalid start byte"),  # overlong "/"
        (b'{"target": "\xe2\x82"}', "is not UTF-8"),  # truncated sequence
        (json.dumps(NEW).encode("utf-16"), "is not UTF-8"),
    ],
)
def test_body_that_is_not_utf8_is_400(running, content, needle):
    before = all_requests(running)
    message = assert_error(post_raw(running, "alice-token", "api/requests", content), 400, needle)
    assert "\n" not in message
    assert all_requests(running) == before


def body_operations() -> list[tuple[str, str, dict[str, Any]]]:
    """(path template, method, body schema) of every operation that takes a body, from the route table."""
    return [
        (template, method, op.request)
        for template, handler in ROUTES
        for method, op in getattr(handler, "operations", {}).items()
        if op.request is not None
    ]


def string_fields() -> list[tuple[str, str, str]]:
    """(path template, method, field) of every string field of every body the API takes."""
    return [
        (template, method, name)
        for template, method, schema in body_operations()
        for name, prop in schema["properties"].items()
        if prop.get("type") == "string"
    ]


def valid_call(running: Running, template: str) -> tuple[str, str, dict[str, Any]]:
    """(token, path, body) of a call to ``template`` that would succeed: tests change one field of it."""
    if template == "api/requests":
        return "alice-token", "api/requests", dict(NEW)
    if template == "api/requests/{request_id}/decision":
        pending = submit(running, "bob-token")
        return "carol-token", f"api/requests/{pending['id']}/decision", {"decision": "approve", "comment": "ok"}
    if template == "api/audit/events":
        return "alice-token", "api/audit/events", {"server": "", "source": "server", "records": []}
    if template == "api/policy/deploy":
        body = {"kind": "deploy-production", "model": "churn", "version": "3", "justification": "AUC +4"}
        return "alice-token", "api/policy/deploy", body
    raise AssertionError(f"no valid call known for {template}: add one to valid_call")


def with_raw_field(body: dict[str, Any], name: str, raw_json_string: str) -> bytes:
    """``body`` as JSON, with field ``name`` set to ``raw_json_string`` exactly as written (escapes kept)."""
    text = json.dumps({**body, name: "\x01placeholder"})
    return text.replace(json.dumps("\x01placeholder"), raw_json_string).encode()


def test_every_body_and_string_field_is_covered():
    # Guards the two tests below: each POST/PUT/PATCH body, each string field of it.
    assert {(t, m) for t, m, _ in body_operations()} == {
        ("api/requests", "post"),
        ("api/requests/{request_id}/decision", "post"),
        ("api/policy/deploy", "post"),
        ("api/audit/events", "post"),
    }
    assert {f for _, _, f in string_fields()} == {
        "kind", "target", "model", "version", "justification", "decision", "comment", "server", "source"
    }  # fmt: skip


@pytest.mark.parametrize(("template", "method", "name"), string_fields())
def test_lone_surrogate_in_any_string_field_is_400_naming_it(running, template, method, name):
    token, path, body = valid_call(running, template)
    before = all_requests(running)
    with running.client(token) as c:
        r = c.request(
            method,
            path,
            content=with_raw_field(body, name, r'"ok \ud800 text"'),
            headers={"Content-Type": "application/json"},
        )
    assert_error(r, 400, f"field '{name}' is not valid Unicode: lone surrogate \\ud800")
    assert all_requests(running) == before
    # the same body without the surrogate is accepted: the field was the only fault
    if path.endswith("/decision"):  # decisions are taken in a browser session, never with a token
        assert running.decide(token, path.split("/")[2], body["decision"], body.get("comment")).is_success
        return
    with running.client(token) as c:
        assert c.request(method, path, json=body).is_success


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (r'"\ud800"', "ud800"),  # high surrogate alone
        (r'"x\udfff"', "udfff"),  # low surrogate alone
        (r'"\ude00\ud83d"', "ude00"),  # a pair in the wrong order
        (r'"\ud83d x"', "ud83d"),  # high surrogate followed by no low one
        (r'"\ud83d\ud83d\ude00"', "ud83d"),  # a pair after an extra high one
    ],
)
def test_every_spelling_of_a_lone_surrogate_is_400(running, raw, code):
    content = with_raw_field(NEW, "justification", raw)
    r = post_raw(running, "alice-token", "api/requests", content)
    assert_error(r, 400, f"field 'justification' is not valid Unicode: lone surrogate \\{code}")


def test_lone_surrogate_in_a_field_name_or_top_level_is_400(running):
    content = json.dumps(NEW)[:-1].encode() + rb', "\udc80x": 1}'
    assert_error(post_raw(running, "alice-token", "api/requests", content), 400, "a field name is not valid Unicode")
    nested = with_raw_field(NEW, "extra", r'{"deeper": ["\ud800"]}')
    assert_error(post_raw(running, "alice-token", "api/requests", nested), 400, "field 'extra.deeper.0' is not valid")
    assert_error(
        post_raw(running, "alice-token", "api/requests", rb'"\ud800"'), 400, "request body is not valid Unicode"
    )


def test_surrogate_pairs_and_astral_text_are_kept(running):
    # a correct pair is one character, not an error, and comes back as it was sent
    content = with_raw_field(NEW, "target", r'"model \ud83d\ude00 v1"')
    r = post_raw(running, "alice-token", "api/requests", content)
    assert r.status_code == 201, r.text
    assert r.json()["target"] == "model \U0001f600 v1"
    with running.client("alice-token") as c:
        assert c.get(f"api/requests/{r.json()['id']}").json()["target"] == "model \U0001f600 v1"


FREE_TEXT_FIELDS = [f for f in string_fields() if f[2] in ("target", "justification", "comment")]


@pytest.mark.parametrize(("template", "method", "name"), FREE_TEXT_FIELDS)
def test_nul_in_free_text_is_400_on_every_backend(running, template, method, name):
    # PostgreSQL's text types refuse NUL; SQLite would keep it: both refuse it, at the edge.
    token, path, body = valid_call(running, template)
    before = all_requests(running)
    with running.client(token) as c:
        r = c.request(method, path, json={**body, name: "before\x00after"})
    assert_error(r, 400, f"field '{name}' must not contain NUL")
    assert all_requests(running) == before


def test_store_refuses_text_it_cannot_hold(running):
    # Behind the API's own check: no backend is handed text another could not store.
    store = running.app.settings["store"]
    for bad in ("a\x00b", "a\ud800b"):
        with pytest.raises(InvalidText):
            store.create_request(kind="data-access", target=bad, justification="j", requester="alice")
        with pytest.raises(InvalidText):
            store.create_request(kind="data-access", target="t", justification=bad, requester="alice")
    pending = submit(running, "bob-token")
    with pytest.raises(InvalidText):
        store.decide(pending["id"], "carol", "approve", "a\x00b")
    for bad_id in ("\x00", "a\x00b", "\ud800", "x" * 33, "a/b"):
        assert store.get_request(bad_id) is None
        with pytest.raises(RequestNotFound):
            store.decide(bad_id, "carol", "approve")
    assert store.get_request(pending["id"]).status == "pending"


@pytest.mark.parametrize("path", ["api/requests/%00", "api/requests/a%00b/decision", "api/requests/" + "x" * 300])
def test_impossible_request_id_is_404_on_every_backend(running, path):
    if path.endswith("decision"):
        r = running.decide("carol-token", path.split("/")[2])
    else:
        with running.client("carol-token") as c:
            r = c.get(path)
    assert_error(r, 404, "no such approval request")


@pytest.mark.parametrize(
    ("path", "needle"),
    [
        ("api/requests/%FF", "parameter 'request_id' is not valid UTF-8"),
        ("api/requests/%ED%A0%80", "parameter 'request_id' is not valid UTF-8"),
        ("api/requests?status=%FF", "parameter 'status' is not valid UTF-8"),
        ("api/requests?kind=%00", "query parameter 'kind' must be one of"),
    ],
)
def test_url_parameter_that_is_not_utf8_is_400_naming_it(running, path, needle):
    with running.client("alice-token") as c:
        message = assert_error(c.get(path), 400, needle)
    assert "\\x" not in message, "the bytes are not echoed"


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "text/%s%d", None],
)
def test_wrong_content_type_is_415(running, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    body = json.dumps({"kind": "data-access", "target": "x", "justification": "y"})
    with running.client("alice-token") as c:
        r = c.post("api/requests", content=body, headers=headers)
    assert_error(r, 415, "application/json")


def test_json_with_charset_is_accepted(running):
    body = json.dumps({"kind": "data-access", "target": "x", "justification": "y"})
    with running.client("alice-token") as c:
        r = c.post(
            "api/requests",
            content=body,
            headers={"Content-Type": "application/json; charset=utf-8"},
        )
    assert r.status_code == 201


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (
            {
                "kind": "data-access",
                "target": "x",
                "justification": "y",
                "approved": True,
            },
            "unknown field 'approved'",
        ),
        # caller-chosen names are neither formats nor unbounded
        ({**NEW, "x%s%d": 1}, "unknown field 'x%s%d'"),
        ({**NEW, "k" * 5000: 1}, "unknown field '" + "k" * 57 + "...'"),
        (
            {"kind": "data-access", "target": 7, "justification": "y"},
            "'target' must be of type string",
        ),
        (
            {"kind": "deploy-moon", "target": "x", "justification": "y"},
            "'kind' must be one of",
        ),
        ({"kind": "data-access", "target": "x"}, "missing field 'justification'"),
        (
            {"kind": "data-access", "target": "x" * 201, "justification": "y"},
            "'target' must be at most 200",
        ),
        (
            {"kind": "data-access", "target": "x", "justification": "y" * 2001},
            "'justification' must be at most 2000",
        ),
        (
            {"kind": "data-access", "target": "   ", "justification": "y"},
            "'target' must not be blank",
        ),
    ],
)
def test_invalid_new_request_is_400_naming_the_field(running, body, needle):
    with running.client("alice-token") as c:
        assert_error(c.post("api/requests", json=body), 400, needle)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"decision": "maybe"}, "'decision' must be one of approve, reject"),
        ({"decision": "approve", "by": "carol"}, "unknown field 'by'"),
        ({"decision": "approve", "comment": 3}, "'comment' must be of type string"),
        ({}, "missing field 'decision'"),
    ],
)
def test_invalid_decision_is_400_naming_the_field(running, body, needle):
    request = submit(running, "bob-token")
    with running.client("carol-token") as c:
        assert_error(c.post(f"api/requests/{request['id']}/decision", json=body), 400, needle)
        assert c.get(f"api/requests/{request['id']}").json()["status"] == "pending"


def test_bad_query_parameter_is_400(running):
    with running.client("alice-token") as c:
        assert_error(c.get("api/requests", params={"status": "done"}), 400, "'status'")


ALL_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE")


@pytest.mark.parametrize("template", [template for template, _ in ROUTES])
@pytest.mark.parametrize("token", [None, "alice-token"])
def test_method_a_route_lacks_is_405_with_allow_listing_the_documented_ones(running, template, token):
    # RFC 9110: a 405 carries Allow. The expected list comes from the published
    # document, so the header and the document cannot drift apart.
    documented = {m.upper() for m in running.app.settings["openapi"]["paths"]["/" + template]}
    allow = ", ".join(sorted(documented))
    path = template.replace("{request_id}", "0000000000000000000000")
    lacking = [m for m in ALL_METHODS if m not in documented]
    assert lacking, "every route lacks some method"
    with running.client(token) as c:
        for method in lacking:
            r = c.request(method, path, json={} if method in ("POST", "PUT", "PATCH") else None)
            assert r.status_code == 405, (method, r.text)
            assert r.headers["allow"] == allow, method
            if method != "HEAD":  # a HEAD answer has no body
                assert_error(r, 405, f"this path allows {allow}")


def test_unknown_path_is_404_whatever_the_method(running):
    with running.client("alice-token") as c:
        for method in (*ALL_METHODS, "FOO"):
            r = c.request(method, "api/nothing-here")
            assert r.status_code == 404, (method, r.text)
            assert "allow" not in r.headers
            if method != "HEAD":
                assert_error(r, 404, "no such endpoint")


def test_oversized_body_is_refused_without_500(running):
    with running.client("alice-token") as c:
        try:
            r = c.post(
                "api/requests",
                content=b"x" * (256 * 1024),
                headers={"Content-Type": "application/json"},
            )
        except httpx.TransportError:
            return  # tornado may drop the connection instead of answering
    assert 400 <= r.status_code < 500


# --- browser sessions: the OAuth cookie and XSRF ------------------------------------------------


def cookie_client(running: Running, token: str) -> httpx.Client:
    """A browser-like client holding the service's OAuth cookie for ``token``."""
    auth = running.app.settings["hub_auth"]
    value = web.create_signed_value(COOKIE_SECRET, auth.cookie_name, token).decode()
    client = running.client()
    client.cookies.set(auth.cookie_name, value, path=PREFIX)
    return client


def test_cookie_session_reads_and_writes_with_xsrf(running):
    with cookie_client(running, "alice-token") as c:
        r = c.get("api/whoami", headers={"Sec-Fetch-Mode": "navigate"})
        assert r.status_code == 200 and r.json()["name"] == "alice"
        xsrf = c.cookies.get("_xsrf")
        assert xsrf, "a page view sets the _xsrf cookie"
        r = c.post(
            "api/requests",
            json=NEW,
            headers={"X-XSRFToken": xsrf, "Sec-Fetch-Mode": "cors"},
        )
    assert r.status_code == 201, r.text
    assert r.json()["requester"] == "alice"


def test_cookie_write_without_xsrf_is_403_saying_so(running):
    with cookie_client(running, "alice-token") as c:
        r = c.post("api/requests", json=NEW, headers={"Sec-Fetch-Mode": "cors"})
    assert_error(r, 403, "XSRF token missing")


def test_cookie_write_with_wrong_xsrf_is_403(running):
    with cookie_client(running, "alice-token") as c:
        r = c.post(
            "api/requests",
            json=NEW,
            headers={"X-XSRFToken": "forged", "Sec-Fetch-Mode": "cors"},
        )
    assert_error(r, 403, "XSRF token invalid")


def test_token_writes_need_no_xsrf(running):
    # the token header wins over a cookie, and token requests are not cross-site forgeable
    with cookie_client(running, "alice-token") as c:
        r = c.post("api/requests", json=NEW, headers={"Authorization": "token alice-token"})
    assert r.status_code == 201


# --- OpenAPI ---------------------------------------------------------------------------------


def routed_handlers(app: web.Application) -> list[tuple[str, type[web.RequestHandler]]]:
    """(a concrete URL, handler) for every route the application serves."""
    out = []
    for rule in app.wildcard_router.rules:
        groups = rule.matcher.regex.groupindex
        url = rule.matcher.reverse(*["sample-id"] * len(groups))
        out.append((url, rule.target))
    return out


def test_openapi_document_is_valid_and_covers_every_route(running):
    with running.client() as c:
        r = c.get("api/openapi.json")
    assert r.status_code == 200
    spec = r.json()
    validate_openapi(spec)
    assert spec["openapi"].startswith("3.1")
    assert spec["servers"] == [{"url": PREFIX}]
    templates = {path: re.compile(re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(path)) + "$") for path in spec["paths"]}
    routes = routed_handlers(running.app)
    assert len(routes) == len(ROUTES) >= 8
    for url, handler in routes:
        relative = "/" + url[len(PREFIX) :]
        matches = [p for p, pattern in templates.items() if pattern.match(relative)]
        assert len(matches) == 1, f"{url} ({handler.__name__}) documented as {matches}"
        documented = spec["paths"][matches[0]]
        assert set(documented) == implemented_methods(handler) != set()
        for method in documented:
            func = getattr(handler, method)
            if is_public(func):
                assert documented[method]["security"] == []
            else:
                assert documented[method]["x-hubforge-scopes"] == list(declared_scopes(func))
                assert {"401", "403"} <= set(documented[method]["responses"])


def test_openapi_scopes_match_enforcement(running):
    spec = running.app.settings["openapi"]
    assert spec["paths"]["/api/requests"]["post"]["x-hubforge-scopes"] == ["custom:requests:submit"]
    assert spec["paths"]["/api/health"]["get"]["security"] == []
    assert spec["paths"]["/api/whoami"]["get"]["x-hubforge-scopes"] == []
    body = spec["paths"]["/api/requests"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/NewRequest"}


def test_every_handler_method_declares_its_permission():
    for _, handler in ROUTES:
        for method in implemented_methods(handler):
            func = getattr(handler, method)
            assert is_public(func) or declared_scopes(func) is not None, f"{handler.__name__}.{method}"


# --- failing closed and failing soft ------------------------------------------------------------


class Undeclared(HubAuthHandler):
    """A handler whose author forgot ``@needs_scope``."""

    def get(self) -> None:
        self.finish({"leaked": True})


def test_method_without_declared_permission_is_refused(running):
    auth = running.app.settings["hub_auth"]
    app = web.Application(
        [(PREFIX + "api/undeclared", Undeclared)],
        hub_auth=auth,
        service_prefix=PREFIX,
        cookie_secret=COOKIE_SECRET,
    )
    url = running.serve_app(app)
    r = httpx.get(url + PREFIX + "api/undeclared", headers={"Authorization": "token erin-token"})
    assert_error(r, 403, "declares no permission")


def test_hub_unreachable_is_502_not_500(running, tmp_path):
    env = {**running.hub_env(), "JUPYTERHUB_API_URL": "http://127.0.0.1:1/hub/api"}
    store = GovernanceStore(f"sqlite:///{tmp_path / 'g.sqlite'}")
    app = make_app(store, PREFIX, hub_auth=make_hub_auth(PREFIX, environ=env), group_personas={})
    url = running.serve_app(app)
    assert_error(
        httpx.get(url + PREFIX + "api/whoami", headers={"Authorization": "token alice-token"}),
        502,
        "hub",
    )


def test_store_unavailable_is_503(running):
    store = GovernanceStore("postgresql+psycopg2://postgres@127.0.0.1:1/none")
    app = make_app(store, PREFIX, hub_auth=running.app.settings["hub_auth"], group_personas={})
    url = running.serve_app(app)
    r = httpx.get(url + PREFIX + "api/requests", headers={"Authorization": "token alice-token"})
    assert_error(r, 503, "store is unavailable")
    assert "127.0.0.1:1" not in r.text


def test_missing_hub_environment_is_a_config_error():
    from hubforge.errors import ConfigError

    with pytest.raises(ConfigError, match="JUPYTERHUB_API_TOKEN"):
        make_hub_auth(PREFIX, environ={"JUPYTERHUB_CLIENT_ID": "service-governance"})


# --- the real process ------------------------------------------------------------------------


def test_python_m_entry_point_serves_behind_the_hub(running, tmp_path):
    port = free_port()
    db = tmp_path / "cli.sqlite"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("JUPYTERHUB_", "HUBFORGE_"))},
        **running.hub_env(),
        "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{port}",
        "HUBFORGE_DATA": str(tmp_path / "data"),
    }
    cmd = [sys.executable, "-m", "hubforge.hub.governance", f"--db-url=sqlite:///{db}"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}{PREFIX}"
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.stdout.read().decode()
            try:
                if PROBE.get(base + "api/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "service did not become ready"
            time.sleep(0.1)
        r = httpx.get(base + "api/whoami", headers={"Authorization": "token carol-token"})
        assert (r.status_code, r.json()["personas"]) == (200, ["ml-lead"])
        assert db.exists(), "--db-url chose the store"
        assert (tmp_path / "data" / "governance_cookie_secret").stat().st_mode & 0o077 == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=15)[0].decode()
    assert proc.returncode == 0, output
    assert "Governance service stopping" in output


def test_entry_point_without_hub_environment_exits_1(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTERHUB_", "HUBFORGE_"))}
    env["HUBFORGE_DATA"] = str(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "hubforge.hub.governance"],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "JUPYTERHUB_API_TOKEN" in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr
    assert not list(tmp_path.iterdir()), "nothing is created before the environment is checked"


def test_cookie_secret_is_made_once_private_and_kept(tmp_path):
    from hubforge.errors import ConfigError
    from hubforge.hub.governance.app import load_cookie_secret

    path = tmp_path / "data" / "governance_cookie_secret"
    first = load_cookie_secret(path)
    assert len(first) == 32
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_cookie_secret(path) == first
    path.write_text("abcd")
    with pytest.raises(ConfigError, match="too short"):
        load_cookie_secret(path)
