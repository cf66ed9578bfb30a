"""The outgoing webhook: signed JSON for each request, decision and deployment, retried, failures shown.

The governance service runs for real (``running``); the receiver is a tornado app served on
the same loop, on a free port, that records what it gets and fails as a test tells it to.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from tornado import web

from harness.governance import Running
from harness.platform import wait_for
from hubforge.hub.governance.notify import Webhook, signature

SECRET = b"k" * 32


class Receiver(web.RequestHandler):
    """Records each delivery; answers 500 while ``failures`` says so."""

    def initialize(self, got: list[dict[str, Any]], failures: list[int]) -> None:
        self.got, self.failures = got, failures

    def post(self) -> None:
        self.got.append({"headers": dict(self.request.headers), "body": self.request.body})
        if self.failures and self.failures[0] > 0:
            self.failures[0] -= 1
            self.set_status(500)
        self.finish()


@pytest.fixture
def receiver(running: Running) -> tuple[str, list[dict[str, Any]], list[int]]:
    got: list[dict[str, Any]] = []
    failures = [0]
    url = running.serve_app(web.Application([("/hook", Receiver, {"got": got, "failures": failures})]))
    return url + "/hook", got, failures


@pytest.fixture
def webhook(running: Running, receiver) -> Webhook:
    url, _, _ = receiver
    hook = Webhook(url, SECRET, attempts=4, first_delay=0.05, max_delay=0.2)
    running.app.settings["webhook"] = hook
    yield hook
    running.app.settings["webhook"] = None
    running.loop.run(hook.close())


def delivery_where(client, wanted) -> dict[str, Any] | None:
    """The first delivery ``api/notifications`` lists that ``wanted`` accepts."""
    return next((d for d in client.get("api/notifications").json()["deliveries"] if wanted(d)), None)


def submit(running: Running, token: str = "alice-token") -> dict[str, Any]:
    with running.client(token) as c:
        r = c.post("api/requests", json={"kind": "data-access", "target": "orders", "justification": "churn study"})
    assert r.status_code == 201, r.text
    return r.json()


def test_each_request_and_decision_is_posted_signed(running, receiver, webhook):
    _, got, _ = receiver
    created = submit(running)
    assert running.decide("dan-token", created["id"], "approve", "ok").status_code == 200
    wait_for(lambda: len(got) >= 2, 10, "two deliveries")
    for delivery in got:
        assert delivery["headers"]["X-Hubforge-Signature-256"] == signature(SECRET, delivery["body"])
        assert delivery["headers"]["Content-Type"] == "application/json"
    events = [json.loads(d["body"]) for d in got]
    assert [(e["event"], e["request"]["id"]) for e in events] == [
        ("request.submitted", created["id"]),
        ("request.decided", created["id"]),
    ]
    assert (events[1]["request"]["status"], events[1]["request"]["decided_by"]) == ("approved", "dan")
    assert got[0]["headers"]["X-Hubforge-Event"] == "request.submitted"


def test_a_failing_receiver_is_retried_with_the_same_delivery_id(running, receiver, webhook):
    _, got, failures = receiver
    failures[0] = 2
    submit(running)
    wait_for(lambda: len(got) >= 3, 10, "three attempts")
    assert len({d["headers"]["X-Hubforge-Delivery"] for d in got}) == 1
    with running.client("dan-token") as c:
        delivery = wait_for(
            lambda: next(
                (d for d in c.get("api/notifications").json()["deliveries"] if d["status"] != "pending"), None
            ),
            10,
            "the delivery's outcome",
        )
    assert (delivery["status"], delivery["attempts"], delivery["error"]) == ("delivered", 3, None)


def test_a_delivery_that_keeps_failing_is_shown_failed_to_overseers_only(running, receiver, webhook):
    _, _, failures = receiver
    failures[0] = 99
    submit(running)
    with running.client("erin-token") as c:
        failed = wait_for(lambda: delivery_where(c, lambda d: d["status"] == "failed"), 10, "a failed delivery")
    assert failed["attempts"] == 4 and failed["error"] == "the receiver answered 500"
    with running.client("alice-token") as c:
        assert c.get("api/notifications").status_code == 403


def test_without_a_webhook_nothing_is_sent_and_the_list_says_so(running):
    with running.client("dan-token") as c:
        assert c.get("api/notifications").json() == {"webhook": None, "deliveries": []}
