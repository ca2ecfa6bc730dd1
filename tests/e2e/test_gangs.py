"""End to end (issue 9): a gang that waits until all of its tasks fit, a reservation that expires
unused, and AIMD halving a workflow's concurrency after real OOM kills, with real agents."""

from __future__ import annotations

import os
import sys
from typing import Any

import pytest

from corral.agent import cgroup
from corral.v1 import orchestrator_pb2
from tests.e2e.conftest import Cluster, TaskState, WorkflowState, eventually
from tests.procs import corral

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

PY = sys.executable


def _events(cluster: Cluster, workflow_id: str) -> list[Any]:
    request = orchestrator_pb2.GetWorkflowEventsRequest(workflow_id=workflow_id)
    return list(cluster.api.orchestrator.GetWorkflowEvents(request, timeout=10).events)


def _sleep(name: str, seconds: float, **fields: Any) -> dict[str, Any]:
    return {"name": name, "payload": {"command": ["sleep", str(seconds)]}, "resources": {"cpu_cores": 0.1}, **fields}


def test_gang_waits_until_all_of_its_tasks_fit(cluster: Cluster) -> None:
    cluster.start_controller("--prefetch", "0")
    cluster.start_agent("alpha", slots=2)
    api = cluster.api
    api.wait_agents(["alpha"])
    workflow_id = api.submit({"name": "gang", "tasks": [_sleep(f"g{i}", 0.2, gang="trio") for i in range(3)]})

    def held() -> Any:
        tasks = api.tasks(workflow_id)
        if all(t.state == TaskState.READY for t in tasks.values()) and tasks["g0"].plan_reason:
            return tasks
        return None

    tasks = eventually(held, 20, "the gang held with its reason")
    assert tasks["g0"].plan_reason == "gang trio: waiting until all 3 tasks fit (2 fit now)"
    assert tasks["g0"].gang == "trio"
    assert api.explain(tasks["g0"].task_id).reason == "gang trio: waiting until all 3 tasks fit (2 fit now)"
    # Two of three fit on alpha, yet none started: the gang is placed all at once or not at all.
    assert all(t.state == TaskState.READY for t in api.tasks(workflow_id).values())
    cluster.start_agent("beta", slots=2)
    status = api.wait_done(workflow_id, timeout=30)
    assert status.state == WorkflowState.COMPLETED, status
    placed = [e for e in _events(cluster, workflow_id) if e.kind == "placed"]
    assert len(placed) == 3 and len({e.seq for e in placed}) == 3
    assert len({(e.at.seconds, e.at.nanos) for e in placed}) == 1  # one pass placed all three


def test_reservation_expires_when_unused(cluster: Cluster) -> None:
    # A 2-GPU task behind two 1-GPU tasks; it reserves after 1 s, expected to wait ~3 s more (the
    # estimates), so the reservation lasts 2 x 3 s. A 1-GPU task that comes while it is held waits
    # for it to expire, then runs in the room (the long task still holds the other GPU).
    cluster.start_controller("--prefetch", "0", "--reserve-after", "1", "--reservation-expiry-factor", "2")
    cluster.start_agent("alpha", slots=4, flags=["--gpus", "2"])
    api = cluster.api
    api.wait_agents(["alpha"])
    gpu = {"cpu_cores": 0.1, "gpu_count": 1}
    smalls = api.submit(
        {
            "name": "smalls",
            "tasks": [
                _sleep("short", 1, resources=gpu, estimated_duration=4),
                _sleep("long", 60, resources=gpu, estimated_duration=4),
            ],
        }
    )
    eventually(lambda: api.tasks(smalls)["long"].state == TaskState.RUNNING or None, 20, "the small tasks running")
    big = api.submit({"name": "big", "tasks": [_sleep("big", 0.1, resources={"cpu_cores": 0.1, "gpu_count": 2})]})
    eventually(lambda: any(e.kind == "reserved" for e in _events(cluster, big)) or None, 20, "big reserves alpha")
    eventually(lambda: api.tasks(smalls)["short"].state == TaskState.COMPLETED or None, 20, "short done")
    late = api.submit({"name": "late", "tasks": [_sleep("late", 0.1, resources=gpu)]})

    def expired() -> Any:
        ended = [e for e in _events(cluster, big) if e.kind == "reservation_ended"]
        return ended or None

    ended = eventually(expired, 30, "the reservation to expire")
    assert "expired unused" in ended[0].message
    status = api.wait_done(late, timeout=30)
    assert status.state == WorkflowState.COMPLETED
    started = status.tasks[0].started_at
    # The late task did not start into the reserved room: only after the reservation expired.
    assert (started.seconds, started.nanos) >= (ended[0].at.seconds, ended[0].at.nanos)
    assert api.tasks(big)["big"].state == TaskState.READY  # long still holds a GPU
    api.cancel(smalls, force=True)
    api.cancel(big, force=True)


HAS_MEMORY_CGROUP = os.geteuid() == 0 and cgroup.detect() is not None
HOG = "x = b'x' * (400 << 20); print('survived')"


@pytest.mark.skipif(not HAS_MEMORY_CGROUP, reason="needs root and a writable memory cgroup (v1 or v2) to OOM-kill")
def test_aimd_halves_concurrency_on_oom_kills(cluster: Cluster) -> None:
    cluster.start_controller("--prefetch", "0")
    cluster.start_agent("alpha", slots=4)
    api = cluster.api
    api.wait_agents(["alpha"])
    hog = {"name": "hog", "payload": {"command": [PY, "-c", HOG]}, "resources": {"cpu_cores": 0.1, "memory_mb": 48}}
    tasks = [_sleep(f"s{i}", 8) for i in range(3)] + [hog] + [_sleep(f"w{i}", 0.1) for i in range(4)]
    workflow_id = api.submit({"name": "aimd", "tasks": tasks})

    def halved() -> Any:
        events = [e for e in _events(cluster, workflow_id) if e.kind == "concurrency"]
        return events or None

    events = eventually(halved, 40, "the concurrency halved after the OOM kill")
    assert events[0].message.startswith("concurrency halved: OOM kill of task hog (limit ")
    status = api.status(workflow_id)
    limit = status.concurrency_limit
    assert 1 <= limit <= 2, status  # half of the (up to 4) attempts active when hog was killed
    # The sleepers hold their slots for 8 s: no success can grow the limit back before this.
    shown = corral("status", workflow_id, "--address", api.address, timeout=30)
    assert shown.returncode == 0, shown.stderr
    assert any(line.split()[:3] == ["Concurrency", "limit", str(limit)] for line in shown.stdout.splitlines())
    hog_status = api.tasks(workflow_id)["hog"]
    assert "out of memory" in hog_status.error, hog_status
    api.wait_done(workflow_id, timeout=60)
