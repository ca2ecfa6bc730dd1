"""Orchestrator API: the lifecycle of workflows."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from corral.controller.core import events as ev
from corral.controller.core.analysis import ExecutionPlan, analyze
from corral.controller.core.machine import Machine
from corral.controller.core.model import TaskState, WorkflowEvent
from corral.controller.errors import InvalidArgument
from corral.controller.rpc import fields, wire
from corral.controller.rpc.admission import admit
from corral.controller.rpc.identity import current_principal
from corral.controller.rpc.lookup import resolve
from corral.controller.rpc.scope import require_namespace, visible_task, visible_workflow
from corral.controller.rpc.secret_refs import check_secret_refs
from corral.controller.runtime import Runtime
from corral.controller.spec import Limits
from corral.v1 import orchestrator_pb2 as pb
from corral.v1 import orchestrator_pb2_grpc, types_pb2

__all__ = ["OrchestratorService"]

_MAX_LIST = 1000
_MAX_REASON = 1024
_MAX_OFFSET = 1 << 62  # log offsets: far past any log, and the answer's offset + length still fits int64
_MAX_PAGE_TOKEN = 18  # digits of an offset into a listing
_CACHED_PLANS = 8


async def _wait(waiter: asyncio.Future[None] | None, timeout_s: float) -> None:
    """Wait for a workflow's end, at most ``timeout_s`` (0: no limit); the workflow goes on either way."""
    if waiter is not None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(waiter), timeout_s or None)


def workflow_id_of(machine: Machine, typed: str, field: str = "workflow_id") -> str:
    return resolve(machine.workflows, typed, "workflow", field)


