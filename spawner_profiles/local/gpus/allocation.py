"""What the GPU allocator is asked for and what it answers: requests, quotas, allocations.

Plain values with no behaviour beyond formatting, shared by the allocator,
its store and the spawner that calls it.
"""

from __future__ import annotations

from dataclasses import dataclass

from hubforge.errors import Conflict, Forbidden, Invalid

from .devices import Gpu, Selector

__all__ = [
    "NO_QUOTAS",
    "Allocation",
    "AllocationConflict",
    "GpuRequest",
    "NoSuchGpu",
    "Pool",
    "QueueStatus",
    "QuotaExceeded",
    "Quotas",
    "Snapshot",
    "TierState",
    "cuda_visible_devices",
    "gpu_env",
]


@dataclass(frozen=True)
class Allocation:
    """The devices one notebook server holds (none for a CPU-only server)."""

    server_key: str
    user: str
    group: str
    tier: str
    gpus: tuple[Gpu, ...]
    started: float

    @property
    def visible_devices(self) -> str:
        """The value of ``CUDA_VISIBLE_DEVICES``: indices, or UUIDs for MIG slices."""
        return ",".join(gpu.visible_id for gpu in self.gpus)


class QuotaExceeded(Forbidden):
    """The request can never fit its quota (or the user runs all the servers allowed)."""


class NoSuchGpu(Invalid):
    """The machine has no GPUs, or too few, of the kind the request asks for."""


class AllocationConflict(Conflict):
    """The server already holds GPUs or already waits for them."""


@dataclass(frozen=True)
class GpuRequest:
    """What a server asks for. ``server_key`` (e.g. ``"alice/"``) identifies the request."""

    server_key: str
    user: str
    group: str
    tier: str
    gpus: int = 0
    model: str | None = None
    mig_profile: str | None = None

    def __post_init__(self) -> None:
        if self.gpus < 0:
            raise ValueError(f"gpus must be 0 or more, not {self.gpus}")

    @property
    def selector(self) -> Selector:
        """The devices this request can use."""
        return Selector(self.model, self.mig_profile)


@dataclass(frozen=True)
class Quotas:
    """Limits for one request: GPUs its group may hold at once on its tier; servers per user."""

    group_gpus: int | None = None
    user_servers: int | None = None


#: No limits: the default when a tier declares no quotas.
NO_QUOTAS = Quotas()


@dataclass(frozen=True)
class QueueStatus:
    """Where a waiting request stands.

    ``position`` is 1-based among the waiting requests of the same tier;
    ``ahead`` counts the requests served before it that want any of the same
    GPUs, whatever their tier; ``waiting_for`` is ``"gpus"`` or ``"quota"``.
    """

    server_key: str
    tier: str
    position: int
    ahead: int
    group: str
    group_gpu_hours: float
    window_s: float
    waiting_for: str
    message: str


@dataclass(frozen=True)
class Pool:
    """Free and total devices of one kind."""

    free: int
    total: int


@dataclass(frozen=True)
class TierState:
    """A tier's matching devices (free/total), GPUs its servers hold, and requests waiting."""

    free: int
    total: int
    held: int
    queued: int


@dataclass(frozen=True)
class Snapshot:
    """Free/total devices per kind (model, or model/MIG profile) and state per tier."""

    models: dict[str, Pool]
    tiers: dict[str, TierState]


def cuda_visible_devices(allocation: Allocation) -> str:
    """``CUDA_VISIBLE_DEVICES`` for a server: ``"0,2"``, MIG UUIDs, or ``""`` (no GPU) for CPU-only."""
    return allocation.visible_devices


def gpu_env(allocation: Allocation) -> dict[str, str]:
    """The environment variables that confine a server to its GPUs.

    CUDA numbers devices fastest-first unless told otherwise; NVML's indices
    are in PCI bus order, so the order is pinned for the indices to agree.
    """
    return {"CUDA_VISIBLE_DEVICES": cuda_visible_devices(allocation), "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
