"""Every way jupyter-server ends a kernel ends its MLflow run properly, with its artifacts.

A real ``jupyter-server`` with the extension and a real ``mlflow server``:
``DELETE /api/kernels/<id>``, idle culling, and the server itself stopped: with
SIGTERM (as Kubernetes stops a pod) or SIGINT (as JupyterHub's local spawner
does; without a terminal, jupyter-server would take it as a KeyboardInterrupt
and leave its kernels to die), also when the server was started with SIGINT
ignored, as every process a shell starts in the background is. Each run must end FINISHED with the notebook and
the environment, and its fit must be logged.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from harness.kernel import Kernel, kernel_env
from harness.mlflow import MlflowServer
from harness.platform import wait_for
from harness.server import KernelChannel, Server

CELLS = [
    "from sklearn.datasets import load_iris\nfrom sklearn.tree import DecisionTreeClassifier",
    "X, y = load_iris(return_X_y=True)\ntree = DecisionTreeClassifier(max_depth=2).fit(X, y)",
]


def open_kernel(server: Server, path: str) -> tuple[str, KernelChannel]:
    """A session for ``path`` and its kernel's websocket, as JupyterLab opens a notebook."""
    kernel_id = server.start_session(path)
    base = str(server.http.base_url).replace("http", "ws", 1)
    return kernel_id, KernelChannel(f"{base}/api/kernels/{kernel_id}/channels", server.http.headers["Authorization"])


def ended_run(client: Any, experiment: str) -> Any:
    """The notebook's run once it has ended with its snapshot, and its fits' runs; None before."""
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id]) if exp else []
    session = [r for r in runs if "mlflow.parentRunId" not in r.data.tags and r.info.status != "RUNNING"]
    fits = [r for r in runs if "mlflow.parentRunId" in r.data.tags and r.info.status != "RUNNING"]
    if not session or not fits or not client.list_artifacts(session[0].info.run_id, "notebook"):
        return None
    return session[0], fits


ENDINGS = [
    "DELETE /api/kernels",
    "idle culling",
    "SIGINT to the server",
    "SIGINT to a server started in the background",
    "SIGTERM to the server",
]


@pytest.mark.parametrize("how", ENDINGS)
def test_every_way_the_server_ends_a_kernel(mlflow_server: MlflowServer, tmp_path: Path, how: str) -> None:
    from mlflow import MlflowClient

    env = {"HUBFORGE_MLFLOW_URL": mlflow_server.url, "JUPYTERHUB_USER": "zoe"}
    env["HUBFORGE_SPOOL_DIR"] = str(tmp_path / "spool")
    culling = ("--MappingKernelManager.cull_idle_timeout=3", "--MappingKernelManager.cull_interval=1")
    background = how.endswith("in the background")
    server = Server(tmp_path / "server", env, culling if how == "idle culling" else (), sigint_ignored=background)
    name = how.split()[0].lower() + ("-background" if background else "") + ".ipynb"
    try:
        path = server.notebook(name)
        kernel_id, kernel = open_kernel(server, path)
        for code in CELLS:
            assert kernel.execute(code).status == "ok"
        kernel.close()  # JupyterLab closed: no client keeps the kernel busy
        if how == "DELETE /api/kernels":
            assert server.http.delete(f"/api/kernels/{kernel_id}", timeout=90).status_code == 204
        elif how == "idle culling":
            wait_for(lambda: server.http.get(f"/api/kernels/{kernel_id}").status_code == 404, 90, "the cull")
        else:
            server.proc.send_signal(signal.SIGINT if how.startswith("SIGINT") else signal.SIGTERM)
            try:
                server.proc.wait(90)
            except subprocess.TimeoutExpired:
                pytest.fail(f"the server did not stop within 90 s of {how}; its log ends:\n{server.log[-6000:]}")
    finally:
        server.stop()
    client = MlflowClient(mlflow_server.url)
    session, fits = wait_for(lambda: ended_run(client, f"/Users/zoe/work/{name}"), 60, "the run and its fit")
    assert session.info.status == "FINISHED", how
    assert [a.path for a in client.list_artifacts(session.info.run_id)] == ["environment", "notebook"]
    assert [(f.info.run_name, f.info.status, f.data.params["max_depth"]) for f in fits] == [
        ("DecisionTreeClassifier", "FINISHED", "2")
    ]
    assert "died without ending" not in server.log, "no run was left to be ended KILLED"


def test_a_kernel_shut_down_while_it_imports_mlflow_lets_the_import_end_first(tmp_path: Path) -> None:
    """A tracked kernel imports MLflow on a thread of its own as it starts. Shut down in those
    seconds (a notebook opened and closed at once, a server stopped right after a start), it
    used to end its interpreter with that thread still inside the import machinery: the
    thread is frozen there, and a kernel that then imports anything on its way out waits for
    its lock for good, an orphan once its server has gone. Its exit now waits for the import.

    Here the import is made slow (an ``mlflow`` of three seconds ahead on the path) and the
    kernel is shut down as soon as it answers, as the server does it.
    """
    slow = tmp_path / "slow" / "mlflow"
    slow.mkdir(parents=True)
    done = tmp_path / "imported"
    (slow / "__init__.py").write_text(f"import pathlib, time\ntime.sleep(3)\npathlib.Path({str(done)!r}).touch()\n")
    env = kernel_env("http://127.0.0.1:9", tmp_path, "alice", "opened-and-closed.ipynb", PYTHONPATH=str(slow.parent))
    kernel = Kernel(env, tmp_path)
    assert not done.exists(), "the kernel answers before its MLflow import ends"
    kernel.shutdown()
    assert done.exists(), "the kernel ended before the import it had begun"
    assert not kernel.km.is_alive()
