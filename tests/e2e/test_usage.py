"""End to end: the usage real agents measure (peak RSS, CPU seconds) reaches TaskStatus and `corral
status`, for a shell task under its supervisor and a python task in a warm worker."""

from __future__ import annotations

import sys

import pytest

from tests.e2e.conftest import Cluster, WorkflowState
from tests.procs import corral

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

PY = sys.executable
MB = 1 << 20
# Touches 60 MiB (written, so resident), then spins for 0.5 s of CPU time (not wall time: the host is shared).
HUNGRY = (
    "import time; block = b'x' * (60 << 20); end = time.process_time() + 0.5\n"
    "while time.process_time() < end: pass\n"
    "print(len(block) >> 20)"
)


def test_measured_usage_reaches_task_status_and_the_cli(cluster: Cluster) -> None:
    api = cluster.start({"alpha": 2})
    spec = {
        "name": "usage",
        "tasks": [
            {"name": "hungry", "agent_type": "shell", "payload": {"command": [PY, "-c", HUNGRY]}},
            {"name": "py", "agent_type": "python", "payload": {"function": "e2e_tasks:constant", "args": [7]}},
        ],
    }
    workflow_id = api.submit(spec)
    assert api.wait_done(workflow_id, 45).state == WorkflowState.COMPLETED
    tasks = api.tasks(workflow_id)
    hungry, py = tasks["hungry"], tasks["py"]
    assert 50 * MB <= hungry.peak_rss_bytes < 4096 * MB, hungry
    assert 0.4 <= hungry.cpu_s < 30, hungry
    # The warm worker's own memory (an interpreter) at least; next to no CPU for a constant.
    assert 5 * MB <= py.peak_rss_bytes < 1024 * MB, py
    assert 0 <= py.cpu_s < 1.0, py
    shown = corral("status", workflow_id, "--address", api.address, timeout=30)
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    row = next(line.split() for line in out.splitlines() if line.startswith("hungry"))
    # NAME STATE ATTEMPTS QUEUED RUN PEAK-MEM CPU DETAIL
    assert row[1] == "completed" and row[5].endswith("Mi") and int(row[5][:-2]) >= 50, out
