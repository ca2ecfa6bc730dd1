"""The SDK sends big workflows in chunks by itself (issue 13), against an in-process controller."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from corral.controller.sdk import Client, NotFoundError
from corral.controller.sdk.chunking import build_submission, chunk_requests, send_submission
from corral.controller.spec import TaskSpec, WorkflowSpec
from corral.v1 import admin_pb2, admin_pb2_grpc
from corral.v1 import orchestrator_pb2 as OR
from corral.v1 import scheduler_pb2 as S
from corral.v1 import types_pb2 as pb
from tests.rpc.conftest import Controller


def workflow(count: int, payload_bytes: int = 0, name: str = "big") -> dict[str, Any]:
    """``count`` tasks for external workers, every 10th after the one before it."""
    pad = "x" * payload_bytes
    tasks = [
        {
            "name": f"t{i}",
            "agent_type": "ext",
            "payload": {"pad": pad} if pad else {},
            **({"dependencies": [f"t{i - 1}"]} if i % 10 else {}),
        }
        for i in range(count)
    ]
    return {"name": name, "tasks": tasks}


async def audited_methods(controller: Controller, target: str) -> list[str]:
    """The audit records naming ``target`` (auth is off: every mutating call is still audited)."""
    admin = admin_pb2_grpc.AdminStub(controller.channel)
    deadline = time.monotonic() + 5.0
    while True:
        records = (await admin.ListAudit(admin_pb2.ListAuditRequest(limit=1000))).records
        methods = [r.method.rsplit("/", 1)[1] for r in records if r.target == target]
        if methods or time.monotonic() > deadline:
            return methods
        await asyncio.sleep(0.02)


def test_small_workflows_go_whole_and_big_ones_in_chunks() -> None:
    small = OR.SubmitWorkflowRequest(spec=pb.WorkflowSpec(name="w", tasks=[pb.TaskSpec(name="a")]))
    assert chunk_requests(small, 100, 1 << 20) is None and len(small.spec.tasks) == 1
    tasks = [pb.TaskSpec(name=f"t{i}", agent_type="ext") for i in range(250)]
    request = OR.SubmitWorkflowRequest(spec=pb.WorkflowSpec(name="w", tasks=tasks), start=True, idempotency_key="k")
    chunks = chunk_requests(request, 100, 1 << 20)
    assert chunks is not None
    assert [(c.index, c.chunks, len(c.tasks)) for c in chunks] == [(0, 3, 100), (1, 3, 100), (2, 3, 50)]
    assert len({c.upload_id for c in chunks}) == 1
    assert chunks[0].HasField("submit") and not any(c.HasField("submit") for c in chunks[1:])
    header = chunks[0].submit
    assert header.spec.name == "w" and not header.spec.tasks and header.start and header.idempotency_key == "k"
    assert [t.name for c in chunks for t in c.tasks] == [f"t{i}" for i in range(250)]


def test_big_tasks_are_cut_by_size() -> None:
    sizes = [1000] * 20 + [10] * 200 + [3000] * 5  # the big ones together: over the average
    tasks = [pb.TaskSpec(name=f"t{i}", payload_json=b"x" * size) for i, size in enumerate(sizes)]
    request = OR.SubmitWorkflowRequest(spec=pb.WorkflowSpec(name="w", tasks=tasks))
    chunks = chunk_requests(request, 1000, 5000)
    assert chunks is not None and all(c.ByteSize() <= 2 * 5000 for c in chunks if len(c.tasks) > 1)
    assert [t.name for c in chunks for t in c.tasks] == [f"t{i}" for i in range(len(sizes))]
    assert [c.index for c in chunks] == list(range(len(chunks))) and {c.chunks for c in chunks} == {len(chunks)}
    lone = OR.SubmitWorkflowRequest(
        spec=pb.WorkflowSpec(name="w", tasks=[pb.TaskSpec(name="a", payload_json=b"x" * 9000)])
    )
    assert chunk_requests(lone, 1000, 5000) is None  # one task: sent whole


def test_a_workflow_is_encoded_into_its_chunks_directly() -> None:
    spec = WorkflowSpec.model_validate(workflow(250))
    request = OR.SubmitWorkflowRequest(spec=pb.WorkflowSpec(name="big"), start=True)
    chunks = build_submission(request, spec.tasks, 100, 1 << 20)
    assert chunks is not None and not request.spec.tasks
    assert [(c.index, c.chunks, len(c.tasks)) for c in chunks] == [(0, 3, 100), (1, 3, 100), (2, 3, 50)]
    assert chunks[0].submit.spec.name == "big" and chunks[0].submit.start
    assert [t.name for c in chunks for t in c.tasks] == [f"t{i}" for i in range(250)]
    assert chunks[1].tasks[1].dependencies == ["t100"]  # encoded as spec_to_proto encodes them
    # Over the byte limit inside a chunk of chunk_tasks tasks: that chunk is cut by size too.
    padded = WorkflowSpec.model_validate(workflow(40, payload_bytes=200)).tasks
    pieces = build_submission(OR.SubmitWorkflowRequest(spec=pb.WorkflowSpec(name="p")), padded, 20, 2000)
    assert pieces is not None and len(pieces) > 2 and all(p.ByteSize() <= 2 * 2000 for p in pieces)
    assert [t.name for p in pieces for t in p.tasks] == [f"t{i}" for i in range(40)]
    # Few tasks go whole, in the request itself.
    whole = OR.SubmitWorkflowRequest(spec=pb.WorkflowSpec(name="s"))
    assert build_submission(whole, spec.tasks[:5], 100, 1 << 20) is None and len(whole.spec.tasks) == 5


async def test_submit_sends_a_big_workflow_in_chunks(controller: Controller) -> None:
    async with Client(controller.address) as client:
        client.chunk_tasks = 100
        submission = await client.submit(workflow(350), start=False)
        assert submission.plan.task_count == 350
        status = await client.status(submission.workflow_id, include_tasks=True)
        assert [t.name for t in status.tasks] == [f"t{i}" for i in range(350)]
        assert await audited_methods(controller, submission.workflow_id) == ["AppendTasks"]
        whole = await client.submit(workflow(50, name="small"), start=False)
        assert await audited_methods(controller, whole.workflow_id) == ["SubmitWorkflow"]


async def test_execute_in_chunks_waits_for_the_result(controller: Controller) -> None:
    async def work() -> None:
        for _ in range(30):
            got = await controller.scheduler.GetNextTask(
                S.GetNextTaskRequest(worker_id="w", agent_types=["ext"], wait_s=5)
            )
            assert got.found
            await controller.scheduler.CompleteTask(
                S.CompleteTaskRequest(attempt_id=got.assignment.attempt_id, worker_id="w", result_json=b"7")
            )

    async with Client(controller.address) as client:
        client.chunk_bytes = 2000  # by size: 30 tasks of ~200 bytes
        worker = asyncio.ensure_future(work())
        result = await client.execute(workflow(30, payload_bytes=150), timeout=30)
        await worker
    assert result.succeeded and result.results["t29"] == 7 and len(result.tasks) == 30


class _LosesTheFirstChunk:
    """A client that drops chunk 0 of the first upload, as a controller restart would forget it:
    the controller's NOT_FOUND for chunk 1 is real, and the SDK must start the upload again."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.chunk_tasks = 10
        self.chunk_bytes = 1 << 20
        self.uploads: list[str] = []

    async def _call(self, service: str, method: str, request: Any, *, timeout: float | bool | None = True) -> Any:
        if method == "AppendTasks" and request.upload_id not in self.uploads:
            self.uploads.append(request.upload_id)
            if len(self.uploads) == 1:
                return OR.AppendTasksResponse(upload_id=request.upload_id, received=1)
        return await self.client._call(service, method, request, timeout=timeout)


