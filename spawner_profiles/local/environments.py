"""Images on one machine: each image a tier offers maps to a real Python environment, or is unavailable.

On Kubernetes an image is a container image. On one machine there are no
containers, so ``spawner.local.environments`` says which Python environment
stands for each image key: ``platform`` (the platform's own environment, where
jupyter-server runs) or the folder of a virtualenv or conda prefix. A server
started with that image runs its Python kernels with that environment's
interpreter (``HUBFORGE_KERNEL_PYTHON``, read by the server extension); the
environment needs ipykernel, mlflow and hubforge, so that kernels start and are
tracked as in the platform's own. An image with no environment, or whose
environment cannot run such a kernel, is shown disabled on the spawn page with
the reason and refused by the REST API, like a GPU model the machine lacks.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from hubforge.contract import KERNEL_PYTHON_ENV

__all__ = ["PLATFORM", "Environment", "LocalEnvironments", "kernel_python_env"]

#: The environment key meaning "the platform's own Python".
PLATFORM = "platform"
#: What a kernel of an environment imports: its kernel, and what tracks it.
NEEDED = ("ipykernel", "mlflow", "hubforge.server_extension.kernel")


@dataclass(frozen=True)
class Environment:
    """The Python environment an image stands for on this machine."""

    image: str
    python: str  # its interpreter; the platform's own for ``platform``
    own: bool  # the platform's own environment

    @property
    def prefix(self) -> str:
        """The environment's folder (``sys.prefix`` of its interpreter)."""
        return str(Path(self.python).parent.parent)


def kernel_python_env(environment: Environment) -> dict[str, str]:
    """The server environment that makes its Python kernels use ``environment``."""
    return {} if environment.own else {KERNEL_PYTHON_ENV: environment.python}


class LocalEnvironments:
    """``spawner.local.environments``, checked once per hub process and environment."""

    def __init__(self, declared: dict[str, str] | None, platform_python: str = sys.executable):
        #: None (a spawner configured without the platform's config): every image is the platform's.
        self.declared = None if declared is None else dict(declared)
        self.platform_python = platform_python
        self._problems: dict[str, str | None] = {}

    def environment(self, image: str) -> Environment | None:
        """The environment declared for ``image`` (None when there is none)."""
        where = PLATFORM if self.declared is None else self.declared.get(image)
        if where is None:
            return None
        if where == PLATFORM:
            return Environment(image, self.platform_python, own=True)
        return Environment(image, os.path.join(where, "bin", "python"), own=False)

    def unavailable(self, image: str) -> str | None:
        """Why ``image`` cannot be used on this machine, in a few words; None when it can."""
        env = self.environment(image)
        if env is None:
            return "no environment for it on this machine"
        if env.own:
            return None
        if env.python not in self._problems:
            self._problems[env.python] = _problem(env)
        return self._problems[env.python]


def _problem(env: Environment) -> str | None:
    if not os.access(env.python, os.X_OK):
        return f"its environment {env.prefix} has no bin/python"
    code = (
        "import importlib.util as u, sys\n"
        "def has(m):\n"
        "    try:\n"
        "        return u.find_spec(m) is not None\n"
        "    except ImportError:\n"
        "        return False\n"
        "sys.exit(', '.join(m for m in sys.argv[1:] if not has(m)) or 0)\n"
    )
    try:
        done = subprocess.run(
            [env.python, "-c", code, *NEEDED], capture_output=True, text=True, timeout=60, check=False, cwd="/"
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"its environment {env.prefix} does not run ({exc})"
    if done.returncode == 0:
        return None
    missing = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit status {done.returncode}"
    return f"its environment {env.prefix} lacks {missing}"
