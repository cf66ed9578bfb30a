"""Fits kept for the server's replay, replayed to a real ``mlflow server``: bad entries are set aside.

The entry format on its own is in tests/unit/test_kept_fits.py.
"""

from __future__ import annotations

import os
from pathlib import Path

from harness.kept_fits import fit
from harness.mlflow import MlflowServer
from harness.platform import replay_spool
from hubforge.server_extension.kept_fits import list_fits, write_fit


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
