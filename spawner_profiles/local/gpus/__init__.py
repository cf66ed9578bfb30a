"""GPUs on one machine: what the machine has, who holds which, who waits.

- :mod:`.devices`: the GPUs (NVML, or ``spawner.local.gpus``) and what a tier selects;
- :mod:`.allocation`: the pure vocabulary: requests, allocations, quotas, queue status,
  and the refusals;
- :mod:`.fairshare`: the order waiting requests are served in;
- :mod:`.store`: allocations and usage in SQLite, so that a hub restart finds them;
- :mod:`.allocator`: the allocator that ties them together.

Callers import from this package; the modules import each other, never the package.
"""

from .allocation import (
    NO_QUOTAS,
    Allocation,
    AllocationConflict,
    GpuRequest,
    NoSuchGpu,
    Pool,
    QueueStatus,
    QuotaExceeded,
    Quotas,
    Snapshot,
    TierState,
    cuda_visible_devices,
    gpu_env,
)
from .allocator import WEEK, GpuAllocator
from .devices import Gpu, Selector, describe_inventory, inventory

__all__ = [
    "NO_QUOTAS",
    "WEEK",
    "Allocation",
    "AllocationConflict",
    "Gpu",
    "GpuAllocator",
    "GpuRequest",
    "NoSuchGpu",
    "Pool",
    "QueueStatus",
    "QuotaExceeded",
    "Quotas",
    "Selector",
    "Snapshot",
    "TierState",
    "cuda_visible_devices",
    "describe_inventory",
    "gpu_env",
    "inventory",
]
