"""What a kernel knows about itself: user, notebook, server, git; pure reads, no mlflow.

The notebook can change under a running kernel (renamed, moved): :class:`KernelContext`
is what the kernel was started with, and the functions here take the notebook path
as an argument so the tracker can pass the current one.
"""

from __future__ import annotations

import getpass
import logging
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from hubforge.contract import (
    CLOSE_BUDGET_ENV,
    JOB_ENV,
    JOB_RUN_ENV,
    NOTEBOOK_ROOT_ENV,
    ORIGIN_ENV,
    SERVER_NAME_ENV,
    TIER_ENV,
    tracking_on,
)
from hubforge.server_extension.pending import spool_root

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_SERVER",
    "HubforgeRunContext",
    "KernelContext",
    "experiment_name",
    "git_state",
    "is_untitled",
    "run_tags",
]

#: How hubforge names a person's unnamed (default) server in tags.
DEFAULT_SERVER = "default"
#: JupyterLab's names for new notebooks: Untitled.ipynb, Untitled1.ipynb, ...
_UNTITLED = re.compile(r"Untitled\d*\.ipynb")


@dataclass(frozen=True)
class KernelContext:
    """The environment the server extension gave this kernel (see the issue 4 contract)."""

    tracking_uri: str | None
    enabled: bool
    user: str
    notebook: str
    root: Path
    server: str
    tier: str
    origin: str
    kernel_id: str
    spool_dir: str
    close_budget: float | None = None  # seconds to end the run and log fits at shutdown
    job: str = ""  # the scheduled job a papermill kernel runs for, and the job's run
    job_run: str = ""

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, kernel_id: str = "") -> KernelContext:
        """Read the context from ``env`` (default ``os.environ``)."""
        env = dict(os.environ if env is None else env)
        notebook = env.get("JPY_SESSION_NAME", "")
        root = Path(env.get(NOTEBOOK_ROOT_ENV) or os.getcwd())
        path = Path(notebook) if notebook else None
        if path is not None and path.is_absolute():
            notebook = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
        return cls(
            tracking_uri=env.get("MLFLOW_TRACKING_URI") or None,
            enabled=tracking_on(env),
            user=env.get("JUPYTERHUB_USER") or getpass.getuser(),
            notebook=notebook or f"kernel-{kernel_id or os.getpid()}",
            root=root,
            # A scheduled run is no server's: it carries no server tag (the gate checks it).
            server=env.get(SERVER_NAME_ENV) or ("" if env.get(ORIGIN_ENV) == "scheduler" else DEFAULT_SERVER),
            tier=env.get(TIER_ENV, ""),
            origin=env.get(ORIGIN_ENV, "jupyterlab"),
            kernel_id=kernel_id,
            spool_dir=str(spool_root(env)),
            close_budget=_seconds(env.get(CLOSE_BUDGET_ENV)),
            job=env.get(JOB_ENV, ""),
            job_run=env.get(JOB_RUN_ENV, ""),
        )

    def notebook_file(self, notebook: str) -> Path | None:
        """The file of ``notebook`` (a path relative to the server's root), if it is a file path."""
        if notebook.startswith("kernel-") and "/" not in notebook:
            return None  # no notebook: a kernel started without a session
        path = Path(notebook)
        return path if path.is_absolute() else self.root / path


def _seconds(value: str | None) -> float | None:
    try:
        seconds = float(value or "")
    except ValueError:
        return None
    return seconds if 0 < seconds < 3600 else None


def is_untitled(notebook: str) -> bool:
    """Whether ``notebook`` still has the name JupyterLab gives a new notebook."""
    return bool(_UNTITLED.fullmatch(PurePosixPath(notebook).name))


