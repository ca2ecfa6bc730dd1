"""Stale per-agent cgroup levels are swept at agent start; busy or fresh ones are left alone (live cgroups)."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.agent import cgroup


@pytest.fixture
def parent() -> Iterator[tuple[str, list[Path]]]:
    found = cgroup.detect()
    if found is None or os.geteuid() != 0:
        pytest.skip("needs root and a writable cgroup hierarchy")
    name = f"corral-sweep-{uuid.uuid4().hex[:8]}"
    bases = [base / name for base in found[1].values()]
    yield name, bases
    for base in bases:
        for level in sorted(base.rglob("*"), key=lambda p: -len(p.parts)):
            if level.is_dir():
                level.rmdir()
        base.rmdir()


def _level(bases: list[Path], *parts: str) -> None:
    for base in bases:
        base.joinpath(*parts).mkdir(parents=True, exist_ok=True)


def test_sweep_removes_only_empty_idle_levels(parent: tuple[str, list[Path]]) -> None:
    name, bases = parent
    _level(bases, "dead-agent")
    _level(bases, "agent-with-attempt", "attempt-1")
    _level(bases, "busy-agent")
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        for base in bases:
            (base / "busy-agent" / "cgroup.procs").write_text(str(sleeper.pid))
        # Nothing is old enough yet: a live agent's fresh level is never taken.
        assert cgroup.sweep_stale(name, older_than_s=3600) == 0
        assert all((base / "dead-agent").is_dir() for base in bases)
        removed = cgroup.sweep_stale(name, older_than_s=0)
        assert removed == len(bases)  # the dead agent's level in every hierarchy
        for base in bases:
            assert not (base / "dead-agent").exists()
            assert (base / "agent-with-attempt" / "attempt-1").is_dir()
            assert (base / "busy-agent").is_dir()
    finally:
        sleeper.kill()
        sleeper.wait()
