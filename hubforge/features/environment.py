"""The Feast environment: where everything that imports Feast runs, beside the platform's own.

Feast stays out of the platform's environment for two reasons. Feast 0.67 resolves with
this set only on pandas below 3. And once installed it is loaded by processes that never
asked for it: it registers an MLflow ``request_header_provider`` entry point, so the first
call of every MLflow REST client in the hub, the services and every kernel would import
Feast (seconds), and its SQLite online store registers process-wide ``sqlite3`` adapters.

So ``make install`` builds a second environment (``services.features.environment``;
default: the platform's environment folder with ``-feast`` appended, ``.venv-feast``
beside ``.venv``) with Feast and hubforge itself, and the platform's ``hubforge features
apply`` runs ``python -m hubforge.features apply`` there. This module imports neither
Feast nor pandas.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from hubforge.config import PlatformConfig
from hubforge.contract import CONFIG_ENV, DATA_ENV

from .repo import FeaturesError

__all__ = ["feast_python", "run_in_feast"]


def feast_python(cfg: PlatformConfig, platform_prefix: str = sys.prefix) -> Path:
    """The Feast environment's interpreter: ``services.features.environment`` (relative to
    the config file's folder), else ``<platform_prefix>-feast``."""
    folder = Path(cfg.services.features.environment or f"{platform_prefix}-feast").expanduser()
    if not folder.is_absolute() and Path(cfg.source).is_file():
        folder = Path(cfg.source).parent / folder
    return folder.absolute() / "bin" / "python"


def run_in_feast(
    cfg: PlatformConfig, args: Sequence[str], *, environ: Mapping[str, str] = os.environ, timeout: float | None = None
) -> int:
    """Run ``python -m hubforge.features ARGS`` in the Feast environment, for this platform
    config; its lines go to this process's output. The exit status."""
    python = feast_python(cfg)
    if not os.access(python, os.X_OK):
        raise FeaturesError(
            f"features: no Feast environment at {python.parent.parent} "
            "(`make install` builds it; services.features.environment names another)"
        )
    env = {key: value for key, value in environ.items() if key != CONFIG_ENV}
    env[DATA_ENV] = str(cfg.data_dir)
    if Path(cfg.source).is_file():
        env[CONFIG_ENV] = str(Path(cfg.source).absolute())
    try:
        return subprocess.run([str(python), "-m", "hubforge.features", *args], env=env, timeout=timeout).returncode
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FeaturesError(f"features: the Feast environment at {python.parent.parent} does not run: {exc}") from exc
