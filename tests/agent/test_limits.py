"""Issue 11: the inventory respects cgroup v1 and v2 limits (CPU quota, memory limit).

Fixture cgroupfs trees cover both versions, nesting (an ancestor's limit counts) and container
mounts (the agent's path missing under the mount); the last test puts a real process in a v1
memory and cpu cgroup of this machine and reads its limits live.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from corral.agent.inventory import collect_inventory
from corral.agent.limits import CgroupLimits, read_limits, usable_cpus

MIB = 1024 * 1024
V1_UNLIMITED = "9223372036854771712"


def _files(base: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = base / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")


def _proc(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "proc-self-cgroup"
    path.write_text(text)
    return path


def test_v2_quota_on_the_cgroup_and_memory_limit_on_an_ancestor(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    _files(
        root,
        {
            "cgroup.controllers": "cpu memory pids",
            "kubepods/cpu.max": "max 100000",
            "kubepods/memory.max": str(2048 * MIB),
            "kubepods/pod1/memory.max": str(512 * MIB),
            "kubepods/pod1/agent/cpu.max": "150000 100000",
            "kubepods/pod1/agent/memory.max": "max",
        },
    )
    limits = read_limits(root, _proc(tmp_path, "0::/kubepods/pod1/agent\n"))
    assert limits == CgroupLimits(2, 1.5, 512 * MIB)


def test_v2_without_limits(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    _files(root, {"cgroup.controllers": "cpu memory", "a/cpu.max": "max 100000", "a/memory.max": "max"})
    assert read_limits(root, _proc(tmp_path, "0::/a\n")) == CgroupLimits(2, None, None)


def test_v2_container_with_its_own_cgroup_namespace_reads_the_mount_root(tmp_path: Path) -> None:
    # docker/compose: /proc/self/cgroup says "0::/" (namespaced) or a host path not under the mount.
    root = tmp_path / "cg"
    _files(root, {"cgroup.controllers": "cpu memory", "cpu.max": "200000 100000", "memory.max": str(768 * MIB)})
    assert read_limits(root, _proc(tmp_path, "0::/\n")) == CgroupLimits(2, 2.0, 768 * MIB)
    assert read_limits(root, _proc(tmp_path, "0::/system.slice/docker-abc.scope\n")) == CgroupLimits(2, 2.0, 768 * MIB)


def test_v1_cfs_quota_and_memory_limit(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    _files(
        root,
        {
            "cpu/cpu.cfs_quota_us": "-1",
            "cpu/cpu.cfs_period_us": "100000",
            "cpu/docker/c1/cpu.cfs_quota_us": "50000",
            "cpu/docker/c1/cpu.cfs_period_us": "100000",
            "memory/memory.limit_in_bytes": V1_UNLIMITED,
            "memory/docker/c1/memory.limit_in_bytes": str(256 * MIB),
        },
    )
    proc = _proc(tmp_path, "4:memory:/docker/c1\n2:cpu,cpuacct:/docker/c1\n0::/\n")
    assert read_limits(root, proc) == CgroupLimits(1, 0.5, 256 * MIB)


def test_v1_unlimited_and_container_mount(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    _files(
        root,
        {
            "cpu/cpu.cfs_quota_us": "-1",
            "cpu/cpu.cfs_period_us": "100000",
            "memory/memory.limit_in_bytes": V1_UNLIMITED,
        },
    )
    # A v1 container sees its own cgroup at the mount root while /proc names the host path.
    proc = _proc(tmp_path, "4:memory:/docker/c1\n2:cpu,cpuacct:/docker/c1\n")
    assert read_limits(root, proc) == CgroupLimits(1, None, None)
    (root / "memory/memory.limit_in_bytes").write_text(str(64 * MIB))
    assert read_limits(root, proc).memory_bytes == 64 * MIB


def test_no_cgroup_filesystem_means_no_limits(tmp_path: Path) -> None:
    assert read_limits(tmp_path / "none", tmp_path / "no-proc") == CgroupLimits()


def test_inventory_takes_the_smaller_of_host_and_cgroup(tmp_path: Path) -> None:
    limited = collect_inventory(tmp_path, slots=1, probe=lambda: [], limits=CgroupLimits(2, 0.5, 300 * MIB))
    assert limited.cpu_cores == 0.5 and limited.memory_mb == 300
    huge = collect_inventory(tmp_path, slots=1, probe=lambda: [], limits=CgroupLimits(2, 4096.0, 1 << 60))
    assert huge.cpu_cores == usable_cpus()
    assert huge.memory_mb < 1 << 40  # the host's memory, not the limit


# --- live, on this machine's cgroups ---------------------------------------------------------------


def _v1_dir(controller: str) -> Path | None:
    """A writable v1 hierarchy's directory of this process's cgroup, or None."""
    mount = Path("/sys/fs/cgroup") / controller
    if os.geteuid() != 0 or (Path("/sys/fs/cgroup") / "cgroup.controllers").exists() or not mount.is_dir():
        return None
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            own = mount / path.lstrip("/")
            return own if own.is_dir() and os.access(own, os.W_OK) else None
    return None


_CHILD = """
import json, os, sys
from pathlib import Path
from corral.agent.inventory import collect_inventory
from corral.agent.limits import read_limits
for procs in sys.argv[1:]:
    Path(procs).write_text(str(os.getpid()))
