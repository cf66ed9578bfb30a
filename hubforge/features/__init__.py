"""The platform's feature store on Feast: the demo feature repository, how it is applied, and
its catalog.

``hubforge features apply`` (run by ``make up``) writes the shipped repository
(``demo-repo/``) into ``<data_dir>/features/``, generates its Parquet data, applies it,
fills its online store (SQLite there, or the Redis of ``backends.redis_url``) and writes
its catalog (:mod:`.catalog`). Feast runs in an environment of its own
(:mod:`.environment`); only :mod:`.store` imports it. The names here are imported on first
use, so a kernel that reads the catalog loads neither the platform config nor pandas.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .apply import Outcome, apply_demo, features_dir
    from .repo import DEFAULT_PROJECT, FeaturesError

__all__ = ["DEFAULT_PROJECT", "FeaturesError", "Outcome", "apply_demo", "features_dir"]

#: Each public name -> the module defining it.
_HOMES = {
    "DEFAULT_PROJECT": "repo",
    "FeaturesError": "repo",
    "Outcome": "apply",
    "apply_demo": "apply",
    "features_dir": "apply",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value
    return value
