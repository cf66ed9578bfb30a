"""The features service: the feature catalog (and, next, governed reads of restricted data)
behind JupyterHub auth. It runs with the Feast environment's Python
(:mod:`hubforge.features.environment`), started by the hub like every service."""

__all__: list[str] = []
