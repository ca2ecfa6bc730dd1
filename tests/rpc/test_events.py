"""GetWorkflowEvents: the persisted event log of a workflow, checked at the edge, read off the loop."""

from __future__ import annotations

import grpc

from corral.controller.sdk.client import Client
from corral.v1 import orchestrator_pb2 as OR
from tests.rpc.conftest import Controller, bad_request, shell_task, workflow_spec


async def _error(call: object) -> grpc.aio.AioRpcError:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as exc:
        return exc
    raise AssertionError("the call succeeded")


async def test_bad_requests_are_invalid_and_unknown_workflows_not_found(controller: Controller) -> None:
    events = controller.orchestrator.GetWorkflowEvents
    for request, field in (
        (OR.GetWorkflowEventsRequest(workflow_id=""), "workflow_id"),
        (OR.GetWorkflowEventsRequest(workflow_id="wf\n"), "workflow_id"),
        (OR.GetWorkflowEventsRequest(workflow_id="wf", after_seq=-1), "after_seq"),
        (OR.GetWorkflowEventsRequest(workflow_id="wf", limit=10_001), "limit"),
        (OR.GetWorkflowEventsRequest(workflow_id="wf", limit=-5), "limit"),
        (OR.GetWorkflowEventsRequest(workflow_id="wf", task="a\x00"), "task"),
    ):
        error = await _error(events(request))
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, (request, error.details())
        assert [f for f, _ in bad_request(error)] == [field]
    error = await _error(events(OR.GetWorkflowEventsRequest(workflow_id="wf-nothing")))
    assert error.code() is grpc.StatusCode.NOT_FOUND


async def test_the_log_of_a_workflow_and_of_one_task(controller: Controller) -> None:
    spec = workflow_spec("logged", [shell_task("a"), shell_task("b", "a")])
    submitted = await controller.orchestrator.SubmitWorkflow(OR.SubmitWorkflowRequest(spec=spec, start=True))
    workflow_id = submitted.workflow_id
    # No agent: the tasks only become ready (published, not stored); a cancel gives each a stored event.
    await controller.orchestrator.CancelWorkflow(OR.CancelWorkflowRequest(workflow_id=workflow_id))
    async with Client(controller.address) as client:
        everything = await client.events(workflow_id)
        assert everything, "a started workflow has events"
        seqs = [e.seq for e in everything]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        assert {e.workflow_id for e in everything} == {workflow_id}
        only_a = await client.events(workflow_id[:8], task="a")  # a prefix of the workflow, a task by name
        assert only_a and {e.task_name for e in only_a} == {"a"}
        assert "cancelled" in {e.raw.kind for e in only_a}
        later = await client.events(workflow_id, after_seq=seqs[0])
        assert [e.seq for e in later] == seqs[1:]
        assert len(await client.events(workflow_id, limit=1)) == 1
    error = await _error(
        controller.orchestrator.GetWorkflowEvents(OR.GetWorkflowEventsRequest(workflow_id=workflow_id, task="zz"))
    )
    assert error.code() is grpc.StatusCode.NOT_FOUND
