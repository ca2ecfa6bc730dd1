"""Scheduler API: standalone tasks, pull-based external workers, dependency analysis, explanations."""

from __future__ import annotations

from typing import Any

from corral.controller.core import events as ev
from corral.controller.core.machine import Machine
from corral.controller.core.model import AttemptState, TaskState
from corral.controller.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from corral.controller.rpc import identity, wire
from corral.controller.rpc.admission import admit, admit_task
from corral.controller.rpc.lookup import resolve
from corral.controller.rpc.wire_spec import decode_json_field
from corral.controller.runtime import Runtime
from corral.controller.spec import Limits
from corral.v1 import scheduler_pb2 as pb
from corral.v1 import scheduler_pb2_grpc

__all__ = ["SchedulerService"]

_MAX_WAIT_S = 60.0
_MAX_ID = 256


def _worker_id(value: str) -> str:
    if not value or len(value) > _MAX_ID:
        raise InvalidArgument.field("worker_id", f"required, at most {_MAX_ID} characters")
    return value


class SchedulerService(scheduler_pb2_grpc.SchedulerServicer):
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    async def ScheduleTask(self, request: pb.ScheduleTaskRequest, context: Any) -> pb.ScheduleTaskResponse:
        admitted = admit_task(
            request.task, request.HasField("task"), self.rt.machine.new_id, idempotency_key=request.idempotency_key
        )
        task_id = admitted.tasks[0].id
        workflow_id, deduplicated = await self.rt.handle(
            ev.SubmitWorkflow(admitted.workflow, admitted.tasks, start=True)
        )
        if deduplicated:  # the first submission with this key stands

            def first_task(machine: Machine, now: float) -> str:
                return machine.workflows[workflow_id].task_ids[0]

            task_id = await self.rt.call(first_task)
        return pb.ScheduleTaskResponse(task_id=task_id, workflow_id=workflow_id)

    async def GetNextTask(self, request: pb.GetNextTaskRequest, context: Any) -> pb.GetNextTaskResponse:
        worker = _worker_id(request.worker_id)
        if not request.agent_types:
            raise InvalidArgument.field("agent_types", "name at least one agent type this worker runs")
        if not 0 <= request.wait_s <= _MAX_WAIT_S:
            raise InvalidArgument.field("wait_s", f"must be between 0 and {_MAX_WAIT_S:g}")
        capacity = wire.resources_from_proto(request.capacity) if request.HasField("capacity") else None
        principal = identity.current_principal()
        event = ev.PullTask(
            worker,
            tuple(request.agent_types),
            dict(request.labels),
            capacity,
            principal=principal.describe(),
            namespaces=principal.namespaces,
        )
        assignment = await self.rt.pull(event, request.wait_s)
        if assignment is None:
            return pb.GetNextTaskResponse(found=False)
        return pb.GetNextTaskResponse(found=True, assignment=wire.assignment_to_proto(assignment))

    async def _report(self, event: ev.AttemptFinished) -> TaskState:
        caller = identity.current_principal().describe()

        def apply(machine: Machine, now: float) -> TaskState:
            attempt = machine.attempts.get(event.attempt_id)
            if attempt is None:
                raise NotFound(f"attempt {event.attempt_id[:128]!r} not found")
            # The fence: only the worker that pulled an attempt, with the same credential, reports
            # on it. An agent's attempt is reported by that agent over its own stream, never here.
            if not attempt.pulled:
                raise PermissionDenied(
                    f"attempt {attempt.id} is held by agent {attempt.agent_id!r} over its stream; "
                    "only that agent reports on it"
                )
            if attempt.agent_id != event.reporter:
                raise PermissionDenied(
                    f"attempt {attempt.id} is held by worker {attempt.agent_id!r}; "
                    f"report from worker {event.reporter!r} refused"
                )
            if attempt.principal and attempt.principal != caller:
                raise PermissionDenied(
                    f"attempt {attempt.id} was pulled by {attempt.principal}; report from {caller} refused"
                )
            if not machine.finished(event, now):
                raise FailedPrecondition(
                    f"attempt {event.attempt_id} is {attempt.state} and held by {attempt.agent_id!r}; "
                    f"report from {event.reporter!r} rejected"
                )
            return machine.tasks[attempt.task_id].state

        state: TaskState = await self.rt.call(apply)
        return state

    async def CompleteTask(self, request: pb.CompleteTaskRequest, context: Any) -> pb.CompleteTaskResponse:
        worker = _worker_id(request.worker_id)
        decode_json_field(request.result_json, "result_json", Limits.max_result_bytes, "max_result_bytes")
        result = request.result_json or b"null"
        await self._report(ev.AttemptFinished(worker, request.attempt_id, AttemptState.SUCCEEDED, 0, result))
        return pb.CompleteTaskResponse(accepted=True)

    async def FailTask(self, request: pb.FailTaskRequest, context: Any) -> pb.FailTaskResponse:
        worker = _worker_id(request.worker_id)
        if len(request.error) > 64 * 1024:
            raise InvalidArgument.field("error", "longer than 65536 characters")
        state = await self._report(
            ev.AttemptFinished(
                worker, request.attempt_id, AttemptState.FAILED, None, None, request.error, not request.permanent
            )
        )
        return pb.FailTaskResponse(accepted=True, will_retry=state is TaskState.READY)

    async def AnalyzeDependencies(
        self, request: pb.AnalyzeDependenciesRequest, context: Any
    ) -> pb.AnalyzeDependenciesResponse:
        plan = admit(request.spec, request.HasField("spec"), self.rt.machine.new_id).plan
        return pb.AnalyzeDependenciesResponse(
            plan=wire.plan_to_proto(plan),
            roots=plan.roots,
            leaves=plan.leaves,
            max_width=plan.max_width,
            depth=plan.depth,
        )

    async def ExplainTask(self, request: pb.ExplainTaskRequest, context: Any) -> pb.ExplainTaskResponse:
        def explain(machine: Machine, now: float) -> pb.ExplainTaskResponse:
            task = machine.tasks[resolve(machine.tasks, request.task_id, "task", "task_id")]
            why = machine.explain(task.id, now)
            return pb.ExplainTaskResponse(
                task=wire.task_status(machine, task, why.reason, why.unschedulable),
                reason=why.reason,
                waiting_on=why.waiting_on,
                agents=[pb.AgentVerdict(agent_id=a, agent_name=n, reason=r) for a, n, r in why.agents],
            )

        return await self.rt.call(explain)
