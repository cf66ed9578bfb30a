"""The jupyter-server extension: real ``jupyter-server`` processes, real kernels.

Each server runs on a free port with its own config folder holding the
``jupyter_server_config.d/hubforge.json`` the package installs, so these tests
also check that the shipped file enables the extension. Kernels are found as
the server's child processes and their command line and environment read back.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from harness.platform import wait_for
from harness.server import TOKEN, Server
from hubforge.server_extension import HubforgeTracking
from hubforge.server_extension.launch import (
    KERNEL_EXTENSION,
    add_extension_argument,
    apply_env,
    is_python_kernel,
    tracking_env,
)

EXTENSION_ARG = f"--IPKernelApp.extensions={KERNEL_EXTENSION}"
HUB_ENV = {
    "HUBFORGE_MLFLOW_URL": "http://127.0.0.1:8000/services/mlflow",
    "JUPYTERHUB_API_TOKEN": TOKEN,
    "JUPYTERHUB_USER": "alice",
    "JUPYTERHUB_SERVER_NAME": "gpu-box",
    "HUBFORGE_TIER": "small",
}


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Any]:
    started: list[Server] = []

    def start(env: dict[str, str], *args: str, name: str = "s") -> Server:
        server = Server(tmp_path / name, env, args)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def hub_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server as the hub starts it: MLflow URL, hub token and user in its environment."""
    server = Server(tmp_path_factory.mktemp("hub"), {**HUB_ENV, "MLFLOW_TRACKING_USERNAME": "jovyan"})
    yield server
    server.stop()


# -- a real server, real kernels ---------------------------------------------------------------------


def test_server_loads_extension_cleanly(hub_server: Server) -> None:
    assert hub_server.http.get("/api/status").status_code == 200
    log = hub_server.log
    assert f"hubforge: Python kernels load {KERNEL_EXTENSION} (tracking on)" in log
    assert "hubforge.server_extension | extension was successfully loaded" in log
    assert "Traceback" not in log.split("hubforge: Python kernels load")[0]


def test_session_kernel_carries_tracking_env(hub_server: Server) -> None:
    path = hub_server.notebook()
    proc = hub_server.kernel_process(hub_server.start_session(path))
    assert EXTENSION_ARG in proc.cmdline()
    env = proc.environ()
    assert env["MLFLOW_TRACKING_URI"] == HUB_ENV["HUBFORGE_MLFLOW_URL"]
    assert env["MLFLOW_TRACKING_TOKEN"] == TOKEN
    # jupyter_server's SessionManager.get_kernel_env: the notebook's OS path.
    assert os.path.realpath(env["JPY_SESSION_NAME"]) == os.path.realpath(hub_server.root / path)
    assert env["HUBFORGE_ORIGIN"] == "jupyterlab"
    assert env["HUBFORGE_TRACKING"] == "on"
    assert env["JUPYTERHUB_USER"] == "alice"
    assert env["HUBFORGE_SERVER_NAME"] == "gpu-box"
    assert env["HUBFORGE_TIER"] == "small"
    assert os.path.realpath(env["HUBFORGE_NOTEBOOK_ROOT"]) == os.path.realpath(hub_server.root)
    # MLflow prefers basic auth to a token: a hub kernel must not run as "jovyan".
    assert "MLFLOW_TRACKING_USERNAME" not in env


def test_plain_kernel_start_and_restart_keep_tracking(hub_server: Server) -> None:
    resp = hub_server.http.post("/api/kernels", json={"name": "python3"})
    assert resp.status_code == 201, resp.text
    kernel_id = resp.json()["id"]
    first = hub_server.kernel_process(kernel_id)
    assert EXTENSION_ARG in first.cmdline()
    assert first.environ()["MLFLOW_TRACKING_TOKEN"] == TOKEN
    assert hub_server.http.post(f"/api/kernels/{kernel_id}/restart").status_code == 200
    wait_for(lambda: not first.is_running() or first.status() == psutil.STATUS_ZOMBIE, 30, "old kernel")
    second = hub_server.kernel_process(kernel_id)
    assert second.pid != first.pid
    assert second.cmdline().count(EXTENSION_ARG) == 1
    assert second.environ()["HUBFORGE_ORIGIN"] == "jupyterlab"


