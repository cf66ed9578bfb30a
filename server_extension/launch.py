"""What a tracked kernel is started with: pure functions, no server, no I/O.

The contract with the kernel side (``hubforge.server_extension.kernel``) lives
here, so that the jupyter-server hook and the papermill engine build exactly
the same launch: one extra command-line argument that loads the IPython
extension, and a handful of environment variables it reads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import unquote

from hubforge.contract import (
    MLFLOW_URL_ENV,
    NOTEBOOK_ROOT_ENV,
    ORIGIN_ENV,
    SERVER_NAME_ENV,
    TIER_ENV,
    TRACKING_ENV,
    tracking_on,
)

__all__ = [
    "KERNEL_EXTENSION",
    "KERNEL_SHUTDOWN_WAIT",
    "add_extension_argument",
    "apply_env",
    "close_budget",
    "extension_argument",
    "is_python_kernel",
    "tracking_env",
    "tracking_state",
    "voila_notebook",
]

#: The IPython extension every Python kernel loads at start.
KERNEL_EXTENSION = "hubforge.server_extension.kernel"
#: Seconds a tracked kernel gets to leave after a shutdown request: it ends its run
#: within 8 s and logs fits still waiting within 20 s (see the kernel's Tracker);
#: jupyter_client sends SIGTERM halfway and SIGKILL at the end.
KERNEL_SHUTDOWN_WAIT = 50.0

#: MLflow credentials that would beat the hub token (MLflow prefers basic auth
#: over a bearer token), so a hub kernel must not inherit them.
_COMPETING_CREDENTIALS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


def extension_argument(module: str = KERNEL_EXTENSION) -> str:
    """The ipykernel argument that loads ``module`` as an IPython extension."""
    return f"--IPKernelApp.extensions={module}"


def add_extension_argument(extra_arguments: Sequence[str] | None, module: str = KERNEL_EXTENSION) -> list[str]:
    """``extra_arguments`` with the extension argument appended once (restarts reuse the list)."""
    arguments = list(extra_arguments or [])
    wanted = extension_argument(module)
    if wanted not in arguments:
        arguments.append(wanted)
    return arguments


def is_python_kernel(spec: Any) -> bool:
    """Whether a kernelspec (``jupyter_client.kernelspec.KernelSpec``) runs Python."""
    return str(getattr(spec, "language", "") or "").strip().lower() == "python"


def tracking_env(
    server_env: Mapping[str, str],
    *,
    root_dir: str,
    origin: str = "jupyterlab",
    enabled: bool = True,
) -> dict[str, str]:
    """The variables to add to a kernel's environment.

    ``server_env`` is the server's own environment. In a hub (``HUBFORGE_MLFLOW_URL``
    set by the spawner) runs go to the hub's MLflow under the server's hub token;
    outside a hub the user's own ``MLFLOW_TRACKING_URI`` and credentials are left alone.
    ``HUBFORGE_TRACKING=off`` in the server's environment beats ``enabled``.
    """
    env: dict[str, str] = {
        ORIGIN_ENV: origin,
        NOTEBOOK_ROOT_ENV: root_dir,
        TRACKING_ENV: tracking_state(server_env, enabled),
    }
    for source, target in (
        ("JUPYTERHUB_USER", "JUPYTERHUB_USER"),
        ("JUPYTERHUB_SERVER_NAME", SERVER_NAME_ENV),
        (TIER_ENV, TIER_ENV),
    ):
        if server_env.get(source):
            env[target] = server_env[source]
    hub_mlflow = server_env.get(MLFLOW_URL_ENV, "")
    if hub_mlflow:
        env["MLFLOW_TRACKING_URI"] = hub_mlflow
        if server_env.get("JUPYTERHUB_API_TOKEN"):
            env["MLFLOW_TRACKING_TOKEN"] = server_env["JUPYTERHUB_API_TOKEN"]
    return env


def close_budget(shutdown_wait: float) -> float:
    """Seconds a kernel may spend ending its run and logging fits, given how long its manager waits.

    jupyter_client sends SIGTERM halfway through its wait: the kernel is done 5 s before.
    """
    return max(5.0, shutdown_wait / 2 - 5.0)


def voila_notebook(kernel_env: Mapping[str, str]) -> str | None:
    """The notebook a Voila page renders, if Voila is starting this kernel; else None.

    Voila (as a jupyter-server extension) starts a page's kernel with CGI-style
    variables: ``SERVER_SOFTWARE=voila/<version>`` and ``SCRIPT_NAME``, the page's
    path (``<base_url>voila/render/<notebook>``). The notebook is "" when the path
    has another shape (Voila serving one notebook at its root).
    """
    if not kernel_env.get("SERVER_SOFTWARE", "").startswith("voila/"):
        return None
    render = kernel_env.get("VOILA_BASE_URL", "/").rstrip("/") + "/voila/render/"
    script = kernel_env.get("SCRIPT_NAME", "")
    return unquote(script[len(render) :]) if script.startswith(render) else ""


def tracking_state(server_env: Mapping[str, str], enabled: bool) -> str:
    """``"off"`` when config or the server's ``HUBFORGE_TRACKING=off`` says so, else ``"on"``."""
    return "on" if enabled and tracking_on(server_env) else "off"


def apply_env(base: Mapping[str, str], server_env: Mapping[str, str], additions: Mapping[str, str]) -> dict[str, str]:
    """``base`` plus ``additions``; in a hub, minus credentials that would override the hub token."""
    env = {**base, **additions}
    if server_env.get(MLFLOW_URL_ENV):
        for name in _COMPETING_CREDENTIALS:
            env.pop(name, None)
    return env
