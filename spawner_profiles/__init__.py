"""The spawners that place notebook servers on the compute tiers.

- :mod:`.local`: one machine: servers as local processes on people's own accounts,
  GPUs allocated here with a fair-share queue;
- :mod:`.kubernetes`: KubeSpawner configured from the same platform config, Kueue
  queueing, and the helm values of ``hubforge k8s render``;
- :mod:`.tiers`: what both spawners share (``TierSpawnerMixin``): the catalog check of a request, the
  refusal that leaves the saved options as they were, the tier's culling arguments;
- :mod:`.cli`: ``hubforge profiles`` and ``hubforge k8s``.

The tiers themselves (:mod:`hubforge.catalog`) and the GPU models
(:mod:`hubforge.hardware`) are pure and live in the shared package, below both
spawners and the config that validates with them.
"""

__all__: list[str] = []
