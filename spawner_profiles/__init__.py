"""Compute tiers and the spawners that place notebook servers on them.

:mod:`hubforge.spawner_profiles.local` starts servers as local processes on
one machine; the Kubernetes path configures KubeSpawner from the same
platform config.
"""

__all__: list[str] = []
