"""Audit events: the schemas, the compiled checks that stand in for jsonschema, the spool.

The schemas are jupyter_events schemas (its registry checks each against its
meta-schema); the compiled checks must give jupyter_events' validator's answer on
every valid event and on every near-miss; the spool numbers, keeps, refuses and
recovers as its docstring says.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import ValidationError

from hubforge.events import (
    ENVELOPE,
    MAX_EVENT_BYTES,
    SCHEMA_DIR,
    EventRefused,
    clean,
    event_schemas,
    refusal,
    schema_registry,
)
from hubforge.events.spool import EVENTS_FILE, REJECTED_FILE, EventNotDurable, EventSpool, read_spool

SERVER = "https://events.hubforge.dev/hub/server/v1"
SCHEMA_IDS = sorted(event_schemas())


def example(schema: dict[str, Any]) -> Any:
    """A valid instance of ``schema``: every property filled, the first enum value, short strings."""
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        return {key: example(sub) for key, sub in schema.get("properties", {}).items()}
    if kind == "array":
        return [example(schema.get("items", {}))]
    if kind == "integer":
        return schema.get("minimum", 0)
    if kind == "string":
        return "0" * 64 if schema.get("pattern") else "x"
    raise AssertionError(f"no example for {schema}")


def answers(schema_id: str, event: Any) -> tuple[bool, bool]:
    """(compiled check accepts, jupyter_events accepts) for ``event``."""
    try:
        schema_registry().get(schema_id).validate(event)
        reference = True
    except ValidationError:
        reference = False
    return refusal(schema_id)(event) is None, reference


#: Values of every JSON type, and the edges the schemas draw (lengths, signs, bool as int).
WRONG = [None, True, False, 0, -1, 1.5, 2.0, 10**9, "", "y" * 5000, "\n", [], [1], {}, {"a": 1}, "0" * 64, "g" * 64]


def near_misses(schema_id: str) -> list[Any]:
    """The example with each field (nested ones too) replaced by each WRONG value, dropped,
    or joined by an unknown field."""
    base = example(event_schemas()[schema_id])
    found: list[Any] = []

    def walk(obj: dict[str, Any], set_at: Any) -> None:
        for key in list(obj):
            for wrong in WRONG:
                found.append(set_at(key, wrong))
            found.append(set_at(key, DROP))
            if isinstance(obj[key], dict):
                walk(obj[key], lambda k, v, outer=key, at=set_at: at(outer, _with(obj[outer], k, v)))
        found.append(set_at("unknown_field", "x"))

    walk(base, lambda k, v: _with(base, k, v))
    return found


DROP = object()


def _with(obj: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    copy = dict(obj)
    if value is DROP:
        copy.pop(key, None)
    else:
        copy[key] = value
    return copy


# --- the schemas ---------------------------------------------------------------------------


def test_every_schema_is_a_jupyter_events_schema_named_by_its_file() -> None:
    registry = schema_registry()  # registering checks each against jupyter_events' meta-schema
    files = sorted(SCHEMA_DIR.rglob("*.yaml"))
    assert len(files) == len(SCHEMA_IDS) == len(registry.schema_ids) >= 11
    for path in files:
        area, name = path.parent.name, path.name.split(".v")[0]
        version = path.name.removesuffix(".yaml").rsplit(".v", 1)[1]
        schema = next(s for s in event_schemas().values() if s["$id"].endswith(f"/{area}/{name}/v{version}"))
        assert schema["version"] == version
        assert schema["$id"] == f"https://events.hubforge.dev/{area}/{name}/v{version}"


def test_every_event_says_who_what_on_what_how_and_where_from_alike() -> None:
    first = event_schemas()[SERVER]["properties"]
    for schema_id in SCHEMA_IDS:
        schema = event_schemas()[schema_id]
        assert set(ENVELOPE) <= set(schema["required"]), schema_id
        assert schema["additionalProperties"] is False, schema_id
        for key in ENVELOPE:
            if key != "action":  # each schema names its own actions
                assert schema["properties"][key] == first[key], (schema_id, key)
        assert schema["properties"]["action"]["enum"], schema_id
        assert all(isinstance(p.get("maxLength"), int) for p in _strings(schema)), schema_id


def _strings(schema: dict[str, Any]) -> list[dict[str, Any]]:
    found = [schema] if schema.get("type") == "string" else []
    for sub in schema.get("properties", {}).values():
        found += _strings(sub)
    return found + (_strings(schema["items"]) if "items" in schema else [])


def test_the_seeds_audit_list_has_a_schema_each() -> None:
    actions = {
        (schema_id.split("/")[-2], action)
        for schema_id in SCHEMA_IDS
        for action in event_schemas()[schema_id]["properties"]["action"]["enum"]
    }
    wanted = {
        ("authentication", "login"), ("authentication", "logout"), ("authentication", "login_failed"),
        ("server", "spawn"), ("server", "stop"),
        ("contents", "open"), ("contents", "save"), ("contents", "rename"), ("contents", "delete"),
        ("contents", "upload"), ("contents", "download"),
        ("kernel", "start"), ("kernel", "stop"), ("kernel", "restart"), ("cell", "execute"),
        ("run", "created"), ("run", "finished"), ("model", "registered"), ("model", "alias_set"),
        ("deployment", "requested"), ("deployment", "approved"), ("deployment", "rejected"),
        ("deployment", "executed"), ("deployment", "rolled_back"),
        ("data_access", "requested"), ("data_access", "approved"), ("data_access", "denied"),
        ("access_change", "role_granted"), ("access_change", "group_added"), ("policy_decision", "evaluate"),
    }  # fmt: skip
    assert wanted <= actions, wanted - actions


# --- the compiled checks give jupyter_events' answers ----------------------------------------


@pytest.mark.parametrize("schema_id", SCHEMA_IDS)
def test_the_compiled_check_agrees_with_jupyter_events(schema_id: str) -> None:
    assert answers(schema_id, example(event_schemas()[schema_id])) == (True, True)
    misses = near_misses(schema_id)
    assert len(misses) > 100
    disagreements = [(m, *answers(schema_id, m)) for m in misses]
    assert [d for d in disagreements if d[1] != d[2]] == []
    assert any(not d[1] for d in disagreements), "the near misses include refusals"


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    schema_id=st.sampled_from(SCHEMA_IDS),
    key=st.sampled_from([*ENVELOPE, "tier", "gpus", "path", "reasons", "source_sha256", "x"]),
    value=st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=300),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
        max_leaves=8,
    ),
)
def test_the_compiled_check_agrees_on_random_values(schema_id: str, key: str, value: Any) -> None:
    event = _with(example(event_schemas()[schema_id]), key, value)
    compiled, reference = answers(schema_id, event)
    assert compiled == reference, (event, refusal(schema_id)(event))


def test_an_unknown_schema_is_refused_by_name() -> None:
    with pytest.raises(EventRefused, match="no event schema"):
        refusal("https://events.hubforge.dev/hub/nothing/v1")


# --- hostile values -------------------------------------------------------------------------


def test_clean_escapes_control_characters_and_cuts_to_the_schemas_length() -> None:
    schema = event_schemas()["https://events.hubforge.dev/server/contents/v1"]
    event = example(schema) | {"path": "a\nb\x1b[31mred\r\t" + "z" * 5000, "user": "eve\x00"}
    cleaned = clean(event, schema)
    assert cleaned["path"].startswith("a\\nb\\x1b[31mred\\r\\t")
    assert len(cleaned["path"]) == schema["properties"]["path"]["maxLength"]
    assert cleaned["user"] == "eve\\x00"
    assert not any(ord(c) < 32 for c in json.dumps(cleaned))
    assert refusal(schema["$id"])(cleaned) is None


# --- the spool ------------------------------------------------------------------------------


def server_event(**fields: Any) -> dict[str, Any]:
    return example(event_schemas()[SERVER]) | fields


def test_the_spool_keeps_every_event_in_order_as_jupyter_events_records(tmp_path: Path) -> None:
    spool = EventSpool(tmp_path, "hub")
    seqs = [spool.emit(SERVER, server_event(user=f"u{i}")) for i in range(500)]
    assert seqs == list(range(1, 501))
    assert spool.flush(10) and spool.durable_seq == 500
    spool.close()
    records = list(read_spool(tmp_path))
    assert [r["__seq__"] for r in records] == seqs
    assert [r["user"] for r in records] == [f"u{i}" for i in range(500)]
    first = records[0]
    assert first["__schema__"] == SERVER and first["__schema_version__"] == "1" and first["__emitter__"] == "hub"
    assert first["__timestamp__"].endswith("Z") and len(first["__timestamp__"]) == len("2026-12-03T07:00:00.000Z")
    schema_registry().get(SERVER).validate({k: v for k, v in first.items() if not k.startswith("__")})
    assert oct((tmp_path / EVENTS_FILE).stat().st_mode & 0o777) == oct(0o600)


def test_refused_events_keep_their_number_and_reason_and_are_not_lost(tmp_path: Path) -> None:
    spool = EventSpool(tmp_path, "hub")
    spool.emit(SERVER, server_event())
    spool.emit(SERVER, server_event(gpus=-3))
    spool.emit("https://events.hubforge.dev/nope/v1", {})
    spool.emit(SERVER, server_event(tier="t" * MAX_EVENT_BYTES))  # cut to maxLength: kept
    spool.emit(SERVER, server_event(server_name=float("nan")))
    spool.close()
    kept = [r["__seq__"] for r in read_spool(tmp_path)]
    refused = [json.loads(line) for line in (tmp_path / REJECTED_FILE).read_text().splitlines()]
    assert kept == [1, 4]
    assert [(r["__seq__"], r["reason"]) for r in refused] == [
        (2, "gpus: out of range"),
        (3, "no event schema 'https://events.hubforge.dev/nope/v1'"),
        (5, "server_name: not a string"),
    ]
    assert spool.rejected == 3
    assert sorted(kept + [r["__seq__"] for r in refused]) == [1, 2, 3, 4, 5], "no number is missing"


def test_a_restarted_spool_continues_the_numbers_and_cuts_a_torn_line(tmp_path: Path) -> None:
    spool = EventSpool(tmp_path, "hub")
    for _ in range(3):
        spool.emit(SERVER, server_event())
    spool.close()
    with (tmp_path / EVENTS_FILE).open("ab") as f:
        f.write(b'{"__seq__": 4, "user": "half a li')  # what a kill -9 mid-write leaves
    assert [r["__seq__"] for r in read_spool(tmp_path)] == [1, 2, 3]
    again = EventSpool(tmp_path, "hub")
    assert again.emit(SERVER, server_event()) == 4
    again.close()
    assert [r["__seq__"] for r in read_spool(tmp_path)] == [1, 2, 3, 4]


def test_a_lingering_spool_writes_a_burst_at_once_and_anyone_waiting_cuts_the_wait_short(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kernel's cells, milliseconds apart, share one write and one fsync; a flush, a durable
    emit or a close does not wait out the linger."""
    spool = EventSpool(tmp_path, "kernel-1", linger=60)
    fsyncs: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (fsyncs.append(fd), real_fsync(fd))[1])
    seqs = [spool.emit(SERVER, server_event(user=f"u{i}")) for i in range(50)]
    started = time.monotonic()
    assert spool.flush(30), "a flush cuts the linger short"
    assert len(fsyncs) == 1, "the burst is one group"
    assert spool.emit_durable(SERVER, server_event(user="last")) == 51
    spool.emit(SERVER, server_event(user="queued at close"))
    assert spool.close(30)
    assert time.monotonic() - started < 30, "nobody waited out the 60 s linger"
    assert [r["__seq__"] for r in read_spool(tmp_path)] == [*seqs, 51, 52]


