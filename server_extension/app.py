"""Prepare every Python kernel the server starts for MLflow auto-tracking.

Mechanism, and why: jupyter_client's ``MultiKernelManager.pre_start_kernel(kernel_name,
kwargs)`` runs for every kernel start (sessions and ``POST /api/kernels`` alike),
returns the new ``KernelManager`` (so the kernelspec, and its language, is known)
and receives the launch ``kwargs`` as a mutable dict that is then handed to
``KernelManager.start_kernel(**kwargs)``. We wrap that one method on the server's
kernel manager *instance* and add ``env`` and ``extra_arguments`` there. Unlike
swapping ``kernel_manager_class`` or ``session_manager_class`` this leaves the
user's (or another extension's) choice of classes alone and composes with other
wrappers; unlike a kernel provisioner it needs no kernelspec edits. The launch
kwargs are saved by ``KernelManager`` for restarts, so a restarted kernel keeps
them. The session manager already puts ``JPY_SESSION_NAME`` (the notebook path)
into ``env`` (jupyter_server ``SessionManager.get_kernel_env``); we keep it.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

from traitlets import Bool, Unicode
from traitlets.config import LoggingConfigurable

from .launch import (
    add_extension_argument,
    apply_env,
    is_python_kernel,
    tracking_env,
    tracking_state,
    voila_notebook,
)

__all__ = ["HubforgeTracking", "load", "prepare_launch"]


class HubforgeTracking(LoggingConfigurable):
    """Settings of kernel auto-tracking (``c.HubforgeTracking.*`` in the server's config)."""

    enabled = Bool(
        True,
        help="Track notebook runs to MLflow. Kernels get HUBFORGE_TRACKING=off when False; "
        "HUBFORGE_TRACKING=off in the server's environment (set per tier by the hub) wins over True.",
    ).tag(config=True)

    origin = Unicode(
        "jupyterlab",
        help="What started the kernels, recorded as the run's origin tag (HUBFORGE_ORIGIN): "
        "jupyterlab for a user's server, voila for a Voila server. Kernels of Voila pages "
        "rendered by any server (/voila/render/...) are recorded as voila.",
    ).tag(config=True)

    kernel_extension = Unicode(
        "hubforge.server_extension.kernel",
        help="The IPython extension every Python kernel loads at start (--IPKernelApp.extensions).",
    ).tag(config=True)


def prepare_launch(settings: HubforgeTracking, km: Any, kwargs: dict[str, Any], root_dir: str) -> bool:
    """Add hubforge's env and kernel argument to ``kwargs`` if ``km`` starts a Python kernel.

    Returns whether it did. ``kwargs`` are ``KernelManager.start_kernel``'s.
    """
    if not is_python_kernel(km.kernel_spec):
        return False
    server_env = os.environ
    origin = settings.origin
    voila_page = voila_notebook(kwargs.get("env") or {})
    if voila_page is not None:  # an app page, whatever the server is
        origin = "voila"
    additions = tracking_env(server_env, root_dir=root_dir, origin=origin, enabled=settings.enabled)
    if voila_page:
        # jupyter-server names a session's notebook in JPY_SESSION_NAME; Voila has no session.
        additions["JPY_SESSION_NAME"] = voila_page
    # No env means the provisioner would copy os.environ: start from the same.
    kwargs["env"] = apply_env(kwargs.get("env") or server_env, server_env, additions)
    kwargs["extra_arguments"] = add_extension_argument(kwargs.get("extra_arguments"), settings.kernel_extension)
    return True


def _hooked(original: Callable[..., Any], settings: HubforgeTracking, root_dir: str) -> Callable[..., Any]:
    @functools.wraps(original)
    def pre_start_kernel(kernel_name: str | None, kwargs: dict[str, Any]) -> Any:
        km, name, kernel_id = original(kernel_name, kwargs)
        try:
            if prepare_launch(settings, km, kwargs, root_dir):
                settings.log.debug("hubforge: kernel %s (%s) prepared for tracking", kernel_id, name)
        except Exception:  # tracking must never stop a kernel from starting
            settings.log.warning("hubforge: kernel %s starts without tracking", kernel_id, exc_info=True)
        return km, name, kernel_id

    pre_start_kernel.__hubforge__ = True  # type: ignore[attr-defined]
    return pre_start_kernel


def load(serverapp: Any) -> None:
    """Install the kernel hook on ``serverapp.kernel_manager`` (once)."""
    settings = HubforgeTracking(parent=serverapp)
    kernels = serverapp.kernel_manager
    original = getattr(kernels, "pre_start_kernel", None)
    if original is None:
        # E.g. a gateway kernel manager: kernels start elsewhere, with their own env.
        serverapp.log.warning("hubforge: %s starts no local kernels; tracking is not set up", type(kernels).__name__)
        return
    if getattr(original, "__hubforge__", False):
        return
    kernels.pre_start_kernel = _hooked(original, settings, os.path.abspath(serverapp.root_dir))
    serverapp.log.info(
        "hubforge: Python kernels load %s (tracking %s)",
        settings.kernel_extension,
        tracking_state(os.environ, settings.enabled),
    )
