"""Voila pages are tracked like notebooks, with origin ``voila``.

A real jupyter-server with Voila's server extension (enabled on install, as in a
user's server) renders a notebook at ``/voila/render/<path>``; its kernel opens a
run in a real MLflow server named after that notebook.
"""

from __future__ import annotations

from pathlib import Path

import nbformat

from harness.mlflow import MlflowServer
from harness.platform import wait_for
from harness.server import Server
from hubforge.server_extension.launch import voila_notebook


def test_voila_kernels_are_recognised_by_voilas_own_variables() -> None:
    page = {"SERVER_SOFTWARE": "voila/0.5.13", "VOILA_BASE_URL": "/user/ann/",
            "SCRIPT_NAME": "/user/ann/voila/render/apps/churn%20report.ipynb"}  # fmt: skip
    assert voila_notebook(page) == "apps/churn report.ipynb"
    assert voila_notebook({**page, "SCRIPT_NAME": "/user/ann/"}) == ""
    assert voila_notebook({"SERVER_SOFTWARE": "TornadoServer/6.5"}) is None
    assert voila_notebook({}) is None


def test_a_voila_page_is_a_tracked_run_with_origin_voila(mlflow_server: MlflowServer, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    env = {
        "HUBFORGE_MLFLOW_URL": mlflow_server.url,
        "JUPYTERHUB_USER": "ann",
        "HUBFORGE_SPOOL_DIR": str(tmp_path / "spool"),
    }
    server = Server(tmp_path / "server", env)
    try:
        app = nbformat.v4.new_notebook()
        app.cells = [nbformat.v4.new_code_cell("threshold = 0.7\nprint('approved' if 0.9 > threshold else 'no')")]
        nbformat.write(app, server.root / "work" / "approval app.ipynb")
        page = server.http.get("/voila/render/work/approval%20app.ipynb", timeout=120)
        assert page.status_code == 200, page.text[:500]
        assert "approved" in page.text
        client = MlflowClient(mlflow_server.url)
        name = "/Users/ann/work/approval app.ipynb"
        exp = wait_for(lambda: client.get_experiment_by_name(name), 60, f"experiment {name}")
        run = wait_for(lambda: (client.search_runs([exp.experiment_id]) or [None])[0], 60, "the page's run")
        assert run.data.tags["hubforge.origin"] == "voila"
        assert run.data.tags["mlflow.source.name"] == "work/approval app.ipynb"
        assert run.data.tags["mlflow.user"] == "ann"
    finally:
        server.stop()
