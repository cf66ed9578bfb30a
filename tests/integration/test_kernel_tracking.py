"""The IPython extension in real ipykernel kernels, tracking to a real ``mlflow server``."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest

from harness.kernel import Kernel, children, kernel_env, only_run, write_notebook
from harness.mlflow import MlflowServer
from harness.platform import wait_for
from hubforge.server_extension.kernel.patches import attach_active_run, detach_active_run
from hubforge.server_extension.replay import replay

TRAIN = [
    "from sklearn.datasets import load_iris\nfrom sklearn.linear_model import LogisticRegression",
    "X, y = load_iris(return_X_y=True)\nmodel = LogisticRegression(max_iter=300).fit(X, y)",
    "import mlflow\nfor i in range(50):\n    mlflow.log_metric('custom', i / 50, step=i)\n"
    "mlflow.log_param('alpha', 0.5)",
    "%hubforge_tracking status",
]


#: A cell that waits (up to 60 s) for the session's run to be open.
UNTIL_OPEN = (
    "import time\nfrom hubforge.server_extension.kernel import current_tracker\n"
    "for _ in range(600):\n    if current_tracker().run_id:\n        break\n    time.sleep(0.1)"
)


@pytest.fixture
def client(mlflow_server: MlflowServer):
    from mlflow import MlflowClient

    return MlflowClient(mlflow_server.url)


def run_notebook(
    url: str, root: Path, rel: str, user: str, cells: list[str], timeout: float = 120, **extra: str
) -> list[str]:
    """Execute ``cells`` in a fresh kernel carrying the hub's environment; shut it down; return stdout."""
    server = {"HUBFORGE_SERVER_NAME": "gpu-box", "HUBFORGE_TIER": "small", "HUBFORGE_ORIGIN": "jupyterlab"}
    kernel = Kernel(kernel_env(url, root, user, rel, **server, **extra), root)
    try:
        return [kernel.run(cell, timeout) for cell in cells]
    finally:
        kernel.shutdown()


def finished(runs: dict[str, Any]) -> dict[str, Any] | None:
    """``runs`` once every one has ended (a fit logger may still be logging one)."""
    return runs if runs and all(r.info.status != "RUNNING" for r in runs.values()) else None


def test_notebook_training_is_tracked(mlflow_server: MlflowServer, client, tmp_path: Path) -> None:
    # The run opens in the background; on a loaded machine that can take longer than three cells
    # run back to back. A person looks at status a moment later: so does this notebook.
    write_notebook(tmp_path, "work/train.ipynb", [*TRAIN[:-1], UNTIL_OPEN, TRAIN[-1]])
    cells = [c.source for c in nbformat.read(tmp_path / "work/train.ipynb", as_version=4).cells]
    out = run_notebook(mlflow_server.url, tmp_path, "work/train.ipynb", "alice", cells)
    exp, run = only_run(client, "/Users/alice/work/train.ipynb")
    assert run.info.run_id in "".join(out), "status prints the run id"
    assert run.info.status == "FINISHED"
    tags = run.data.tags
    assert tags["mlflow.source.name"] == "work/train.ipynb"
    assert tags["mlflow.source.type"] == "NOTEBOOK"
    assert tags["mlflow.user"] == "alice"
    assert (tags["hubforge.server"], tags["hubforge.tier"], tags["hubforge.origin"]) == (
        "gpu-box",
        "small",
        "jupyterlab",
    )
    assert tags["hubforge.kernel_id"]
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True)
    assert tags["mlflow.source.git.commit"] == head.stdout.strip()
    assert tags["hubforge.git.dirty"] == "false"
    rid = run.info.run_id
    durations = client.get_metric_history(rid, "hubforge.cell.duration_s")
    assert sorted(m.step for m in durations) == list(range(1, len(cells) + 1)), "cells run while it opened too"
    assert client.get_metric_history(rid, "hubforge.cell.error") == [], "an error mark only for failed cells"
    assert len(client.get_metric_history(rid, "custom")) == 50, "user metrics once each"
    assert run.info.run_name == "train.ipynb"
    assert run.data.params == {"alpha": "0.5"}, "the person's own params; the fit's are its own run's"
    fits = wait_for(lambda: finished(children(client, exp, run)), 120, "the fit's run to end")
    assert list(fits) == ["LogisticRegression"], "each autologged fit is a child run, named after the estimator"
    fit = fits["LogisticRegression"]
    assert fit.info.status == "FINISHED"
    assert fit.data.params["max_iter"] == "300", "sklearn autolog params"
    assert any(k.startswith("training_") for k in fit.data.metrics), "sklearn autolog metrics"
    assert fit.data.tags["mlflow.source.name"] == "work/train.ipynb"
    models = client.search_logged_models(experiment_ids=[exp.experiment_id])
    assert [(m.name, m.source_run_id) for m in models] == [("LogisticRegression", fit.info.run_id)]
    assert [a.path for a in client.list_artifacts(rid, "notebook")] == [
        "notebook/executed_cells.py",
        "notebook/train.ipynb",
    ]
    ran = Path(client.download_artifacts(rid, "notebook/executed_cells.py", str(tmp_path / "dl"))).read_text()
    assert [ran.index(f"# In[{n}]\n{cell}") for n, cell in enumerate(cells, 1)] == sorted(
        ran.index(f"# In[{n}]\n{cell}") for n, cell in enumerate(cells, 1)
    ), "every cell that ran, saved or not, in order"
    local = client.download_artifacts(rid, "notebook/train.ipynb", str(tmp_path / "dl"))
    assert [c.source for c in nbformat.read(local, as_version=4).cells] == cells
    req = Path(client.download_artifacts(rid, "environment/requirements.txt", str(tmp_path / "dl")))
    assert "scikit-learn==" in req.read_text()


