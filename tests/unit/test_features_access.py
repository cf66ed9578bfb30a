"""Restricted feature views: grants asked of governance and kept a little, a miss asked again
at once, expired grants never used, every read recorded before its data leaves."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from harness.features import catalog, view
from hubforge.errors import Forbidden, Unavailable
from hubforge.events import event_schemas
from hubforge.events.spool import EventSpool, read_spool
from hubforge.features.catalog import Catalog
from hubforge.hub.features.access import (
    READ_SCHEMA,
    DataAccess,
    Grant,
    ReadAudit,
    parse_grants,
    restricted_views,
    target_of,
)

NOW = datetime.now(UTC)


def grant(target: str, days: float = 7, request_id: str = "r1") -> dict[str, Any]:
    expires = (NOW + timedelta(days=days)).isoformat().replace("+00:00", "Z")
    return {"request_id": request_id, "user": "alice", "target": target, "granted": "2026-12-01T00:00:00Z",
            "expires": expires, "approved_by": "dan"}  # fmt: skip


class Governance(DataAccess):
    """DataAccess whose governance answers from ``answers`` (user -> grants), counting the asks."""

    def __init__(self, answers: dict[str, list[dict[str, Any]]], **kwargs: Any) -> None:
        super().__init__("http://hub/services/governance", "features-token", **kwargs)
        self.answers = answers
        self.asked: list[str] = []
        self.down = False

    async def _fetch(self, user: str) -> list[Grant]:
        self.asked.append(user)
        if self.down:
            raise Unavailable("the governance service cannot be reached to check data-access grants")
        return parse_grants(self.answers.get(user, []))


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_the_restricted_views_are_those_tagged_sensitive() -> None:
    cat = Catalog(catalog([view("plain"), view("profile", sensitivity="confidential"),
                           view("pii", sensitivity="restricted"), view("open", sensitivity="public")]))  # fmt: skip
    assert restricted_views(cat, ["plain", "profile", "open", "pii", "missing"]) == ["profile", "pii"]
    assert target_of("payments", "profile") == "feature_view:payments/profile"


def test_a_grant_for_the_view_lets_the_read_through_and_is_kept() -> None:
    access = Governance({"alice": [grant("feature_view:payments/profile")]})

    async def twice() -> tuple[dict[str, Grant], dict[str, Grant]]:
        return (await access.require("alice", "payments", ["profile"]),
                await access.require("alice", "payments", ["profile"]))  # fmt: skip

    first, second = run(twice())
    assert first["profile"].request_id == "r1" and first == second
    assert access.asked == ["alice"], "kept for the second read"


def test_without_a_grant_the_refusal_says_how_to_ask_and_governance_is_asked_again() -> None:
    access = Governance({"alice": [grant("feature_view:payments/other")]}, recheck=0.0)

    async def refused() -> str:
        with pytest.raises(Forbidden) as caught:
            await access.require("alice", "payments", ["profile"])
        return str(caught.value)

    message = run(refused())
    assert message.startswith("profile is restricted: reading its data needs an approved data-access request "
                              "(target feature_view:payments/profile) from a data steward")  # fmt: skip
    assert "Request access" in message
    assert access.asked == ["alice", "alice"], "a miss asks again, so a grant approved a moment ago works"


def test_a_grant_approved_after_a_refusal_works_on_the_next_read() -> None:
    access = Governance({}, recheck=0.0)

    async def flow() -> dict[str, Grant]:
        with pytest.raises(Forbidden):
            await access.require("alice", "payments", ["profile"])
        access.answers["alice"] = [grant("feature_view:payments/profile", request_id="r9")]
        return await access.require("alice", "payments", ["profile"])

    assert run(flow())["profile"].request_id == "r9"


def test_an_expired_grant_is_never_used_even_when_kept() -> None:
    access = Governance({"alice": [grant("feature_view:payments/profile", days=-1)]})

    async def refused() -> None:
        with pytest.raises(Forbidden):
            await access.require("alice", "payments", ["profile"])

    run(refused())


def test_every_view_of_a_read_needs_its_own_grant() -> None:
    access = Governance({"alice": [grant("feature_view:payments/a")]})

    async def refused() -> str:
        with pytest.raises(Forbidden) as caught:
            await access.require("alice", "payments", ["a", "b"])
        return str(caught.value)

    assert run(refused()).startswith("b is restricted")


def test_one_persons_grant_is_not_anothers() -> None:
    access = Governance({"alice": [grant("feature_view:payments/profile")]})

    async def refused() -> None:
        with pytest.raises(Forbidden):
            await access.require("bob", "payments", ["profile"])

    run(refused())


def test_governance_down_is_unavailable_never_a_read() -> None:
    access = Governance({"alice": [grant("feature_view:payments/profile")]})
    access.down = True

    async def refused() -> None:
        with pytest.raises(Unavailable):
            await access.require("alice", "payments", ["profile"])

    run(refused())


def test_without_a_governance_service_nobody_holds_a_grant() -> None:
    async def refused() -> None:
        with pytest.raises(Forbidden):
            await DataAccess(None, "").require("alice", "payments", ["profile"])

    run(refused())
    assert run(DataAccess(None, "").require("alice", "payments", [])) == {}


@pytest.mark.parametrize(
    "body",
    [
        [{"request_id": "r1", "target": "feature_view:p/v", "expires": "not a time"}],
        [{"request_id": 5, "target": "feature_view:p/v", "expires": "2030-01-01T00:00:00Z"}],
        [{"target": "feature_view:p/v", "expires": "2030-01-01T00:00:00Z"}],
        ["feature_view:p/v"],
    ],
)
def test_grants_not_written_whole_are_left_out(body: Any) -> None:
    assert parse_grants(body) == []


def test_an_answer_that_is_no_list_is_unavailability() -> None:
    with pytest.raises(Unavailable):
        parse_grants({"grants": []})


def test_reads_are_recorded_durably_one_event_per_view(tmp_path: Path) -> None:
    spool = EventSpool(tmp_path / "features", "features")
    audit = ReadAudit(spool)
    grants = {"a": Grant("r1", "feature_view:payments/a", NOW + timedelta(days=1))}
    run(audit.record("alice", "payments", ["a", "b"], "success", mode="online", rows=3,
                     features="a:x,b:y", client="10.0.0.7", grants=grants))  # fmt: skip
    assert spool.durable_seq == 2
    records = list(read_spool(tmp_path / "features"))
    assert [r["__schema__"] for r in records] == [READ_SCHEMA, READ_SCHEMA]
    assert READ_SCHEMA in event_schemas()
    first = {k: v for k, v in records[0].items() if not k.startswith("__")}
    assert first == {"user": "alice", "action": "read", "resource": {"type": "feature_view",
                     "id": "feature_view:payments/a"}, "outcome": "success",
                     "origin": {"observer": "features", "client_address": "10.0.0.7"}, "mode": "online",
                     "rows": 3, "features": "a:x,b:y", "request_id": "r1"}  # fmt: skip
    assert "request_id" not in records[1]
    spool.close()


def test_without_a_spool_nothing_restricted_is_served(tmp_path: Path) -> None:
    with pytest.raises(Unavailable, match="cannot record"):
        run(ReadAudit(None).record("alice", "p", ["a"], "success", mode="online", rows=1, features="", client=""))
    run(ReadAudit(None).record("alice", "p", [], "success", mode="online", rows=1, features="", client=""))


def test_a_refusal_is_recorded_with_its_reason(tmp_path: Path) -> None:
    spool = EventSpool(tmp_path / "features", "features")
    run(ReadAudit(spool).record("mallory", "payments", ["a"], "denied", mode="historical", rows=1,
                                features="service:churn", client="", reason="a is restricted"))  # fmt: skip
    (record,) = read_spool(tmp_path / "features")
    assert record["outcome"] == "denied" and record["reason"] == "a is restricted"
    assert record["mode"] == "historical" and "client_address" not in record["origin"]
    assert json.dumps(record)
    spool.close()