def test_non_python_kernel_is_left_alone(hub_server: Server) -> None:
    proc = hub_server.kernel_process(hub_server.start_session(hub_server.notebook("fake.ipynb"), "fakelang"))
    assert EXTENSION_ARG not in proc.cmdline()
    env = proc.environ()
    assert "HUBFORGE_ORIGIN" not in env
    assert "MLFLOW_TRACKING_TOKEN" not in env


def test_tracking_off_from_server_env(server_factory: Any) -> None:
    server = server_factory({**HUB_ENV, "HUBFORGE_TRACKING": "off"})
    env = server.kernel_process(server.start_session(server.notebook())).environ()
    assert env["HUBFORGE_TRACKING"] == "off"
    assert "(tracking off)" in server.log


def test_tracking_off_from_config(server_factory: Any) -> None:
    server = server_factory(HUB_ENV, "--HubforgeTracking.enabled=False", "--HubforgeTracking.origin=voila")
    env = server.kernel_process(server.start_session(server.notebook())).environ()
    assert env["HUBFORGE_TRACKING"] == "off"
    assert env["HUBFORGE_ORIGIN"] == "voila"


def test_outside_a_hub_user_mlflow_settings_pass_through(server_factory: Any) -> None:
    mine = {"MLFLOW_TRACKING_URI": "http://mlflow.example:5000", "MLFLOW_TRACKING_USERNAME": "me"}
    server = server_factory(mine)
    proc = server.kernel_process(server.start_session(server.notebook()))
    env = proc.environ()
    assert EXTENSION_ARG in proc.cmdline()
    assert env["MLFLOW_TRACKING_URI"] == mine["MLFLOW_TRACKING_URI"]
    assert env["MLFLOW_TRACKING_USERNAME"] == "me"
    assert "MLFLOW_TRACKING_TOKEN" not in env
    assert "JUPYTERHUB_USER" not in env


def test_extension_disabled_leaves_kernels_alone(server_factory: Any) -> None:
    server = server_factory(HUB_ENV, "--ServerApp.jpserver_extensions=hubforge.server_extension=False")
    proc = server.kernel_process(server.start_session(server.notebook()))
    assert EXTENSION_ARG not in proc.cmdline()
    assert "HUBFORGE_ORIGIN" not in proc.environ()


# -- the pure parts ---------------------------------------------------------------------------------------


def test_tracking_env_in_and_out_of_a_hub() -> None:
    inside = tracking_env(HUB_ENV, root_dir="/home/alice")
    assert inside["MLFLOW_TRACKING_URI"] == HUB_ENV["HUBFORGE_MLFLOW_URL"]
    assert inside["MLFLOW_TRACKING_TOKEN"] == TOKEN
    outside = tracking_env({"MLFLOW_TRACKING_URI": "file:///x"}, root_dir="/r", origin="voila")
    assert "MLFLOW_TRACKING_URI" not in outside  # the base env's value stays
    assert outside == {"HUBFORGE_ORIGIN": "voila", "HUBFORGE_NOTEBOOK_ROOT": "/r", "HUBFORGE_TRACKING": "on"}
    assert tracking_env({"HUBFORGE_TRACKING": "OFF"}, root_dir="/r")["HUBFORGE_TRACKING"] == "off"
    assert tracking_env({}, root_dir="/r", enabled=False)["HUBFORGE_TRACKING"] == "off"


def test_apply_env_drops_competing_credentials_only_in_a_hub() -> None:
    base = {"MLFLOW_TRACKING_PASSWORD": "pw", "PATH": "/bin"}
    assert apply_env(base, HUB_ENV, {"A": "1"}) == {"PATH": "/bin", "A": "1"}
    assert apply_env(base, {}, {"A": "1"}) == {**base, "A": "1"}


def test_extension_argument_added_once() -> None:
    once = add_extension_argument(["--x"])
    assert add_extension_argument(once) == ["--x", EXTENSION_ARG]


def test_is_python_kernel() -> None:
    class Spec:
        language = "Python"

    assert is_python_kernel(Spec())
    Spec.language = "R"
    assert not is_python_kernel(Spec())
    assert not is_python_kernel(object())


def test_settings_are_configurable_with_help() -> None:
    for name in ("enabled", "origin", "kernel_extension"):
        trait = HubforgeTracking.class_traits()[name]
        assert trait.metadata.get("config") and trait.help, name


def test_public_api_is_explicit() -> None:
    import hubforge.server_extension as package
    from hubforge.server_extension import app, launch

    for module in (package, app, launch):
        assert module.__doc__ and module.__all__, module.__name__
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"
