"""User-server side of hubforge: a jupyter-server extension.

Runs inside each user's single-user server. It meets the hub-side code only
through REST APIs, JSON schemas and the platform config. It prepares every
Python kernel the server starts for MLflow auto-tracking (see :mod:`.app`).

Kernels import this package too (the IPython extension lives in
``hubforge.server_extension.kernel``), so nothing heavy is imported here: the
server hook and its settings load on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["HubforgeTracking"]


def __getattr__(name: str) -> Any:
    # Lazy, so that a kernel importing the package does not pay for the server side.
    if name == "HubforgeTracking":
        from .app import HubforgeTracking

        return HubforgeTracking
    raise AttributeError(name)


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    """Tell jupyter-server where the extension's loader lives (this module)."""
    return [{"module": "hubforge.server_extension"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    """Called by jupyter-server once its kernel manager exists: install the kernel hook."""
    from .app import load

    load(serverapp)
