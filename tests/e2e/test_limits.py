"""End to end: tasks no agent can ever run wait in READY with the reason, and the rest of the workflow runs.

Two agents, one declaring no GPU and one declaring a single GPU (``--gpus``), both with this
machine's memory; tasks ask for four GPUs, four times the machine's memory, or an agent type
nobody offers.
"""

from __future__ import annotations

import json
import time
from typing import Any

import psutil
import pytest

from tests.e2e.conftest import Api, Cluster, TaskState, WorkflowState, eventually

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

_MB = 1024 * 1024


def _echo(name: str, value: Any, **extra: Any) -> dict[str, Any]:
    return {"name": name, "agent_type": "shell", "payload": {"shell": f"echo '{json.dumps(value)}'"}, **extra}


@pytest.fixture
def api(cluster: Cluster) -> Api:
    cluster.start_controller()
    cluster.start_agent("no-gpu", slots=2, flags=["--gpus", "0"])
    cluster.start_agent("one-gpu", slots=2, flags=["--gpus", "1"])
    cluster.api.wait_agents(["no-gpu", "one-gpu"])
    return cluster.api


def test_unplaceable_tasks_wait_with_reasons_while_the_rest_completes(api: Api) -> None:
    machine_mb = int(psutil.virtual_memory().total) // _MB
    runnable = {"ok-py", "ok-sh", "gpu-one", "after-ok"}
    spec = {
        "name": "limits",
        "tasks": [
            {"name": "ok-py", "agent_type": "python", "payload": {"function": "e2e_tasks:constant", "args": [1]}},
            _echo("ok-sh", 2),
            {
                "name": "gpu-one",
                "agent_type": "shell",
                "payload": {"shell": 'echo "\\"$CUDA_VISIBLE_DEVICES\\""'},
                "resources": {"gpu_count": 1},
            },
            {
                "name": "after-ok",
                "agent_type": "python",
                "dependencies": ["ok-py", "ok-sh"],
                "payload": {"function": "e2e_tasks:plus"},
            },
            _echo("gpu-hog", "never", resources={"gpu_count": 4}),
            _echo("mem-hog", "never", resources={"memory_mb": 4 * machine_mb}),
            {"name": "fpga-job", "agent_type": "fpga", "payload": {"bitstream": "x.bit"}},
        ],
    }
    workflow_id = api.submit(spec)

    def runnable_done() -> dict[str, Any] | None:
        tasks = api.tasks(workflow_id)
        return tasks if all(tasks[n].state == TaskState.COMPLETED for n in runnable) else None

    tasks = eventually(runnable_done, 30, "the runnable tasks to complete")
    assert json.loads(tasks["ok-py"].result_json) == 1
    assert json.loads(tasks["after-ok"].result_json) == 3
    # The one-GPU task went to the only agent with a GPU, and saw the device it was given.
    assert tasks["gpu-one"].agent_id == "one-gpu"
    assert json.loads(tasks["gpu-one"].result_json) == "0"

    time.sleep(1.0)  # several scheduling ticks: the others still do not move
    status = api.status(workflow_id)
    assert status.state == WorkflowState.RUNNING
    by_name = {t.name: t for t in status.tasks}
    wanted = {"gpu-hog": "gpu_count", "mem-hog": "memory_mb", "fpga-job": "fpga"}
    for name, word in wanted.items():
        listed = by_name[name]
        assert listed.state == TaskState.READY
        assert listed.attempts == 0
        assert listed.unschedulable, f"{name} should be marked unschedulable"
        assert word in listed.waiting_reason, listed.waiting_reason

        explained = api.explain(listed.task_id)
        assert word in explained.reason, explained.reason
        assert explained.task.unschedulable
        assert explained.task.state == TaskState.READY
        verdicts = {v.agent_name: v.reason for v in explained.agents}
        assert set(verdicts) == {"no-gpu", "one-gpu"}
        assert all(verdicts.values()), f"an agent was said to fit {name}: {verdicts}"

    gpu = api.explain(by_name["gpu-hog"].task_id)
    assert "needs 4" in gpu.reason and "largest agent has 1" in gpu.reason, gpu.reason
    memory = api.explain(by_name["mem-hog"].task_id)
    assert str(4 * machine_mb) in memory.reason, memory.reason
    fpga = api.explain(by_name["fpga-job"].task_id)
    assert "agent_type 'fpga'" in fpga.reason, fpga.reason

    cancelled = api.cancel(workflow_id, force=True)
    assert cancelled.state == WorkflowState.CANCELLED
    final = {t.name: t.state for t in api.status(workflow_id).tasks}
    assert {final[n] for n in wanted} == {TaskState.CANCELLED}
    assert {final[n] for n in runnable} == {TaskState.COMPLETED}


def test_status_with_tasks_while_a_task_waits(cluster: Cluster) -> None:
    # No agent at all: the only task stays READY, and listing it must not break the status call.
    # (Regression: the waiting-reason cache was keyed on an unhashable value and answered INTERNAL.)
    cluster.start_controller()
    api = cluster.api
    workflow_id = api.submit({"name": "lonely", "tasks": [_echo("alone", 1)]})
    status = api.status(workflow_id)
    (task,) = status.tasks
    assert task.state == TaskState.READY
    assert task.unschedulable
    assert task.waiting_reason == "no agents connected"
    api.cancel(workflow_id)