def test_tracking_off_creates_no_run(mlflow_server: MlflowServer, client, tmp_path: Path) -> None:
    cells = ["%hubforge_tracking off", "x = 1", "import mlflow\nprint(mlflow.__version__)"]
    write_notebook(tmp_path, "off.ipynb", cells)
    run_notebook(mlflow_server.url, tmp_path, "off.ipynb", "bob", cells)
    exp = client.get_experiment_by_name("/Users/bob/off.ipynb")
    assert exp is None or not client.search_runs([exp.experiment_id])


def test_error_in_last_cell_fails_the_run(mlflow_server: MlflowServer, client, tmp_path: Path) -> None:
    cells = ["x = 1", "raise ValueError('boom')"]
    write_notebook(tmp_path, "fail.ipynb", cells)
    run_notebook(mlflow_server.url, tmp_path, "fail.ipynb", "carol", cells)
    _, run = only_run(client, "/Users/carol/fail.ipynb")
    assert run.info.status == "FAILED"
    errors = client.get_metric_history(run.info.run_id, "hubforge.cell.error")
    assert [(m.step, m.value) for m in errors] == [(2, 1.0)], "the failed cell is marked, the other is not"


def test_mlflow_away_at_the_first_cell_loses_nothing(own_mlflow: MlflowServer, tmp_path: Path) -> None:
    """MLflow is down when the notebook starts: cells run, the person is told once, and when
    MLflow comes up the run opens and every cell's metrics arrive."""
    from mlflow import MlflowClient

    # Each attempt fails at once; hubforge retries.
    env = kernel_env(own_mlflow.url, tmp_path, "erin", "away.ipynb", MLFLOW_HTTP_REQUEST_MAX_RETRIES="0")
    kernel = Kernel(env, tmp_path)
    said: list[str] = []
    try:
        for i in range(1, 6):
            said += [kernel.run(f"x = {i}"), kernel.run("import time; time.sleep(0.5)")]
        assert "".join(said).count("MLflow not reachable") == 1, said  # told once, not per retry
        own_mlflow.start()
        client = MlflowClient(own_mlflow.url)
        exp = wait_for(lambda: client.get_experiment_by_name("/Users/erin/away.ipynb"), 120, "the run to open")
        for i in range(6, 9):
            kernel.run(f"x = {i}")
    finally:
        kernel.shutdown()
    (run,) = client.search_runs([exp.experiment_id])
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "hubforge.cell.duration_s"))
    assert steps == list(range(1, 14)), "every cell, before and after MLflow came, exactly once"
    assert run.info.status == "FINISHED"


@pytest.fixture
def unresponsive_mlflow() -> Iterator[str]:
    """An MLflow URL whose server accepts connections and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_no_cell_waits_for_an_unresponsive_mlflow(unresponsive_mlflow: str, tmp_path: Path) -> None:
    """The run opens off the cells' path: cells finish while MLflow has not answered (for 10 minutes)."""
    cells = ["x = 1", "x += 1", "print(x)", "%hubforge_tracking status"]
    out = "".join(
        run_notebook(unresponsive_mlflow, tmp_path, "slow.ipynb", "dave", cells, 60, MLFLOW_HTTP_REQUEST_TIMEOUT="600")
    )
    assert "2\n" in out
    assert "run: (opening)" in out


