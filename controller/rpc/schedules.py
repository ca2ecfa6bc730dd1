"""The Schedules service (issue 10 §7): cron schedules of workflow templates.

The template is validated exactly like a submission (:func:`admission.admit`) when the schedule
is created, and stored as the spec's bytes; each fire admits it again with fresh ids through
:func:`template_builder`, which the runtime injects into the machine.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from corral.controller.core import events as ev
from corral.controller.core.schedule_ops import (
    CreateScheduleRequest,
    DeleteScheduleRequest,
    ListSchedulesQuery,
    SetSchedulePausedRequest,
)
from corral.controller.core.schedules import (
    MAX_CATCHUP,
    OVERLAP_POLICIES,
    Fire,
    Schedule,
    check_cron,
    check_timezone,
)
from corral.controller.errors import InvalidArgument
from corral.controller.rpc import fields, wire
from corral.controller.rpc.admission import admit
from corral.controller.rpc.auth import current_caller
from corral.controller.rpc.identity import current_principal
from corral.controller.rpc.scope import require_namespace
from corral.controller.rpc.submission import admit_workflow
from corral.controller.runtime import Runtime
from corral.controller.spec import NAME_PATTERN
from corral.v1 import schedules_pb2 as pb
from corral.v1 import schedules_pb2_grpc, types_pb2

__all__ = ["SchedulesService", "add_schedules", "schedule_info", "template_builder"]

_NAME = re.compile(NAME_PATTERN)
_MAX_NAME = 128


def template_builder(new_id: Callable[[], str]) -> Callable[[bytes], ev.SubmitWorkflow]:
    """What the machine calls to build a fire's workflow: the stored spec admitted with fresh ids."""

    def build(spec: bytes) -> ev.SubmitWorkflow:
        admitted = admit_workflow(types_pb2.WorkflowSpec.FromString(spec), new_id)
        return ev.SubmitWorkflow(admitted.workflow, admitted.tasks, start=True)

    return build


def _fire(fire: Fire) -> pb.ScheduleFire:
    return pb.ScheduleFire(
        nominal=wire.timestamp(fire.nominal),
        fired_at=wire.timestamp(fire.fired_at),
        workflow_id=fire.workflow_id,
        late=fire.late,
        outcome=fire.outcome,
        error=fire.error,
    )


def schedule_info(schedule: Schedule, fires: list[Fire] | None = None) -> pb.ScheduleInfo:
    """The message of a schedule (with its recent fires, newest last)."""
    info = pb.ScheduleInfo(
        schedule_id=schedule.id,
        name=schedule.name,
        namespace=schedule.namespace,
        cron=schedule.cron,
        timezone=schedule.timezone,
        overlap=schedule.overlap,
        catchup=schedule.catchup,
        paused=schedule.paused,
        created_at=wire.timestamp(schedule.created_at),
        last_nominal=wire.timestamp(schedule.last_nominal),
        last_workflow_id=schedule.last_workflow_id,
        fired=schedule.fired,
        skipped=schedule.skipped,
        missed=schedule.missed,
        recent_fires=[_fire(f) for f in fires or ()],
        workflow_name=types_pb2.WorkflowSpec.FromString(schedule.spec).name,
    )
    if not schedule.paused and schedule.next_nominal is not None and schedule.next_nominal < 1e12:
        info.next_fire.FromNanoseconds(round(schedule.next_nominal * 1e9))
    return info


