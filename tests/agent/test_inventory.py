"""Inventory and usage: psutil figures, GPUs from the probe seam or declared by hand."""

from __future__ import annotations

import os
from pathlib import Path

import psutil

from corral.agent.inventory import GpuDevice, collect_inventory, collect_usage, probe_nvml
from corral.agent.limits import CgroupLimits


def test_inventory_without_gpus(tmp_path: Path) -> None:
    # No cgroup limits: the CPUs it may run on and the host's memory.
    inventory = collect_inventory(tmp_path, slots=3, probe=lambda: [], limits=CgroupLimits())
    assert inventory.cpu_cores == len(os.sched_getaffinity(0)) <= (psutil.cpu_count(logical=True) or 1)
    assert inventory.memory_mb == psutil.virtual_memory().total // (1024 * 1024)
    assert inventory.disk_mb > 0
    assert inventory.gpu_count == 0
    assert list(inventory.gpus) == []
    assert inventory.slots == 3


def test_declared_gpus_override_the_probe(tmp_path: Path) -> None:
    def probe() -> list[GpuDevice]:
        raise AssertionError("the probe must not run when GPUs are declared")

    inventory = collect_inventory(tmp_path, slots=1, gpus=2, probe=probe)
    assert inventory.gpu_count == 2
    assert [g.index for g in inventory.gpus] == [0, 1]


def test_gpu_probe_seam(tmp_path: Path) -> None:
    devices = [GpuDevice(index=0, name="Fake A100", memory_mb=40960, uuid="GPU-1")]
    inventory = collect_inventory(tmp_path, slots=1, probe=lambda: devices)
    assert inventory.gpu_count == 1
    gpu = inventory.gpus[0]
    assert (gpu.index, gpu.name, gpu.memory_mb, gpu.uuid) == (0, "Fake A100", 40960, "GPU-1")


def test_a_failing_probe_means_no_gpus(tmp_path: Path) -> None:
    def probe() -> list[GpuDevice]:
        raise RuntimeError("driver exploded")

    assert collect_inventory(tmp_path, slots=1, probe=probe).gpu_count == 0


def test_nvml_probe_never_crashes() -> None:
    # No GPU (or driver) in the test machine: an empty list, not an exception.
    assert isinstance(probe_nvml(), list)


def test_usage(tmp_path: Path) -> None:
    usage = collect_usage(tmp_path, running_attempts=4)
    assert usage.running_attempts == 4
    assert usage.memory_used_mb > 0
    assert usage.disk_free_mb > 0
    assert usage.load_1m >= 0
