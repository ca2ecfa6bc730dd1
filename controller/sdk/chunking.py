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
from collections.abc import Sequence
from typing import Any, Protocol

from corral.controller.rpc.wire_spec import add_tasks
from corral.controller.sdk.errors import NotFoundError
from corral.controller.spec import TaskSpec
from corral.v1 import orchestrator_pb2 as pb

__all__ = ["CHUNK_BYTES", "CHUNK_TASKS", "build_submission", "chunk_requests", "send_submission"]

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
    del request.spec.tasks[:]
    _number(chunks, request)
    return chunks


def build_submission(
    request: pb.SubmitWorkflowRequest, tasks: Sequence[TaskSpec], chunk_tasks: int, chunk_bytes: int
) -> list[pb.AppendTasksRequest] | None:
    """Encode ``tasks`` into ``request`` (None: it goes whole) or straight into upload chunks.

    ``request`` holds the workflow without its tasks. A workflow of more than ``chunk_tasks`` tasks
    is encoded chunk by chunk, each task once, into its chunk: encoding it whole and cutting it
    after copied every task a second time, and that copy's wrapper objects (one per task) set off
    full collections in a client that holds the workflow's specs (0.1-0.3 s for 100k tasks).
    """
    if len(tasks) <= chunk_tasks:
        add_tasks(request.spec.tasks, tasks)
        return chunk_requests(request, chunk_tasks, chunk_bytes)
    chunks: list[pb.AppendTasksRequest] = []
    for start in range(0, len(tasks), chunk_tasks):
        chunk = pb.AppendTasksRequest()
        add_tasks(chunk.tasks, tasks[start : start + chunk_tasks])
        size, count = chunk.ByteSize(), len(chunk.tasks)
        if size <= chunk_bytes or count == 1:
            chunks.append(chunk)
            continue
        step = max(1, count * chunk_bytes // size)  # big tasks: cut by size too (rare: copies)
        for first in range(0, count, step):
            _cut(chunk.tasks, first, min(first + step, count), 2 * chunk_bytes, chunks)
    _number(chunks, request)
    return chunks


def _number(chunks: list[pb.AppendTasksRequest], request: pb.SubmitWorkflowRequest) -> None:
    """Name the upload (a random id) and each chunk's place in it; chunk 0 carries the header."""
    upload_id = "up-" + secrets.token_hex(12)
    for index, chunk in enumerate(chunks):
        chunk.upload_id, chunk.index, chunk.chunks = upload_id, index, len(chunks)
    chunks[0].submit.CopyFrom(request)


async def send_submission(
    client: _Caller,
    request: pb.SubmitWorkflowRequest,
    *,
    tasks: Sequence[TaskSpec] | None = None,
    timeout: float | bool | None = True,
) -> pb.SubmitWorkflowResponse:
    """SubmitWorkflow, or an AppendTasks upload for a big workflow; ``timeout`` bounds the last call.

    ``tasks``, when given, are the workflow's tasks, still to encode (``request`` has none).
    """
    if tasks is None:
        chunks = chunk_requests(request, client.chunk_tasks, client.chunk_bytes)
    else:
        chunks = build_submission(request, tasks, client.chunk_tasks, client.chunk_bytes)
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
