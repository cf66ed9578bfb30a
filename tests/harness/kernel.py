"""Tracked ipykernel kernels driven cell by cell, and notebooks for them.

What the kernel extension tests share: a notebook committed in a git repository
(``write_notebook``), a tracked kernel's environment (``kernel_env``), a kernel started
with the extension (``Kernel``), and the notebook-session run and its fits' child runs
as MLflow records them (``only_run``, ``children``).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import nbformat
from jupyter_client.manager import KernelManager

EXTENSION = "--IPKernelApp.extensions=hubforge.server_extension.kernel"


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


def kernel_env(url: str, root: Path, user: str, notebook: str, **extra: str) -> dict[str, str]:
    """A tracked kernel's environment as the server extension builds it, minus the outer run's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HUBFORGE_", "JPY_"))}
    env.update(
        MLFLOW_TRACKING_URI=url,
        JUPYTERHUB_USER=user,
        JPY_SESSION_NAME=notebook,
        HUBFORGE_NOTEBOOK_ROOT=str(root),
        HUBFORGE_SPOOL_DIR=str(root / ".spool"),
        **extra,
    )
    return env


class Kernel:
    """A tracked ipykernel driven cell by cell; ``shutdown()`` ends it the way a server does."""

    def __init__(self, env: dict[str, str], cwd: Path):
        self.km = KernelManager(kernel_name="python3")
        self.km.shutdown_wait_time = 60
        self.km.start_kernel(extra_arguments=[EXTENSION], env=env, cwd=str(cwd))
        self.kc = self.km.client()
        self.kc.start_channels()
        try:
            self.kc.wait_for_ready(timeout=60)
        except BaseException:
            self.shutdown()
            raise

    def run(self, code: str, timeout: float = 60) -> str:
        """Execute one cell; its stdout and stderr."""
        out: list[str] = []

        def hook(msg: dict) -> None:
            if msg["msg_type"] == "stream":
                out.append(msg["content"]["text"])

        self.kc.execute_interactive(code, timeout=timeout, output_hook=hook)
        return "".join(out)

    def shutdown(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=False)


def only_run(client, name: str):
    """The experiment and its one notebook-session run (the parent of any fits' runs)."""
    exp = client.get_experiment_by_name(name)
    assert exp is not None, f"no experiment {name}"
    runs = [r for r in client.search_runs([exp.experiment_id]) if "mlflow.parentRunId" not in r.data.tags]
    assert len(runs) == 1
    return exp, runs[0]


def children(client, exp, parent) -> dict[str, object]:
    """The child runs of ``parent`` (one per autologged fit), by run name."""
    runs = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    return {r.info.run_name: r for r in runs}
