"""What this machine offers (Inventory, sent in Hello) and how busy it is (Usage, in heartbeats)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from corral.agent.limits import CgroupLimits, memory_working_set, read_limits, usable_cpus
from corral.v1 import types_pb2

__all__ = [
    "GpuDevice",
    "GpuProbe",
    "collect_inventory",
    "collect_usage",
    "disk_free_mb",
    "probe_nvml",
]

_MB = 1024 * 1024


@dataclass(frozen=True)
class GpuDevice:
    """One GPU as the agent reports it."""

    index: int
    name: str = ""
    memory_mb: int = 0
    uuid: str = ""


GpuProbe = Callable[[], list[GpuDevice]]
"""The GPU discovery seam: returns the devices present (tests pass their own)."""


def _text(value: Any) -> str:
    # Older nvidia-ml-py versions return bytes, newer ones str.
    return value.decode() if isinstance(value, bytes) else str(value)


def probe_nvml() -> list[GpuDevice]:
    """Discover GPUs through NVML; any failure (no module, no driver, no device) means none."""
    try:
        import pynvml
    except Exception:
        return []
    try:
        pynvml.nvmlInit()
    except Exception:
        return []
    devices: list[GpuDevice] = []
    try:
        for index in range(int(pynvml.nvmlDeviceGetCount())):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            devices.append(
                GpuDevice(
                    index=index,
                    name=_text(pynvml.nvmlDeviceGetName(handle)),
                    memory_mb=int(memory.total) // _MB,
                    uuid=_text(pynvml.nvmlDeviceGetUUID(handle)),
                )
            )
    except Exception:
        # A half-working driver: report what was read before the failure.
        pass
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()
    return devices


def disk_free_mb(path: Path) -> int:
    """Free space (MB) of the file system holding ``path`` (0 when it cannot be read)."""
    try:
        return int(psutil.disk_usage(str(path)).free) // _MB
    except OSError:
        return 0


def collect_inventory(
    work_dir: Path,
    slots: int,
    gpus: int | None = None,
    probe: GpuProbe = probe_nvml,
    limits: CgroupLimits | None = None,
) -> types_pb2.Inventory:
    """Build the Inventory: cores, memory, free disk of the work dir and GPUs.

    Cores are the CPUs the agent may run on (its affinity), capped by its cgroup's CPU quota;
    memory is the host's, capped by its cgroup's memory limit (``limits``, read from the cgroup
    filesystem unless given: see :mod:`corral.agent.limits`). ``gpus`` overrides discovery (ids
    ``0..gpus-1``); otherwise ``probe`` is asked.
    """
    if limits is None:
        limits = read_limits()
    cores = float(usable_cpus())
    if limits.cpu_cores is not None:
        cores = min(cores, round(limits.cpu_cores, 3))
    memory = int(psutil.virtual_memory().total)
    if limits.memory_bytes is not None:
        memory = min(memory, limits.memory_bytes)
    if gpus is not None:
        devices = [GpuDevice(index=i, name="declared") for i in range(gpus)]
    else:
        try:
            devices = probe()
        except Exception:
            devices = []
    inventory = types_pb2.Inventory(
        cpu_cores=cores,
        memory_mb=memory // _MB,
        disk_mb=disk_free_mb(work_dir),
        gpu_count=len(devices),
        slots=slots,
    )
    for device in devices:
        inventory.gpus.add(index=device.index, name=device.name, memory_mb=device.memory_mb, uuid=device.uuid)
    return inventory


def collect_usage(work_dir: Path, running_attempts: int, limits: CgroupLimits | None = None) -> types_pb2.Usage:
    """Current load for a heartbeat. cpu_percent is measured since the previous call.

    Memory in use is the working set of the cgroup that limits the agent's memory (``limits``,
    as the inventory offers that limit), else the host's used memory.
    """
    try:
        load_1m = os.getloadavg()[0]
    except OSError:
        load_1m = 0.0
    used = memory_working_set(limits) if limits is not None else None
    if used is None:
        memory = psutil.virtual_memory()
        used = int(memory.total - memory.available)
    return types_pb2.Usage(
        cpu_percent=float(psutil.cpu_percent(interval=None)),
        memory_used_mb=used // _MB,
        load_1m=load_1m,
        running_attempts=running_attempts,
        disk_free_mb=disk_free_mb(work_dir),
    )
