"""What a kernel knows about itself: user, notebook, server, git; pure reads, no mlflow."""

from __future__ import annotations

import getpass
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from hubforge.server_extension.pending import spool_root

__all__ = ["KernelContext", "git_state", "run_tags"]


@dataclass(frozen=True)
class KernelContext:
    """The environment the server extension gave this kernel (see the issue 4 contract)."""

    tracking_uri: str | None
    enabled: bool
    user: str
    notebook: str
    notebook_file: Path | None
    server: str
    tier: str
    origin: str
    kernel_id: str
    spool_dir: str

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, kernel_id: str = "") -> KernelContext:
        """Read the context from ``env`` (default ``os.environ``)."""
        env = dict(os.environ if env is None else env)
        notebook = env.get("JPY_SESSION_NAME", "")
        root = Path(env.get("HUBFORGE_NOTEBOOK_ROOT") or os.getcwd())
        path = Path(notebook) if notebook else None
        if path is not None and path.is_absolute():
            notebook = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
        file = (path if path.is_absolute() else root / path) if path is not None else None
        return cls(
            tracking_uri=env.get("MLFLOW_TRACKING_URI") or None,
            enabled=env.get("HUBFORGE_TRACKING", "on").strip().lower() not in {"off", "0", "false", "no"},
            user=env.get("JUPYTERHUB_USER") or getpass.getuser(),
            notebook=notebook or f"kernel-{kernel_id or os.getpid()}",
            notebook_file=file,
            server=env.get("HUBFORGE_SERVER_NAME", ""),
            tier=env.get("HUBFORGE_TIER", ""),
            origin=env.get("HUBFORGE_ORIGIN", "jupyterlab"),
            kernel_id=kernel_id,
            spool_dir=str(spool_root(env)),
        )

    @property
    def experiment_name(self) -> str:
        """One experiment per user and notebook."""
        return f"/Users/{self.user}/{self.notebook.lstrip('/')}"


def git_state(directory: Path, timeout: float = 2.0) -> tuple[str, bool] | None:
    """(commit, dirty) of the repository holding ``directory``, or None; one ``git`` call."""
    try:
        out = subprocess.run(
            ["git", "-C", str(directory), "status", "--porcelain=v2", "--branch", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    lines = out.stdout.splitlines()
    commit = next((ln.split()[2] for ln in lines if ln.startswith("# branch.oid ")), None)
    if not commit or commit == "(initial)":
        return None
    return commit, any(not ln.startswith("#") for ln in lines)


def run_tags(ctx: KernelContext) -> dict[str, str]:
    """The tags a tracked run starts with: the person, the notebook, the server, git."""
    tags = {
        "mlflow.user": ctx.user,
        "mlflow.source.name": ctx.notebook,
        "mlflow.source.type": "NOTEBOOK",
        "hubforge.server": ctx.server,
        "hubforge.tier": ctx.tier,
        "hubforge.kernel_id": ctx.kernel_id,
        "hubforge.origin": ctx.origin,
    }
    if ctx.notebook_file is not None:
        state = git_state(ctx.notebook_file.parent)
        if state is not None:
            tags["mlflow.source.git.commit"] = state[0]
            tags["hubforge.git.dirty"] = str(state[1]).lower()
    return tags
