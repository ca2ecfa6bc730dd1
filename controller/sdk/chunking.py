"""Sending a submission whole or in chunks (issue 13): what ``Client.submit``/``execute`` call.

A workflow of more than ``chunk_tasks`` tasks, or whose encoding exceeds ``chunk_bytes``, goes as
an upload of AppendTasks chunks instead of one SubmitWorkflow: chunk 0 carries the header (the
request without its tasks), every chunk a slice of the tasks, and the last one's answer is the
SubmitWorkflow answer. Each chunk is encoded once and sent in order, one at a time (the controller
only stages them; the last chunk validates and submits the whole workflow).

An upload lives in the controller's memory. When a chunk is answered NOT_FOUND (the controller
restarted, or another one took over), nothing was created and the upload starts again, once.
When the last chunk itself gets NOT_FOUND, the workflow may exist already (the answer was lost):
the upload is then sent again only when the submission has an idempotency key.
"""

from __future__ import annotations

import secrets
from typing import Any, Protocol

from corral.controller.sdk.errors import NotFoundError
from corral.v1 import orchestrator_pb2 as pb

__all__ = ["CHUNK_BYTES", "CHUNK_TASKS", "chunk_requests", "send_submission"]

#: Over this many tasks a workflow goes in chunks of at most this many.
CHUNK_TASKS = 50_000
#: Over this encoded size a workflow goes in chunks of about this size (one message may be 64 MiB).
CHUNK_BYTES = 16 * 1024 * 1024


class _Caller(Protocol):
    chunk_tasks: int
    chunk_bytes: int

    async def _call(self, service: str, method: str, request: Any, *, timeout: float | bool | None = True) -> Any: ...


def _bounds(request: pb.SubmitWorkflowRequest, chunk_tasks: int, chunk_bytes: int, size: int) -> list[int]:
    """Where the chunks start (and the end): by count, or by bytes when the tasks are big."""
    tasks = request.spec.tasks
    count = len(tasks)
    if size <= chunk_bytes:
        step = max(1, chunk_tasks)
        return [*range(0, count, step), count]
    # Big tasks (large payloads): cut where the running size passes chunk_bytes. Only these
    # workflows pay for a size per task.
    bounds, running, taken = [0], 0, 0
    for index, task in enumerate(tasks):
        task_size = task.ByteSize() + 8  # the field's tag and length
        if index > bounds[-1] and (running + task_size > chunk_bytes or taken >= chunk_tasks):
            bounds.append(index)
            running, taken = 0, 0
        running += task_size
        taken += 1
    bounds.append(count)
    return bounds


def chunk_requests(
    request: pb.SubmitWorkflowRequest, chunk_tasks: int, chunk_bytes: int
) -> list[pb.AppendTasksRequest] | None:
    """The chunks of ``request`` when it is too big for one SubmitWorkflow, else None.

    The tasks move into the chunks: ``request`` keeps only its header (the tasks are not copied
    twice). Upload ids are random; each chunk names its index and the total.
    """
    size = request.ByteSize()  # computed in C, and cached for the send
    if len(request.spec.tasks) <= chunk_tasks and size <= chunk_bytes:
        return None
    bounds = _bounds(request, chunk_tasks, chunk_bytes, size)
    total = len(bounds) - 1
    if total <= 1:
        return None  # one task bigger than a chunk: sent whole (the message limit decides)
    upload_id = "up-" + secrets.token_hex(12)
    tasks = request.spec.tasks
    chunks = [
        pb.AppendTasksRequest(upload_id=upload_id, index=i, chunks=total, tasks=tasks[bounds[i] : bounds[i + 1]])
        for i in range(total)
    ]
    del request.spec.tasks[:]
    chunks[0].submit.CopyFrom(request)
    return chunks


async def send_submission(
    client: _Caller, request: pb.SubmitWorkflowRequest, *, timeout: float | bool | None = True
) -> pb.SubmitWorkflowResponse:
    """SubmitWorkflow, or an AppendTasks upload for a big workflow; ``timeout`` bounds the last call."""
    chunks = chunk_requests(request, client.chunk_tasks, client.chunk_bytes)
    if chunks is None:
        response: pb.SubmitWorkflowResponse = await client._call(
            "orchestrator", "SubmitWorkflow", request, timeout=timeout
        )
        return response
    keyed = bool(request.idempotency_key)
    for attempt in range(2):
        try:
            return await _upload(client, chunks, timeout)
        except _Lost as lost:
            if attempt or (lost.last and not keyed):
                raise lost.error from None
            fresh = "up-" + secrets.token_hex(12)
            for chunk in chunks:
                chunk.upload_id = fresh
    raise AssertionError("unreachable")  # pragma: no cover


class _Lost(Exception):
    """The controller no longer knows the upload (restart, failover, expiry)."""

    def __init__(self, error: NotFoundError, last: bool) -> None:
        super().__init__(str(error))
        self.error = error
        self.last = last


async def _upload(
    client: _Caller, chunks: list[pb.AppendTasksRequest], timeout: float | bool | None
) -> pb.SubmitWorkflowResponse:
    last = len(chunks) - 1
    for index, chunk in enumerate(chunks):
        try:
            answer = await client._call(
                "orchestrator", "AppendTasks", chunk, timeout=timeout if index == last else True
            )
        except NotFoundError as exc:
            raise _Lost(exc, index == last) from exc
    submitted: pb.SubmitWorkflowResponse = answer.submitted
    return submitted