def check_schedule_request(request: pb.CreateScheduleRequest) -> tuple[str, str, str, int]:
    """``(cron, timezone, overlap, catchup)`` of a request, or InvalidArgument naming the field."""
    cron = request.cron.strip()
    try:
        check_cron(cron)
    except ValueError as exc:
        raise InvalidArgument.field("cron", str(exc)) from None
    timezone = request.timezone or "UTC"
    try:
        check_timezone(timezone)
    except ValueError as exc:
        raise InvalidArgument.field("timezone", str(exc)) from None
    overlap = request.overlap or "skip"
    if overlap not in OVERLAP_POLICIES:
        raise InvalidArgument.field("overlap", f"{overlap[:32]!r} is not one of {', '.join(OVERLAP_POLICIES)}")
    catchup = request.catchup if request.HasField("catchup") else 1
    if not 0 <= catchup <= MAX_CATCHUP:
        raise InvalidArgument.field("catchup", f"must be 0 to {MAX_CATCHUP}, got {catchup}")
    if request.name and (len(request.name) > _MAX_NAME or not _NAME.match(request.name)):
        raise InvalidArgument.field("name", f"1-{_MAX_NAME} letters, digits, '_', '.', '-' (not first)")
    return cron, timezone, overlap, catchup


class SchedulesService(schedules_pb2_grpc.SchedulesServicer):
    """CreateSchedule, ListSchedules, PauseSchedule, ResumeSchedule, DeleteSchedule."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    async def CreateSchedule(self, request: pb.CreateScheduleRequest, context: Any) -> pb.ScheduleInfo:
        cron, timezone, overlap, catchup = check_schedule_request(request)
        admitted = admit(request.spec, request.HasField("spec"), self.rt.new_id)  # the template, checked
        workflow = admitted.workflow
        if workflow.scheduled_at is not None:
            raise InvalidArgument.field("spec.scheduled_at", "a schedule's template cannot have its own start time")
        require_namespace(current_principal(), workflow.namespace)
        schedule = Schedule(
            id="sch-" + self.rt.new_id(),
            name=request.name or workflow.name,
            namespace=workflow.namespace,
            cron=cron,
            timezone=timezone,
            spec=request.spec.SerializeToString(deterministic=True),
            overlap=overlap,
            catchup=catchup,
        )
        info: pb.ScheduleInfo = await self.rt.handle(
            CreateScheduleRequest(schedule, current_caller()), lambda m, s, now: schedule_info(s)
        )
        return info

    async def ListSchedules(self, request: pb.ListSchedulesRequest, context: Any) -> pb.ListSchedulesResponse:
        if request.namespace:
            fields.identifier(request.namespace, "namespace", "namespace")
        event = ListSchedulesQuery(current_caller(), request.namespace)
        response: pb.ListSchedulesResponse = await self.rt.handle(
            event, lambda m, rows, now: pb.ListSchedulesResponse(schedules=[schedule_info(s, f) for s, f in rows])
        )
        return response

    async def PauseSchedule(self, request: pb.ScheduleRef, context: Any) -> pb.ScheduleInfo:
        return await self._set_paused(request, True)

    async def ResumeSchedule(self, request: pb.ScheduleRef, context: Any) -> pb.ScheduleInfo:
        return await self._set_paused(request, False)

    async def _set_paused(self, request: pb.ScheduleRef, paused: bool) -> pb.ScheduleInfo:
        fields.identifier(request.schedule, "schedule", "schedule")
        event = SetSchedulePausedRequest(request.schedule, current_caller(), paused)
        info: pb.ScheduleInfo = await self.rt.handle(event, lambda m, s, now: schedule_info(s))
        return info

    async def DeleteSchedule(self, request: pb.ScheduleRef, context: Any) -> pb.ScheduleInfo:
        fields.identifier(request.schedule, "schedule", "schedule")
        event = DeleteScheduleRequest(request.schedule, current_caller())
        info: pb.ScheduleInfo = await self.rt.handle(event, lambda m, s, now: schedule_info(s))
        return info


def add_schedules(runtime: Runtime, server: Any) -> None:
    """Serve Schedules on ``server`` and let the runtime's machine build fires' workflows."""
    runtime.machine.build_workflow = template_builder(runtime.new_id)
    schedules_pb2_grpc.add_SchedulesServicer_to_server(SchedulesService(runtime), server)
