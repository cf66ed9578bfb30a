"""Hub-side hubforge: JupyterHub configuration, authenticators and hub-managed services.

Runs in the hub process (:mod:`hubforge.hub.hubconfig`, :mod:`hubforge.hub.auth`)
and as hub-managed services (:mod:`hubforge.hub.governance`,
:mod:`hubforge.hub.mlflow`). Never imported by user servers or kernels.
"""

__all__: list[str] = []
