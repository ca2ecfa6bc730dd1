"""Cron schedules in the SDK (issue 10 §7): a mixin of :class:`~corral.controller.sdk.client.Client`.

::

    async with Client() as client:
        info = await client.create_schedule(workflow, cron="*/5 * * * *", timezone="Europe/Berlin")
        await client.pause_schedule(info.name)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Coroutine
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from corral.controller.rpc.wire_spec import spec_to_proto
from corral.controller.sdk.builder import WorkflowLike, as_spec
from corral.controller.sdk.records import timestamp
from corral.v1 import schedules_pb2 as pb

if TYPE_CHECKING:
    from google.protobuf.message import Message

    from corral.controller.sdk.client import Client

__all__ = ["ScheduleFire", "ScheduleInfo", "ScheduleMethods", "SyncScheduleMethods"]

Overlap = Literal["skip", "allow", "cancel_previous"]
T = TypeVar("T")


@dataclasses.dataclass(frozen=True, slots=True)
class ScheduleFire:
    """One nominal time of a schedule, handled: ``outcome`` fired, skipped (overlap) or failed."""

    nominal: datetime | None
    fired_at: datetime | None
    workflow_id: str
    late: bool
    outcome: str
    error: str

    @classmethod
    def from_proto(cls, m: pb.ScheduleFire) -> ScheduleFire:
        return cls(timestamp(m, "nominal"), timestamp(m, "fired_at"), m.workflow_id, m.late, m.outcome, m.error)


@dataclasses.dataclass(frozen=True, slots=True)
class ScheduleInfo:
    """A cron schedule and where it stands (times are UTC)."""

    schedule_id: str
    name: str
    namespace: str
    workflow_name: str
    cron: str
    timezone: str
    overlap: str
    catchup: int
    paused: bool
    created_at: datetime | None
    next_fire: datetime | None
    last_nominal: datetime | None
    last_workflow_id: str
    fired: int
    skipped: int
    missed: int
    recent_fires: tuple[ScheduleFire, ...]

    @classmethod
    def from_proto(cls, m: pb.ScheduleInfo) -> ScheduleInfo:
        return cls(
            schedule_id=m.schedule_id,
            name=m.name,
            namespace=m.namespace,
            workflow_name=m.workflow_name,
            cron=m.cron,
            timezone=m.timezone,
            overlap=m.overlap,
            catchup=m.catchup,
            paused=m.paused,
            created_at=timestamp(m, "created_at"),
            next_fire=timestamp(m, "next_fire"),
            last_nominal=timestamp(m, "last_nominal"),
            last_workflow_id=m.last_workflow_id,
            fired=m.fired,
            skipped=m.skipped,
            missed=m.missed,
            recent_fires=tuple(ScheduleFire.from_proto(f) for f in m.recent_fires),
        )


class ScheduleMethods:
    """``create_schedule``, ``list_schedules``, ``pause_schedule``, ``resume_schedule``, ``delete_schedule``."""

    if TYPE_CHECKING:

        async def _call(
            self, service: str, method: str, request: Message, *, timeout: float | bool | None = True
        ) -> Any: ...

    async def create_schedule(
        self,
        workflow: WorkflowLike,
        *,
        cron: str,
        name: str = "",
        timezone: str = "UTC",
        overlap: Overlap = "skip",
        catchup: int = 1,
        namespace: str = "",
    ) -> ScheduleInfo:
        """Fire ``workflow`` at the times of ``cron`` (5 fields, or 6 with seconds first) in ``timezone``.

        ``overlap``: what a fire does while the previous fire's workflow still runs (skip it, run
        both, or cancel the previous one). ``catchup``: how many fires missed while the controller
        was down run when it is back (flagged late). ``name`` defaults to the workflow's name.
        """
        spec = spec_to_proto(as_spec(workflow))
        if namespace:
            spec.namespace = namespace
        request = pb.CreateScheduleRequest(
            name=name, spec=spec, cron=cron, timezone=timezone, overlap=overlap, catchup=catchup
        )
        return ScheduleInfo.from_proto(await self._call("schedules", "CreateSchedule", request))

    async def list_schedules(self, *, namespace: str = "") -> list[ScheduleInfo]:
        """Every schedule the caller may see, with its last fires (newest last)."""
        response = await self._call("schedules", "ListSchedules", pb.ListSchedulesRequest(namespace=namespace))
        return [ScheduleInfo.from_proto(s) for s in response.schedules]

    async def pause_schedule(self, schedule: str) -> ScheduleInfo:
        """Stop firing (by id, unique id prefix or name); times that pass while paused are not caught up."""
        return ScheduleInfo.from_proto(
            await self._call("schedules", "PauseSchedule", pb.ScheduleRef(schedule=schedule))
        )

    async def resume_schedule(self, schedule: str) -> ScheduleInfo:
        """Fire again from the next cron time on."""
        return ScheduleInfo.from_proto(
            await self._call("schedules", "ResumeSchedule", pb.ScheduleRef(schedule=schedule))
        )

    async def delete_schedule(self, schedule: str) -> ScheduleInfo:
        """Delete a schedule and its fire history (workflows it fired stay)."""
        return ScheduleInfo.from_proto(
            await self._call("schedules", "DeleteSchedule", pb.ScheduleRef(schedule=schedule))
        )


class SyncScheduleMethods:
    """The same methods, blocking: a mixin of :class:`~corral.controller.sdk.sync.SyncClient`."""

    if TYPE_CHECKING:
        _client: Client

        def _run(self, coroutine: Coroutine[Any, Any, T]) -> T: ...

    def create_schedule(
        self,
        workflow: WorkflowLike,
        *,
        cron: str,
        name: str = "",
        timezone: str = "UTC",
        overlap: Overlap = "skip",
        catchup: int = 1,
        namespace: str = "",
    ) -> ScheduleInfo:
        """See :meth:`ScheduleMethods.create_schedule`."""
        return self._run(
            self._client.create_schedule(
                workflow, cron=cron, name=name, timezone=timezone, overlap=overlap, catchup=catchup, namespace=namespace
            )
        )

    def list_schedules(self, *, namespace: str = "") -> list[ScheduleInfo]:
        """See :meth:`ScheduleMethods.list_schedules`."""
        return self._run(self._client.list_schedules(namespace=namespace))

    def pause_schedule(self, schedule: str) -> ScheduleInfo:
        """See :meth:`ScheduleMethods.pause_schedule`."""
        return self._run(self._client.pause_schedule(schedule))

    def resume_schedule(self, schedule: str) -> ScheduleInfo:
        """See :meth:`ScheduleMethods.resume_schedule`."""
        return self._run(self._client.resume_schedule(schedule))

    def delete_schedule(self, schedule: str) -> ScheduleInfo:
        """See :meth:`ScheduleMethods.delete_schedule`."""
        return self._run(self._client.delete_schedule(schedule))
