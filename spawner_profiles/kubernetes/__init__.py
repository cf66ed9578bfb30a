"""Kubernetes: KubeSpawner configured from the tier catalog, and the helm values.

- :mod:`.spawner`: ``HubforgeKubeSpawner`` (entry point ``hubforge-kubernetes``),
  the tier profiles and ``hubforge profiles render``;
- :mod:`.render`: ``hubforge k8s render``: Zero to JupyterHub values and Kueue objects.

Nothing is imported here: KubeSpawner loads only where it is used.
"""