async def test_an_upload_the_controller_lost_is_sent_again(controller: Controller) -> None:
    tasks = [pb.TaskSpec(name=f"t{i}", agent_type="ext", payload_json=b"{}") for i in range(25)]
    async with Client(controller.address) as client:
        losing = _LosesTheFirstChunk(client)
        request = OR.SubmitWorkflowRequest(spec=pb.WorkflowSpec(name="w", tasks=tasks))
        response = await send_submission(losing, request)
        assert len(losing.uploads) == 2 and response.plan.task_count == 25
        # The last chunk lost is not sent again without an idempotency key: it may have made the workflow.
        lone = [pb.TaskSpec(name="a", agent_type="ext", payload_json=b"{}"), pb.TaskSpec(name="b", agent_type="ext")]
        losing = _LosesTheFirstChunk(client)
        losing.chunk_tasks = 1
        with pytest.raises(NotFoundError):
            await send_submission(losing, OR.SubmitWorkflowRequest(spec=pb.WorkflowSpec(name="w2", tasks=lone)))
        assert len(losing.uploads) == 1


@pytest.mark.chaos  # one to two minutes on a loaded 2-core machine: `make chaos`
@pytest.mark.timeout(900)
async def test_a_workflow_over_the_old_200k_limit_goes_through_the_sdk(controller: Controller) -> None:
    count = 250_000
    tasks = [
        TaskSpec.model_construct(name=f"t{i}", agent_type="ext", dependencies=[f"t{i - 1}"] if i % 1000 else [])
        for i in range(count)
    ]
    spec = WorkflowSpec.model_construct(name="quarter-million", tasks=tasks)  # validated by the controller
    async with Client(controller.address, timeout=600) as client:
        submission = await client.submit(spec, start=False)
        assert submission.plan.task_count == count and len(submission.plan.stages) == 1000
        status = await client.status(submission.workflow_id, include_tasks=False)
    assert status.task_total == count and status.state == "pending"
    assert await audited_methods(controller, submission.workflow_id) == ["AppendTasks"]
