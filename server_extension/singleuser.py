"""``hubforge-singleuser``: JupyterHub's single-user server, started as hubforge's processes start.

The local spawner starts people's servers with this command (the console script
``hubforge-singleuser``, first of ``hubforge.contract.SERVER_PROGRAMS``). It is
``jupyterhub-singleuser`` after ``import hubforge``, whose import defers what
every process would otherwise pay for at start (:mod:`hubforge.imports`): jupyter_server
imports jsonschema through jupyter_events, long before the server loads hubforge's
extension, and would build rfc3987_syntax's parsers on every spawn (about 0.6 s
of CPU in a start of about 2.5 s). Arguments and environment are
``jupyterhub-singleuser``'s own.

JupyterLab also asks yarn for its npm registry as it loads (``jupyterlab.labapp`` builds an
``_AppHandler`` at import, whose ``AppOptions.registry`` default runs ``node yarn.js config
--json``): a Node.js process and about 0.3 s of every spawn, for a setting used only to
install extensions from npm, which a person's server here cannot do (its JupyterLab is
the platform's, read-only to people; their extensions come prebuilt, from pip).
:func:`skip_yarn_registry_lookup` answers that question without yarn: the registry named
by ``YARN_REGISTRY`` or ``npm_config_registry``, else yarn's default.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import hubforge  # noqa: F401 (first: it defers the slow imports of what follows)

__all__ = ["main", "skip_yarn_registry_lookup"]

#: Where yarn reads a registry from the environment, as it would (the first one set wins).
REGISTRY_ENV = ("YARN_REGISTRY", "npm_config_registry")


def skip_yarn_registry_lookup() -> bool:
    """Give JupyterLab its yarn configuration without starting yarn; True when it did.

    Left as it is where JupyterLab has no such step (another version): it then asks yarn.
    """
    try:
        from jupyterlab import commands
    except ImportError:
        return False
    if not callable(getattr(commands, "_yarn_config", None)):
        return False

    def _yarn_config(logger: logging.Logger) -> dict[str, dict[str, Any]]:
        registry = next((os.environ[name] for name in REGISTRY_ENV if os.environ.get(name)), None)
        return {"yarn config": {"registry": registry} if registry else {}, "npm config": {}}

    commands._yarn_config = _yarn_config
    return True


def main() -> None:
    """Run ``jupyterhub-singleuser`` with this process's arguments."""
    skip_yarn_registry_lookup()  # before anything of JupyterHub's can load JupyterLab
    from jupyterhub.singleuser import main as singleuser

    sys.exit(singleuser())
