"""AppendTasks: a workflow submitted in chunks (issue 13), staged by :mod:`staging` until the last.

The last chunk decodes the whole workflow once (every chunk's tasks were kept as their encoding)
and hands it to the same path as SubmitWorkflow: one admission of the full spec, so validation is
atomic and nothing exists before the last chunk. The upload ends with one audit record (sealed,
or the error that aborted it): the chunks themselves are not audited one by one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from corral.controller.core import requests as rq
from corral.controller.core.access import DEFAULT_NAMESPACE, AuditEntry
from corral.controller.core.machine import Machine
from corral.controller.core.model import Workflow
from corral.controller.errors import CorralError, InvalidArgument
from corral.controller.rpc import fields
from corral.controller.rpc.auth import current_caller, record_audit
from corral.controller.rpc.errors import code_name
from corral.controller.rpc.identity import Principal, current_principal
from corral.controller.rpc.request_box import RequestBox, unbox
from corral.controller.rpc.scope import require_namespace
from corral.controller.rpc.staging import Staging, Upload
from corral.controller.rpc.submission import TaskMessages
from corral.controller.spec import Limits
from corral.v1 import orchestrator_pb2 as pb
from corral.v1 import types_pb2

if TYPE_CHECKING:
    from corral.controller.runtime import Runtime

__all__ = ["APPEND_TASKS", "ChunksServicer", "StagedTasks", "check_submit_options", "task_part"]

APPEND_TASKS = "/corral.v1.Orchestrator/AppendTasks"
# Fields of AppendTasksRequest that are not its tasks: cleared before a chunk's tasks are encoded
# (field 2, like WorkflowSpec.tasks, so the joined encodings decode as the workflow's tasks).
_NOT_TASKS = ("upload_id", "index", "chunks", "submit")
_MAX_REASON = 512


class ChunksServicer:
    """AppendTasks over ``self.rt`` and ``self.staging``; the submission itself is the servicer's."""

    rt: Runtime
    staging: Staging

    if TYPE_CHECKING:

        async def _submit(
            self,
            box: RequestBox[pb.SubmitWorkflowRequest],
            tasks: TaskMessages | None = None,
            *,
            into: pb.SubmitWorkflowResponse,
        ) -> tuple[asyncio.Future[bool] | None, float | None]: ...

        async def _wait_result(
            self, wait_timeout_s: float, response: pb.SubmitWorkflowResponse, waiter: asyncio.Future[bool] | None
        ) -> None: ...

    async def AppendTasks(
        self, boxed_request: RequestBox[pb.AppendTasksRequest] | pb.AppendTasksRequest, context: Any
    ) -> pb.AppendTasksResponse:
        request = unbox(boxed_request)  # dropped below, once its tasks are staged (request_box.py)
        del boxed_request
        upload_id = fields.identifier(request.upload_id, "upload_id", "upload id")
        principal = current_principal()
        index, chunks, count = request.index, request.chunks, len(request.tasks)
        header = _header(request, principal) if index == 0 else b""
        if index != 0 and request.HasField("submit"):
            raise InvalidArgument.field("submit", "only chunk 0 carries the workflow's header")
        part = task_part(request)
        del request
        now = self.rt.clock()
        fresh = index == 0 and (principal.describe(), upload_id) not in self.staging.uploads
        try:
            upload = self.staging.append(principal.describe(), upload_id, index, chunks, part, count, header, now)
        except InvalidArgument as exc:
            ended = self.staging.uploads.get((principal.describe(), upload_id))
            if ended is not None and ended.aborted:  # an upload over max_tasks ends here
                self._audit_end(principal, upload_id, "", exc)
            raise
        if fresh:
            # Abandoned uploads release their memory even when no other chunk ever comes.
            asyncio.get_running_loop().call_later(self.staging.limits.idle_s + 1.0, self._sweep)
        if upload.workflow_id:  # a chunk of a sealed upload, sent again: its workflow
            submitted = pb.SubmitWorkflowResponse(workflow_id=upload.workflow_id, deduplicated=True)
            if index == upload.chunks - 1:
                submitted = await self._sealed_answer(upload)  # the last one's answer, result too
            return pb.AppendTasksResponse(
                upload_id=upload_id, received=upload.received, task_count=upload.tasks, submitted=submitted
            )
        if not self.staging.complete(upload):
            return pb.AppendTasksResponse(upload_id=upload_id, received=upload.received, task_count=upload.tasks)
        return await self._seal(upload, principal)

    async def _seal(self, upload: Upload, principal: Principal) -> pb.AppendTasksResponse:
        """Decode the whole workflow once and submit it as SubmitWorkflow would; the upload ends either way."""
        encoded_header, encoded_tasks = self.staging.take(upload)
        submit = pb.SubmitWorkflowRequest.FromString(encoded_header)
        task_count = upload.tasks
        try:
            response = pb.SubmitWorkflowResponse()
            waiter, _ = await self._submit(RequestBox(submit), StagedTasks(encoded_tasks, task_count), into=response)
        except BaseException as exc:  # cancelled too: the upload must not stay "sealing"
            reason = str(exc)[:_MAX_REASON] if isinstance(exc, CorralError) else "its last chunk failed"
            if not isinstance(exc, Exception):
                reason = "its last chunk was cancelled: the workflow may or may not exist"
            self.staging.abort(upload, reason)
            if isinstance(exc, Exception):
                self._audit_end(principal, upload.upload_id, submit.spec.namespace, exc)
            raise
        wait_timeout_s = submit.wait_timeout_s if submit.wait else None
        self.staging.sealed(upload, response.workflow_id, self.rt.clock(), wait_timeout_s)
        self._audit_end(principal, upload.upload_id, submit.spec.namespace, None, response.workflow_id)
        if wait_timeout_s is not None:
            await self._wait_result(wait_timeout_s, response, waiter)
        return pb.AppendTasksResponse(
            upload_id=upload.upload_id, received=upload.chunks, task_count=task_count, submitted=response
        )

    async def _sealed_answer(self, upload: Upload) -> pb.SubmitWorkflowResponse:
        """A sealed upload's answer again (its last chunk retried after a lost answer): the workflow,
        and with wait its result once it ends, as the first answer would have had."""
        response = pb.SubmitWorkflowResponse(workflow_id=upload.workflow_id, deduplicated=True)
        if upload.wait_timeout_s is None:
            return response
        rt = self.rt

        def waiter(machine: Machine, workflow: Workflow, now: float) -> asyncio.Future[bool] | None:
            return None if workflow.state.terminal else rt.waiter(workflow.id)

        found = await rt.handle(rq.WorkflowQuery(upload.workflow_id, current_caller()), waiter)
        await self._wait_result(upload.wait_timeout_s, response, found)
        return response

    def _sweep(self) -> None:
        self.staging.expire(self.rt.clock())

    def _audit_end(
        self, principal: Principal, upload_id: str, namespace: str, exc: Exception | None, workflow_id: str = ""
    ) -> None:
        """The one audit record of an upload: the workflow it became, or why it failed."""
        entry = AuditEntry(
            at=self.rt.clock(),
            principal=principal.describe(),
            role=principal.role,
            method=APPEND_TASKS,
            target=workflow_id or f"upload:{upload_id}"[:128],
            namespace=(namespace or DEFAULT_NAMESPACE)[:128],
            code="OK" if exc is None else code_name(exc),
            detail="" if exc is None else str(exc)[:256],
        )
        record_audit(self.rt, entry)


