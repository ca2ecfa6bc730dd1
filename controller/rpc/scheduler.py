"""Scheduler API: standalone tasks, pull-based external workers, dependency analysis, explanations."""

from __future__ import annotations

import asyncio
from typing import Any

from corral.controller.core import events as ev
from corral.controller.core import requests as rq
from corral.controller.core.analysis import dependency_insights
from corral.controller.core.checkpoints import checkpoint_note
from corral.controller.core.machine import Explanation, Machine
from corral.controller.core.model import AttemptState, Task, TaskState
from corral.controller.core.preemption import preemption_note
from corral.controller.core.runs import explain_note
from corral.controller.errors import InvalidArgument
from corral.controller.rpc import fields, identity, wire
from corral.controller.rpc.admission import admit, admit_task
from corral.controller.rpc.auth import current_caller
from corral.controller.rpc.identity import Principal, current_principal
from corral.controller.rpc.scope import require_namespace
from corral.controller.rpc.wire_spec import decode_json_field
from corral.controller.runtime import Runtime
from corral.controller.spec import Limits
from corral.v1 import scheduler_pb2 as pb
from corral.v1 import scheduler_pb2_grpc

__all__ = ["SchedulerService"]

_MAX_WAIT_S = 60.0


def _worker_id(value: str) -> str:
    return fields.identifier(value, "worker_id", "worker id")


def _standalone_namespace(principal: Principal) -> str:
    """ScheduleTask names no namespace: "default", or the caller's only namespace when it has one."""
    if len(principal.namespaces) == 1:
        return principal.namespaces[0]
    return "default"


class SchedulerService(scheduler_pb2_grpc.SchedulerServicer):
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    async def ScheduleTask(self, request: pb.ScheduleTaskRequest, context: Any) -> pb.ScheduleTaskResponse:
        fields.optional_id(request.idempotency_key, "idempotency_key", "idempotency key")
        admitted = admit_task(
            request.task, request.HasField("task"), self.rt.new_id, idempotency_key=request.idempotency_key
        )
        principal = current_principal()
        namespace = _standalone_namespace(principal)
        require_namespace(principal, namespace)
        admitted.workflow.namespace = namespace
        for task in admitted.tasks:
            task.namespace = namespace
        event = rq.SubmitRequest(ev.SubmitWorkflow(admitted.workflow, admitted.tasks, start=True), "task")
        workflow, _ = await self.rt.handle(event)
        # Deduplicated: the first submission with this key stands, with its task (ids never change).
        return pb.ScheduleTaskResponse(task_id=workflow.task_ids[0], workflow_id=workflow.id)

    async def GetNextTask(self, request: pb.GetNextTaskRequest, context: Any) -> pb.GetNextTaskResponse:
        worker = _worker_id(request.worker_id)
        if not request.agent_types:
            raise InvalidArgument.field("agent_types", "name at least one agent type this worker runs")
        fields.check_names(list(request.agent_types), "agent_types", "agent type")
        labels = dict(request.labels)
        fields.check_labels(labels, "labels")
        fields.seconds(request.wait_s, "wait_s", _MAX_WAIT_S)
        capacity = fields.check_resources(request.capacity, "capacity") if request.HasField("capacity") else None
        principal = identity.current_principal()
        event = ev.PullTask(
            worker,
            tuple(request.agent_types),
            labels,
            capacity,
            principal=principal.describe(),
            namespaces=principal.namespaces,
        )
        assignment = await self.rt.pull(event, request.wait_s)
        if assignment is None:
            return pb.GetNextTaskResponse(found=False)
        return pb.GetNextTaskResponse(found=True, assignment=wire.assignment_to_proto(assignment))

    async def _report(self, event: ev.AttemptFinished) -> TaskState:
        state: TaskState = await self.rt.handle(rq.ReportRequest(event, current_caller()))
        return state

    async def CompleteTask(self, request: pb.CompleteTaskRequest, context: Any) -> pb.CompleteTaskResponse:
        worker = _worker_id(request.worker_id)
        fields.identifier(request.attempt_id, "attempt_id", "attempt id")
        decode_json_field(request.result_json, "result_json", Limits.max_result_bytes, "max_result_bytes")
        result = request.result_json or b"null"
        await self._report(ev.AttemptFinished(worker, request.attempt_id, AttemptState.SUCCEEDED, 0, result))
        return pb.CompleteTaskResponse(accepted=True)

    async def FailTask(self, request: pb.FailTaskRequest, context: Any) -> pb.FailTaskResponse:
        worker = _worker_id(request.worker_id)
        fields.identifier(request.attempt_id, "attempt_id", "attempt id")
        fields.text(request.error, "error", fields.MAX_TEXT, multiline=True)
        state = await self._report(
            ev.AttemptFinished(
                worker, request.attempt_id, AttemptState.FAILED, None, None, request.error, not request.permanent
            )
        )
        return pb.FailTaskResponse(accepted=True, will_retry=state is TaskState.READY)

    async def AnalyzeDependencies(
        self, request: pb.AnalyzeDependenciesRequest, context: Any
    ) -> pb.AnalyzeDependenciesResponse:
        admitted = admit(request.spec, request.HasField("spec"), self.rt.new_id)
        names = {task.id: task.name for task in admitted.tasks}
        dependencies = [[names[d] for d in task.dependencies] for task in admitted.tasks]
        # Off the event loop: bounded (MAX_INSIGHT_TASKS), but up to a few hundred milliseconds.
        insights = await asyncio.to_thread(dependency_insights, list(names.values()), dependencies)
        return wire.analysis_to_proto(admitted.plan, insights)

    async def ExplainTask(self, request: pb.ExplainTaskRequest, context: Any) -> pb.ExplainTaskResponse:
        fields.identifier(request.task_id, "task_id", "task id")

        def render(machine: Machine, answer: tuple[Task, Explanation], now: float) -> pb.ExplainTaskResponse:
            task, why = answer
            note = preemption_note(machine, task)
            durable = explain_note(machine, task)
            response = pb.ExplainTaskResponse(
                task=wire.task_status(machine, task, why.reason, why.unschedulable, now),
                reason=f"{note}; {why.reason}" if note else why.reason,
                waiting_on=why.waiting_on,
                agents=[pb.AgentVerdict(agent_id=a, agent_name=n, reason=r) for a, n, r in why.agents],
                last_plan_reason=why.last_plan_reason,
                last_plan_age_s=why.last_plan_age_s,
                demand_class=why.demand_class,
                preemption=note,
                checkpoint=checkpoint_note(machine, task.id),
                on_failure_note=durable,
            )
            if durable:
                response.reason = f"{durable}; {response.reason}"
            if response.task.HasField("slack_s"):
                response.slack_s = response.task.slack_s
                response.deadline_note = machine.deadline_book.note(task.id, now)
            return response

        response: pb.ExplainTaskResponse = await self.rt.handle(
            rq.ExplainQuery(request.task_id, current_caller()), render
        )
        return response
