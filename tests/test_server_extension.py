"""The jupyter-server extension: real ``jupyter-server`` processes, real kernels.

Each server runs on a free port with its own config folder holding the
``jupyter_server_config.d/hubforge.json`` the package installs, so these tests
also check that the shipped file enables the extension. Kernels are found as
the server's child processes and their command line and environment read back.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import nbformat
import psutil
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from _platform import free_port, wait_for
from hubforge.server_extension import HubforgeTracking
from hubforge.server_extension.launch import (
    KERNEL_EXTENSION,
    add_extension_argument,
    apply_env,
    is_python_kernel,
    tracking_env,
)

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_CONFIG = ROOT / "server_extension" / "jupyter_server_config.d" / "hubforge.json"
EXTENSION_ARG = f"--IPKernelApp.extensions={KERNEL_EXTENSION}"
TOKEN = "hub-api-token-for-alice"
HUB_ENV = {
    "HUBFORGE_MLFLOW_URL": "http://127.0.0.1:8000/services/mlflow",
    "JUPYTERHUB_API_TOKEN": TOKEN,
    "JUPYTERHUB_USER": "alice",
    "JUPYTERHUB_SERVER_NAME": "gpu-box",
    "HUBFORGE_TIER": "small",
}
#: Variables of an outer hub or test run that would leak into the servers under test.
_SCRUB = ("HUBFORGE_", "JUPYTERHUB_", "MLFLOW_", "JPY_", "JUPYTER_")


class Server:
    """A ``jupyter-server`` subprocess with the extension enabled from a config folder."""

    def __init__(self, tmp: Path, env: dict[str, str], args: tuple[str, ...] = (), sigint_ignored: bool | None = None):
        """``sigint_ignored``: start the server with SIGINT ignored (as a shell's background job
        starts it) or at its default; None inherits this process's."""
        self.tmp = tmp
        self.root = tmp / "root"
        (self.root / "work").mkdir(parents=True)
        conf_d = tmp / "config" / "jupyter_server_config.d"
        conf_d.mkdir(parents=True)
        shutil.copy(SHIPPED_CONFIG, conf_d)
        _fake_kernelspec(tmp / "share" / "kernels" / "fakelang")
        self.port = free_port()
        self.runtime = tmp / "runtime"
        self.log_path = tmp / "server.log"
        base = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUB)}
        base.update(
            JUPYTER_CONFIG_DIR=str(tmp / "config"),
            JUPYTER_PATH=str(tmp / "share"),
            JUPYTER_RUNTIME_DIR=str(self.runtime),
        )
        cmd = [
            str(Path(sys.executable).with_name("jupyter-server")),
            f"--port={self.port}",
            "--ip=127.0.0.1",
            "--no-browser",
            f"--ServerApp.root_dir={self.root}",
            f"--IdentityProvider.token={TOKEN}",
            *args,
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-root")
        disposition = None if sigint_ignored is None else signal.SIG_IGN if sigint_ignored else signal.SIG_DFL

        def sigint() -> None:
            if disposition is not None:
                signal.signal(signal.SIGINT, disposition)

        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                cmd, env={**base, **env}, stdout=log, stderr=subprocess.STDOUT, preexec_fn=sigint
            )
        self.http = httpx.Client(headers={"Authorization": f"token {TOKEN}"}, timeout=30)
        try:
            wait_for(self.ready, 60, "jupyter-server /api/status")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; the server's log:\n{self.log[-3000:]}") from None

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"jupyter-server exited:\n{self.log}")
        # The port asked for can be taken between free_port() and the server's bind (a kernel
        # or a client socket elsewhere on the machine); jupyter-server then moves to another
        # port. Its runtime file says where it really listens.
        info = self.runtime / f"jpserver-{self.proc.pid}.json"
        try:
            self.port = int(json.loads(info.read_text())["port"])
        except (OSError, ValueError, KeyError):
            return False
        self.http.base_url = httpx.URL(f"http://127.0.0.1:{self.port}")
        try:
            return self.http.get("/api/status").status_code == 200
        except httpx.HTTPError:
            return False

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def notebook(self, name: str = "nb.ipynb") -> str:
        """Write an empty notebook under ``work/``; return its API path."""
        nbformat.write(nbformat.v4.new_notebook(), self.root / "work" / name)
        return f"work/{name}"

    def start_session(self, path: str, kernel: str = "python3") -> str:
        body = {"path": path, "name": Path(path).name, "type": "notebook", "kernel": {"name": kernel}}
        resp = self.http.post("/api/sessions", json=body)
        assert resp.status_code == 201, resp.text
        return str(resp.json()["kernel"]["id"])

    def kernel_process(self, kernel_id: str) -> psutil.Process:
        """The child process started for ``kernel_id`` (its connection file names it)."""

        def find() -> psutil.Process | None:
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                try:
                    if any(f"kernel-{kernel_id}.json" in arg for arg in child.cmdline()):
                        return child
                except psutil.NoSuchProcess:
                    continue
            return None

        return wait_for(find, 30, f"kernel {kernel_id}", interval=0.05)

    def stop(self) -> None:
        self.http.close()
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def _fake_kernelspec(folder: Path) -> None:
    # A non-Python "kernel" that only has to stay alive long enough to be inspected.
    folder.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-c", "import sys, time; time.sleep(120)", "{connection_file}"],
        "display_name": "Fake",
        "language": "fakelang",
    }
    (folder / "kernel.json").write_text(json.dumps(spec))


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