class StagedTasks:
    """An upload's tasks for admission, decoded one chunk at a time (a :class:`TaskMessages`).

    Decoding the joined chunks at once held every task's decoded message (~450 bytes a task in
    upb, 90 MiB for 200k tasks) on top of the records admission builds from them: the biggest
    part of the submission's peak (issue 12). Here a chunk is decoded when admission reaches it
    and dropped (its encoding too) when admission moves on. Read once: the chunks are consumed.
    """

    def __init__(self, parts: list[bytes], count: int) -> None:
        self._parts = parts
        self._count = count

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[types_pb2.TaskSpec]:
        parts = self._parts
        for index in range(len(parts)):
            part, parts[index] = parts[index], b""
            # Chunks are AppendTasksRequest encodings holding only field 2, WorkflowSpec.tasks' number.
            yield from types_pb2.WorkflowSpec.FromString(part).tasks
            del part


def task_part(request: pb.AppendTasksRequest) -> bytes:
    """A chunk's tasks as staged: its encoding with every other field cleared (``request`` too)."""
    for name in _NOT_TASKS:
        request.ClearField(name)
    request.DiscardUnknownFields()  # only known task fields reach the workflow's decoding
    return request.SerializeToString()


def _header(request: pb.AppendTasksRequest, principal: Principal) -> bytes:
    """Chunk 0's header (SubmitWorkflow's request without tasks), checked as far as it can be alone."""
    if not request.HasField("submit"):
        raise InvalidArgument.field("submit", "chunk 0 carries the workflow's header and the submit options")
    submit = request.submit
    if submit.spec.tasks:
        raise InvalidArgument.field("submit.spec.tasks", "the tasks go in AppendTasksRequest.tasks")
    check_submit_options(submit, "submit.")
    require_namespace(principal, submit.spec.namespace or DEFAULT_NAMESPACE)
    return submit.SerializeToString()


def check_submit_options(request: pb.SubmitWorkflowRequest, prefix: str = "") -> None:
    """The options of a submission besides its spec (SubmitWorkflow's, or chunk 0's header)."""
    fields.optional_id(request.idempotency_key, f"{prefix}idempotency_key", "idempotency key")
    if request.wait and not request.start:
        raise InvalidArgument.field(f"{prefix}wait", "waiting needs start: a workflow that is not started never ends")
    fields.seconds(request.wait_timeout_s, f"{prefix}wait_timeout_s", Limits.max_timeout_s)
