"""The CPU and memory this agent may really use: its cgroup's limits (v1 or v2) and its CPU affinity.

In a container (compose, Kubernetes) or a systemd slice, the host's figures overstate what the
agent can use: ``--scale agent=3`` on one host would triple the advertised capacity. The inventory
takes the smallest of the host's figure and every limit on the agent's cgroup and its ancestors:

- cgroup v2: ``cpu.max`` (``QUOTA PERIOD``, or ``max``) and ``memory.max`` (bytes, or ``max``);
- cgroup v1: ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (quota ``-1``: none) and
  ``memory.limit_in_bytes`` (a huge value means none).

The agent's cgroup is read from ``/proc/self/cgroup``. Inside a container with its own cgroup
namespace (or a v1 container whose mount shows only its own cgroup) that path does not exist under
the mount; the mount's root is then the agent's own cgroup. CPU quotas may be fractional (1.5 cores).

Standard library only; every read that fails (no cgroupfs, no permission) means "no limit".
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["CgroupLimits", "memory_working_set", "read_limits", "usable_cpus"]

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
# v1 reports "no limit" as a page-rounded LONG_MAX; anything this large (8 EiB / 2) is no limit.
_UNLIMITED = 1 << 62


@dataclass(frozen=True, slots=True)
class CgroupLimits:
    """Limits found on the agent's cgroup (None: none), and the cgroup version they came from."""

    version: int = 0  # 0: no cgroup filesystem found
    cpu_cores: float | None = None
    memory_bytes: int | None = None
    # The cgroup that sets the memory limit: its usage is what counts against it (heartbeats).
    memory_dir: Path | None = field(default=None, compare=False)


def _own_paths(proc_cgroup: Path) -> dict[str, str]:
    """Controller ("" for the v2 unified hierarchy) -> the process's cgroup path."""
    paths: dict[str, str] = {}
    try:
        text = proc_cgroup.read_text()
    except OSError:
        return paths
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(",") if parts[1] else [""]:
                paths[controller] = parts[2]
    return paths


def _chain(mount: Path, own: str) -> list[Path]:
    """The agent's cgroup directory under ``mount`` and its ancestors up to the mount, innermost first."""
    leaf = mount / own.lstrip("/") if own else mount
    if not leaf.is_dir():
        leaf = mount  # a namespaced or container mount: its root is our own cgroup
    chain = [leaf]
    while chain[-1] != mount and mount in chain[-1].parents:
        chain.append(chain[-1].parent)
    return chain


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _smallest(values: list[float]) -> float | None:
    return min(values) if values else None


def _tightest(limits: list[tuple[int, Path]]) -> tuple[int | None, Path | None]:
    if not limits:
        return None, None
    value, directory = min(limits, key=lambda limit: limit[0])
    return value, directory


def _v2(mount: Path, own: str) -> CgroupLimits:
    cpus: list[float] = []
    memory: list[tuple[int, Path]] = []
    for directory in _chain(mount, own):
        cpu_max = (_read(directory / "cpu.max") or "").split()
        if len(cpu_max) == 2 and cpu_max[0] != "max":
            try:
                quota, period = int(cpu_max[0]), int(cpu_max[1])
            except ValueError:
                pass
            else:
                if quota > 0 and period > 0:
                    cpus.append(quota / period)
        memory_max = _read(directory / "memory.max")
        if memory_max and memory_max != "max" and memory_max.isdigit():
            memory.append((int(memory_max), directory))
    return CgroupLimits(2, _smallest(cpus), *_tightest(memory))


def _v1(root: Path, own: dict[str, str]) -> CgroupLimits:
    cpus: list[float] = []
    memory: list[tuple[int, Path]] = []
    cpu_mount = root / "cpu"
    if cpu_mount.is_dir():
        for directory in _chain(cpu_mount, own.get("cpu", "/")):
            try:
                quota = int(_read(directory / "cpu.cfs_quota_us") or "-1")
                period = int(_read(directory / "cpu.cfs_period_us") or "0")
            except ValueError:
                continue
            if quota > 0 and period > 0:
                cpus.append(quota / period)
    memory_mount = root / "memory"
    if memory_mount.is_dir():
        for directory in _chain(memory_mount, own.get("memory", "/")):
            text = _read(directory / "memory.limit_in_bytes")
            if text and text.isdigit() and int(text) < _UNLIMITED:
                memory.append((int(text), directory))
    return CgroupLimits(1, _smallest(cpus), *_tightest(memory))


def read_limits(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> CgroupLimits:
    """The CPU quota (cores) and memory limit (bytes) on this process's cgroup and its ancestors."""
    own = _own_paths(proc_cgroup)
    if (root / "cgroup.controllers").exists():
        return _v2(root, own.get("", "/"))
    if (root / "memory").is_dir() or (root / "cpu").is_dir():
        return _v1(root, own)
    return CgroupLimits()


def memory_working_set(limits: CgroupLimits) -> int | None:
    """Bytes in use in the cgroup that sets the memory limit, as the kernel counts them against it,
    less inactive file pages (reclaimable): the "working set" of docker stats and the kubelet.
    None without a limit or when unreadable."""
    directory = limits.memory_dir
    if directory is None:
        return None
    usage_name, inactive_key = (
        ("memory.current", "inactive_file") if limits.version == 2 else ("memory.usage_in_bytes", "total_inactive_file")
    )
    usage = _read(directory / usage_name)
    if usage is None or not usage.isdigit():
        return None
    inactive = 0
    for line in (_read(directory / "memory.stat") or "").splitlines():
        key, _, value = line.partition(" ")
        if key == inactive_key and value.isdigit():
            inactive = int(value)
            break
    return max(0, int(usage) - inactive)


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity: a cpuset or ``taskset``), else the host's."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