def test_a_lingering_spool_writes_on_its_own_within_the_linger(tmp_path: Path) -> None:
    spool = EventSpool(tmp_path, "kernel-1", linger=0.2)
    spool.emit(SERVER, server_event())
    deadline = time.monotonic() + 30
    while spool.durable_seq < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [r["__seq__"] for r in read_spool(tmp_path)] == [1], "no one asked, and it is on disk"
    spool.close()


def test_emit_durable_refuses_a_bad_event_before_numbering_it(tmp_path: Path) -> None:
    spool = EventSpool(tmp_path, "governance")
    with pytest.raises(EventRefused, match="outcome: not one of"):
        spool.emit_durable(SERVER, server_event(outcome="maybe"))
    assert spool.emit_durable(SERVER, server_event()) == 1
    assert spool.durable_seq == 1
    spool.close()


@pytest.mark.skipif(os.geteuid() == 0 and not Path("/dev/full").exists(), reason="needs /dev/full")
def test_emit_durable_fails_closed_when_the_disk_refuses(tmp_path: Path) -> None:
    spool = EventSpool(tmp_path, "governance")
    spool.emit_durable(SERVER, server_event())
    os.dup2(os.open("/dev/full", os.O_WRONLY), spool._fd)  # the disk is full from now on
    with pytest.raises(EventNotDurable, match="No space left on device"):
        spool.emit_durable(SERVER, server_event(), timeout=5)
    assert spool.durable_seq == 1
    with pytest.raises(EventNotDurable):
        spool.emit_durable(SERVER, server_event(), timeout=1)


def test_the_reference_page_names_every_schema() -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "reference" / "audit-events.md").read_text()
    missing = [sid for sid in SCHEMA_IDS if f"`{sid.removeprefix('https://events.hubforge.dev/')}`" not in page]
    assert missing == []
