"""hubforge: a governed, self-service AI platform built on JupyterHub.

The top-level package holds what every part shares: the platform config
(:mod:`hubforge.config`), the personas (:mod:`hubforge.personas`) and the
error hierarchy (:mod:`hubforge.errors`). Hub-side code lives in
:mod:`hubforge.hub` and :mod:`hubforge.spawner_profiles`; user-server and
kernel-side code in :mod:`hubforge.server_extension` and
:mod:`hubforge.widgets`.

This module imports nothing heavy: the wheel test imports it with no
dependencies installed. It first defers the slow imports of third-party packages
that every hubforge process would otherwise pay for at start
(:mod:`hubforge.imports`).
"""

from hubforge.imports import defer_slow_imports

defer_slow_imports()

__version__ = "0.1.0"

__all__ = ["__version__"]
