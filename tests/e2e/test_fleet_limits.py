"""Issue 11: a real agent started inside a cgroup v1 memory (and cpu) limit of this machine
advertises that limit to the controller, not the host's memory and cores."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.controller.sdk import SyncClient
from tests.agent.test_limits import _v1_dir
from tests.procs import start_controller, stop

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(_v1_dir("memory") is None, reason="needs root and a writable cgroup v1 memory hierarchy"),
]

MIB = 1024 * 1024


def _remove_tree(directory: Path) -> None:
    """rmdir a cgroup and whatever the agent left below it (attempt cgroups), deepest first."""
    if not directory.is_dir():
        return
    for child in sorted((p for p in directory.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            child.rmdir()
    directory.rmdir()


@pytest.fixture
def limited() -> Iterator[tuple[list[Path], bool]]:
    """A v1 memory cgroup limited to 400 MiB (and a cpu one with a 1.5-core quota where writable):
    the ``cgroup.procs`` files to join, and whether the cpu one exists. Removed afterwards."""
    name = f"corral-e2e-limits-{uuid.uuid4().hex[:8]}"
    made: list[Path] = []
    try:
        memory_parent = _v1_dir("memory")
        assert memory_parent is not None
        memory = memory_parent / name
        memory.mkdir()
        made.append(memory)
        (memory / "memory.limit_in_bytes").write_text(str(400 * MIB))
        cpu_parent = _v1_dir("cpu")
        if cpu_parent is not None:
            cpu = cpu_parent / name
            cpu.mkdir()
            made.append(cpu)
            (cpu / "cpu.cfs_period_us").write_text("100000")
            (cpu / "cpu.cfs_quota_us").write_text("150000")
        yield [group / "cgroup.procs" for group in made], cpu_parent is not None
    finally:
        for group in made:
            _remove_tree(group)


def test_agent_in_a_limited_cgroup_advertises_the_limit(tmp_path: Path, limited: tuple[list[Path], bool]) -> None:
    procs, has_cpu = limited
    controller, address = start_controller(tmp_path)
    work = tmp_path / "work-limited"
    work.mkdir()
    join = " ".join(f"echo $$ > {p};" for p in procs)
    command = f'{join} exec "$0" -m corral.agent --controller {address} --name limited --work-dir {work}'
    log_path = tmp_path / "agent-limited.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(["sh", "-c", command, sys.executable], stdout=log, stderr=subprocess.STDOUT)
    try:
        with SyncClient(address) as client:
            deadline = time.monotonic() + 60
            while not [a for a in client.list_agents() if a.name == "limited" and a.state == "connected"]:
                assert proc.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, "the agent did not connect"
                time.sleep(0.1)
            # Heartbeats report the limited cgroup's working set: within the limit, not the host's use.
            while not [a for a in client.list_agents() if a.name == "limited" and a.usage.memory_used_mb > 0]:
                assert time.monotonic() < deadline, "no heartbeat usage"
                time.sleep(0.1)
            (agent,) = [a for a in client.list_agents() if a.name == "limited"]
        assert agent.inventory.memory_mb == 400
        assert 0 < agent.usage.memory_used_mb <= 400
        if has_cpu:
            assert agent.inventory.cpu_cores == min(1.5, len(os.sched_getaffinity(0)))
        assert "memory_mb=400" in log_path.read_text()
    finally:
        stop(proc)
        stop(controller)
