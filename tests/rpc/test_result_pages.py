"""Big workflows' results and statuses come in pages (page_tasks unless the caller asks for up to
max_result_tasks, max_page_bytes), and the SDK gathers them, so no answer grows with the workflow
past the message limit."""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest

from corral.controller.sdk import Client, Workflow
from corral.controller.spec_common import Limits
from corral.v1 import orchestrator_pb2 as opb
from tests.rpc.conftest import Controller

TASKS = 7


@pytest.fixture
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Limits, "page_tasks", 3)
    monkeypatch.setattr(Limits, "max_result_tasks", 5)


def _workflow() -> Workflow:
    wf = Workflow("paged")
    for i in range(TASKS):
        wf.task(f"t{i}", agent_type="ext", payload={"i": i})
    return wf


async def _work_all(client: Client) -> None:
    """An external worker: pull every task and complete it with {"i": i}."""
    for _ in range(TASKS):
        assignment = await client.get_next_task("w1", agent_types=["ext"], wait=10)
        assert assignment is not None
        await client.complete_task(assignment.attempt_id, worker_id="w1", result=assignment.payload)


async def test_wait_and_status_gather_every_page(controller: Controller, small_pages: None) -> None:
    async with Client(controller.address) as client:
        submission = await client.submit(_workflow(), start=True)
        waiting = asyncio.ensure_future(client.wait(submission.workflow_id, timeout=30))
        await _work_all(client)
        result = await waiting
        assert result.state == "completed"
        assert [t.name for t in result.tasks] == [f"t{i}" for i in range(TASKS)]
        assert result.results == {f"t{i}": {"i": i} for i in range(TASKS)}
        status = await client.status(submission.workflow_id)
        assert [t.name for t in status.tasks] == [f"t{i}" for i in range(TASKS)]
        pages = [[t.name for t in page] async for page in client.task_pages(submission.workflow_id, page_size=2)]
        assert pages == [["t0", "t1"], ["t2", "t3"], ["t4", "t5"], ["t6"]]
        summary = await client.wait(submission.workflow_id, summary=True)
        assert summary.state == "completed" and summary.tasks == () and summary.results == {}


async def test_one_answer_holds_one_page(controller: Controller, small_pages: None) -> None:
    async with Client(controller.address) as client:
        submission = await client.submit(_workflow(), start=True)
        await _work_all(client)
        await client.wait(submission.workflow_id, timeout=30)
    first = await controller.orchestrator.GetWorkflowStatus(
        opb.GetWorkflowStatusRequest(workflow_id=submission.workflow_id, include_tasks=True)
    )
    assert len(first.status.tasks) == 3 and first.status.next_page_token == "3"
    answer = await controller.orchestrator.ExecuteWorkflow(
        opb.ExecuteWorkflowRequest(workflow_id=submission.workflow_id, wait=True)
    )
    assert answer.result.next_page_token == "3" and len(answer.result.tasks) == 3
    assert sorted(answer.result.results_json) == ["t0", "t1", "t2"]
    assert json.loads(answer.result.results_json["t2"]) == {"i": 2}
    # A caller may ask for more than the default page, up to max_result_tasks.
    bigger = await controller.orchestrator.GetWorkflowStatus(
        opb.GetWorkflowStatusRequest(workflow_id=submission.workflow_id, include_tasks=True, page_size=5)
    )
    assert len(bigger.status.tasks) == 5 and bigger.status.next_page_token == "5"


async def test_pages_stop_at_the_byte_budget(controller: Controller, monkeypatch: pytest.MonkeyPatch) -> None:
    async with Client(controller.address) as client:
        submission = await client.submit(_workflow(), start=True)
        await _work_all(client)
        await client.wait(submission.workflow_id, timeout=30)
        monkeypatch.setattr(Limits, "max_page_bytes", 600)  # about two tasks' statuses
        page = await controller.orchestrator.GetWorkflowStatus(
            opb.GetWorkflowStatusRequest(workflow_id=submission.workflow_id, include_tasks=True)
        )
        assert 1 <= len(page.status.tasks) < TASKS and page.status.next_page_token == str(len(page.status.tasks))
        status = await client.status(submission.workflow_id)
        assert [t.name for t in status.tasks] == [f"t{i}" for i in range(TASKS)]


@pytest.mark.parametrize(
    ("size", "token", "field"),
    [
        (-1, "", "page_size"),
        (Limits.max_result_tasks + 1, "", "page_size"),
        (0, "x1", "page_token"),
        (0, "9" * 19, "page_token"),
    ],
)
async def test_bad_page_requests_are_refused(controller: Controller, size: int, token: str, field: str) -> None:
    async with Client(controller.address) as client:
        submission = await client.submit(_workflow())
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await controller.orchestrator.GetWorkflowStatus(
            opb.GetWorkflowStatusRequest(
                workflow_id=submission.workflow_id, include_tasks=True, page_size=size, page_token=token
            )
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in (refused.value.details() or "")