def test_the_kernels_start_is_frozen_and_a_notebooks_own_cycles_are_still_collected(
    mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    """MLflow's modules stay out of the kernel's full collections; a person's cyclic garbage,
    made in the first cell and dropped later, is freed all the same."""
    cells = [
        "import gc, weakref\n"
        "class Frame:\n    pass\n"
        "df = Frame(); df.accessor = Frame(); df.accessor.parent = df  # a cycle, as pandas' accessors make\n"
        "alive = weakref.ref(df)\n"
        "import mlflow\n"
        "print('frozen', gc.get_freeze_count())",
        "del df\ngc.collect()\nprint('collected', alive() is None)",
    ]
    out = "".join(run_notebook(mlflow_server.url, tmp_path, "heap.ipynb", "erin", cells))
    frozen = int(re.search(r"frozen (\d+)", out).group(1))
    assert frozen > 100_000, out
    assert "collected True" in out


def test_a_run_opened_on_another_thread_becomes_the_active_run(mlflow_server, client, monkeypatch) -> None:
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    experiment = client.create_experiment(f"handover-{os.urandom(4).hex()}")
    opened = []

    def opener() -> None:
        run = mlflow.start_run(experiment_id=experiment)
        detach_active_run(mlflow, run)
        opened.append((run, mlflow.active_run()))

    thread = threading.Thread(target=opener)
    thread.start()
    thread.join(60)
    run, left_on_opener = opened[0]
    assert left_on_opener is None
    assert mlflow.active_run() is None
    assert attach_active_run(mlflow, run)
    try:
        assert mlflow.active_run().info.run_id == run.info.run_id
        assert not attach_active_run(mlflow, run), "never stacked on an active run"
    finally:
        mlflow.end_run()
    assert client.get_run(run.info.run_id).info.status == "FINISHED"


def test_a_kernel_restart_ends_the_run_and_the_next_cells_open_another(mlflow_server, client, tmp_path) -> None:
    """Restart is the end of a run (snapshot, environment, status) and the start of the next."""
    write_notebook(tmp_path, "restart.ipynb", ["x = 1"])
    kernel = Kernel(kernel_env(mlflow_server.url, tmp_path, "frank", "restart.ipynb"), tmp_path)
    try:
        for code in ("x = 1", "x = 2"):
            kernel.run(code)
        kernel.km.restart_kernel(now=False)
        kernel.kc.wait_for_ready(timeout=60)
        for code in ("y = 1", "raise ValueError('after the restart')"):
            kernel.run(code)
    finally:
        kernel.shutdown()
    # On a loaded machine MLflow may answer too late for the ending kernel, which keeps the
    # end of its run for the server to send: send it as the server's replayer would.
    replay(tmp_path / ".spool", mlflow_server.url, client=client)
    exp = client.get_experiment_by_name("/Users/frank/restart.ipynb")
    runs = sorted(client.search_runs([exp.experiment_id]), key=lambda r: r.info.start_time)
    assert [r.info.status for r in runs] == ["FINISHED", "FAILED"], "one run per kernel process"
    first, second = (r.info.run_id for r in runs)
    assert [a.path for a in client.list_artifacts(first, "notebook")] == [
        "notebook/executed_cells.py",
        "notebook/restart.ipynb",
    ]
    assert steps_of(client, first) == [1, 2] and steps_of(client, second) == [1, 2]
    assert runs[0].data.tags["hubforge.kernel_id"] == runs[1].data.tags["hubforge.kernel_id"]


def steps_of(client, run_id: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, "hubforge.cell.duration_s"))


def test_an_experiment_made_meanwhile_by_another_kernel_is_used(client) -> None:
    """MLflow's real answer when the experiment appeared between our look and our create."""
    from hubforge.server_extension.kernel.context import experiment_named

    name = "/Users/alice/raced.ipynb"
    made = client.create_experiment(name)  # by the other kernel, after this one looked
    looks = iter([None])

    def get_by_name(wanted: str) -> Any:
        return next(looks, None) or client.get_experiment_by_name(wanted)

    assert experiment_named(get_by_name, client.create_experiment, name) == made
    with pytest.raises(Exception, match=r"INVALID_PARAMETER_VALUE|must"):  # other refusals stand
        experiment_named(lambda _name: None, client.create_experiment, "")


def test_two_kernels_of_one_notebook_started_at_once_both_track(
    mlflow_server: MlflowServer, client, tmp_path: Path
) -> None:
    """The notebook open twice (or run by papermill twice in parallel): one experiment, two runs."""
    write_notebook(tmp_path, "twice.ipynb", ["x = 1"])
    env = kernel_env(mlflow_server.url, tmp_path, "alice", "twice.ipynb")
    kernels: list[Kernel] = []
    starters = [threading.Thread(target=lambda: kernels.append(Kernel(env, tmp_path))) for _ in range(2)]
    for starter in starters:
        starter.start()
    for starter in starters:
        starter.join(120)
    try:
        assert len(kernels) == 2
        threads = [threading.Thread(target=kernel.run, args=("x = 1",)) for kernel in kernels]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)

        def both_open() -> bool:
            status = [kernel.run("%hubforge_tracking status") for kernel in kernels]
            return all(re.search(r"^run: [0-9a-f]{16,}$", text, re.M) for text in status)

        wait_for(both_open, 60, "both kernels' runs to open")
    finally:
        for kernel in kernels:
            kernel.shutdown()
    exp = client.get_experiment_by_name("/Users/alice/twice.ipynb")
    runs = [r for r in client.search_runs([exp.experiment_id]) if "mlflow.parentRunId" not in r.data.tags]
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
