"""The IPython extension in real ipykernel kernels, tracking to a real ``mlflow server``."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from jupyter_client.manager import KernelManager
from test_kernel_queue import MlflowServer

EXTENSION = "--IPKernelApp.extensions=hubforge.server_extension.kernel"

TRAIN = [
    "from sklearn.datasets import load_iris\nfrom sklearn.linear_model import LogisticRegression",
    "X, y = load_iris(return_X_y=True)\nmodel = LogisticRegression(max_iter=300).fit(X, y)",
    "import mlflow\nfor i in range(50):\n    mlflow.log_metric('custom', i / 50, step=i)\n"
    "mlflow.log_param('alpha', 0.5)",
    "%hubforge_tracking status",
]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-kernel"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def client(mlflow_server: MlflowServer):
    from mlflow import MlflowClient

    return MlflowClient(mlflow_server.url)


def write_notebook(root: Path, rel: str, cells: list[str]) -> Path:
    """A real .ipynb in a git repository (committed, so the run's dirty flag is false)."""
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells]), path)
    git = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@example.test"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "nb"], check=True)
    return path


def run_notebook(server: MlflowServer, root: Path, rel: str, user: str, cells: list[str]) -> list[str]:
    """Execute ``cells`` in a fresh kernel carrying the hub's environment; shut it down; return stdout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HUBFORGE_", "JPY_"))}
    env.update(
        MLFLOW_TRACKING_URI=server.url,
        JUPYTERHUB_USER=user,
        HUBFORGE_SERVER_NAME="gpu-box",
        HUBFORGE_TIER="small",
        HUBFORGE_ORIGIN="jupyterlab",
        JPY_SESSION_NAME=rel,
        HUBFORGE_NOTEBOOK_ROOT=str(root),
        HUBFORGE_SPOOL_DIR=str(root / ".spool"),
    )
    km = KernelManager(kernel_name="python3")
    km.shutdown_wait_time = 60
    km.start_kernel(extra_arguments=[EXTENSION], env=env, cwd=str(root))
    kc = km.client()
    kc.start_channels()
    out: list[str] = []

    def hook(msg: dict) -> None:
        if msg["msg_type"] == "stream":
            out.append(msg["content"]["text"])

    try:
        kc.wait_for_ready(timeout=60)
        for cell in cells:
            kc.execute_interactive(cell, timeout=120, output_hook=hook)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)
    return out


def only_run(client, name: str):
    exp = client.get_experiment_by_name(name)
    assert exp is not None, f"no experiment {name}"
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    return exp, runs[0]


def test_notebook_training_is_tracked(mlflow_server: MlflowServer, client, tmp_path: Path) -> None:
    write_notebook(tmp_path, "work/train.ipynb", TRAIN)
    cells = [c.source for c in nbformat.read(tmp_path / "work/train.ipynb", as_version=4).cells]
    out = run_notebook(mlflow_server, tmp_path, "work/train.ipynb", "alice", cells)
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
    assert len(client.get_metric_history(rid, "hubforge.cell.duration_s")) == len(cells)
    assert [m.value for m in client.get_metric_history(rid, "hubforge.cell.error")] == [0.0] * len(cells)
    assert len(client.get_metric_history(rid, "custom")) == 50, "user metrics once each"
    assert run.data.params["alpha"] == "0.5"
    assert run.data.params["max_iter"] == "300", "sklearn autolog params"
    assert any(k.startswith("training_") for k in run.data.metrics), "sklearn autolog metrics"
    models = client.search_logged_models(experiment_ids=[exp.experiment_id])
    assert any(m.source_run_id == rid for m in models), "autologged model"
    assert [a.path for a in client.list_artifacts(rid, "notebook")] == ["notebook/train.ipynb"]
    local = client.download_artifacts(rid, "notebook/train.ipynb", str(tmp_path / "dl"))
    assert [c.source for c in nbformat.read(local, as_version=4).cells] == cells
    req = Path(client.download_artifacts(rid, "environment/requirements.txt", str(tmp_path / "dl")))
    assert "scikit-learn==" in req.read_text()


def test_tracking_off_creates_no_run(mlflow_server: MlflowServer, client, tmp_path: Path) -> None:
    cells = ["%hubforge_tracking off", "x = 1", "import mlflow\nprint(mlflow.__version__)"]
    write_notebook(tmp_path, "off.ipynb", cells)
    run_notebook(mlflow_server, tmp_path, "off.ipynb", "bob", cells)
    exp = client.get_experiment_by_name("/Users/bob/off.ipynb")
    assert exp is None or not client.search_runs([exp.experiment_id])


def test_error_in_last_cell_fails_the_run(mlflow_server: MlflowServer, client, tmp_path: Path) -> None:
    cells = ["x = 1", "raise ValueError('boom')"]
    write_notebook(tmp_path, "fail.ipynb", cells)
    run_notebook(mlflow_server, tmp_path, "fail.ipynb", "carol", cells)
    _, run = only_run(client, "/Users/carol/fail.ipynb")
    assert run.info.status == "FAILED"
    errors = client.get_metric_history(run.info.run_id, "hubforge.cell.error")
    assert [m.value for m in sorted(errors, key=lambda m: m.step)] == [0.0, 1.0]
