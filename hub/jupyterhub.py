"""``python -m hubforge.hub.jupyterhub``: JupyterHub, started as hubforge's processes start.

``hubforge up`` starts the hub with this module. It is ``python -m jupyterhub`` after
``import hubforge``, whose import defers what every process would otherwise pay for
at start (:mod:`hubforge.imports`): JupyterHub imports jsonschema through
jupyter_events as it loads, long before its config loads hubforge, and would build
rfc3987_syntax's parsers at every start of the hub (about 0.7 s of CPU in 1.5 s of
imports). Arguments, environment and exit status are JupyterHub's own; on Kubernetes
the hub image runs JupyterHub's own command.
"""

from __future__ import annotations

import sys

import hubforge  # noqa: F401 (first: it defers the slow imports of what follows)

__all__ = ["main"]


def main() -> None:
    """Run JupyterHub with this process's arguments."""
    from jupyterhub.app import main as jupyterhub

    sys.exit(jupyterhub())


if __name__ == "__main__":
    main()
