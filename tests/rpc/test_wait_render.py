"""A waited submission's or execution's result is written in the tick that ends the workflow (no tick of its own).

Real runtime, real SQLite file, real gRPC server (the ``controller`` fixture); the task is an
external one, pulled and completed over the Scheduler API, so the test decides when it ends.
"""

from __future__ import annotations

import asyncio
from typing import Any

from corral.controller.core.machine import Machine
from corral.v1 import orchestrator_pb2, scheduler_pb2, types_pb2
from tests.rpc.conftest import Controller, shell_task, workflow_spec

OR = orchestrator_pb2


def _external(name: str) -> Any:
    return workflow_spec(name, [shell_task("only", agent_type="ext", payload={"job": 1})])


async def _complete_the_task(controller: Controller, result: bytes) -> None:
    pulled = await controller.scheduler.GetNextTask(
        scheduler_pb2.GetNextTaskRequest(worker_id="w1", agent_types=["ext"], wait_s=10)
    )
    assert pulled.found
    await controller.scheduler.CompleteTask(
        scheduler_pb2.CompleteTaskRequest(attempt_id=pulled.assignment.attempt_id, worker_id="w1", result_json=result)
    )


async def _registered(controller: Controller, count: int) -> str:
    rt = controller.runtime
    async with asyncio.timeout(30):
        while sum(len(w) for w in rt.waiters.values()) < count:
            await asyncio.sleep(0.01)
    return next(iter(rt.waiters))


async def test_the_render_runs_once_in_the_tick_that_ends_the_workflow(controller: Controller) -> None:
    rt = controller.runtime
    submitted = await controller.orchestrator.SubmitWorkflow(OR.SubmitWorkflowRequest(spec=_external("r"), start=True))
    seen: list[bool] = []

    def render(machine: Machine, now: float) -> None:
        seen.append(machine.workflows[submitted.workflow_id].state.terminal)

    waiter = await rt.call(lambda machine, now: rt.waiter(submitted.workflow_id, render))
    await _complete_the_task(controller, b"7")
    # CompleteTask is answered after its tick's deliveries: the render has run by then, once,
    # with the workflow ended.
    assert seen == [True]
    assert await asyncio.wait_for(waiter, 30) is True
    assert submitted.workflow_id not in rt.waiters


async def test_a_waited_submission_carries_the_result_and_leaves_no_waiter(controller: Controller) -> None:
    rt = controller.runtime
    waiting = asyncio.ensure_future(
        controller.orchestrator.SubmitWorkflow(
            OR.SubmitWorkflowRequest(spec=_external("w"), start=True, wait=True, wait_timeout_s=60)
        )
    )
    await _registered(controller, 1)
    await _complete_the_task(controller, b"41")
    answer = await asyncio.wait_for(waiting, 30)
    assert answer.result.results_json["only"] == b"41"
    assert not rt.waiters


async def test_a_failing_render_falls_back_to_reading_the_result(controller: Controller) -> None:
    rt = controller.runtime
    submitted = await controller.orchestrator.SubmitWorkflow(OR.SubmitWorkflowRequest(spec=_external("f"), start=True))

    def render(machine: Machine, now: float) -> None:
        raise RuntimeError("render bug")

    waiter = await rt.call(lambda machine, now: rt.waiter(submitted.workflow_id, render))
    await _complete_the_task(controller, b"1")
    assert await asyncio.wait_for(waiter, 30) is False  # the caller reads the result itself
    assert controller.runtime.failure is None


async def test_a_wait_that_times_out_forgets_its_waiter(controller: Controller) -> None:
    rt = controller.runtime
    answer = await controller.orchestrator.SubmitWorkflow(
        OR.SubmitWorkflowRequest(spec=_external("t"), start=True, wait=True, wait_timeout_s=0.2)
    )
    assert not answer.HasField("result")  # still running when the wait ran out
    assert answer.workflow_id not in rt.waiters
    await _complete_the_task(controller, b"2")
    ended = await controller.orchestrator.ExecuteWorkflow(
        OR.ExecuteWorkflowRequest(workflow_id=answer.workflow_id, wait=True, wait_timeout_s=30)
    )
    assert ended.result.results_json["only"] == b"2"
    assert not answer.HasField("result"), "the answer already sent was never written to later"


async def _executed_and_waiting(controller: Controller, name: str, summary_only: bool) -> tuple[str, Any]:
    """A stored workflow, then a waited ExecuteWorkflow of it (a future) whose waiter is registered."""
    submitted = await controller.orchestrator.SubmitWorkflow(OR.SubmitWorkflowRequest(spec=_external(name)))
    waiting = asyncio.ensure_future(
        controller.orchestrator.ExecuteWorkflow(
            OR.ExecuteWorkflowRequest(
                workflow_id=submitted.workflow_id, wait=True, wait_timeout_s=60, summary_only=summary_only
            )
        )
    )
    await _registered(controller, 1)
    return submitted.workflow_id, waiting


async def test_a_waited_execute_is_written_in_the_tick_that_ends_the_workflow(controller: Controller) -> None:
    rt = controller.runtime
    workflow_id, waiting = await _executed_and_waiting(controller, "e", summary_only=False)
    # The waiter carries a render: the answer is written after the ending tick's commit, not read
    # in a tick of its own.
    assert [w in rt._renders for w in rt.waiters[workflow_id]] == [True]
    await _complete_the_task(controller, b"41")
    answer = await asyncio.wait_for(waiting, 30)
    assert answer.result.results_json["only"] == b"41"
    assert [t.name for t in answer.result.tasks] == ["only"]
    assert answer.status.state == types_pb2.WORKFLOW_STATE_COMPLETED
    assert answer.status.workflow_id == workflow_id and not answer.status.tasks  # the status stays a summary
    assert not rt.waiters and not rt._renders


async def test_a_waited_summary_execute_carries_no_tasks(controller: Controller) -> None:
    rt = controller.runtime
    workflow_id, waiting = await _executed_and_waiting(controller, "s", summary_only=True)
    await _complete_the_task(controller, b"5")
    answer = await asyncio.wait_for(waiting, 30)
    assert answer.result.workflow_id == workflow_id and answer.result.duration_s >= 0
    assert not answer.result.tasks and not answer.result.results_json
    assert answer.status.workflow_id == workflow_id
    assert not rt.waiters and not rt._renders
