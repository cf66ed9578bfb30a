"""The GPUs of this machine: read from NVML, or declared in platform.yaml.

A :class:`Gpu` is one device a notebook server can be given whole: a full GPU,
or one MIG slice of a GPU whose MIG mode is on (the parent is then not
allocatable itself). Model names are normalised to one lower-case spelling
(``NVIDIA A100-SXM4-80GB`` -> ``nvidia-a100-80gb``) so that the tier catalog
can name a model without knowing how the driver spells it.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from hubforge.errors import ConfigError

__all__ = [
    "Gpu",
    "Selector",
    "declared",
    "describe_inventory",
    "inventory",
    "normalise_model",
    "read_nvml",
]

#: Brand words that differ between driver generations but not between devices.
_BRANDS = frozenset({"nvidia", "tesla", "geforce", "quadro"})
#: Form factor and memory technology: the same model in another package.
_PACKAGING = re.compile(r"sxm\d*|pcie|hbm\d*e?|nvl|\d+w")
_MEMORY = re.compile(r"(\d+)gb")
_MIG_PROFILE = re.compile(r"\bmig\s+(\d+g\.\d+gb)\b", re.IGNORECASE)


@functools.lru_cache(maxsize=1024)  # a hub sees a handful of names, asked for on every request
def normalise_model(name: str) -> str:
    """The catalog's spelling of a driver's device name.

    >>> normalise_model("NVIDIA A100-SXM4-80GB")
    'nvidia-a100-80gb'
    >>> normalise_model("Tesla T4")
    'nvidia-t4'
    """
    text = name.lower()
    # A MIG device is named after its parent followed by "MIG <profile>".
    text = re.split(r"\bmig\b", text, maxsplit=1)[0]
    tokens = [t for t in re.split(r"[^a-z0-9.]+", text) if t]
    memory = [t for t in tokens if _MEMORY.fullmatch(t)]
    rest = [t for t in tokens if t not in _BRANDS and not _PACKAGING.fullmatch(t) and not _MEMORY.fullmatch(t)]
    return "-".join(["nvidia", *rest, *memory[:1]])


@dataclass(frozen=True)
class Gpu:
    """One allocatable device: a whole GPU or a MIG slice.

    ``index`` is the NVML index (PCI bus order) of the GPU or, for a MIG slice,
    of its parent; ``uuid`` identifies the device itself and is what the
    allocator records as held.
    """

    index: int
    uuid: str
    model: str
    memory_mib: int
    mig_profile: str | None = None

    @property
    def kind(self) -> str:
        """The pool this device belongs to: its model, plus the MIG profile of a slice."""
        return f"{self.model}/{self.mig_profile}" if self.mig_profile else self.model

    @property
    def visible_id(self) -> str:
        """How ``CUDA_VISIBLE_DEVICES`` names it: the index, or the MIG UUID of a slice."""
        return self.uuid if self.mig_profile else str(self.index)


@dataclass(frozen=True)
class Selector:
    """Which devices a request or tier can use: a model and/or a MIG profile.

    With no MIG profile only whole GPUs match, so that a tier asking for "a
    GPU" never silently gets a slice; with no model any model matches.
    """

    model: str | None = None
    mig_profile: str | None = None

    def __post_init__(self) -> None:
        # Compare in the catalog's spelling, whatever spelling the caller used.
        if self.model is not None:
            object.__setattr__(self, "model", normalise_model(self.model))
        if self.mig_profile is not None:
            object.__setattr__(self, "mig_profile", self.mig_profile.lower())

    def matches(self, gpu: Gpu) -> bool:
        """Whether ``gpu`` can serve this selector."""
        if self.mig_profile != gpu.mig_profile:
            return False
        return self.model is None or self.model == gpu.model

    def describe(self, count: int = 1) -> str:
        """Words for a person: ``"2 nvidia-a100-80gb GPUs"``, ``"1 1g.10gb MIG slice"``."""
        what = f"{self.mig_profile} MIG slice" if self.mig_profile else "GPU"
        model = f"{self.model} " if self.model else ""
        return f"{count} {model}{what}{'' if count == 1 else 's'}"


def describe_inventory(gpus: Iterable[Gpu]) -> str:
    """``"4 nvidia-a100-80gb, 1 nvidia-t4"`` (or ``"no GPUs"``), for messages."""
    counts: dict[str, int] = {}
    for gpu in gpus:
        counts[gpu.kind] = counts.get(gpu.kind, 0) + 1
    return ", ".join(f"{n} {kind}" for kind, n in counts.items()) or "no GPUs"


def _text(value: Any) -> str:
    # Older nvidia-ml-py releases return bytes, newer ones str.
    return value.decode() if isinstance(value, bytes) else str(value)


def _mig_slices(nvml: Any, handle: Any, index: int, model: str) -> list[Gpu]:
    """The MIG slices of one GPU, or [] when MIG is off or unsupported."""
    try:
        current, _pending = nvml.nvmlDeviceGetMigMode(handle)
    except nvml.NVMLError:
        return []  # not a MIG-capable GPU
    if current != nvml.NVML_DEVICE_MIG_ENABLE:
        return []
    slices = []
    for i in range(nvml.nvmlDeviceGetMaxMigDeviceCount(handle)):
        try:
            mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, i)
        except nvml.NVMLError:
            continue  # an empty slot: fewer instances than the maximum
        found = _MIG_PROFILE.search(_text(nvml.nvmlDeviceGetName(mig)))
        memory = nvml.nvmlDeviceGetMemoryInfo(mig).total // 2**20
        profile = found.group(1).lower() if found else f"{memory // 1024}gb"
        slices.append(Gpu(index, _text(nvml.nvmlDeviceGetUUID(mig)), model, memory, profile))
    return slices


def _read_devices(nvml: Any) -> list[Gpu]:
    gpus: list[Gpu] = []
    for index in range(nvml.nvmlDeviceGetCount()):
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        model = normalise_model(_text(nvml.nvmlDeviceGetName(handle)))
        slices = _mig_slices(nvml, handle, index, model)
        if slices:
            gpus.extend(slices)
        else:
            memory = nvml.nvmlDeviceGetMemoryInfo(handle).total // 2**20
            gpus.append(Gpu(index, _text(nvml.nvmlDeviceGetUUID(handle)), model, memory))
    return gpus


def read_nvml(nvml: Any = None) -> list[Gpu]:
    """The GPUs NVML reports, or [] when there is no NVIDIA driver or library.

    ``nvml`` is the NVML binding, :mod:`pynvml` (nvidia-ml-py) by default; any
    NVML failure means "no GPUs seen", never a crash of the hub.
    """
    if nvml is None:
        try:
            # Imported late: a CPU-only install need not have nvidia-ml-py.
            import pynvml
        except ImportError:
            return []
        nvml = pynvml
    try:
        nvml.nvmlInit()
    except (nvml.NVMLError, OSError):
        return []
    try:
        return _read_devices(nvml)
    except nvml.NVMLError:
        return []
    finally:
        with contextlib.suppress(nvml.NVMLError):
            nvml.nvmlShutdown()


def _memory_from_model(model: str) -> int:
    found = _MEMORY.search(model.rsplit("-", 1)[-1])
    return int(found.group(1)) * 1024 if found else 0


def declared(entries: Iterable[Mapping[str, Any]]) -> list[Gpu]:
    """GPUs declared in ``spawner.local.gpus`` for a machine without NVML.

    Each entry is ``{model, count, memory_mib?}``; devices are numbered in the
    order declared. Their UUIDs name the model and its n-th device, so that an
    allocation recorded before a change of the list still names the same GPU.
    """
    gpus: list[Gpu] = []
    per_model: dict[str, int] = {}
    for n, entry in enumerate(entries):
        if not isinstance(entry.get("model"), str) or not isinstance(entry.get("count"), int) or entry["count"] < 0:
            raise ConfigError(f"spawner.local.gpus.{n}: needs a model name and a count of 0 or more")
        model = normalise_model(entry["model"])
        memory = int(entry.get("memory_mib") or _memory_from_model(model))
        for _ in range(entry["count"]):
            seq = per_model.get(model, 0)
            per_model[model] = seq + 1
            gpus.append(Gpu(len(gpus), f"declared-{model}-{seq}", model, memory))
    return gpus


def inventory(declared_entries: Iterable[Mapping[str, Any]] = (), nvml: Any = None) -> list[Gpu]:
    """NVML's GPUs when it sees any, else the declared ones."""
    return read_nvml(nvml) or declared(declared_entries)
