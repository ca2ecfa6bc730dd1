"""Scheduler API: standalone tasks, pull-based external workers, dependency analysis, explanations."""

from __future__ import annotations

from typing import Any

from corral.controller.core import events as ev
from corral.controller.core.machine import Machine
from corral.controller.core.model import AttemptState, TaskState
from corral.controller.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied, clip
from corral.controller.rpc import fields, identity, wire
from corral.controller.rpc.admission import admit, admit_task
from corral.controller.rpc.identity import Principal, current_principal
from corral.controller.rpc.scope import require_namespace, visible_task
from corral.controller.rpc.secret_refs import check_secret_refs
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
            request.task, request.HasField("task"), self.rt.machine.new_id, idempotency_key=request.idempotency_key
        )
        task_id = admitted.tasks[0].id
        principal = current_principal()
        namespace = _standalone_namespace(principal)
        require_namespace(principal, namespace)
        admitted.workflow.namespace = namespace
        for task in admitted.tasks:
            task.namespace = namespace
        event = ev.SubmitWorkflow(admitted.workflow, admitted.tasks, start=True)

        def submit(machine: Machine, now: float) -> tuple[str, bool]:
            check_secret_refs(machine.access, event.tasks, "task")
            return machine.submit(event, now)

        workflow_id, deduplicated = await self.rt.call(submit)
        if deduplicated:  # the first submission with this key stands

            def first_task(machine: Machine, now: float) -> str:
                return machine.workflows[workflow_id].task_ids[0]

            task_id = await self.rt.call(first_task, read=True)
        return pb.ScheduleTaskResponse(task_id=task_id, workflow_id=workflow_id)

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
        principal = current_principal()
        caller = principal.describe()

        def apply(machine: Machine, now: float) -> TaskState:
            attempt = machine.attempts.get(event.attempt_id)
            if attempt is None:
                raise NotFound(f"attempt {clip(event.attempt_id)!r} not found")
            require_namespace(principal, machine.tasks[attempt.task_id].namespace)
            # The fence: only the worker that pulled an attempt, with the same credential, reports
            # on it. An agent's attempt is reported by that agent over its own stream, never here.
            if not attempt.pulled:
                raise PermissionDenied(
                    f"attempt {attempt.id} is held by agent {clip(attempt.agent_id)!r} over its stream; "
                    "only that agent reports on it"
                )
            if attempt.agent_id != event.reporter:
                raise PermissionDenied(
                    f"attempt {attempt.id} is held by worker {clip(attempt.agent_id)!r}; "
                    f"report from worker {clip(event.reporter)!r} refused"
                )
            if attempt.principal and attempt.principal != caller:
                raise PermissionDenied(
                    f"attempt {attempt.id} was pulled by {attempt.principal}; report from {caller} refused"
                )
            if not machine.finished(event, now):
                raise FailedPrecondition(
                    f"attempt {clip(event.attempt_id)} is {attempt.state} and held by {clip(attempt.agent_id)!r}; "
                    f"report from {clip(event.reporter)!r} rejected"
                )
            return machine.tasks[attempt.task_id].state

        state: TaskState = await self.rt.call(apply)
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
        plan = admit(request.spec, request.HasField("spec"), self.rt.machine.new_id).plan
        return pb.AnalyzeDependenciesResponse(
            plan=wire.plan_to_proto(plan),
            roots=plan.roots,
            leaves=plan.leaves,
            max_width=plan.max_width,
            depth=plan.depth,
        )

    async def ExplainTask(self, request: pb.ExplainTaskRequest, context: Any) -> pb.ExplainTaskResponse:
        principal = current_principal()

        def explain(machine: Machine, now: float) -> pb.ExplainTaskResponse:
            task = visible_task(machine, request.task_id, principal)
            why = machine.explain(task.id, now)
            return pb.ExplainTaskResponse(
                task=wire.task_status(machine, task, why.reason, why.unschedulable),
                reason=why.reason,
                waiting_on=why.waiting_on,
                agents=[pb.AgentVerdict(agent_id=a, agent_name=n, reason=r) for a, n, r in why.agents],
            )

        return await self.rt.call(explain, read=True)
