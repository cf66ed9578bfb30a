"""Fits kept for the server's replay: the entry format, checked as hostile input, and bad entries set aside.

The replay itself, to a real ``mlflow server``, is in tests/integration/test_kept_fits.py.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from harness.kept_fits import fit
from hubforge.server_extension.kept_fits import list_fits, read_fit, reject_fit, write_fit


def test_an_entry_appears_whole_and_reads_back(tmp_path: Path) -> None:
    entry = write_fit(tmp_path, fit(), b"pickled")
    assert list_fits(tmp_path) == [entry]
    assert (entry / "fit.pkl").read_bytes() == b"pickled"
    back = read_fit(entry)
    assert (back.run_id, back.name, back.tags) == ("abc123", "LogisticRegression", {"hubforge.notebook": "a.ipynb"})
    (tmp_path / "fits" / ".half-written").mkdir()
    assert list_fits(tmp_path) == [entry], "a dot-named folder is one still being written"


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"version": 2}, "fit.json: not a version 1 object"),
        ({"run_id": "../../etc"}, "fit.json: run_id must be an MLflow run id or null"),
        ({"run_id": None, "replay_id": ""}, "fit.json: no run to log the fit under (run_id or replay_id)"),
        ({"integration": ""}, "fit.json: integration is empty"),
        ({"name": ["x"]}, "fit.json: name must be a string"),
        ({"started_ms": -1}, "fit.json: started_ms must be a non-negative integer"),
        ({"ended_ms": True}, "fit.json: ended_ms must be a non-negative integer"),
        ({"tags": {"k": 1}}, "fit.json: tags must map strings to strings"),
        ({"cwd": "x" * 5000}, "fit.json: cwd must be a string"),
    ],
)
def test_a_bad_field_is_one_line_naming_it(tmp_path: Path, changes: dict, error: str) -> None:
    entry = tmp_path / "fits" / "1-bad"
    entry.mkdir(parents=True)
    (entry / "fit.json").write_text(json.dumps({**asdict(fit()), **changes}))
    with pytest.raises(ValueError) as info:
        read_fit(entry)
    assert str(info.value) == error


def test_unreadable_json_is_one_line(tmp_path: Path) -> None:
    entry = tmp_path / "fits" / "1-bad"
    entry.mkdir(parents=True)
    (entry / "fit.json").write_text("{")
    with pytest.raises(ValueError, match=r"^fit\.json: "):
        read_fit(entry)


def test_a_rejected_fit_keeps_its_files_and_says_why(tmp_path: Path) -> None:
    entry = write_fit(tmp_path, fit(), b"pickled")
    target = reject_fit(tmp_path, entry, "cannot load the fitted objects: ModuleNotFoundError: No module named 'gone'")
    assert not entry.exists() and (target / "fit.pkl").read_bytes() == b"pickled"
    assert (target / "reason.txt").read_text().startswith("cannot load the fitted objects")
