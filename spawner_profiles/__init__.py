"""The spawners that place notebook servers on the compute tiers.

:mod:`hubforge.spawner_profiles.local` starts servers as local processes on
one machine; the Kubernetes path configures KubeSpawner from the same
platform config. The tiers themselves (:mod:`hubforge.catalog`) and the GPU
models (:mod:`hubforge.hardware`) are pure and live in the shared package, below
both spawners and the config that validates with them.
"""

__all__: list[str] = []
