"""A ``jupyter-server`` with hubforge's extension as a process, and a kernel's websocket.

``Server`` starts a real ``jupyter-server`` on a free port with its own config folder
holding the ``jupyter_server_config.d/hubforge.json`` the package installs;
``KernelChannel`` speaks to a kernel over ``/api/kernels/<id>/channels`` as JupyterLab
does, and ``notebook_session`` opens one through a server's REST API (a standalone
server here, or a person's server behind the hub).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import nbformat
import psutil
import websocket

from harness.platform import free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
SHIPPED_CONFIG = ROOT / "server_extension" / "jupyter_server_config.d" / "hubforge.json"
TOKEN = "hub-api-token-for-alice"
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
        self.audit_dir = tmp / "audit"
        base = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUB)}
        base.update(
            JUPYTER_CONFIG_DIR=str(tmp / "config"),
            JUPYTER_PATH=str(tmp / "share"),
            JUPYTER_RUNTIME_DIR=str(self.runtime),
            HUBFORGE_AUDIT_DIR=str(self.audit_dir),
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


@dataclass
class Execution:
    """What one executed cell answered: the reply's status and the text it printed."""

    status: str
    stdout: str
    stderr: str


class KernelChannel:
    """A kernel's websocket (``/api/kernels/<id>/channels``), spoken as JupyterLab speaks it.

    jupyter_server's default (JSON) websocket protocol: each message is a
    Jupyter message with a ``channel`` key.
    """

    def __init__(self, ws_url: str, authorization: str, timeout: float = 120):
        self.session = uuid.uuid4().hex
        self.timeout = timeout
        self.ws = websocket.create_connection(
            f"{ws_url}?session_id={self.session}", header=[f"Authorization: {authorization}"], timeout=timeout
        )

    def close(self) -> None:
        self.ws.close()

    def execute(self, code: str, cell_id: str | None = None) -> Execution:
        """Run ``code`` (as the notebook cell ``cell_id``, as JupyterLab says it); wait for its
        reply and for the kernel to go idle."""
        msg_id = uuid.uuid4().hex
        header = {
            "msg_id": msg_id,
            "msg_type": "execute_request",
            "session": self.session,
            "username": "test",
            "date": datetime.now(UTC).isoformat(),
            "version": "5.3",
        }
        content = {"code": code, "silent": False, "store_history": True, "user_expressions": {}}
        content.update(allow_stdin=False, stop_on_error=True)
        metadata = {"cellId": cell_id} if cell_id else {}
        message = {"header": header, "parent_header": {}, "metadata": metadata, "content": content, "channel": "shell"}
        self.ws.send(json.dumps(message))
        streams: dict[str, list[str]] = {"stdout": [], "stderr": []}
        reply: dict[str, Any] | None = None
        idle = False
        while reply is None or not idle:
            msg = json.loads(self.ws.recv())
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, body = msg["msg_type"], msg["content"]
            if kind == "stream":
                streams[body["name"]].append(body["text"])
            elif kind == "error":
                streams["stderr"].append("\n".join(body.get("traceback", [])))
            elif kind == "execute_reply":
                reply = body
            elif kind == "status" and body["execution_state"] == "idle":
                idle = True
        return Execution(reply["status"], "".join(streams["stdout"]), "".join(streams["stderr"]))


def open_session(http: httpx.Client, prefix: str, path: str) -> tuple[dict[str, Any], KernelChannel]:
    """Open a notebook session (a new kernel) as JupyterLab does: the session, and its kernel's websocket."""
    body = {"path": path, "name": Path(path).name, "type": "notebook", "kernel": {"name": "python3"}}
    resp = http.post(f"{prefix}/api/sessions", json=body)
    assert resp.status_code == 201, resp.text
    session: dict[str, Any] = resp.json()
    return session, kernel_channel(http, prefix, session["kernel"]["id"])


def kernel_channel(http: httpx.Client, prefix: str, kernel_id: str) -> KernelChannel:
    """A websocket to a running kernel, as a reloaded JupyterLab opens it."""
    base = str(http.base_url).rstrip("/").replace("http", "ws", 1)
    return KernelChannel(f"{base}{prefix}/api/kernels/{kernel_id}/channels", http.headers["Authorization"])


@contextmanager
def notebook_session(http: httpx.Client, prefix: str, path: str) -> Iterator[KernelChannel]:
    """A notebook session on a jupyter-server's REST API, with its kernel's websocket.

    ``http`` carries the base URL and the Authorization header; ``prefix`` is
    the server's URL prefix (``/user/alice`` behind the hub, ``""`` alone).
    Leaving deletes the session, which shuts the kernel down (and so ends the run).
    """
    session, channel = open_session(http, prefix, path)
    try:
        yield channel
    except BaseException:
        # The test failed: end the session if the server can still be reached, and let the
        # failure be what is reported, not a cleanup that could not reach it.
        channel.close()
        with suppress(httpx.HTTPError):
            http.delete(f"{prefix}/api/sessions/{session['id']}", timeout=90)
        raise
    channel.close()
    deleted = http.delete(f"{prefix}/api/sessions/{session['id']}", timeout=90)
    assert deleted.status_code == 204, deleted.text
