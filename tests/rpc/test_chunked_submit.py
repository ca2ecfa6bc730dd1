"""Chunked submission (issue 13): AppendTasks against an in-process controller (real gRPC, real SQLite)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import grpc
import pytest

from corral.controller.spec import Limits
from corral.v1 import orchestrator_pb2 as OR
from corral.v1 import scheduler_pb2 as S
from corral.v1 import types_pb2 as pb
from tests.rpc.conftest import Controller, bad_request, shell_task

UPLOAD = "up-test-1"


def ext(name: str, *deps: str) -> pb.TaskSpec:
    """A task for external workers (agent type ``ext``): completed through the pull API below."""
    return shell_task(name, *deps, agent_type="ext", payload={"job": name})


def chain(count: int, prefix: str = "t") -> list[pb.TaskSpec]:
    """``count`` tasks, each after the one before (so dependencies cross chunk boundaries)."""
    return [ext(f"{prefix}{i}", *([f"{prefix}{i - 1}"] if i else [])) for i in range(count)]


def chunked(
    tasks: Sequence[pb.TaskSpec], per_chunk: int, upload_id: str = UPLOAD, **submit: Any
) -> list[OR.AppendTasksRequest]:
    slices = [tasks[i : i + per_chunk] for i in range(0, len(tasks), per_chunk)]
    requests = [
        OR.AppendTasksRequest(upload_id=upload_id, index=i, chunks=len(slices), tasks=list(part))
        for i, part in enumerate(slices)
    ]
    requests[0].submit.CopyFrom(OR.SubmitWorkflowRequest(spec=pb.WorkflowSpec(name="chunked"), **submit))
    return requests


async def send(controller: Controller, requests: Sequence[OR.AppendTasksRequest]) -> list[OR.AppendTasksResponse]:
    return [await controller.orchestrator.AppendTasks(r) for r in requests]


async def workflows(controller: Controller) -> int:
    listed = await controller.orchestrator.ListWorkflows(OR.ListWorkflowsRequest())
    return len(listed.workflows)


async def error_of(controller: Controller, request: OR.AppendTasksRequest) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await controller.orchestrator.AppendTasks(request)
    return caught.value


async def drain(controller: Controller, count: int) -> None:
    """Complete ``count`` tasks through the pull API, in whatever order they become ready."""
    for _ in range(count):
        got = await controller.scheduler.GetNextTask(S.GetNextTaskRequest(worker_id="w", agent_types=["ext"], wait_s=5))
        assert got.found
        done = await controller.scheduler.CompleteTask(
            S.CompleteTaskRequest(attempt_id=got.assignment.attempt_id, worker_id="w", result_json=b"1")
        )
        assert done.accepted


async def test_three_chunks_make_one_workflow_that_runs_to_the_end(controller: Controller) -> None:
    requests = chunked(chain(9), 3, start=True, wait=True)
    answers = await send(controller, requests[:2])
    assert [(a.received, a.task_count, a.HasField("submitted")) for a in answers] == [(1, 3, False), (2, 6, False)]
    assert await workflows(controller) == 0  # nothing exists before the last chunk
    assert controller.stored() == (0, 0)
    last = asyncio.ensure_future(controller.orchestrator.AppendTasks(requests[2]))  # waits for the end
    await drain(controller, 9)
    answer = await asyncio.wait_for(last, 10)
    submitted = answer.submitted
    assert answer.received == 3 and answer.task_count == 9
    assert submitted.workflow_id.startswith("wf-") and submitted.plan.task_count == 9
    assert submitted.result.state == pb.WORKFLOW_STATE_COMPLETED
    assert [t.name for t in submitted.result.tasks] == [f"t{i}" for i in range(9)]
    assert controller.stored() == (1, 9)
    again = await controller.orchestrator.AppendTasks(requests[2])  # its answer lost: the same, result too
    assert again.submitted.workflow_id == submitted.workflow_id and again.submitted.deduplicated
    assert again.submitted.result.state == pb.WORKFLOW_STATE_COMPLETED and len(again.submitted.result.tasks) == 9


async def test_a_chunk_sent_again_is_accepted_once(controller: Controller) -> None:
    requests = chunked(chain(6), 2)
    first = await controller.orchestrator.AppendTasks(requests[0])
    again = await controller.orchestrator.AppendTasks(requests[0])
    assert (first.received, first.task_count) == (again.received, again.task_count) == (1, 2)
    await controller.orchestrator.AppendTasks(requests[1])
    assert (await controller.orchestrator.AppendTasks(requests[1])).task_count == 4
    other = OR.AppendTasksRequest(upload_id=UPLOAD, index=1, chunks=3, tasks=[ext("zz")])
    assert (await error_of(controller, other)).code() is grpc.StatusCode.FAILED_PRECONDITION  # other content
    sealed = await controller.orchestrator.AppendTasks(requests[2])
    resent = await controller.orchestrator.AppendTasks(requests[2])  # the answer was lost: the same workflow
    assert resent.submitted.workflow_id == sealed.submitted.workflow_id and resent.submitted.deduplicated
    status = await controller.orchestrator.GetWorkflowStatus(
        OR.GetWorkflowStatusRequest(workflow_id=sealed.submitted.workflow_id, include_tasks=True)
    )
    assert [t.name for t in status.status.tasks] == [f"t{i}" for i in range(6)]
    assert await workflows(controller) == 1


@pytest.mark.parametrize(
    ("tasks", "field", "words"),
    [
        ([ext("a"), ext("b"), ext("a")], "spec.tasks[2].name", "duplicate"),  # across chunks 0 and 1
        ([ext("a"), ext("b"), ext("c", "nope")], "spec.tasks[2].dependencies", "nope"),
        ([ext("a", "c"), ext("b", "a"), ext("c", "b")], "spec.tasks", "cycle"),  # spans every chunk
    ],
)
async def test_a_bad_workflow_is_refused_at_its_last_chunk_and_nothing_exists(
    controller: Controller, tasks: list[pb.TaskSpec], field: str, words: str
) -> None:
    requests = chunked(tasks, 1, start=True)
    await send(controller, requests[:2])
    error = await error_of(controller, requests[2])
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    violations = bad_request(error)
    assert any(path.startswith(field) and words in text for path, text in violations), violations
    assert await workflows(controller) == 0 and controller.stored() == (0, 0)
    later = await error_of(controller, requests[2])  # the upload is over
    assert later.code() is grpc.StatusCode.FAILED_PRECONDITION and "aborted" in (later.details() or "")


@pytest.fixture
def five_tasks_at_most(monkeypatch: pytest.MonkeyPatch) -> None:
    """max_tasks=5 for the controller made next (its staging reads the limits when made)."""
    monkeypatch.setattr(Limits, "max_tasks", 5)


async def test_over_max_tasks_aborts_the_upload(five_tasks_at_most: None, controller: Controller) -> None:
    requests = chunked(chain(9), 3)
    await controller.orchestrator.AppendTasks(requests[0])
    error = await error_of(controller, requests[1])
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request(error) == [("tasks", "6 tasks in the upload, over max_tasks=5")]
    later = await error_of(controller, requests[2])
    assert later.code() is grpc.StatusCode.FAILED_PRECONDITION and "over max_tasks=5" in (later.details() or "")
    assert await workflows(controller) == 0


async def test_an_unknown_upload_is_not_found(controller: Controller) -> None:
    requests = chunked(chain(4), 2)
    unknown = await error_of(controller, requests[1])
    assert unknown.code() is grpc.StatusCode.NOT_FOUND and "resubmit" in (unknown.details() or "")
    await controller.orchestrator.AppendTasks(requests[0])
    assert (await controller.orchestrator.AppendTasks(requests[1])).submitted.workflow_id


async def test_bad_chunks_are_refused_with_their_field(controller: Controller) -> None:
    cases: list[tuple[OR.AppendTasksRequest, str]] = [
        (OR.AppendTasksRequest(index=0, chunks=1), "upload_id"),
        (OR.AppendTasksRequest(upload_id="u", index=0, chunks=2, tasks=[ext("a")]), "submit"),
        (OR.AppendTasksRequest(upload_id="u", index=2, chunks=2), "index"),
        (OR.AppendTasksRequest(upload_id="u", index=-1, chunks=2), "index"),
        (OR.AppendTasksRequest(upload_id="u", index=0, chunks=0, submit=OR.SubmitWorkflowRequest()), "chunks"),
        (OR.AppendTasksRequest(upload_id="u", index=0, chunks=10_001, submit=OR.SubmitWorkflowRequest()), "chunks"),
        (OR.AppendTasksRequest(upload_id="u", index=1, chunks=2, submit=OR.SubmitWorkflowRequest()), "submit"),
    ]
    header = OR.SubmitWorkflowRequest(spec=pb.WorkflowSpec(name="x", tasks=[ext("a")]))
    cases.append((OR.AppendTasksRequest(upload_id="u", chunks=2, submit=header), "submit.spec.tasks"))
    waiting = OR.SubmitWorkflowRequest(spec=pb.WorkflowSpec(name="x"), wait=True)
    cases.append((OR.AppendTasksRequest(upload_id="u", chunks=2, submit=waiting), "submit.wait"))
    for request, field in cases:
        error = await error_of(controller, request)
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, (field, error.details())
        assert [path for path, _ in bad_request(error)] == [field]
    unknown = await error_of(controller, OR.AppendTasksRequest(upload_id="u", index=1, chunks=2))
    assert unknown.code() is grpc.StatusCode.NOT_FOUND  # none of them opened an upload


async def test_a_header_error_is_reported_with_its_path_at_the_seal(controller: Controller) -> None:
    requests = chunked(chain(2), 1)
    requests[0].submit.spec.name = "bad name!"
    requests[0].submit.spec.metadata_json = json.dumps({"k": 1}).encode()
    await controller.orchestrator.AppendTasks(requests[0])
    error = await error_of(controller, requests[1])
    assert [path for path, _ in bad_request(error)] == ["spec.name"]
    assert await workflows(controller) == 0
