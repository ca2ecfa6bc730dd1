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


def _cut(tasks: Any, start: int, end: int, limit: int, into: list[pb.AppendTasksRequest]) -> None:
    """Chunks of ``tasks[start:end]`` of at most ``limit`` bytes each (unless one task alone is more)."""
    chunk = pb.AppendTasksRequest(tasks=tasks[start:end])
    if chunk.ByteSize() > limit and end - start > 1:
        # Bigger than the average said (a few big tasks together): cut in two. Rare, so the wasted
        # copy is cheaper than sizing every task of every workflow.
        middle = (start + end) // 2
        _cut(tasks, start, middle, limit, into)
        _cut(tasks, middle, end, limit, into)
        return
    into.append(chunk)


def chunk_requests(
    request: pb.SubmitWorkflowRequest, chunk_tasks: int, chunk_bytes: int
) -> list[pb.AppendTasksRequest] | None:
    """The chunks of ``request`` when it is too big for one SubmitWorkflow, else None.

    Chunks hold at most ``chunk_tasks`` tasks and about ``chunk_bytes`` bytes (by the average task
    size; a chunk over twice that is cut again). The tasks move into the chunks: ``request`` keeps
    only its header. Upload ids are random; each chunk names its index and the total.
    """
    tasks = request.spec.tasks
    count = len(tasks)
    size = request.ByteSize()  # computed in C, and cached for the send
    if count <= chunk_tasks and size <= chunk_bytes:
        return None
    step = max(1, min(chunk_tasks, count * chunk_bytes // max(size, 1)))
    chunks: list[pb.AppendTasksRequest] = []
    for start in range(0, count, step):
        _cut(tasks, start, min(start + step, count), 2 * chunk_bytes, chunks)
    if len(chunks) <= 1:
        return None  # one task bigger than a chunk: sent whole (the message limit decides)
    upload_id = "up-" + secrets.token_hex(12)
    for index, chunk in enumerate(chunks):
        chunk.upload_id, chunk.index, chunk.chunks = upload_id, index, len(chunks)
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
