"""``papermill --engine hubforge``: how the engine prepares a kernel's launch, in process.

A real papermill process running a real kernel is in tests/integration/test_papermill_engine.py.
"""

from __future__ import annotations

import json
import os

from hubforge.server_extension.launch import KERNEL_EXTENSION
from hubforge.server_extension.papermill_engine import HubforgeEngine, kernel_launch


def test_kernel_launch_in_a_hub() -> None:
    hub = {"HUBFORGE_MLFLOW_URL": "http://hub/services/mlflow", "JUPYTERHUB_API_TOKEN": "tok", "X": "1"}
    env, _ = kernel_launch(
        hub, input_path="in.ipynb", output_path="out.ipynb", parameters={}, run_id_file="f", cwd="/w"
    )
    assert env["MLFLOW_TRACKING_URI"] == hub["HUBFORGE_MLFLOW_URL"]
    assert env["MLFLOW_TRACKING_TOKEN"] == "tok"
    assert env["HUBFORGE_ORIGIN"] == "papermill" and env["X"] == "1"
    assert env["JPY_SESSION_NAME"] == os.path.abspath("in.ipynb")


def test_kernel_launch_contract() -> None:
    env, args = kernel_launch(
        {"PATH": "/bin", "HUBFORGE_TRACKING": "off"},
        input_path="s3://bucket/in.ipynb",
        output_path="-",
        parameters={"when": object},
        run_id_file="/tmp/x/run_id",
        cwd="/work",
    )
    assert args == [f"--IPKernelApp.extensions={KERNEL_EXTENSION}"]
    assert env["JPY_SESSION_NAME"] == "s3://bucket/in.ipynb"
    assert "HUBFORGE_OUTPUT_NOTEBOOK" not in env
    assert env["HUBFORGE_TRACKING"] == "off" and env["PATH"] == "/bin"
    assert json.loads(env["HUBFORGE_PARAMETERS"]) == {"when": str(object)}


def test_engine_is_an_nbclient_engine() -> None:
    from papermill.engines import NBClientEngine

    assert issubclass(HubforgeEngine, NBClientEngine)
