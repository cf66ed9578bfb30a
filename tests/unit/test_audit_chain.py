"""The audit trail's pure parts: which records an ingest adds, how they chain, and the COPY
text PostgreSQL is sent them in."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from hubforge.hub.governance.audit import COLUMNS, GENESIS, canonical, chain_rows, copy_text, link, seq_runs

SCHEMA = "https://events.hubforge.dev/hub/server/v1"


def record(seq: int, emitter: str = "hub", **event: Any) -> dict[str, Any]:
    return {
        "__timestamp__": "2026-12-03T09:59:59.123Z",
        "__emitter__": emitter,
        "__spool__": "0123abcd",
        "__seq__": seq,
        "__schema__": SCHEMA,
        "user": "alice",
        "action": "spawn",
        "resource": {"type": "server", "id": "alice/"},
        "outcome": "success",
        "origin": {"observer": "hub"},
        **event,
    }


def keys_of(batch: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return [(f"{r['__emitter__']}/{r['__spool__']}", r["__seq__"]) for r in batch]


@pytest.mark.parametrize(
    ("seqs", "runs"),
    [
        ([], []),
        ([5], [(5, 5)]),
        (list(range(1, 1001)), [(1, 1000)]),
        ([12, 3, 1, 2, 2, 9, 7, 8], [(1, 3), (7, 9), (12, 12)]),
    ],
)
def test_sequence_numbers_become_the_fewest_ranges(seqs: list[int], runs: list[tuple[int, int]]) -> None:
    assert seq_runs(seqs) == runs


def test_the_canonical_text_is_sorted_compact_json_with_unicode_as_is() -> None:
    event = {"b": 1, "a": {"z": "été ✓", "y": [1, "\n"]}}
    assert canonical(event) == json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert canonical(event) == '{"a":{"y":[1,"\\n"],"z":"été ✓"},"b":1}'


def test_rows_continue_the_chain_and_skip_what_is_stored_or_repeated() -> None:
    batch = [record(1), record(2), record(2), record(3), record(4, user="bob")]
    keys = keys_of(batch)
    rows, duplicates = chain_rows(batch, keys, {keys[0]}, 41, "f" * 64)
    assert duplicates == 2, "seq 1 was stored before, the second seq 2 is the batch's own repeat"
    stored = [dict(zip(COLUMNS, row, strict=True)) for row in rows]
    assert [(r["position"], r["seq"]) for r in stored] == [(42, 2), (43, 3), (44, 4)]
    assert stored[0]["prev_hash"] == "f" * 64
    for before, row in zip(["f" * 64, *[r["hash"] for r in stored]], stored, strict=False):
        assert row["prev_hash"] == before
        assert row["hash"] == link(before, row["record"])
    last = stored[-1]
    assert json.loads(last["record"]) == batch[-1] and last["record"] == canonical(batch[-1])
    assert (last["emitter"], last["user"], last["observed"], last["resource"]) == ("hub/0123abcd", "bob", "platform",
                                                                                  "server:alice/")  # fmt: skip
    assert last["time"] == datetime(2026, 12, 3, 9, 59, 59, 123000, tzinfo=UTC)


def test_nothing_new_makes_no_rows() -> None:
    batch = [record(1), record(2)]
    assert chain_rows(batch, keys_of(batch), set(keys_of(batch)), 7, GENESIS) == ([], 2)


def test_copy_text_escapes_what_copy_reads_as_separators_and_nothing_else() -> None:
    when = datetime(2026, 12, 3, 10, 0, 0, 5000, tzinfo=UTC)
    rows = [
        (1, "tab\there", "new\nline", "cr\rhere", "back\\slash", "\\N", "\\.", "été ✓ 🎉", when, None),
        (2, "plain", "", "x", "y", "z", "w", "v", when, "a"),
    ]
    assert copy_text(rows) == (
        "1\ttab\\there\tnew\\nline\tcr\\rhere\tback\\\\slash\t\\\\N\t\\\\.\tété ✓ 🎉"
        "\t2026-12-03T10:00:00.005000+00:00\t\\N\n"
        "2\tplain\t\tx\ty\tz\tw\tv\t2026-12-03T10:00:00.005000+00:00\ta\n"
    )
    assert copy_text([]) == ""
