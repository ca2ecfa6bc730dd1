"""TaskStatus carries each task's rank and expected duration over the wire (issue 9)."""

from __future__ import annotations

from corral.v1 import orchestrator_pb2 as OR
from corral.v1 import types_pb2 as pb
from tests.rpc.conftest import Controller, shell_task, workflow_spec


async def _tasks(controller: Controller, workflow_id: str) -> dict[str, pb.TaskStatus]:
    response = await controller.orchestrator.GetWorkflowStatus(
        OR.GetWorkflowStatusRequest(workflow_id=workflow_id, include_tasks=True)
    )
    return {task.name: task for task in response.status.tasks}


async def test_status_shows_rank_expected_duration_and_source(controller: Controller) -> None:
    spec = workflow_spec(
        "ranked",
        [
            shell_task("a", estimated_duration_s=2),
            shell_task("b", "a", estimated_duration_s=3),
            shell_task("c", "a", estimated_duration_s=1),
            shell_task("d", "b", "c", estimated_duration_s=1),
        ],
    )
    submitted = await controller.orchestrator.SubmitWorkflow(OR.SubmitWorkflowRequest(spec=spec, start=False))
    before = await _tasks(controller, submitted.workflow_id)
    assert before["a"].duration_source == "" and before["a"].rank_s == 0  # not ranked until it starts
    await controller.orchestrator.ExecuteWorkflow(OR.ExecuteWorkflowRequest(workflow_id=submitted.workflow_id))
    tasks = await _tasks(controller, submitted.workflow_id)
    assert {name: t.rank_s for name, t in tasks.items()} == {"a": 6.0, "b": 4.0, "c": 2.0, "d": 1.0}
    assert {t.duration_source for t in tasks.values()} == {"estimate"}
    assert tasks["b"].expected_duration_s == 3.0
