"""``make demo`` works: examples/demo.py exits 0 and leaves no process of its cluster behind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psutil
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo.py"


def _processes_under(base_dir: Path) -> list[str]:
    """Processes whose command line mentions the demo's directory (its controller, agents, workers)."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "cwd"]):
        try:
            cmdline = " ".join(proc.info["cmdline"] or [])
            cwd = proc.info["cwd"] or ""
        except psutil.Error:
            continue
        if str(base_dir) in cmdline or cwd.startswith(str(base_dir)):
            found.append(f"{proc.info['pid']}: {cmdline}")
    return found


def test_demo_runs_every_example_and_cleans_up(tmp_path: Path) -> None:
    base_dir = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, str(DEMO), "--base-dir", str(base_dir)],
        capture_output=True,
        text=True,
        check=False,
        timeout=200,
    )
    report = f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert done.returncode == 0, report
    assert "every example behaved as expected" in done.stdout, report
    assert "dashboard at http://127.0.0.1:" in done.stdout, report
    for name in ("pipeline", "retry", "priority-low", "priority-high"):
        assert f"\n{name} (" in done.stdout, f"no summary of {name}\n{report}"
    leftovers = _processes_under(base_dir)
    assert not leftovers, "the demo left processes running:\n" + "\n".join(leftovers)