class OrchestratorService(orchestrator_pb2_grpc.OrchestratorServicer):
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        # Plans of the latest submissions: a plan depends only on the spec, and asking for it
        # right after submitting is common (and costly for 100k-task workflows).
        self._plans: dict[str, ExecutionPlan] = {}

    async def SubmitWorkflow(self, request: pb.SubmitWorkflowRequest, context: Any) -> pb.SubmitWorkflowResponse:
        fields.optional_id(request.idempotency_key, "idempotency_key", "idempotency key")
        if request.wait and not request.start:
            raise InvalidArgument.field("wait", "waiting needs start: a workflow that is not started never ends")
        fields.seconds(request.wait_timeout_s, "wait_timeout_s", Limits.max_timeout_s)
        admitted = admit(
            request.spec, request.HasField("spec"), self.rt.machine.new_id, idempotency_key=request.idempotency_key
        )
        plan = admitted.plan
        principal = current_principal()
        require_namespace(principal, admitted.workflow.namespace)
        event = ev.SubmitWorkflow(admitted.workflow, admitted.tasks, start=request.start)
        del admitted  # the records now belong to the event (and soon the machine)
        rt = self.rt

        def submit(machine: Machine, now: float) -> tuple[str, bool, asyncio.Future[None] | None]:
            machine.access.namespace(event.workflow.namespace)  # NOT_FOUND first, with its hint
            check_secret_refs(machine.access, event.tasks, "spec")
            workflow_id, deduplicated = machine.submit(event, now)
            ended = machine.workflows[workflow_id].state.terminal
            # The waiter is registered in the same tick, so the end cannot slip by unseen.
            return workflow_id, deduplicated, rt.waiter(workflow_id) if request.wait and not ended else None

        workflow_id, deduplicated, waiter = await rt.call(submit)
        if not deduplicated:
            self._plans[workflow_id] = plan
            while len(self._plans) > _CACHED_PLANS:
                del self._plans[next(iter(self._plans))]
        response = pb.SubmitWorkflowResponse(
            workflow_id=workflow_id, plan=wire.plan_to_proto(plan), deduplicated=deduplicated
        )
        if request.wait:
            await _wait(waiter, request.wait_timeout_s)
            result = self._result_if_ended(workflow_id)
            if result is not None:
                response.result.CopyFrom(result)
        return response

    def _result_if_ended(self, workflow_id: str) -> types_pb2.WorkflowResult | None:
        rt = self.rt
        workflow = rt.machine.workflows[workflow_id]
        if workflow.state.terminal:
            # Its end was committed before the waiter woke, and a finished workflow never changes
            # again: it can be read here without another trip through the loop.
            return wire.workflow_result(rt.machine, workflow, rt.clock())
        return None

    async def ExecuteWorkflow(self, request: pb.ExecuteWorkflowRequest, context: Any) -> pb.ExecuteWorkflowResponse:
        fields.identifier(request.workflow_id, "workflow_id", "workflow id")
        fields.seconds(request.wait_timeout_s, "wait_timeout_s", Limits.max_timeout_s)
        rt = self.rt
        principal = current_principal()

        def start(machine: Machine, now: float) -> tuple[str, types_pb2.WorkflowStatus, asyncio.Future[None] | None]:
            workflow = visible_workflow(machine, request.workflow_id, principal)
            # Waiting on a workflow that already ended just returns its result.
            if not (request.wait and workflow.state.terminal):
                machine.start(workflow.id, now)
            waiter = rt.waiter(workflow.id) if request.wait and not workflow.state.terminal else None
            return workflow.id, wire.workflow_status(machine, workflow, False, now), waiter

        workflow_id, status, waiter = await rt.call(start)
        if not request.wait:
            return pb.ExecuteWorkflowResponse(status=status)
        await _wait(waiter, request.wait_timeout_s)
        result = self._result_if_ended(workflow_id)
        if result is not None:
            # The result carries every task; the status stays a summary to halve the message.
            summary = wire.workflow_status(rt.machine, rt.machine.workflows[workflow_id], False, rt.clock())
            return pb.ExecuteWorkflowResponse(status=summary, result=result)

        def still_running(machine: Machine, now: float) -> types_pb2.WorkflowStatus:
            return wire.workflow_status(machine, machine.workflows[workflow_id], True, now)

        return pb.ExecuteWorkflowResponse(status=await rt.call(still_running, read=True))

    async def CancelWorkflow(self, request: pb.CancelWorkflowRequest, context: Any) -> pb.CancelWorkflowResponse:
        fields.text(request.reason, "reason", _MAX_REASON)

        principal = current_principal()

        def cancel(machine: Machine, now: float) -> types_pb2.WorkflowStatus:
            workflow_id = visible_workflow(machine, request.workflow_id, principal).id
            workflow = machine.cancel(ev.CancelWorkflow(workflow_id, request.force, request.reason), now)
            return wire.workflow_status(machine, workflow, False, now)

        return pb.CancelWorkflowResponse(status=await self.rt.call(cancel))

    async def GetWorkflowStatus(
        self, request: pb.GetWorkflowStatusRequest, context: Any
    ) -> pb.GetWorkflowStatusResponse:
        principal = current_principal()

        def status(machine: Machine, now: float) -> types_pb2.WorkflowStatus:
            workflow = visible_workflow(machine, request.workflow_id, principal)
            return wire.workflow_status(machine, workflow, request.include_tasks, now)

        return pb.GetWorkflowStatusResponse(status=await self.rt.call(status, read=True))

    async def PauseWorkflow(self, request: pb.PauseWorkflowRequest, context: Any) -> pb.PauseWorkflowResponse:
        principal = current_principal()

        def pause(machine: Machine, now: float) -> types_pb2.WorkflowStatus:
            workflow = machine.pause(visible_workflow(machine, request.workflow_id, principal).id, now)
            return wire.workflow_status(machine, workflow, False, now)

        return pb.PauseWorkflowResponse(status=await self.rt.call(pause))

    async def ResumeWorkflow(self, request: pb.ResumeWorkflowRequest, context: Any) -> pb.ResumeWorkflowResponse:
        principal = current_principal()

        def resume(machine: Machine, now: float) -> types_pb2.WorkflowStatus:
            workflow = machine.resume(visible_workflow(machine, request.workflow_id, principal).id, now)
            return wire.workflow_status(machine, workflow, False, now)

        return pb.ResumeWorkflowResponse(status=await self.rt.call(resume))

    async def ListWorkflows(self, request: pb.ListWorkflowsRequest, context: Any) -> pb.ListWorkflowsResponse:
        limit = request.limit or 100
        if not 0 < limit <= _MAX_LIST:
            raise InvalidArgument.field("limit", f"must be between 1 and {_MAX_LIST}")
        token = request.page_token or "0"
        if len(token) > _MAX_PAGE_TOKEN or not token.isascii() or not token.isdigit():
            raise InvalidArgument.field("page_token", "not a page token from an earlier answer")
        offset = int(token)
        fields.text(request.name_prefix, "name_prefix", Limits.max_name_length)
        states = set()
        for i, state in enumerate(request.states):
            if state not in wire.WORKFLOW_STATE_FROM_PB:
                raise InvalidArgument.field(f"states[{i}]", f"unknown workflow state {state}")
            states.add(wire.WORKFLOW_STATE_FROM_PB[state])
        principal = current_principal()
        namespace = request.namespace
        if namespace:
            require_namespace(principal, namespace)

        def listing(machine: Machine, now: float) -> pb.ListWorkflowsResponse:
            chosen = [
                w
                for w in machine.workflows.values()
                if (not states or w.state in states)
                and w.name.startswith(request.name_prefix)
                and (w.namespace == namespace if namespace else principal.covers(w.namespace))
            ]
            chosen.sort(key=lambda w: (-w.created_at, w.id))
            page = chosen[offset : offset + limit]
            token = str(offset + limit) if offset + limit < len(chosen) else ""
            return pb.ListWorkflowsResponse(
                workflows=[wire.workflow_summary(machine, w) for w in page], next_page_token=token
            )

        return await self.rt.call(listing, read=True)

    async def WatchWorkflow(self, request: pb.WatchWorkflowRequest, context: Any) -> AsyncIterator[pb.WorkflowEvent]:
        if request.after_seq < 0:
            raise InvalidArgument.field("after_seq", "must be >= 0")
        rt = self.rt
        principal = current_principal()

        def subscribe(
            machine: Machine, now: float
        ) -> tuple[str, list[WorkflowEvent], asyncio.Queue[WorkflowEvent | None] | None]:
            workflow = visible_workflow(machine, request.workflow_id, principal)
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
            queue = None if workflow.state.terminal else rt.watch(workflow.id)
            return workflow.id, snapshot, queue

        workflow_id, snapshot, queue = await rt.call(subscribe, read=True)
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

    async def GetExecutionPlan(self, request: pb.GetExecutionPlanRequest, context: Any) -> pb.GetExecutionPlanResponse:
        if request.WhichOneof("source") == "spec":
            plan = admit(request.spec, True, self.rt.machine.new_id).plan
            return pb.GetExecutionPlanResponse(plan=wire.plan_to_proto(plan))
        if request.WhichOneof("source") != "workflow_id":
            raise InvalidArgument.field("source", "give a workflow_id or a spec")
        principal = current_principal()

        def stored(machine: Machine, now: float) -> tuple[list[str], list[list[str]], list[float]]:
            workflow = visible_workflow(machine, request.workflow_id, principal)
            tasks = [machine.tasks[t] for t in workflow.task_ids]
            return (
                [t.name for t in tasks],
                [[machine.tasks[d].name for d in t.dependencies] for t in tasks],
                [t.estimated_duration_s for t in tasks],
            )

        cached = self._plans.get(request.workflow_id)
        known = self.rt.machine.workflows.get(request.workflow_id)
        if cached is not None and known is not None and principal.covers(known.namespace):
            return pb.GetExecutionPlanResponse(plan=wire.plan_to_proto(cached))
        names, deps, durations = await self.rt.call(stored, read=True)
        return pb.GetExecutionPlanResponse(plan=wire.plan_to_proto(analyze(names, deps, durations)))

    async def GetTaskLogs(self, request: pb.GetTaskLogsRequest, context: Any) -> pb.GetTaskLogsResponse:
        for name in ("stdout_offset", "stderr_offset"):
            if not 0 <= getattr(request, name) <= _MAX_OFFSET:
                raise InvalidArgument.field(name, f"must be between 0 and {_MAX_OFFSET}")
        fields.optional_id(request.attempt_id, "attempt_id", "attempt id")
        store = self.rt.store
        principal = current_principal()

        def logs(machine: Machine, now: float) -> pb.GetTaskLogsResponse:
            task = visible_task(machine, request.task_id, principal)
            attempt_id = request.attempt_id or task.current_attempt_id or ""
            attempt = machine.attempts.get(attempt_id)
            if attempt is None or attempt.task_id != task.id:
                if request.attempt_id:
                    raise InvalidArgument.field("attempt_id", f"not an attempt of task {task.id}")
                return pb.GetTaskLogsResponse(finished=task.state.terminal)
            # Reads run inside the loop, between commits, so they never race the writer.
            chunk = store.read_logs(attempt.id, request.stdout_offset, request.stderr_offset)
            return pb.GetTaskLogsResponse(
                attempt_id=attempt.id,
                stdout=chunk.stdout,
                stderr=chunk.stderr,
                stdout_offset=request.stdout_offset + len(chunk.stdout),
                stderr_offset=request.stderr_offset + len(chunk.stderr),
                finished=not attempt.state.active,
                truncated=chunk.truncated,
            )

        return await self.rt.call(logs, read=True)
