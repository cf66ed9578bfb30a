"""GPU inventory: model names, NVML (absent, present, MIG) and declared GPUs."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest

from hubforge.errors import ConfigError
from hubforge.spawner_profiles.local.gpus.devices import (
    Gpu,
    Selector,
    declared,
    describe_inventory,
    inventory,
    normalise_model,
    read_nvml,
)


@pytest.mark.parametrize(
    ("name", "model"),
    [
        ("NVIDIA A100-SXM4-80GB", "nvidia-a100-80gb"),
        ("NVIDIA A100-SXM4-40GB", "nvidia-a100-40gb"),
        ("NVIDIA A100 80GB PCIe", "nvidia-a100-80gb"),
        ("NVIDIA A100-PCIE-40GB", "nvidia-a100-40gb"),
        ("Tesla T4", "nvidia-t4"),
        ("Tesla V100-SXM2-32GB", "nvidia-v100-32gb"),
        ("NVIDIA H100 80GB HBM3", "nvidia-h100-80gb"),
        ("NVIDIA H100 PCIe", "nvidia-h100"),
        ("NVIDIA H200", "nvidia-h200"),
        ("NVIDIA GeForce RTX 4090", "nvidia-rtx-4090"),
        ("NVIDIA RTX A6000", "nvidia-rtx-a6000"),
        ("NVIDIA L40S", "nvidia-l40s"),
        ("NVIDIA A100-SXM4-40GB MIG 1g.5gb", "nvidia-a100-40gb"),
        # Already normalised names (as the catalog writes them) stay as they are.
        ("nvidia-a100-80gb", "nvidia-a100-80gb"),
        ("nvidia-t4", "nvidia-t4"),
    ],
)
def test_normalise_model(name: str, model: str) -> None:
    assert normalise_model(name) == model


def test_selector_matches_whole_gpus_unless_it_names_a_mig_profile() -> None:
    a100 = Gpu(0, "GPU-a", "nvidia-a100-80gb", 81920)
    t4 = Gpu(1, "GPU-t", "nvidia-t4", 15360)
    mig = Gpu(2, "MIG-x", "nvidia-a100-40gb", 4864, "1g.5gb")
    assert Selector("NVIDIA A100-SXM4-80GB").matches(a100)  # the driver's spelling is accepted
    assert not Selector("nvidia-a100-80gb").matches(t4)
    assert Selector().matches(a100) and Selector().matches(t4)
    assert not Selector().matches(mig)
    assert Selector(mig_profile="1G.5GB").matches(mig)
    assert not Selector("nvidia-a100-80gb", "1g.5gb").matches(mig)
    assert Selector("nvidia-t4").describe(2) == "2 nvidia-t4 GPUs"
    assert Selector(mig_profile="1g.5gb").describe() == "1 1g.5gb MIG slice"


def test_visible_ids_are_indices_for_gpus_and_uuids_for_mig_slices() -> None:
    assert Gpu(3, "GPU-a", "nvidia-a100-80gb", 81920).visible_id == "3"
    assert Gpu(3, "MIG-b", "nvidia-a100-80gb", 9856, "1g.10gb").visible_id == "MIG-b"


class NVMLError(Exception):
    """The fake library's error class (pynvml.NVMLError's role)."""


class FakeNVML:
    """The NVML calls read_nvml makes, over a list of devices; fakes the library at its boundary."""

    NVMLError = NVMLError
    NVML_DEVICE_MIG_ENABLE = 1

    def __init__(self, devices: list[dict], init_error: bool = False):
        self.devices = devices
        self.init_error = init_error
        self.shut_down = False

    def nvmlInit(self) -> None:
        if self.init_error:
            raise NVMLError("NVML Shared Library Not Found")

    def nvmlShutdown(self) -> None:
        self.shut_down = True

    def nvmlDeviceGetCount(self) -> int:
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> dict:
        return self.devices[index]

    def nvmlDeviceGetName(self, handle: dict) -> bytes:
        return handle["name"].encode()  # older releases return bytes

    def nvmlDeviceGetUUID(self, handle: dict) -> str:
        return handle["uuid"]

    def nvmlDeviceGetMemoryInfo(self, handle: dict) -> SimpleNamespace:
        return SimpleNamespace(total=handle["mib"] * 2**20)

    def nvmlDeviceGetMigMode(self, handle: dict) -> list[int]:
        if "mig" not in handle:
            raise NVMLError("Not Supported")
        return [1 if handle["mig"] else 0, 0]

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: dict) -> int:
        return 7

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: dict, index: int) -> dict:
        if index >= len(handle["mig"]):
            raise NVMLError("Not Found")
        return handle["mig"][index]


def test_no_nvml_library_means_no_gpus() -> None:
    # This machine has no NVIDIA driver: the real pynvml fails to initialise.
    assert read_nvml() == []
    assert read_nvml(FakeNVML([], init_error=True)) == []


def test_nvml_package_missing_means_no_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    assert read_nvml() == []


class FailingNVML(FakeNVML):
    """A driver that answers the device count, then fails."""

    def nvmlDeviceGetUUID(self, handle: dict) -> str:
        raise NVMLError("Unknown Error")


def test_an_nvml_failure_while_reading_means_no_gpus_and_shuts_nvml_down() -> None:
    nvml = FailingNVML([{"name": "Tesla T4", "mib": 15360}])
    assert read_nvml(nvml) == []
    assert nvml.shut_down


def test_read_nvml_lists_gpus_and_mig_slices() -> None:
    nvml = FakeNVML(
        [
            {"name": "NVIDIA A100-SXM4-80GB", "uuid": "GPU-0", "mib": 81920, "mig": []},
            {"name": "Tesla T4", "uuid": "GPU-1", "mib": 15360},
            {
                "name": "NVIDIA A100-SXM4-40GB",
                "uuid": "GPU-2",
                "mib": 40960,
                "mig": [
                    {"name": "NVIDIA A100-SXM4-40GB MIG 3g.20gb", "uuid": "MIG-a", "mib": 19968},
                    {"name": "NVIDIA A100-SXM4-40GB MIG 1g.5gb", "uuid": "MIG-b", "mib": 4864},
                ],
            },
        ]
    )
    gpus = read_nvml(nvml)
    assert gpus == [
        Gpu(0, "GPU-0", "nvidia-a100-80gb", 81920),  # MIG-capable but off: a whole GPU
        Gpu(1, "GPU-1", "nvidia-t4", 15360),
        # MIG on: the slices are the devices, the parent is not allocatable itself.
        Gpu(2, "MIG-a", "nvidia-a100-40gb", 19968, "3g.20gb"),
        Gpu(2, "MIG-b", "nvidia-a100-40gb", 4864, "1g.5gb"),
    ]
    assert nvml.shut_down
    assert (
        describe_inventory(gpus)
        == "1 nvidia-a100-80gb, 1 nvidia-t4, 1 nvidia-a100-40gb/3g.20gb, 1 nvidia-a100-40gb/1g.5gb"
    )


def test_declared_gpus_are_numbered_in_order_with_stable_uuids() -> None:
    gpus = declared(
        [
            {"model": "nvidia-a100-80gb", "count": 2},
            {"model": "Tesla T4", "count": 1, "memory_mib": 15360},
            {"model": "nvidia-a100-80gb", "count": 1},
            {"model": "nvidia-h100-80gb", "count": 0},
        ]
    )
    assert gpus == [
        Gpu(0, "declared-nvidia-a100-80gb-0", "nvidia-a100-80gb", 81920),
        Gpu(1, "declared-nvidia-a100-80gb-1", "nvidia-a100-80gb", 81920),
        Gpu(2, "declared-nvidia-t4-0", "nvidia-t4", 15360),
        Gpu(3, "declared-nvidia-a100-80gb-2", "nvidia-a100-80gb", 81920),
    ]
    assert declared([]) == []


@pytest.mark.parametrize("entry", [{"count": 2}, {"model": "nvidia-t4"}, {"model": "nvidia-t4", "count": -1}])
def test_a_bad_declared_entry_is_a_config_error_naming_the_key(entry: dict) -> None:
    with pytest.raises(ConfigError, match=r"^spawner\.local\.gpus\.1: "):
        declared([{"model": "nvidia-t4", "count": 1}, entry])


def test_inventory_prefers_nvml_and_falls_back_to_declared() -> None:
    entries = [{"model": "nvidia-t4", "count": 2}]
    assert [g.uuid for g in inventory(entries)] == ["declared-nvidia-t4-0", "declared-nvidia-t4-1"]
    nvml = FakeNVML([{"name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-h", "mib": 81559}])
    assert inventory(entries, nvml) == [Gpu(0, "GPU-h", "nvidia-h100-80gb", 81559)]
    assert inventory(entries, FakeNVML([])) == declared(entries)