limits = read_limits()
inventory = collect_inventory(Path("."), slots=1, probe=lambda: [])
print(json.dumps([limits.version, limits.cpu_cores, limits.memory_bytes, inventory.cpu_cores, inventory.memory_mb]))
"""


@pytest.mark.skipif(_v1_dir("memory") is None, reason="needs root and a writable cgroup v1 memory hierarchy")
def test_v1_limits_live_on_this_machine(tmp_path: Path) -> None:
    name = f"corral-limits-test-{uuid.uuid4().hex[:8]}"
    memory_parent = _v1_dir("memory")
    assert memory_parent is not None
    memory = memory_parent / name
    memory.mkdir()
    made = [memory]
    try:
        (memory / "memory.limit_in_bytes").write_text(str(300 * MIB))
        procs = [str(memory / "cgroup.procs")]
        cpu_parent = _v1_dir("cpu")
        if cpu_parent is not None:
            cpu = cpu_parent / name
            cpu.mkdir()
            made.append(cpu)
            (cpu / "cpu.cfs_period_us").write_text("100000")
            (cpu / "cpu.cfs_quota_us").write_text("50000")
            procs.append(str(cpu / "cgroup.procs"))
        out = subprocess.run(
            [sys.executable, "-c", _CHILD, *procs], capture_output=True, text=True, cwd=tmp_path, timeout=60
        )
        assert out.returncode == 0, out.stderr
        version, cpu_cores, memory_bytes, inventory_cores, inventory_mb = json.loads(out.stdout)
        assert version == 1 and memory_bytes == 300 * MIB and inventory_mb == 300
        if cpu_parent is not None:
            assert cpu_cores == 0.5 and inventory_cores == 0.5
    finally:
        for directory in made:
            directory.rmdir()  # the child exited: the cgroup is empty


def test_usage_is_the_working_set_of_the_cgroup_that_sets_the_limit(tmp_path: Path) -> None:
    from corral.agent.inventory import collect_usage
    from corral.agent.limits import memory_working_set

    root = tmp_path / "cg"
    _files(
        root,
        {
            "cgroup.controllers": "memory",
            "pod/memory.max": str(512 * MIB),
            "pod/memory.current": str(300 * MIB),
            "pod/memory.stat": f"anon {200 * MIB}\ninactive_file {100 * MIB}\nactive_file 0",
            "pod/agent/memory.max": "max",
            "pod/agent/memory.current": str(10 * MIB),
        },
    )
    limits = read_limits(root, _proc(tmp_path, "0::/pod/agent\n"))
    assert limits.memory_dir == root / "pod"
    assert memory_working_set(limits) == 200 * MIB  # the pod's usage, less reclaimable file pages
    assert collect_usage(tmp_path, 0, limits).memory_used_mb == 200
    v1 = tmp_path / "v1"
    _files(
        v1,
        {
            "memory/c/memory.limit_in_bytes": str(256 * MIB),
            "memory/c/memory.usage_in_bytes": str(64 * MIB),
            "memory/c/memory.stat": f"cache 0\ntotal_inactive_file {16 * MIB}",
        },
    )
    assert memory_working_set(read_limits(v1, _proc(tmp_path, "4:memory:/c\n"))) == 48 * MIB
    assert memory_working_set(CgroupLimits()) is None  # no limit: the host's figure is used
