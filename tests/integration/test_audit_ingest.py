"""People's servers report their audit events to the governance service, and nothing is lost.

Against the real service (SQLite and PostgreSQL) behind the fake hub: the ingest API keeps
a report as the token's user's server's (never another user's, never as the platform's),
refuses malformed or oversized batches whole with a 4xx naming what is wrong, and stores
each record once however often it is sent. The server side's forwarder delivers spools
at least once: through an outage of the service, a refusal (set aside, not retried
forever), and a kernel that has ended (its delivered spool removed).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness.governance import PREFIX, Running
from harness.platform import free_port, wait_for
from hubforge.events.spool import EventSpool, read_spool
from hubforge.hub.governance.audit import AuditQuery, query_events
from hubforge.hub.governance.store import GovernanceStore
from hubforge.server_extension.forward import OWNER_FILE, REFUSED_FILE, AuditForwarder

CONTENTS = "https://events.hubforge.dev/server/contents/v1"


def file_event(user: str, path: str, observer: str = "server") -> dict[str, Any]:
    return {
        "user": user,
        "action": "save",
        "resource": {"type": "file", "id": path},
        "outcome": "success",
        "origin": {"observer": observer},
        "path": path,
    }


def spool_of(folder: Path, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    spool = EventSpool(folder, folder.name)
    for event in events:
        spool.emit(CONTENTS, event)
    assert spool.close()
    return list(read_spool(folder))


def stored(store: GovernanceStore, **filters: Any) -> list[dict[str, Any]]:
    """Every stored event matching ``filters``, newest first, page after page."""
    found: list[dict[str, Any]] = []
    before = None
    while True:
        page, before = query_events(store, AuditQuery(limit=1000, before=before, **filters))
        found += page
        if before is None:
            return found


def ingest(running: Running, token: str, body: Any, **kwargs: Any) -> Any:
    with running.client(token) as c:
        return c.post("api/audit/events", json=body, **kwargs)


def unique(tmp_path: Path) -> str:
    return tmp_path.name[-12:].replace("_", "-")


def test_a_report_is_stored_once_as_the_callers_servers(
    running: Running, backend_store: GovernanceStore, tmp_path: Path
) -> None:
    tag = unique(tmp_path)
    records = spool_of(tmp_path / "server", [file_event("alice", f"{tag}/a.ipynb"), file_event("alice", f"{tag}/b.py")])
    body = {"server": tag, "source": "server", "records": records}
    first = ingest(running, "alice-token", body)
    assert first.status_code == 200, first.text
    assert first.json() == {"stored": 2, "duplicates": 0, "acknowledged": 2}
    again = ingest(running, "alice-token", body)  # a forwarder that crashed before moving its offset
    assert again.json() == {"stored": 0, "duplicates": 2, "acknowledged": 2}
    kept = stored(backend_store, resource=f"file:{tag}/a.ipynb")
    assert len(kept) == 1
    (event,) = kept
    assert (event["user"], event["observed"]) == ("alice", "reported")
    assert event["emitter"] == f"server:alice/{tag}:server/{records[0]['__spool__']}"
    assert event["event"]["origin"] == {"observer": "server", "server": f"alice/{tag}"}


@pytest.mark.parametrize(
    ("token", "records", "status", "message"),
    [
        ("bob-token", "alice", 403, "may only name 'bob'"),  # bob's server reports alice's actions
        ("robot-token", "robot", 403, "only a person's server reports events"),
        ("alice-token", "hub", 400, "field 'records.0.origin.observer' must be one of kernel, papermill, server"),
    ],
)
def test_reports_that_would_forge_who_or_what_saw_are_refused_and_not_stored(
    running: Running, backend_store: GovernanceStore, tmp_path: Path, token: str, records: str, status: int,
    message: str,
) -> None:  # fmt: skip
    tag = unique(tmp_path)
    user, observer = ("alice", "hub") if records == "hub" else (records, "server")
    events = spool_of(tmp_path / "server", [file_event(user, f"{tag}/x.csv", observer)])
    answer = ingest(running, token, {"server": "", "source": "server", "records": events})
    assert answer.status_code == status, answer.text
    assert message in answer.json()["message"]
    assert stored(backend_store, resource=f"file:{tag}/x.csv") == []


RECORD = {"__seq__": 1, "__timestamp__": "2026-12-03T10:00:00.000Z", "__schema__": CONTENTS,
          **file_event("alice", "x.py")}  # fmt: skip


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"server": "", "source": "server"}, "missing field 'records'"),
        ({"server": "", "source": "../hub", "records": []}, "field 'source'"),
        ({"server": "a/b", "source": "server", "records": []}, "field 'server'"),
        ({"server": "", "source": "server", "records": [{}] * 1001}, "field 'records'"),
        ({"server": "", "source": "server", "records": [{"__seq__": 1}]}, "missing field 'records.0.__timestamp__'"),
        (
            {"server": "", "source": "server", "records": [{**RECORD, "action": "steal"}]},
            "records[0]: action: not one of",
        ),
        ({"server": "", "source": "server", "records": [], "user": "erin"}, "unknown field 'user'"),
    ],
)
def test_malformed_batches_get_400_naming_what_is_wrong(running: Running, body: Any, message: str) -> None:
    answer = ingest(running, "alice-token", body)
    assert answer.status_code == 400, answer.text
    assert message in answer.json()["message"]


def test_a_body_over_the_limit_is_refused_unread(running: Running) -> None:
    with running.client("alice-token") as c:
        answer = c.post("api/audit/events", content=b"[" + b" " * (4 * 1024 * 1024) + b"]",
                        headers={"Content-Type": "application/json"})  # fmt: skip
    assert answer.status_code == 413


def forwarder(running: Running, root: Path, token: str = "alice-token", url: str | None = None) -> AuditForwarder:
    return AuditForwarder(root, url or f"{running.url}{PREFIX}api/audit/events", token, "", timeout=5)


def test_the_forwarder_delivers_every_spool_once_and_waits_out_an_outage(
    running: Running, backend_store: GovernanceStore, tmp_path: Path
) -> None:
    tag = unique(tmp_path)
    root = tmp_path / "audit"
    spool_of(root / "server", [file_event("alice", f"{tag}/{i}.txt") for i in range(1200)])
    away = forwarder(running, root, url=f"http://127.0.0.1:{free_port()}{PREFIX}api/audit/events")
    assert away.forward_all() is False and away.failure  # the service is away: all of it waits
    assert not (root / "server" / ".ingested").exists()
    back = forwarder(running, root)
    assert back.forward_all() is True
    assert back.delivered == 1200  # in three batches: 500, 500, 200
    paths = {e["resource"]["id"] for e in stored(backend_store, user="alice") if e["resource"]["id"].startswith(tag)}
    assert paths == {f"{tag}/{i}.txt" for i in range(1200)}
    (root / "server" / ".ingested").unlink()  # as if it crashed before keeping its offset
    assert forwarder(running, root).forward_all() is True
    again = [e for e in stored(backend_store, user="alice") if e["resource"]["id"].startswith(tag)]
    assert len(again) == 1200, "sent twice, stored once"


def test_a_refused_batch_is_set_aside_not_retried_forever(running: Running, tmp_path: Path) -> None:
    root = tmp_path / "audit"
    spool_of(root / "server", [file_event("bob", "stolen.csv")])  # alice's server claims bob's action
    f = forwarder(running, root)
    assert f.forward_all() is True
    (refused,) = [json.loads(line) for line in (root / "server" / REFUSED_FILE).read_text().splitlines()]
    assert refused["status"] == 403 and refused["records"][0]["user"] == "bob"
    assert f.forward_all() is True and len((root / "server" / REFUSED_FILE).read_text().splitlines()) == 1


def test_a_kernels_spool_is_removed_once_it_has_ended_and_is_delivered(
    running: Running, backend_store: GovernanceStore, tmp_path: Path
) -> None:
    tag = unique(tmp_path)
    root = tmp_path / "audit"
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    for name, pid in (("kernel-ended", int(ended.stdout)), ("kernel-running", os.getpid())):
        spool_of(root / name, [file_event("alice", f"{tag}/{name}.py", "kernel")])
        (root / name / OWNER_FILE).write_text(str(pid))
    assert forwarder(running, root).forward_all() is True
    assert not (root / "kernel-ended").exists()
    assert (root / "kernel-running").exists(), "a running kernel's spool may still grow"
    emitters = {e["emitter"].rsplit("/", 1)[0] for e in stored(backend_store, user="alice")
                if e["resource"]["id"].startswith(tag)}  # fmt: skip
    assert emitters == {"server:alice/:kernel-ended", "server:alice/:kernel-running"}


def test_a_forwarder_thread_delivers_what_is_spooled_while_it_runs(
    running: Running, backend_store: GovernanceStore, tmp_path: Path
) -> None:
    """Its emitter (alice's default server's ``server`` spool) sent numbers 1 to 1200 before,
    from another spool: this spool's 1 to 50 are new, not duplicates (its spool id)."""
    tag = unique(tmp_path)
    root = tmp_path / "audit"
    spool = EventSpool(root / "server", "server")
    f = AuditForwarder(root, f"{running.url}{PREFIX}api/audit/events", "alice-token", "", interval=0.1)
    f.start()
    try:
        for i in range(50):
            spool.emit(CONTENTS, file_event("alice", f"{tag}/{i}.txt"))
        spool.flush()

        def delivered() -> bool:
            return len([e for e in stored(backend_store, user="alice") if e["resource"]["id"].startswith(tag)]) == 50

        wait_for(delivered, 30, "50 events in the trail")
    finally:
        f.stop()
        spool.close()
