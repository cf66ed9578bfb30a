"""The one-machine spawner: each user's server is a local process.

Users need not exist on the system: every server runs as the hub's own
system user with its home under the platform's data folder. That gives no
isolation between users, which is why the one-machine default is meant for
a single trusted team or a demo; on Kubernetes every server is its own pod.
"""

from __future__ import annotations

import os
import shutil
import sys
from typing import Any

from jupyterhub.spawner import SimpleLocalProcessSpawner
from traitlets import Unicode, default

__all__ = ["LocalTierSpawner", "singleuser_command"]


def singleuser_command() -> list[str]:
    """The ``jupyterhub-singleuser`` of this Python environment (not whatever is on PATH)."""
    local = os.path.join(os.path.dirname(sys.executable), "jupyterhub-singleuser")
    return [local if os.path.exists(local) else shutil.which("jupyterhub-singleuser") or local]


class LocalTierSpawner(SimpleLocalProcessSpawner):
    """Start single-user servers (jupyter-server + JupyterLab) as local processes."""

    instance_marker = Unicode(
        "",
        config=True,
        help="A value put in every server's environment as HUBFORGE_INSTANCE, so that "
        "`hubforge up` can find and stop what an earlier, crashed run left behind.",
    )

    @default("cmd")
    def _default_cmd(self) -> list[str]:
        return singleuser_command()

    def get_args(self) -> list[str]:
        """jupyter-server refuses to run as root without ``--allow-root``; allow it here."""
        args: list[str] = super().get_args()
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            args.append("--allow-root")
        return args

    def get_env(self) -> dict[str, Any]:
        """The server's environment, marked with the platform instance it belongs to."""
        env: dict[str, Any] = super().get_env()
        if self.instance_marker:
            env["HUBFORGE_INSTANCE"] = self.instance_marker
        return env
