"""Fits kept for the server's replay: the entry format, checked as hostile input, and bad entries set aside."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import pytest
from test_kernel_queue import MlflowServer

from _platform import replay_spool
from hubforge.server_extension.kept_fits import KeptFit, list_fits, read_fit, reject_fit, write_fit


def fit(**changes: object) -> KeptFit:
    base = KeptFit(
        tracking_uri="http://mlflow",
        experiment_name="/Users/alice/a.ipynb",
        integration="sklearn",
        method="fit",
        name="LogisticRegression",
        started_ms=1,
        ended_ms=2,
        run_id="abc123",
        tags={"hubforge.notebook": "a.ipynb"},
    )
    for key, value in changes.items():
        setattr(base, key, value)
    return base


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


def test_the_replay_sets_bad_fits_aside_with_their_reason(mlflow_server: MlflowServer, tmp_path: Path) -> None:
    """A kept fit whose objects do not load, or whose run is not in MLflow, is set aside, not retried."""
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_server.url)
    exp = client.create_experiment(f"kept-{os.urandom(4).hex()}")
    run = client.create_run(exp).info.run_id
    spool = tmp_path / "spool"
    broken = write_fit(spool, fit(tracking_uri=mlflow_server.url, run_id=run), b"not a pickle")
    orphan = write_fit(spool, fit(tracking_uri=mlflow_server.url, run_id=None, replay_id="never-opened"), b"x")
    other = write_fit(spool, fit(tracking_uri="http://another-mlflow"), b"x")
    replay = replay_spool(spool, mlflow_server.url)
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert list_fits(spool) == [other], "another MLflow's fit is left alone"
    rejected = spool / "rejected"
    why = (rejected / f"fit-{broken.name}" / "reason.txt").read_text()
    assert why.startswith("cannot load the fitted objects: UnpicklingError")
    assert (rejected / f"fit-{orphan.name}" / "reason.txt").read_text() == "the notebook's run is not in MLflow\n"
    assert not client.search_runs([exp], f"tags.`mlflow.parentRunId` = '{run}'"), "nothing half-logged"
