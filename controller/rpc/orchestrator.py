"""Orchestrator API: the lifecycle of workflows."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Callable
from typing import Any

from corral.controller import heaptrim
from corral.controller.core import events as ev
from corral.controller.core import requests as rq
from corral.controller.core.analysis import ExecutionPlan, analyze
from corral.controller.core.fallbacks import ResolveApproval
from corral.controller.core.machine import Machine
from corral.controller.core.model import Task, TaskState, Workflow, WorkflowEvent
from corral.controller.core.queries import LogsAnswer
from corral.controller.errors import InvalidArgument
from corral.controller.recovery import OPERATIONAL, storage_error
from corral.controller.rpc import fields, wire
from corral.controller.rpc.admission import admit
from corral.controller.rpc.attempts import AttemptsServicer, stored_attempts
from corral.controller.rpc.auth import current_caller
from corral.controller.rpc.chunks import ChunksServicer, check_submit_options
from corral.controller.rpc.identity import current_principal
from corral.controller.rpc.listing import list_merged
from corral.controller.rpc.request_box import RequestBox
from corral.controller.rpc.runs import RunsServicer
from corral.controller.rpc.scope import require_namespace
from corral.controller.rpc.staging import Staging
from corral.controller.rpc.submission import TaskMessages
from corral.controller.runtime import Runtime
from corral.controller.spec import Limits
from corral.controller.store.base import LogChunk
from corral.v1 import orchestrator_pb2 as pb
from corral.v1 import orchestrator_pb2_grpc, types_pb2

__all__ = ["OrchestratorService"]

_MAX_LIST = 1000
_MAX_REASON = 1024
_MAX_OFFSET = 1 << 62  # log offsets: far past any log, and the answer's offset + length still fits int64
_MAX_PAGE_TOKEN = 18  # digits of an offset into a listing
_CACHED_PLANS = 8
_ADMIT_INLINE_TASKS = 5_000  # bigger workflows are admitted in a thread (see _submit)
# A bigger plan is not cached: it holds every task name, which would outlive the workflow's
# eviction and pin the allocator's memory of its whole submission (DECISIONS.md, memory per task).
_CACHED_PLAN_TASKS = 100_000
_DEFAULT_EVENTS = 1000
_MAX_EVENTS = 10_000


async def _wait(waiter: asyncio.Future[bool] | None, timeout_s: float) -> bool:
    """Wait for a workflow's end, at most ``timeout_s`` (0: no limit); the workflow goes on either way.

    True when the waiter's render wrote the answer at the end (see ``Runtime.waiter``).
    """
    if waiter is None:
        return False
    # Awaited directly, without shield and wait_for: each of those puts one more pass of the event
    # loop between the render and this handler, and the commit's metrics and log lines (scheduled
    # after the render) ran in that gap, on every waited round trip. A call that times out or goes
    # away cancels the waiter; the runtime skips a done waiter (and the caller forgets it).
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s or None):
            return await waiter
    return False


def _result_into(workflow_id: str, into: types_pb2.WorkflowResult) -> Callable[[Machine, float], None]:
    """A waiter's render (``Runtime.waiter``): the ended workflow's result, written ``into``."""

    def render(machine: Machine, now: float) -> None:
        wire.workflow_result(machine, machine.workflows[workflow_id], now, into, Limits.page_tasks)

    return render


def _ended_into(
    workflow_id: str, response: pb.ExecuteWorkflowResponse, summary_only: bool
) -> Callable[[Machine, float], None]:
    """A waiter's render for ExecuteWorkflow: the ended workflow's summary and result (its first
    page of tasks unless ``summary_only``), written into ``response``."""
    limit = 0 if summary_only else Limits.page_tasks

    def render(machine: Machine, now: float) -> None:
        workflow = machine.workflows[workflow_id]
        response.status.CopyFrom(wire.workflow_status(machine, workflow, False, now))
        wire.workflow_result(machine, workflow, now, response.result, limit)

    return render


def _status(include_tasks: bool = False) -> Callable[[Machine, Workflow, float], types_pb2.WorkflowStatus]:
    def render(machine: Machine, workflow: Workflow, now: float) -> types_pb2.WorkflowStatus:
        return wire.workflow_status(machine, workflow, include_tasks, now)

    return render


def _page_offset(token: str) -> int:
    """The offset a page token (an earlier answer's ``next_page_token``) stands for; "" is 0."""
    token = token or "0"
    if len(token) > _MAX_PAGE_TOKEN or not token.isascii() or not token.isdigit():
        raise InvalidArgument.field("page_token", "not a page token from an earlier answer")
    return int(token)


class OrchestratorService(RunsServicer, AttemptsServicer, ChunksServicer, orchestrator_pb2_grpc.OrchestratorServicer):
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.staging = Staging()  # issue 13: chunked submissions until their last chunk (AppendTasks)
        # Plans of the latest submissions: a plan depends only on the spec, and asking for it
        # right after submitting is common (and costly for 100k-task workflows).
        self._plans: dict[str, ExecutionPlan] = {}

    async def SubmitWorkflow(
        self, request: RequestBox[pb.SubmitWorkflowRequest] | pb.SubmitWorkflowRequest, context: Any
    ) -> pb.SubmitWorkflowResponse:
        response = pb.SubmitWorkflowResponse()
        box = request if isinstance(request, RequestBox) else RequestBox(request)
        del request  # from here the box alone: _submit drops the message after its admission
        waiter, wait_timeout_s = await self._submit(box, into=response)
        if wait_timeout_s is not None:
            await self._wait_result(wait_timeout_s, response, waiter)
        return response

    async def _submit(
        self,
        box: RequestBox[pb.SubmitWorkflowRequest],
        tasks: TaskMessages | None = None,
        *,
        into: pb.SubmitWorkflowResponse,
    ) -> tuple[asyncio.Future[bool] | None, float | None]:
        """Admit, store and (with start) start a workflow; the answer is written ``into``. Returns,
        with wait, the end's waiter (it writes the result there when the workflow ends) and the
        request's wait_timeout_s (else None for both).
        ``tasks`` stands for ``request.spec.tasks`` (a chunked upload's, see :func:`admit_workflow`)."""
        request = box.take()
        check_submit_options(request)
        rt = self.rt
        admission = functools.partial(
            admit,
            request.spec,
            request.HasField("spec"),
            rt.new_id,
            idempotency_key=request.idempotency_key,
            params=request.params,
            task_messages=tasks,
        )
        # A big workflow's admission is seconds of CPU (a million tasks: about a minute): in a
        # thread, the event loop keeps taking the GIL to serve heartbeats and reports meanwhile,
        # so no agent looks lost while a big workflow is being checked. Small ones stay inline.
        big = len(request.spec.tasks if tasks is None else tasks) > _ADMIT_INLINE_TASKS
        admitted = await asyncio.to_thread(admission) if big else admission()
        start, wait, no_cache = request.start, request.wait, request.no_cache
        wait_timeout_s = request.wait_timeout_s if wait else None
        # The decoded request (its tasks: ~7 MiB for 20,000) is no longer needed: it goes now,
        # before the core's submit and the commit, the controller's highest point (request_box.py).
        del admission, request
        if big:
            # Now, before the core takes the records: the admission's transients (a chunked
            # upload's decoded chunks too) were freed in the thread's own malloc arena, which the
            # loop thread never reuses. Left there until after the submit, they added ~40 MiB to
            # a 200k-task submission's peak (issue 12; bench.memphases --chunked).
            await heaptrim.HEAP.trim()
        admitted.workflow.no_cache = no_cache
        plan = admitted.plan
        require_namespace(current_principal(), admitted.workflow.namespace)
        event = rq.SubmitRequest(ev.SubmitWorkflow(admitted.workflow, admitted.tasks, start=start))
        del admitted  # the records now belong to the event (and soon the machine)

        def waiting(
            machine: Machine, answer: tuple[Workflow, bool], now: float
        ) -> tuple[str, bool, asyncio.Future[bool] | None, str, str]:
            workflow, deduplicated = answer
            # The waiter is registered in the same tick, so the end cannot slip by unseen.
            waiter = (
                rt.waiter(workflow.id, _result_into(workflow.id, into.result))
                if wait and not workflow.state.terminal
                else None
            )
            admission = machine.deadline_book.admissions.pop(workflow.id, "")
            return workflow.id, deduplicated, waiter, workflow.deadline_verdict, admission

        answer: tuple[str, bool, asyncio.Future[bool] | None, str, str] = await rt.handle(event, waiting)
        workflow_id, deduplicated, waiter, verdict, verdict_message = answer
        if not deduplicated and plan.task_count <= _CACHED_PLAN_TASKS:
            self._plans[workflow_id] = plan
            while len(self._plans) > _CACHED_PLANS:
                del self._plans[next(iter(self._plans))]
        into.workflow_id = workflow_id
        into.plan.CopyFrom(wire.plan_to_proto(plan))
        into.deduplicated = deduplicated
        into.deadline_verdict = verdict
        into.deadline_message = verdict_message
        return waiter, wait_timeout_s

    async def _wait_result(
        self, wait_timeout_s: float, response: pb.SubmitWorkflowResponse, waiter: asyncio.Future[bool] | None
    ) -> None:
        """With wait: the workflow's end (at most ``wait_timeout_s``; 0: no bound), its result
        written into ``response``."""
        if await _wait(waiter, wait_timeout_s):
            return  # written in the tick that ended it
        if waiter is not None:
            self.rt.forget_waiter(response.workflow_id, waiter)  # the answer leaves without it
        await self._result_if_ended(response.workflow_id, response.result)

    async def _result_if_ended(
        self, workflow_id: str, into: types_pb2.WorkflowResult | None = None, *, summary_only: bool = False
    ) -> tuple[types_pb2.WorkflowStatus, types_pb2.WorkflowResult] | None:
        """The summary and result of a workflow that has ended (None while it runs); the result is
        written into ``into`` when given (a response's field: no copy of a big result)."""
        limit = 0 if summary_only else Limits.page_tasks

        def result(
            machine: Machine, workflow: Workflow, now: float
        ) -> tuple[types_pb2.WorkflowStatus, types_pb2.WorkflowResult] | None:
            if not workflow.state.terminal:
                return None
            status = wire.workflow_status(machine, workflow, False, now)
            return status, wire.workflow_result(machine, workflow, now, into, limit)

        answer: tuple[types_pb2.WorkflowStatus, types_pb2.WorkflowResult] | None = await self.rt.handle(
            rq.WorkflowQuery(workflow_id, current_caller()), result
        )
        return answer

    async def ExecuteWorkflow(self, request: pb.ExecuteWorkflowRequest, context: Any) -> pb.ExecuteWorkflowResponse:
        fields.identifier(request.workflow_id, "workflow_id", "workflow id")
        fields.seconds(request.wait_timeout_s, "wait_timeout_s", Limits.max_timeout_s)
        rt = self.rt
        # Written by the waiter's render right after the commit of the tick that ends the workflow,
        # so the answer needs no tick of its own (see ``Runtime.waiter``).
        rendered = pb.ExecuteWorkflowResponse()

        def started(
            machine: Machine, workflow: Workflow, now: float
        ) -> tuple[str, types_pb2.WorkflowStatus, asyncio.Future[bool] | None]:
            waiter = None
            if request.wait and not workflow.state.terminal:
                waiter = rt.waiter(workflow.id, _ended_into(workflow.id, rendered, request.summary_only))
            return workflow.id, wire.workflow_status(machine, workflow, False, now), waiter

        event = rq.StartRequest(request.workflow_id, current_caller(), request.wait)
        workflow_id, status, waiter = await rt.handle(event, started)
        if not request.wait:
            return pb.ExecuteWorkflowResponse(status=status)
        if await _wait(waiter, request.wait_timeout_s):
            return rendered
        if waiter is not None:
            rt.forget_waiter(workflow_id, waiter)  # the answer leaves without it
        response = pb.ExecuteWorkflowResponse()
        ended = await self._result_if_ended(workflow_id, response.result, summary_only=request.summary_only)
        if ended is not None:
            # The result carries the tasks (their first page); the status stays a summary.
            response.status.CopyFrom(ended[0])
            return response
        running = await rt.handle(rq.WorkflowQuery(workflow_id, current_caller()), _status(True))
        return pb.ExecuteWorkflowResponse(status=running)

    async def CancelWorkflow(self, request: pb.CancelWorkflowRequest, context: Any) -> pb.CancelWorkflowResponse:
        fields.identifier(request.workflow_id, "workflow_id", "workflow id")
        fields.text(request.reason, "reason", _MAX_REASON)
        event = rq.CancelRequest(request.workflow_id, current_caller(), request.force, request.reason)
        return pb.CancelWorkflowResponse(status=await self.rt.handle(event, _status()))

    async def GetWorkflowStatus(
        self, request: pb.GetWorkflowStatusRequest, context: Any
    ) -> pb.GetWorkflowStatusResponse:
        fields.identifier(request.workflow_id, "workflow_id", "workflow id")
        if not 0 <= request.page_size <= Limits.max_result_tasks:
            raise InvalidArgument.field(
                "page_size", f"{request.page_size} tasks, outside 0..max_result_tasks={Limits.max_result_tasks}"
            )
        start = _page_offset(request.page_token)
        size = request.page_size or Limits.page_tasks

        def render(machine: Machine, workflow: Workflow, now: float) -> types_pb2.WorkflowStatus:
            return wire.workflow_status(machine, workflow, request.include_tasks, now, start, size)

        event = rq.WorkflowQuery(request.workflow_id, current_caller())
        return pb.GetWorkflowStatusResponse(status=await self.rt.handle(event, render))

    async def PauseWorkflow(self, request: pb.PauseWorkflowRequest, context: Any) -> pb.PauseWorkflowResponse:
        fields.identifier(request.workflow_id, "workflow_id", "workflow id")
        event = rq.PauseRequest(request.workflow_id, current_caller())
        return pb.PauseWorkflowResponse(status=await self.rt.handle(event, _status()))

    async def ResumeWorkflow(self, request: pb.ResumeWorkflowRequest, context: Any) -> pb.ResumeWorkflowResponse:
        fields.identifier(request.workflow_id, "workflow_id", "workflow id")
        event = rq.ResumeRequest(request.workflow_id, current_caller())
        return pb.ResumeWorkflowResponse(status=await self.rt.handle(event, _status()))

    async def ListWorkflows(self, request: pb.ListWorkflowsRequest, context: Any) -> pb.ListWorkflowsResponse:
        limit = request.limit or 100
        if not 0 < limit <= _MAX_LIST:
            raise InvalidArgument.field("limit", f"must be between 1 and {_MAX_LIST}")
        offset = _page_offset(request.page_token)
        fields.text(request.name_prefix, "name_prefix", Limits.max_name_length)
        states = set()
        for i, state in enumerate(request.states):
            if state not in wire.WORKFLOW_STATE_FROM_PB:
                raise InvalidArgument.field(f"states[{i}]", f"unknown workflow state {state}")
            states.add(wire.WORKFLOW_STATE_FROM_PB[state])
        if request.namespace:
            require_namespace(current_principal(), request.namespace)
        event = rq.ListWorkflowsQuery(
            current_caller(), frozenset(states), request.name_prefix, request.namespace, offset, limit
        )
        if self.rt.machine.lifecycle.evicted:  # issue 12: some workflows are only in the store
            summaries, more = await list_merged(self.rt, event)
            return pb.ListWorkflowsResponse(workflows=summaries, next_page_token=str(offset + limit) if more else "")

        def render(machine: Machine, answer: tuple[list[Workflow], bool], now: float) -> pb.ListWorkflowsResponse:
            page, more = answer
            return pb.ListWorkflowsResponse(
                workflows=[wire.workflow_summary(machine, w) for w in page],
                next_page_token=str(offset + limit) if more else "",
            )

        response: pb.ListWorkflowsResponse = await self.rt.handle(event, render)
        return response

    async def WatchWorkflow(self, request: pb.WatchWorkflowRequest, context: Any) -> AsyncIterator[pb.WorkflowEvent]:
        if request.after_seq < 0:
            raise InvalidArgument.field("after_seq", "must be >= 0")
        rt = self.rt
        fields.identifier(request.workflow_id, "workflow_id", "workflow id")

        def subscribe(
            machine: Machine, workflow: Workflow, now: float
        ) -> tuple[str, list[WorkflowEvent], asyncio.Queue[WorkflowEvent | None] | None]:
            # The current state first, as events, so a late watcher sees the whole picture.
            snapshot = [WorkflowEvent(0, now, workflow.id, workflow.state, message="current state")]
            for task_id in workflow.task_ids:
                task = machine.tasks[task_id]
                if task.state is not TaskState.PENDING:
                    snapshot.append(
                        WorkflowEvent(
                            0,
                            now,
                            workflow.id,
                            workflow.state,
                            task.id,
                            task.name,
                            task.state,
                            task.current_attempt_id or "",
                            task.agent_id or "",
                            "current state",
                        )
                    )
            # Registered in the same tick as the snapshot: no event falls between them.
            queue = None if workflow.state.terminal else rt.watch(workflow.id)
            return workflow.id, snapshot, queue

        workflow_id, snapshot, queue = await rt.handle(
            rq.WorkflowQuery(request.workflow_id, current_caller()), subscribe
        )
        for event in snapshot:
            yield wire.event_to_proto(event)
        if queue is None:
            return
        try:
            while True:
                item = await queue.get()
                if item is None:
                    return
                if item.seq <= request.after_seq:
                    continue
                yield wire.event_to_proto(item)
                if not item.task_id and item.workflow_state.terminal:
                    return
        finally:
            rt.unwatch(workflow_id, queue)

    async def GetWorkflowEvents(
        self, request: pb.GetWorkflowEventsRequest, context: Any
    ) -> pb.GetWorkflowEventsResponse:
        """The persisted event log of a workflow (optionally of one task), oldest first, after ``after_seq``."""
        fields.identifier(request.workflow_id, "workflow_id", "workflow id")
        if request.after_seq < 0:
            raise InvalidArgument.field("after_seq", "must be >= 0")
        limit = request.limit or _DEFAULT_EVENTS
        if not 0 < limit <= _MAX_EVENTS:
            raise InvalidArgument.field("limit", f"must be between 1 and {_MAX_EVENTS}")
        fields.optional_id(request.task, "task", "task id or name")
        event = rq.EventsQuery(request.workflow_id, current_caller(), request.task)
        workflow_id, task_id = await self.rt.handle(event)
        # Committed rows on the store's reader connection, off the loop: a long log never stalls it.
        try:
            found = await asyncio.to_thread(
                self.rt.store.workflow_events, workflow_id, request.after_seq, limit, task_id or None
            )
        except OPERATIONAL as exc:  # a lost database (or disk) is UNAVAILABLE, not INTERNAL
            raise storage_error(exc) from exc
        return pb.GetWorkflowEventsResponse(events=[wire.event_to_proto(e) for e in found])

    async def GetExecutionPlan(self, request: pb.GetExecutionPlanRequest, context: Any) -> pb.GetExecutionPlanResponse:
        if request.WhichOneof("source") == "spec":
            plan = admit(request.spec, True, self.rt.new_id).plan
            return pb.GetExecutionPlanResponse(plan=wire.plan_to_proto(plan))
        if request.WhichOneof("source") != "workflow_id":
            raise InvalidArgument.field("source", "give a workflow_id or a spec")
        fields.identifier(request.workflow_id, "workflow_id", "workflow id")
        caller = current_caller()
        cached = self._plans.get(request.workflow_id)
        if cached is not None:
            await self.rt.handle(rq.WorkflowQuery(request.workflow_id, caller))  # the caller may see it
            return pb.GetExecutionPlanResponse(plan=wire.plan_to_proto(cached))
        names, deps, durations = await self.rt.handle(rq.PlanQuery(request.workflow_id, caller))
        return pb.GetExecutionPlanResponse(plan=wire.plan_to_proto(analyze(names, deps, durations)))

    async def GetTaskLogs(self, request: pb.GetTaskLogsRequest, context: Any) -> pb.GetTaskLogsResponse:
        for name in ("stdout_offset", "stderr_offset"):
            if not 0 <= getattr(request, name) <= _MAX_OFFSET:
                raise InvalidArgument.field(name, f"must be between 0 and {_MAX_OFFSET}")
        fields.identifier(request.task_id, "task_id", "task id")
        fields.optional_id(request.attempt_id, "attempt_id", "attempt id")
        store = self.rt.store
        remote = getattr(store, "remote", False)  # a networked store is read after the tick, in a thread

        def logs(machine: Machine, found: LogsAnswer, now: float) -> tuple[LogsAnswer, pb.GetTaskLogsResponse]:
            if not found.attempt_id:
                return found, pb.GetTaskLogsResponse(finished=found.task.state.terminal)
            response = pb.GetTaskLogsResponse(attempt_id=found.attempt_id, finished=found.finished)
            if not remote and not found.unconfirmed:
                # Read in the tick, between commits, so it never races the writer.
                _fill_logs(response, request, store.read_logs(found.attempt_id, *_offsets(request)))
            return found, response

        event = rq.LogsQuery(request.task_id, current_caller(), request.attempt_id)
        answer: LogsAnswer
        response: pb.GetTaskLogsResponse
        answer, response = await self.rt.handle(event, logs)
        if not response.attempt_id or not (remote or answer.unconfirmed):
            return response
        if answer.unconfirmed and all(
            a.id != answer.attempt_id for a in await stored_attempts(self.rt, answer.task.id)
        ):
            raise InvalidArgument.field("attempt_id", f"not an attempt of task {answer.task.id}")
        try:  # committed rows only; "finished" was decided in the tick, before this read
            chunk = await asyncio.to_thread(store.read_logs, answer.attempt_id, *_offsets(request))
        except OPERATIONAL as exc:
            raise storage_error(exc) from exc
        _fill_logs(response, request, chunk)
        return response

    async def ResolveApproval(self, request: pb.ResolveApprovalRequest, context: Any) -> pb.ResolveApprovalResponse:
        """Approve or reject a waiting approval task (issue 10; ``core/fallbacks.py``)."""
        fields.identifier(request.workflow_id, "workflow_id", "workflow id")
        fields.identifier(request.task, "task", "task name or id")
        fields.text(request.reason, "reason", _MAX_REASON)
        event = ResolveApproval(request.workflow_id, request.task, current_caller(), request.approve, request.reason)

        def render(machine: Machine, task: Task, now: float) -> pb.ResolveApprovalResponse:
            return pb.ResolveApprovalResponse(task=wire.task_status(machine, task, now=now))

        response: pb.ResolveApprovalResponse = await self.rt.handle(event, render)
        return response


def _offsets(request: pb.GetTaskLogsRequest) -> tuple[int, int]:
    return request.stdout_offset, request.stderr_offset


def _fill_logs(response: pb.GetTaskLogsResponse, request: pb.GetTaskLogsRequest, chunk: LogChunk) -> None:
    """The output read after the request's offsets, and the offsets to ask from next."""
    response.stdout, response.stderr, response.truncated = chunk.stdout, chunk.stderr, chunk.truncated
    response.stdout_offset = request.stdout_offset + len(chunk.stdout)
    response.stderr_offset = request.stderr_offset + len(chunk.stderr)
