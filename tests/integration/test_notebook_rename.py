"""Renames and moves through jupyter-server's own REST API reach the running kernel's run.

A real ``jupyter-server`` with the extension, a real kernel spoken to over its
websocket, a real ``mlflow server``. JupyterLab renames an open notebook with
``PATCH /api/contents/<path>`` and then ``PATCH /api/sessions/<id>``; other
clients only do the first, and moving a folder moves every notebook in it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.mlflow import MlflowServer
from harness.platform import wait_for
from harness.server import KernelChannel, Server, notebook_session


def status(kernel: KernelChannel) -> dict[str, str]:
    out = kernel.execute("%hubforge_tracking status").stdout
    return dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)


def rename(server: Server, old: str, new: str) -> None:
    resp = server.http.patch(f"/api/contents/{old}", json={"path": new})
    assert resp.status_code == 200, resp.text


def session_run(client: Any, experiment: str) -> Any:
    exp = client.get_experiment_by_name(experiment)
    runs = [r for r in client.search_runs([exp.experiment_id]) if r.info.status != "RUNNING"] if exp else []
    return runs[0] if runs else None


def test_renames_and_folder_moves_are_followed(mlflow_server: MlflowServer, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    env = {"HUBFORGE_MLFLOW_URL": mlflow_server.url, "JUPYTERHUB_USER": "alice"}
    env["HUBFORGE_SPOOL_DIR"] = str(tmp_path / "spool")
    server = Server(tmp_path / "server", env)
    try:
        created = server.http.post("/api/contents", json={"type": "notebook"})
        assert created.status_code == 201, created.text
        untitled = created.json()["path"]
        assert untitled == "Untitled.ipynb"
        with notebook_session(server.http, "", untitled) as kernel:
            kernel.execute("x = 1")
            seen = [status(kernel)["notebook"]]
            # Another client renames it: only the contents API hears of it.
            server.http.put("/api/contents/work", json={"type": "directory"})
            rename(server, untitled, "work/churn.ipynb")
            seen.append(wait_for(lambda: _moved_to(kernel, "work/churn.ipynb"), 30, "the kernel to hear of it"))
            rename(server, "work", "projects")
            seen.append(wait_for(lambda: _moved_to(kernel, "projects/churn.ipynb"), 30, "the folder move"))
            kernel.execute("y = 2")
        kernels = list((tmp_path / "spool" / "kernels").glob("*.json"))
    finally:
        server.stop()
    assert seen == ["Untitled.ipynb", "work/churn.ipynb", "projects/churn.ipynb"]
    assert kernels == [], "the session's end forgets its kernel's notebook"
    client = MlflowClient(mlflow_server.url)
    run = wait_for(lambda: session_run(client, "/Users/alice/projects/churn.ipynb"), 30, "the run to end")
    assert run.data.tags["mlflow.source.name"] == "projects/churn.ipynb"
    assert run.info.run_name == "churn.ipynb"
    assert [a.path for a in client.list_artifacts(run.info.run_id, "notebook")] == [
        "notebook/churn.ipynb",
        "notebook/executed_cells.py",
    ]


def test_jupyterlabs_session_update_is_followed(mlflow_server: MlflowServer, tmp_path: Path) -> None:
    """What JupyterLab sends when a person renames an open notebook: contents, then session."""
    from mlflow import MlflowClient

    env = {"HUBFORGE_MLFLOW_URL": mlflow_server.url, "JUPYTERHUB_USER": "bob"}
    env["HUBFORGE_SPOOL_DIR"] = str(tmp_path / "spool")
    server = Server(tmp_path / "server", env)
    try:
        path = server.notebook("draft.ipynb")
        with notebook_session(server.http, "", path) as kernel:
            kernel.execute("x = 1")
            (session,) = server.http.get("/api/sessions").json()
            rename(server, path, "work/final.ipynb")
            patched = server.http.patch(
                f"/api/sessions/{session['id']}", json={"path": "work/final.ipynb", "name": "final.ipynb"}
            )
            assert patched.status_code == 200, patched.text
            assert _moved_to(kernel, "work/final.ipynb")
    finally:
        server.stop()
    client = MlflowClient(mlflow_server.url)
    # The run opened under the old name: its experiment stays, its tags and snapshot follow.
    run = wait_for(lambda: session_run(client, "/Users/bob/work/draft.ipynb"), 30, "the run to end")
    assert run.data.tags["hubforge.notebook"] == "work/final.ipynb"
    assert [a.path for a in client.list_artifacts(run.info.run_id, "notebook")] == [
        "notebook/executed_cells.py",
        "notebook/final.ipynb",
    ]


def _moved_to(kernel: KernelChannel, path: str) -> str | None:
    now = status(kernel)["notebook"]
    return now if now == path else None
