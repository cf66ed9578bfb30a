"""Notebooks as people write them, in real kernels against a real ``mlflow server``.

Two fits and a search in one notebook, a fit made before the run is open, a
refusal, a run the person starts, a kernel stopped in the middle of a cell or
right after a fit, and a notebook renamed while its kernel runs. Each checks
MLflow afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from harness.kernel import Kernel, children, kernel_env, only_run, write_notebook
from harness.mlflow import MlflowServer
from harness.platform import replay_spool, wait_for
from hubforge.server_extension.launch import KERNEL_SHUTDOWN_WAIT
from hubforge.server_extension.notebook_paths import write_path

DATA = (
    "from sklearn.datasets import make_classification\n"
    "X, y = make_classification(n_samples=400, n_features=8, random_state=0)"
)
FITS = [
    "from sklearn.linear_model import LogisticRegression\nlr = LogisticRegression(C=0.5, max_iter=200).fit(X, y)",
    "from sklearn.ensemble import RandomForestClassifier\n"
    "rf = RandomForestClassifier(n_estimators=15, max_depth=4, random_state=0).fit(X, y)",
    "from sklearn.model_selection import GridSearchCV\nfrom sklearn.pipeline import make_pipeline\n"
    "from sklearn.preprocessing import StandardScaler\n"
    "search = GridSearchCV(make_pipeline(StandardScaler(), LogisticRegression(max_iter=200)),\n"
    "                      {'logisticregression__C': [0.1, 1.0]}, cv=3).fit(X, y)",
]


@pytest.fixture
def client(mlflow_server: MlflowServer):
    from mlflow import MlflowClient

    return MlflowClient(mlflow_server.url)


def kernel_id(kernel: Kernel) -> str:
    return Path(kernel.km.connection_file).stem.removeprefix("kernel-")


def status(kernel: Kernel) -> dict[str, str]:
    """``%hubforge_tracking status`` as a dict."""
    out = kernel.run("%hubforge_tracking status")
    return dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)


def test_two_fits_and_a_search_are_child_runs_each_with_its_own_params(mlflow_server, client, tmp_path) -> None:
    cells = [DATA, *FITS, "import mlflow\nmlflow.log_param('dataset', 'synthetic')"]
    write_notebook(tmp_path, "two-fits.ipynb", cells)
    kernel = Kernel(kernel_env(mlflow_server.url, tmp_path, "alice", "two-fits.ipynb"), tmp_path)
    try:
        said = []
        for cell in cells:
            said.append(kernel.run(cell))
            time.sleep(0.5)  # a person's pace, quickly
        wait_for(lambda: status(kernel)["fits"].startswith("3 logged"), 120, "the three fits to be logged")
        final = status(kernel)
    finally:
        kernel.shutdown()
    assert said == [""] * len(cells), "tracking prints nothing into the cells"
    assert final["refused"] == "0" and final["dropped"] == "0"
    exp, session = only_run(client, "/Users/alice/two-fits.ipynb")
    assert session.data.params == {"dataset": "synthetic"}
    fits = children(client, exp, session)
    assert sorted(fits) == ["GridSearchCV", "LogisticRegression", "RandomForestClassifier"]
    assert (fits["LogisticRegression"].data.params["C"], fits["LogisticRegression"].data.params["max_iter"]) == (
        "0.5",
        "200",
    )
    rf = fits["RandomForestClassifier"].data
    assert (rf.params["n_estimators"], rf.params["max_depth"]) == ("15", "4")
    assert "training_accuracy_score" in rf.metrics
    assert "training_accuracy_score" in fits["LogisticRegression"].data.metrics
    assert fits["GridSearchCV"].data.params["best_logisticregression__C"] in ("0.1", "1.0")
    for name, run in fits.items():
        assert run.info.status == "FINISHED", name
        assert run.data.tags["mlflow.source.name"] == "two-fits.ipynb"
        assert run.data.tags["mlflow.autologging"] == "sklearn"
        assert run.info.end_time - run.info.start_time < 60_000, "its duration is the training's"
    models = {m.name: m.source_run_id for m in client.search_logged_models(experiment_ids=[exp.experiment_id])}
    assert models["RandomForestClassifier"] == fits["RandomForestClassifier"].info.run_id
    assert models["LogisticRegression"] == fits["LogisticRegression"].info.run_id
    assert session.info.status == "FINISHED"


def test_a_fit_before_the_run_opens_is_kept_and_logged_once_it_does(own_mlflow: MlflowServer, tmp_path) -> None:
    """MLflow is down at the first cells: the fit is trained at once and logged when it is back."""
    from mlflow import MlflowClient

    env = kernel_env(own_mlflow.url, tmp_path, "erin", "early.ipynb", MLFLOW_HTTP_REQUEST_MAX_RETRIES="0")
    kernel = Kernel(env, tmp_path)
    try:
        assert kernel.run("print('start')").startswith("start")
        kernel.run(DATA)
        started = time.monotonic()
        kernel.run(FITS[0])
        assert time.monotonic() - started < 20, "the fit never waits for MLflow"
        assert status(kernel)["fits"] == "0 logged, 0 logging, 1 waiting, 0 not taken"
        own_mlflow.start()
        wait_for(lambda: status(kernel)["fits"].startswith("1 logged"), 120, "the kept fit to be logged")
    finally:
        kernel.shutdown()
    client = MlflowClient(own_mlflow.url)
    exp, session = only_run(client, "/Users/erin/early.ipynb")
    (fit,) = children(client, exp, session).values()
    assert fit.info.run_name == "LogisticRegression" and fit.data.params["C"] == "0.5"


def test_a_refusal_is_said_once_counted_and_kept_with_its_reason(mlflow_server, client, tmp_path) -> None:
    write_notebook(tmp_path, "refused.ipynb", ["x"])
    spool = tmp_path / ".spool"
    kernel = Kernel(kernel_env(mlflow_server.url, tmp_path, "alice", "refused.ipynb"), tmp_path)
    said: list[str] = []
    try:
        said.append(kernel.run("import mlflow\nmlflow.log_param('alpha', 1)"))
        said.append(kernel.run("mlflow.log_param('alpha', 2)\nmlflow.log_metric('loss', 0.5)"))
        for _ in range(60):
            said.append(kernel.run("import time; time.sleep(0.5)"))
            if "refused" in "".join(said):
                break
        said += [kernel.run("x = 1") for _ in range(3)]
        final = status(kernel)
    finally:
        kernel.shutdown()
    notices = [line for line in "".join(said).splitlines() if line]
    assert len(notices) == 1, notices
    assert notices[0].startswith("hubforge: MLflow refused param 'alpha': INVALID_PARAMETER_VALUE: Changing param")
    assert "Traceback" not in notices[0]
    assert final["refused"].startswith("1 (kept in ")
    (folder,) = (spool / "rejected").iterdir()
    run_id = json.loads((folder / "run.json").read_text())["run_id"]
    items = [json.loads(line) for line in (folder / "items.jsonl").read_text().splitlines()]
    assert items == [["p", run_id, "alpha", "2"]]
    assert (folder / "reason.txt").read_text().startswith("param alpha: INVALID_PARAMETER_VALUE")
    run = client.get_run(run_id)
    assert run.data.params["alpha"] == "1" and run.data.metrics["loss"] == 0.5, "the rest arrived"


def test_runs_the_person_starts_are_children_and_artifacts_wait_for_the_run(mlflow_server, client, tmp_path) -> None:
    write_notebook(tmp_path, "mine.ipynb", ["x"])
    (tmp_path / "report.txt").write_text("figures")
    kernel = Kernel(kernel_env(mlflow_server.url, tmp_path, "bob", "mine.ipynb"), tmp_path)
    try:
        # The first cell asks for the run: it waits for it to open rather than starting another.
        assert kernel.run("import mlflow\nmlflow.log_artifact('report.txt')") == ""
        out = kernel.run(
            "with mlflow.start_run(run_name='mine') as mine:\n    mlflow.log_metric('m', 1)\n"
            "print(mlflow.active_run().info.run_name)"
        )
    finally:
        kernel.shutdown()
    assert out.strip().endswith(".ipynb"), "after the with block the notebook's run is active again"
    exp, session = only_run(client, "/Users/bob/mine.ipynb")
    assert [a.path for a in client.list_artifacts(session.info.run_id)] == ["environment", "notebook", "report.txt"]
    mine = children(client, exp, session)["mine"]
    assert mine.data.metrics == {"m": 1.0} and mine.info.status == "FINISHED"


def test_sigterm_in_the_middle_of_a_cell_ends_the_run_killed_with_its_snapshot(mlflow_server, client, tmp_path):
    write_notebook(tmp_path, "stopped.ipynb", ["x = 1", "import time; time.sleep(120)"])
    kernel = Kernel(kernel_env(mlflow_server.url, tmp_path, "carol", "stopped.ipynb"), tmp_path)
    try:
        kernel.run("x = 1")
        wait_for(lambda: status(kernel)["run"] != "(opening)", 60, "the run to open")
        kernel.kc.execute("import time; time.sleep(120)")
        time.sleep(1)
        os.kill(kernel.km.provisioner.process.pid, signal.SIGTERM)
        wait_for(lambda: not kernel.km.is_alive(), 30, "the kernel to leave")
    finally:
        kernel.shutdown()
    _, run = only_run(client, "/Users/carol/stopped.ipynb")
    assert run.info.status == "KILLED"
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["environment", "notebook"]


def test_shutdown_right_after_a_fit_ends_the_run_within_ten_seconds_and_logs_the_fit(mlflow_server, client, tmp_path):
    write_notebook(tmp_path, "quick.ipynb", [DATA, FITS[1]])
    kernel = Kernel(kernel_env(mlflow_server.url, tmp_path, "dan", "quick.ipynb"), tmp_path)
    kernel.km.shutdown_wait_time = KERNEL_SHUTDOWN_WAIT  # as the server extension sets it
    for cell in (DATA, FITS[1]):
        kernel.run(cell)
    exp = wait_for(lambda: client.get_experiment_by_name("/Users/dan/quick.ipynb"), 60, "the experiment")
    asked = time.monotonic()
    kernel.kc.stop_channels()
    kernel.km.request_shutdown()

    def ended() -> Any:
        runs = client.search_runs([exp.experiment_id], "tags.`hubforge.notebook` = 'quick.ipynb'")
        done = [r for r in runs if "mlflow.parentRunId" not in r.data.tags and r.info.status == "FINISHED"]
        return done and client.list_artifacts(done[0].info.run_id, "notebook") and done[0]

    session = wait_for(ended, 30, "the run to end", interval=0.1)
    took = time.monotonic() - asked
    kernel.km.finish_shutdown(waittime=KERNEL_SHUTDOWN_WAIT)
    kernel.km.cleanup_resources()
    assert took < 10, f"the run ended {took:.1f} s after the shutdown request"
    # The fit's run was opened by the kernel and is logged by its fit logger: the kernel waits
    # for the logger within its shutdown budget, and on a busy machine the logger, in a session
    # of its own, finishes the fit after the kernel has gone.
    (opened,) = children(client, exp, session).values()
    fit = wait_for(
        lambda: (run := client.get_run(opened.info.run_id)).info.status != "RUNNING" and run,
        120,
        "the fit logger to end the fit's run",
    )
    assert fit.info.status == "FINISHED"
    assert fit.info.run_name == "RandomForestClassifier" and fit.data.params["n_estimators"] == "15"


def test_a_renamed_notebook_is_followed(mlflow_server, client, tmp_path) -> None:
    """Untitled.ipynb, renamed to work/churn.ipynb while its kernel runs (as the server says it)."""
    write_notebook(tmp_path, "Untitled.ipynb", ["x = 1"])
    spool = tmp_path / ".spool"
    kernel = Kernel(kernel_env(mlflow_server.url, tmp_path, "alice", "Untitled.ipynb"), tmp_path)
    other = Kernel(kernel_env(mlflow_server.url, tmp_path, "alice", "Untitled.ipynb"), tmp_path)
    try:
        kernel.run("x = 1")
        other.run("x = 1")
        wait_for(lambda: status(kernel)["run"] != "(opening)", 60, "the run to open")
        wait_for(lambda: status(other)["run"] != "(opening)", 60, "the other run to open")
        before = status(kernel)["experiment"]
        assert before != status(other)["experiment"], "two untitled notebooks never share an experiment"
        (tmp_path / "work").mkdir(exist_ok=True)
        (tmp_path / "Untitled.ipynb").rename(tmp_path / "work" / "churn.ipynb")
        write_path(spool, kernel_id(kernel), "work/churn.ipynb")
        kernel.run("y = 2")
        after = status(kernel)
    finally:
        kernel.shutdown()
        other.shutdown()
    assert after["notebook"] == "work/churn.ipynb"
    assert before.startswith("/Users/alice/Untitled.ipynb (kernel ")
    exp, run = only_run(client, "/Users/alice/work/churn.ipynb")
    assert exp.name == "/Users/alice/work/churn.ipynb", "the untitled notebook's experiment took its name"
    tags = run.data.tags
    assert tags["mlflow.source.name"] == tags["hubforge.notebook"] == "work/churn.ipynb"
    assert run.info.run_name == "churn.ipynb"
    assert [a.path for a in client.list_artifacts(run.info.run_id, "notebook")] == [
        "notebook/churn.ipynb",
        "notebook/executed_cells.py",
    ]


@pytest.mark.parametrize("away", ["from the start", "after the run opened"])
def test_fits_kept_while_mlflow_is_away_are_logged_by_the_replay(own_mlflow: MlflowServer, tmp_path, away) -> None:
    """The kernel ends before it could log its fit: the server's replay logs it under the run."""
    from mlflow import MlflowClient

    spool = tmp_path / ".spool"
    env = kernel_env(own_mlflow.url, tmp_path, "erin", "kept.ipynb", MLFLOW_HTTP_REQUEST_MAX_RETRIES="0")
    write_notebook(tmp_path, "kept.ipynb", [DATA, FITS[0]])
    if away == "after the run opened":
        own_mlflow.start()
    kernel = Kernel(env, tmp_path)
    try:
        kernel.run("x = 1")
        if away == "after the run opened":
            wait_for(lambda: status(kernel)["run"] not in ("(opening)", "(none yet)"), 60, "the run to open")
            own_mlflow.stop()
        kernel.run(DATA)
        kernel.run(FITS[0])
    finally:
        kernel.shutdown()
    assert [p.name for p in (spool / "fits").iterdir()], "the fit is kept"
    own_mlflow.start()
    replay = replay_spool(spool, own_mlflow.url)
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert "logged: kept fit" in replay.stdout
    client = MlflowClient(own_mlflow.url)
    exp, session = only_run(client, "/Users/erin/kept.ipynb")
    assert session.info.status == "FINISHED"
    (fit,) = children(client, exp, session).values()
    assert (fit.info.run_name, fit.info.status, fit.data.params["C"]) == ("LogisticRegression", "FINISHED", "0.5")
    assert "training_accuracy_score" in fit.data.metrics
    assert fit.data.tags["mlflow.source.name"] == "kept.ipynb"
    assert list((spool / "fits").iterdir()) == [] and list((spool / "pending").iterdir()) == []