def experiment_name(ctx: KernelContext, notebook: str) -> str:
    """One experiment per user and notebook; an untitled notebook gets one of its own.

    Every new notebook starts as ``Untitled.ipynb`` (or ``Untitled1.ipynb``...), so
    that name says nothing about which notebook it is: the kernel's id keeps each
    untitled notebook's runs apart until it is renamed.
    """
    name = f"/Users/{ctx.user}/{notebook.lstrip('/')}"
    if is_untitled(notebook):
        name += f" (kernel {(ctx.kernel_id or str(os.getpid()))[:8]})"
    return name


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


#: The source tags that say where a run ran: MLflow on the hub takes them only as the hub
#: runs the person's servers, so a run logged after its server stopped goes without them.
PLACEMENT_TAGS = ("hubforge.server", "hubforge.tier")


def experiment_named(get_by_name: Any, create: Any, name: str) -> str:
    """The id of the experiment ``name``, made if there is none.

    Kernels of one notebook (two open at once, papermill runs of it in parallel)
    may make it at the same moment: MLflow then answers the later ones
    ``RESOURCE_ALREADY_EXISTS``, and the experiment the first one made is theirs too.
    """
    experiment = get_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    try:
        return str(create(name))
    except Exception as exc:
        if getattr(exc, "error_code", None) != "RESOURCE_ALREADY_EXISTS" or (made := get_by_name(name)) is None:
            raise
        return str(made.experiment_id)


def create_run_where_taken(create_run: Any, experiment_id: str, tags: dict[str, str], **kwargs: Any) -> Any:
    """``create_run(experiment_id, tags=tags, **kwargs)``; again without :data:`PLACEMENT_TAGS`
    when MLflow refuses them (a run or fit logged after its server stopped or moved tier)."""
    from hubforge.server_extension.kernel.queue import refused

    try:
        return create_run(experiment_id, tags=tags, **kwargs)
    except Exception as exc:
        if not refused(exc) or not any(tag in str(exc) for tag in PLACEMENT_TAGS):
            raise
        log.info("hubforge: run logged without its server and tier tags: %s", exc)
        kept = {key: value for key, value in tags.items() if key not in PLACEMENT_TAGS}
        return create_run(experiment_id, tags=kept, **kwargs)


def source_tags(ctx: KernelContext, notebook: str) -> dict[str, str]:
    """The tags every run of this kernel carries: the person, the notebook, the server.

    Empty values are left out (MLflow would show them as blank tags).
    """
    tags = {
        "mlflow.user": ctx.user,
        "mlflow.source.name": notebook,
        "mlflow.source.type": "NOTEBOOK",
        "hubforge.notebook": notebook,
        "hubforge.server": ctx.server,
        "hubforge.tier": ctx.tier,
        "hubforge.kernel_id": ctx.kernel_id,
        "hubforge.origin": ctx.origin,
        "hubforge.job": ctx.job,
        "hubforge.job_run": ctx.job_run,
    }
    return {key: value for key, value in tags.items() if value}


def run_tags(ctx: KernelContext, notebook: str) -> dict[str, str]:
    """The tags a notebook session's run starts with: :func:`source_tags` and git."""
    tags = source_tags(ctx, notebook)
    file = ctx.notebook_file(notebook)
    if file is not None:
        state = git_state(file.parent)
        if state is not None:
            tags["mlflow.source.git.commit"] = state[0]
            tags["hubforge.git.dirty"] = str(state[1]).lower()
    return tags


class HubforgeRunContext:
    """An MLflow run context provider (entry point ``mlflow.run_context_provider``).

    Runs a person starts themselves in a tracked kernel (``mlflow.start_run()``) get
    the same source tags as hubforge's own runs, naming the notebook as it is named
    now; MLflow's own Jupyter provider names it once and never again. Registered
    after MLflow's providers, so its tags win.
    """

    def in_context(self) -> bool:
        """Only inside a kernel that hubforge tracks."""
        from hubforge.server_extension.kernel import current_tracker

        return current_tracker() is not None

    def tags(self) -> dict[str, Any]:
        """The tracker's current source tags."""
        from hubforge.server_extension.kernel import current_tracker

        tracker = current_tracker()
        return tracker.source_tags() if tracker is not None else {}
