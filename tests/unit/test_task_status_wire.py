"""A task's status message (``wire.task_status``) carries every field the task sets, and only those.

The builder passes only non-default fields (none of them has explicit presence, so the message is
the same) and reads the rare ones only when the task has any: a result carries every task.
"""

from __future__ import annotations

from corral.controller.rpc import wire
from corral.v1 import types_pb2 as pb

from .conftest import Sim, task_spec


def _fields(message: pb.TaskStatus) -> set[str]:
    return {field.name for field, _ in message.ListFields()}


def test_a_plain_waiting_task_sets_only_what_it_has(sim: Sim) -> None:
    workflow_id, _ = sim.submit([task_spec("a"), task_spec("b", "a")])
    task = next(t for t in sim.machine.tasks.values() if t.name == "b")
    message = wire.task_status(sim.machine, task)
    assert message.name == "b" and message.workflow_id == workflow_id and message.task_id == task.id
    assert message.agent_type == "shell" and list(message.dependencies) == ["a"]
    # Only set fields travel; defaults (attempts 0, no agent, no error, no rare field) do not.
    assert _fields(message) <= {
        "task_id",
        "name",
        "priority",
        "state",
        "agent_type",
        "workflow_id",
        "dependencies",
        "created_at",
        "rank_s",
        "expected_duration_s",
        "duration_source",
    }


def test_every_field_a_task_sets_reaches_its_status(sim: Sim) -> None:
    sim.submit([task_spec("a")])
    task = next(iter(sim.machine.tasks.values()))
    task.priority = 7
    task.attempts = 3
    task.retries_used = 2
    task.current_attempt_id = "att-1"
    task.agent_id = "agent-1"
    task.result = b'{"x": 1}'
    task.error = "it broke"
    task.exit_code = 4
    task.agent_losses = 2
    task.reruns_after_fence = 1
    task.failure_reason = "poison"
    task.preemptible = True
    task.preemptions = 5
    task.last_preemption = "preempted by big (priority 100)"
    task.gang = "g1"
    message = wire.task_status(sim.machine, task, reason="waiting for a slot", unschedulable=True)
    assert (message.priority, message.attempts, message.retries_used) == (7, 3, 2)
    assert (message.attempt_id, message.agent_id, message.result_json) == ("att-1", "agent-1", b'{"x": 1}')
    assert (message.error, message.exit_code, message.exit_code_known) == ("it broke", 4, True)
    assert (message.waiting_reason, message.unschedulable) == ("waiting for a slot", True)
    assert (message.agent_losses, message.reruns_after_fence, message.failure_reason) == (2, 1, "poison")
    assert (message.preemptible, message.preemptions, message.gang) == (True, 5, "g1")
    assert message.last_preemption == "preempted by big (priority 100)"
    assert message.state == wire.TASK_STATE_TO_PB[task.state]
