"""The hardware a tier can name: GPU models and resource quantities.

Pure data and pure functions, shared by the catalog (bounds checks), the
KubeSpawner profiles (resource names) and the Kueue render (node labels).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["GPU_MODELS", "GpuModel", "cpu_cores", "memory_bytes"]


@dataclass(frozen=True)
class GpuModel:
    """A GPU model hubforge knows: what one node offers and its MIG profiles."""

    slug: str
    display_name: str
    #: The ``nvidia.com/gpu.product`` node label GPU feature discovery sets.
    product: str
    memory_gb: int
    #: GPUs in one node of this model (the largest common server).
    per_node: int
    #: MIG profile -> instances one GPU can be split into; empty without MIG.
    mig_profiles: dict[str, int] = field(default_factory=dict)

    def max_per_node(self, mig_profile: str | None) -> int:
        """The most GPUs (or MIG slices of ``mig_profile``) one node offers."""
        return self.per_node * (self.mig_profiles[mig_profile] if mig_profile else 1)


_MIG_80GB = {"1g.10gb": 7, "1g.20gb": 4, "2g.20gb": 3, "3g.40gb": 2, "4g.40gb": 1, "7g.80gb": 1}

#: The GPU models a tier may name (keep in step with platform.schema.json).
GPU_MODELS: dict[str, GpuModel] = {
    m.slug: m
    for m in (
        GpuModel("nvidia-t4", "NVIDIA T4 16GB", "Tesla-T4", 16, 8),
        GpuModel("nvidia-a10", "NVIDIA A10 24GB", "NVIDIA-A10", 24, 8),
        GpuModel(
            "nvidia-a100-40gb",
            "NVIDIA A100 40GB",
            "NVIDIA-A100-SXM4-40GB",
            40,
            8,
            {"1g.5gb": 7, "1g.10gb": 4, "2g.10gb": 3, "3g.20gb": 2, "4g.20gb": 1, "7g.40gb": 1},
        ),
        GpuModel("nvidia-a100-80gb", "NVIDIA A100 80GB", "NVIDIA-A100-SXM4-80GB", 80, 8, dict(_MIG_80GB)),
        GpuModel("nvidia-h100-80gb", "NVIDIA H100 80GB", "NVIDIA-H100-80GB-HBM3", 80, 8, dict(_MIG_80GB)),
    )
}

_MEMORY_UNITS = {"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def memory_bytes(spec: str) -> int:
    """Bytes of a JupyterHub memory spec ('8G': units of 1024, as ``ByteSpecification``)."""
    return int(float(spec[:-1]) * _MEMORY_UNITS[spec[-1]])


def cpu_cores(spec: float | int | str) -> float:
    """Cores of a CPU spec: a number, or millicores as '500m'."""
    if isinstance(spec, str):
        return int(spec[:-1]) / 1000
    return float(spec)
