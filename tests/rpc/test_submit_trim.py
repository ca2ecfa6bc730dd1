"""A big submission gives the C heap's free memory back once admitted (issue 12), and runs as before.

Chunked uploads are admitted one chunk at a time (``StagedTasks``): the workflow they make is the
same as from one SubmitWorkflow, every chunk's tasks in order, dependencies across chunks.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest

from corral.controller import heaptrim
from corral.controller.rpc import orchestrator
from corral.v1 import orchestrator_pb2 as OR
from corral.v1 import types_pb2 as pb
from tests.rpc.conftest import Controller
from tests.rpc.test_chunked_submit import chain, chunked, drain, send


@pytest.fixture
def trims(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every trim the controller asks for (none rate-limited away); workflows over 5 tasks are big."""
    calls: list[int] = []
    monkeypatch.setattr(heaptrim, "HEAP", heaptrim.HeapTrim(lambda: calls.append(1), min_gap_s=0.0))
    monkeypatch.setattr(orchestrator, "_ADMIT_INLINE_TASKS", 5)
    return calls


async def test_a_big_chunked_upload_is_trimmed_after_admission_and_runs(
    controller: Controller, trims: list[int]
) -> None:
    requests = chunked(chain(9), 4, start=True, wait=True)  # chunks of 4, 4 and 1 tasks
    await send(controller, requests[:-1])
    assert trims == []  # nothing admitted yet
    last = asyncio.ensure_future(controller.orchestrator.AppendTasks(requests[-1]))
    await drain(controller, 9)  # each task after the one before: across the chunks' borders
    answer = await asyncio.wait_for(last, 10)
    assert trims == [1]
    result = answer.submitted.result
    assert result.state == pb.WORKFLOW_STATE_COMPLETED
    assert [t.name for t in result.tasks] == [f"t{i}" for i in range(9)]
    assert controller.stored() == (1, 9)


async def test_the_trim_comes_before_the_core_takes_the_records(
    controller: Controller, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The admission's transients live in its thread's malloc arena, which the loop thread never
    reuses: trimmed only after the submit, they were still resident while the core grew."""
    workflows_at_trim: list[int] = []
    trim = heaptrim.HeapTrim(lambda: workflows_at_trim.append(len(controller.runtime.machine.workflows)), min_gap_s=0)
    monkeypatch.setattr(heaptrim, "HEAP", trim)
    monkeypatch.setattr(orchestrator, "_ADMIT_INLINE_TASKS", 5)
    spec = pb.WorkflowSpec(name="big", tasks=chain(8))
    answer = await controller.orchestrator.SubmitWorkflow(OR.SubmitWorkflowRequest(spec=spec))
    assert answer.workflow_id
    assert workflows_at_trim == [0]
    assert answer.workflow_id in controller.runtime.machine.workflows


async def test_a_small_submission_is_not_trimmed(controller: Controller, trims: list[int]) -> None:
    spec = pb.WorkflowSpec(name="small", tasks=chain(3))
    answer = await controller.orchestrator.SubmitWorkflow(OR.SubmitWorkflowRequest(spec=spec))
    assert answer.workflow_id and trims == []


async def test_a_bad_task_in_a_later_chunk_names_its_index_across_chunks(
    controller: Controller, trims: list[int]
) -> None:
    tasks = chain(7)
    tasks[5].name = "bad name!"
    requests = chunked(tasks, 3)
    await send(controller, requests[:-1])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await controller.orchestrator.AppendTasks(requests[-1])
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "spec.tasks[5].name" in str(caught.value.details()) + str(caught.value.trailing_metadata())
    assert controller.stored() == (0, 0) and trims == []
