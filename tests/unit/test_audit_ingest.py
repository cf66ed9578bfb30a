"""What a person's server reports is kept only as that person's server's report."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from hubforge.errors import Forbidden
from hubforge.events import MAX_EVENT_BYTES, EventRefused
from hubforge.hub.governance.ingest import emitter_id, reported_records

CONTENTS = "https://events.hubforge.dev/server/contents/v1"
CELL = "https://events.hubforge.dev/kernel/cell/v1"
NOW = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)


def record(seq: int = 1, **event: Any) -> dict[str, Any]:
    base = {
        "__timestamp__": "2026-12-03T09:59:59.123Z",
        "__emitter__": "server",
        "__seq__": seq,
        "__schema__": CONTENTS,
        "__schema_version__": "1",
        "__metadata_version__": 1,
        "user": "alice",
        "action": "save",
        "resource": {"type": "file", "id": "work/a.ipynb"},
        "outcome": "success",
        "origin": {"observer": "server", "server": "alice/"},
        "path": "work/a.ipynb",
    }
    return {**base, **event}


def body(*records: dict[str, Any], server: str = "", source: str = "server") -> dict[str, Any]:
    return {"server": server, "source": source, "records": list(records)}


def test_a_report_is_kept_under_an_emitter_of_the_callers_own_server() -> None:
    kept = reported_records(body(record(1), record(2), server="gpu", source="kernel-abc"), "alice", NOW)
    assert [r["__emitter__"] for r in kept] == [emitter_id("alice", "gpu", "kernel-abc")] * 2
    assert kept[0]["__emitter__"] == "server:alice/gpu:kernel-abc"
    assert [r["__seq__"] for r in kept] == [1, 2]
    assert kept[0]["__reported_by__"] == "alice"
    assert kept[0]["__received__"] == "2026-12-03T10:00:00.000Z"
    assert kept[0]["__timestamp__"] == "2026-12-03T09:59:59.123Z"
    assert kept[0]["path"] == "work/a.ipynb"
    assert "__spool__" not in kept[0]
    (with_id,) = reported_records(body(record(3, __spool__="0123abcd")), "alice", NOW)
    assert with_id["__spool__"] == "0123abcd"


def test_a_report_can_not_take_another_emitters_name_or_server() -> None:
    forged = record(1, __emitter__="hub", origin={"observer": "server", "server": "bob/"})
    (kept,) = reported_records(body(forged), "alice", NOW)
    assert kept["__emitter__"] == "server:alice/:server"
    assert kept["origin"]["server"] == "alice/", "the server is the caller's, whatever the record says"


def test_a_record_naming_another_user_is_refused_with_the_whole_batch() -> None:
    with pytest.raises(Forbidden, match=r"records\[1\]: .*may only name 'alice'"):
        reported_records(body(record(1), record(2, user="bob")), "alice", NOW)


@pytest.mark.parametrize("observer", ["hub", "governance", "mlflow", None])
def test_a_report_can_not_pass_as_seen_by_the_platform(observer: str | None) -> None:
    origin = {"observer": observer} if observer else {}
    with pytest.raises(EventRefused, match=r"origin\.observer must be one of kernel, papermill, server"):
        reported_records(body(record(1, origin=origin)), "alice", NOW)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"__seq__": 0}, "__seq__"),
        ({"__seq__": True}, "__seq__"),
        ({"__seq__": "3"}, "__seq__"),
        ({"__seq__": 2**63}, "__seq__"),
        ({"__timestamp__": "yesterday"}, "__timestamp__"),
        ({"__timestamp__": 1700000000}, "__timestamp__"),
        ({"__schema__": "https://events.hubforge.dev/hub/nothing/v1"}, "__schema__"),
        ({"__spool__": "../hub"}, "__spool__"),
        ({"__spool__": 12345678}, "__spool__"),
        ({"action": "exfiltrate"}, "action: not one of"),
        ({"resource": {"type": "file"}}, "resource.id: missing"),
        ({"extra": 1}, "extra: not a field of this event"),
        ({"outcome": "maybe"}, "outcome: not one of"),
    ],
)
def test_a_malformed_record_is_refused_naming_what_is_wrong(change: dict[str, Any], message: str) -> None:
    with pytest.raises(EventRefused, match=r"records\[0\]: .*" + message.replace("[", r"\[")):
        reported_records(body(record(1, **change)), "alice", NOW)


def test_user_text_is_escaped_and_cut_before_it_is_kept() -> None:
    path = "work/\x1b[31mred\nline.ipynb" + "x" * 5000
    (kept,) = reported_records(body(record(1, path=path)), "alice", NOW)
    assert "\n" not in kept["path"] and "\x1b" not in kept["path"]
    assert kept["path"].startswith("work/\\x1b[31mred\\nline.ipynb")
    assert len(kept["path"]) == 4096


def test_an_event_over_the_size_cap_is_refused() -> None:
    cell = record(1, __schema__=CELL, action="execute", origin={"observer": "kernel"}, source="x" * 65536)
    cell.pop("path")
    cell["source_sha256"] = "0" * 64
    cell["notebook"] = "n" * 4096
    cell["resource"] = {"type": "cell", "id": "c" * 1024}
    with pytest.raises(EventRefused, match=f"over {MAX_EVENT_BYTES} bytes"):
        reported_records(body(cell), "alice", NOW)


def test_an_emitter_id_too_long_for_the_trail_is_refused() -> None:
    with pytest.raises(EventRefused, match="emitter id over 222"):
        reported_records(body(record(1, user="a" * 200), server="s" * 60), "a" * 200, NOW)
