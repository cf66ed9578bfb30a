"""The notebook corpus of ``tests/notebooks/`` and alice's JupyterLab, reduced to its requests.

``Lab`` saves, opens, runs, renames, restarts and shuts down notebooks in a person's
server behind the hub over JupyterLab's own REST and websocket protocol; the rest read
what MLflow kept of them, as that person, through the hub.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import nbformat

from harness.platform import MLFLOW_API, experiment_runs
from harness.server import KernelChannel

CORPUS = Path(__file__).resolve().parents[1] / "notebooks"
USER = "/user/alice"
FOLDER = "corpus"


def corpus(name: str) -> nbformat.NotebookNode:
    return nbformat.read(CORPUS / name, as_version=4)


class Lab:
    """Alice's JupyterLab, reduced to the requests it sends."""

    def __init__(self, http: httpx.Client):
        self.http = http

    def upload(self, name: str) -> str:
        """Save a corpus notebook into the person's ``corpus/`` folder, as JupyterLab saves."""
        folder = self.http.put(f"{USER}/api/contents/{FOLDER}", json={"type": "directory"})
        assert folder.status_code in (200, 201), folder.text
        path = f"{FOLDER}/{name}"
        saved = self.http.put(
            f"{USER}/api/contents/{path}", json={"type": "notebook", "format": "json", "content": corpus(name)}
        )
        assert saved.status_code in (200, 201), saved.text
        return path

    def open(self, path: str) -> tuple[dict[str, Any], KernelChannel]:
        body = {"path": path, "name": Path(path).name, "type": "notebook", "kernel": {"name": "python3"}}
        made = self.http.post(f"{USER}/api/sessions", json=body)
        assert made.status_code == 201, made.text
        session = made.json()
        return session, self.channel(session)

    def channel(self, session: dict[str, Any]) -> KernelChannel:
        """The websocket of the session's kernel (what JupyterLab connects to)."""
        base = str(self.http.base_url).rstrip("/").replace("http", "ws", 1)
        ws = f"{base}{USER}/api/kernels/{session['kernel']['id']}/channels"
        return KernelChannel(ws, self.http.headers["Authorization"])

    def run(self, kernel: KernelChannel, cells: list[str], pace: float) -> list[Any]:
        said = []
        for code in cells:
            said.append(kernel.execute(code))
            time.sleep(pace)
        return said

    def rename(self, session: dict[str, Any], new: str) -> None:
        moved = self.http.patch(f"{USER}/api/contents/{session['path']}", json={"path": new})
        assert moved.status_code == 200, moved.text
        patched = self.http.patch(f"{USER}/api/sessions/{session['id']}", json={"path": new, "name": Path(new).name})
        assert patched.status_code == 200, patched.text

    def restart(self, session: dict[str, Any]) -> None:
        restarted = self.http.post(f"{USER}/api/kernels/{session['kernel']['id']}/restart", timeout=120)
        assert restarted.status_code == 200, restarted.text

    def shut_down(self, session: dict[str, Any], how: str) -> None:
        url = (
            f"{USER}/api/sessions/{session['id']}"
            if how == "session"
            else f"{USER}/api/kernels/{session['kernel']['id']}"
        )
        assert self.http.delete(url, timeout=120).status_code == 204


def code_of(name: str) -> list[str]:
    return [c.source for c in corpus(name).cells if c.cell_type == "code"]


def mlflow_runs(http: httpx.Client, experiment: str) -> list[dict[str, Any]] | None:
    """All runs of ``experiment`` (as alice sees them), once none is RUNNING; None before."""
    found = experiment_runs(http, experiment)
    runs = found[1] if found else []
    return runs if runs and all(r["info"]["status"] != "RUNNING" for r in runs) else None


def artifacts(http: httpx.Client, run: dict[str, Any], path: str = "") -> list[str]:
    listed = http.get(f"{MLFLOW_API}/artifacts/list", params={"run_id": run["info"]["run_id"], "path": path})
    assert listed.status_code == 200, listed.text
    return sorted(f["path"] for f in listed.json().get("files", []))
