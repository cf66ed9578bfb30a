"""``hubforge-singleuser``: JupyterHub's single-user server, started as hubforge's processes start.

The local spawner starts people's servers with this command (the console script
``hubforge-singleuser``, first of ``hubforge.contract.SERVER_PROGRAMS``). It is
``jupyterhub-singleuser`` after ``import hubforge``, whose import defers what
every process would otherwise pay for at start (:mod:`hubforge.imports`): jupyter_server
imports jsonschema through jupyter_events, long before the server loads hubforge's
extension, and would build rfc3987_syntax's parsers on every spawn (about 0.6 s
of CPU in a start of about 2.5 s). Arguments and environment are
``jupyterhub-singleuser``'s own.
"""

from __future__ import annotations

import sys

import hubforge  # noqa: F401 (first: it defers the slow imports of what follows)

__all__ = ["main"]


def main() -> None:
    """Run ``jupyterhub-singleuser`` with this process's arguments."""
    from jupyterhub.singleuser import main as singleuser

    sys.exit(singleuser())
