"""The platform's feature store on Feast: the demo feature repository and how it is applied.

``hubforge features apply`` (run by ``make up``) writes the shipped repository
(``demo-repo/``) into ``<data_dir>/features/``, generates its Parquet data, applies it and
fills its online store (SQLite there, or the Redis of ``backends.redis_url``). Importing
this package does not import Feast (6-8 s): only :mod:`hubforge.features.store` does, and
only the steps that need it import that module.
"""

from .apply import Outcome, apply_demo, features_dir
from .repo import DEFAULT_PROJECT, FeaturesError

__all__ = ["DEFAULT_PROJECT", "FeaturesError", "Outcome", "apply_demo", "features_dir"]
