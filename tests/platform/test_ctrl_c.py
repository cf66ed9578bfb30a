"""`hubforge up` stopped with Ctrl-C while a notebook is open, on a platform of its own.

alice runs the corpus's ``print_then_train`` notebook through the hub over JupyterLab's
protocol, leaves it open, and the platform is stopped with Ctrl-C (SIGINT): every process
it started stops (:func:`harness.platform.assert_all_stopped`, the launcher's SIGINT
checks), and her notebook's run ends FINISHED with its snapshot, environment and fits,
read from MLflow's own store once the platform is down.
"""

from __future__ import annotations

import signal
from pathlib import Path

import httpx

from harness.corpus import FOLDER, Lab, code_of
from harness.platform import HubSession, PlatformProcess, api, assert_all_stopped, wait_for


def test_ctrl_c_of_the_platform_ends_an_open_notebooks_run(tmp_path: Path) -> None:
    """`hubforge up` stopped with Ctrl-C while alice's notebook is open: every process it started
    stops, and the notebook's run ends FINISHED."""
    from mlflow import MlflowClient

    platform = PlatformProcess(tmp_path / "data")
    platform.start()
    try:
        platform.wait_ready()
        session = HubSession(platform.url)
        assert session.login("alice").status_code == 302
        with api(platform.url, session.new_token("alice", note="ctrl-c")) as http:
            http.timeout = httpx.Timeout(120)
            assert http.post("/hub/api/users/alice/server").status_code in (201, 202)
            wait_for(lambda: http.get("/hub/api/users/alice").json()["servers"].get("", {}).get("ready"), 120, "server")
            lab = Lab(http)
            _, kernel = lab.open(lab.upload("print_then_train.ipynb"))
            said = lab.run(kernel, code_of("print_then_train.ipynb"), 0.5)
            assert [e.status for e in said] == ["ok"] * 4
            kernel.close()
        session.close()
    finally:
        assert platform.stop(signal.SIGINT, timeout=120) == 0, platform.log_tail()
    assert_all_stopped(platform)
    # The platform is down: read MLflow's own store and artifact folder.
    store = MlflowClient(f"sqlite:///{tmp_path / 'data' / 'mlflow.sqlite'}")
    exp = store.get_experiment_by_name(f"/Users/alice/{FOLDER}/print_then_train.ipynb")
    runs = store.search_runs([exp.experiment_id])
    (top,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert top.info.status == "FINISHED", platform.log_tail()
    folder = tmp_path / "data" / "mlartifacts" / exp.experiment_id / top.info.run_id / "artifacts"
    assert (folder / "notebook" / "print_then_train.ipynb").is_file()
    assert "scikit-learn==" in (folder / "environment" / "requirements.txt").read_text()
    fits = {r.info.run_name: r.info.status for r in runs if r.data.tags.get("mlflow.parentRunId") == top.info.run_id}
    assert fits == {"DecisionTreeClassifier": "FINISHED", "KNeighborsClassifier": "FINISHED"}
