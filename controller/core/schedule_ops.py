"""Time (issue 10 §7): delayed starts (``scheduled_at``) and cron schedules, on the machine's tick.

**Delayed start.** A started workflow whose ``scheduled_at`` is still ahead is RUNNING but its
root tasks stay PENDING ("scheduled at ...") until the tick reaches that time. Nothing extra is
stored: after a restart, a RUNNING workflow with a ``scheduled_at`` releases its PENDING roots
(at once, or when due), which is idempotent.

**Schedules.** Each tick asks :func:`schedules.due_fires` for the nominal times that have come
(one heap peek when none has). Each is handled in the tick that sees it: a workflow is built
from the template (fresh ids, through the injected :attr:`ScheduleOps.build_workflow`, the same
admission as a submission) and submitted, and a :class:`Fire` row goes into the same commit, with
the schedule's ``last_nominal``. The store refuses a second row for one ``(schedule, nominal)``.
The fire's workflow carries the idempotency key ``schedule:<id>:<nominal>`` (so status can name
its schedule) and ``scheduled_at`` = the nominal time.

When nothing is scheduled, the cost per tick is two empty-container checks.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

from corral.controller.core import events as ev
from corral.controller.core.fleet_ops import FleetOps
from corral.controller.core.model import Task, TaskState, Workflow, WorkflowState
from corral.controller.core.requests import Caller
from corral.controller.core.schedules import (
    LATE_AFTER_S,
    Fire,
    Schedule,
    ScheduleChanges,
    due_fires,
    next_fire,
)
from corral.controller.errors import CorralError, FailedPrecondition, NotFound, ResourceExhausted, clip
from corral.controller.store.base import ChangeBatch

__all__ = [
    "CreateScheduleRequest",
    "DeleteScheduleRequest",
    "ListSchedulesQuery",
    "ScheduleOps",
    "SetSchedulePausedRequest",
    "fire_key",
    "schedule_of",
    "utc_text",
]

W = WorkflowState
MAX_SCHEDULES = 1000
_KEY_PREFIX = "schedule:"


def fire_key(schedule_id: str, nominal: float) -> str:
    """The idempotency key of a fire's workflow."""
    return f"{_KEY_PREFIX}{schedule_id}:{nominal:.3f}"


def schedule_of(workflow: Workflow) -> str:
    """The id of the schedule that created ``workflow`` ("" for a submitted one)."""
    key = workflow.idempotency_key or ""
    if not key.startswith(_KEY_PREFIX):
        return ""
    return key[len(_KEY_PREFIX) :].rpartition(":")[0]


def utc_text(seconds: float) -> str:
    """``2026-01-02T03:04:05Z``: how user-facing times read (wall-clock UTC)."""
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# --- request events (handled in the tick like every other request) ---------------------------------


@dataclass(frozen=True, slots=True)
class CreateScheduleRequest:
    """A validated schedule (id assigned at the edge). Answers the stored :class:`Schedule`."""

    schedule: Schedule
    caller: Caller


@dataclass(frozen=True, slots=True)
class ListSchedulesQuery:
    """Schedules the caller may see (``namespace`` "": all it covers), with their recent fires."""

    READ: ClassVar[bool] = True
    caller: Caller
    namespace: str = ""


@dataclass(frozen=True, slots=True)
class SetSchedulePausedRequest:
    schedule: str  # id, unique prefix or name
    caller: Caller
    paused: bool


@dataclass(frozen=True, slots=True)
class DeleteScheduleRequest:
    schedule: str
    caller: Caller


class ScheduleOps(FleetOps):
    """Delayed starts and cron schedules; see the module docstring."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.init_schedules()

    def init_schedules(self) -> None:
        # Builds a fire's workflow from its template (spec bytes): set by the server, since
        # admission lives at the edge (rpc/schedules.template_builder). None: nothing fires.
        self.build_workflow: Callable[[bytes], ev.SubmitWorkflow] | None = None
        self.schedules: dict[str, Schedule] = {}
        self.schedule_heap: list[tuple[float, str]] = []  # (next nominal, schedule id), lazy
        self.held: list[tuple[float, str]] = []  # (scheduled_at, workflow id) of delayed starts
        self.recent_fires: dict[str, list[Fire]] = {}  # schedule id -> its last fires (memory)
        self.schedule_changes = ScheduleChanges()

    def schedule_handlers(self) -> dict[type, Callable[[Any, float], Any]]:
        return {
            CreateScheduleRequest: self.create_schedule,
            ListSchedulesQuery: self.list_schedules,
            SetSchedulePausedRequest: self.set_schedule_paused,
            DeleteScheduleRequest: self.delete_schedule,
        }

    # --- delayed starts ---------------------------------------------------------------------------

    def submit(self, event: ev.SubmitWorkflow, now: float) -> tuple[str, bool]:
        workflow = event.workflow
        if workflow.scheduled_at is not None and workflow.scheduled_relative:
            workflow.scheduled_at += now  # relative: seconds after the submit
            workflow.scheduled_relative = False
        return super().submit(event, now)

    def start(self, workflow_id: str, now: float) -> Workflow:
        workflow = self.workflow(workflow_id)
        at = workflow.scheduled_at
        if at is None or at <= now or workflow.state is not W.PENDING:
            return super().start(workflow_id, now)
        # Held: RUNNING and ranked, its roots stay PENDING until the tick reaches ``at``.
        workflow.started_at = now
        self.set_workflow_state(workflow, W.RUNNING, now)
        self.rank_workflow(workflow)
        heapq.heappush(self.held, (at, workflow.id))
        self.record(workflow, now, "scheduled", reason=f"scheduled at {utc_text(at)}")
        return workflow

    def release_held(self, now: float) -> None:
        held = self.held
        while held and held[0][0] <= now:
            _, workflow_id = heapq.heappop(held)
            workflow = self.workflows.get(workflow_id)
            if workflow is None or workflow.state not in (W.RUNNING, W.PAUSED):
                continue  # cancelled meanwhile
            for task_id in workflow.task_ids:
                task = self.tasks[task_id]
                if task.state is TaskState.PENDING and self.unfinished_deps[task_id] == 0:
                    self.make_ready(task, now)

    def held_reason(self, task: Task, now: float) -> str:
        """'scheduled at ...' for a root task of a held workflow ("" otherwise)."""
        at = self.workflows[task.workflow_id].scheduled_at
        if at is None or at <= now:
            return ""
        return f"scheduled at {utc_text(at)} (in {at - now:.1f}s)"

    # --- schedules: requests ----------------------------------------------------------------------

    def create_schedule(self, event: CreateScheduleRequest, now: float) -> Schedule:
        schedule = event.schedule
        self.access.namespace(schedule.namespace)  # NotFound naming the command that creates it
        if len(self.schedules) >= MAX_SCHEDULES:
            raise ResourceExhausted(f"at most {MAX_SCHEDULES} schedules; delete some first")
        for other in self.schedules.values():
            if other.namespace == schedule.namespace and other.name == schedule.name:
                raise FailedPrecondition(
                    f"schedule {clip(schedule.name)!r} already exists in namespace {schedule.namespace!r} "
                    f"({other.id}); delete it first"
                )
        schedule.created_at = now
        self.schedules[schedule.id] = schedule
        self._arm(schedule, now)
        self.schedule_changes.schedules[schedule.id] = schedule
        return schedule

    def find_schedule(self, typed: str, caller: Caller) -> Schedule:
        matches = [
            s
            for s in self.schedules.values()
            if caller.covers(s.namespace) and (s.id == typed or s.name == typed or s.id.startswith(typed))
        ]
        exact = [s for s in matches if s.id == typed or s.name == typed]
        if len(exact) == 1:
            return exact[0]
        if len(matches) == 1 and typed:
            return matches[0]
        if not matches:
            raise NotFound(f"schedule {clip(typed)!r} not found")
        raise FailedPrecondition(f"{clip(typed)!r} names {len(matches)} schedules; give its id")

    def list_schedules(self, event: ListSchedulesQuery, now: float) -> list[tuple[Schedule, list[Fire]]]:
        shown = [
            s
            for s in self.schedules.values()
            if event.caller.covers(s.namespace) and (not event.namespace or s.namespace == event.namespace)
        ]
        shown.sort(key=lambda s: (s.namespace, s.name))
        return [(s, list(self.recent_fires.get(s.id, ()))) for s in shown]

    def set_schedule_paused(self, event: SetSchedulePausedRequest, now: float) -> Schedule:
        schedule = self.find_schedule(event.schedule, event.caller)
        if schedule.paused == event.paused:
            return schedule
        schedule.paused = event.paused
        if not event.paused:
            # Times that passed while paused are not missed fires: they are skipped over.
            schedule.last_nominal = max(schedule.last_nominal or 0.0, now)
            self._arm(schedule, now)
        self.schedule_changes.schedules[schedule.id] = schedule
        return schedule

    def delete_schedule(self, event: DeleteScheduleRequest, now: float) -> Schedule:
        schedule = self.find_schedule(event.schedule, event.caller)
        del self.schedules[schedule.id]
        self.recent_fires.pop(schedule.id, None)
        self.schedule_changes.schedules.pop(schedule.id, None)
        self.schedule_changes.deleted.add(schedule.id)
        return schedule

    # --- schedules: the tick ----------------------------------------------------------------------

    def _arm(self, schedule: Schedule, now: float) -> None:
        after = schedule.last_nominal if schedule.last_nominal is not None else schedule.created_at
        schedule.next_nominal = next_fire(schedule, after)
        heapq.heappush(self.schedule_heap, (schedule.next_nominal, schedule.id))

    def next_time_timer(self) -> float | None:
        """The earliest delayed start or schedule fire (None: nothing timed)."""
        held, fires = self.held, self.schedule_heap  # called every loop turn: no allocation
        if not held:
            return fires[0][0] if fires else None
        return min(held[0][0], fires[0][0]) if fires else held[0][0]

    def run_timers(self, now: float) -> None:
        """Release due delayed starts and handle due fires (called by ``Machine.tick``)."""
        if self.held and self.held[0][0] <= now:
            self.release_held(now)
        heap = self.schedule_heap
        while heap and heap[0][0] <= now:
            nominal, schedule_id = heapq.heappop(heap)
            schedule = self.schedules.get(schedule_id)
            if schedule is None or schedule.paused or schedule.next_nominal != nominal:
                continue  # deleted, paused, or re-armed since (a stale heap entry)
            self.fire_due(schedule, now)

    def fire_due(self, schedule: Schedule, now: float) -> None:
        times, dropped = due_fires(schedule, now)
        schedule.missed += dropped
        for nominal in times:
            self._fire(schedule, nominal, now)
        if times:
            schedule.last_nominal = times[-1]
        elif dropped:
            schedule.last_nominal = now
        self.schedule_changes.schedules[schedule.id] = schedule
        self._arm(schedule, now)

    def _fire(self, schedule: Schedule, nominal: float, now: float) -> None:
        late = now - nominal > LATE_AFTER_S
        previous = self.workflows.get(schedule.last_workflow_id)
        if previous is not None and not previous.state.terminal:
            if schedule.overlap == "skip":
                self._note(schedule, Fire(schedule.id, nominal, now, "", late, "skipped", f"{previous.id} running"))
                schedule.skipped += 1
                return
            if schedule.overlap == "cancel_previous" and previous.state is not W.CANCELLING:
                reason = f"replaced by the next fire of schedule {schedule.name}"
                self.cancel(ev.CancelWorkflow(previous.id, reason=reason), now)
        workflow_id = ""
        try:
            if self.build_workflow is None:
                raise FailedPrecondition("this controller cannot build workflows from templates")
            submission = self.build_workflow(schedule.spec)
            submission.workflow.idempotency_key = fire_key(schedule.id, nominal)
            submission.workflow.scheduled_at = nominal
            submission.workflow.scheduled_relative = False
            workflow_id, _ = self.submit(ev.SubmitWorkflow(submission.workflow, submission.tasks, start=True), now)
        except CorralError as exc:  # its namespace was deleted, a quota: the fire fails, the schedule goes on
            self._note(schedule, Fire(schedule.id, nominal, now, "", late, "failed", str(exc)[:256]))
            return
        schedule.last_workflow_id = workflow_id
        schedule.fired += 1
        self._note(schedule, Fire(schedule.id, nominal, now, workflow_id, late))
        workflow = self.workflows[workflow_id]
        note = f"schedule {schedule.name} fired for {utc_text(nominal)}" + (
            f", late by {now - nominal:.1f}s" if late else ""
        )
        self.record(workflow, now, "fired", reason=note)

    def _note(self, schedule: Schedule, fire: Fire) -> None:
        self.schedule_changes.fires.append(fire)
        recent = self.recent_fires.setdefault(schedule.id, [])
        recent.append(fire)
        if len(recent) > 20:
            del recent[0]

    # --- boot and commit --------------------------------------------------------------------------

    def restore_schedules(self, schedules: list[Schedule], fires: list[Fire], now: float) -> None:
        """Rebuild timers after a restart: held workflows and armed schedules (past times fire on
        the next tick, caught up as the schedule allows)."""
        for workflow in self.workflows.values():
            if workflow.scheduled_at is not None and workflow.state in (W.RUNNING, W.PAUSED):
                heapq.heappush(self.held, (workflow.scheduled_at, workflow.id))
        for schedule in schedules:
            self.schedules[schedule.id] = schedule
            if not schedule.paused:
                self._arm(schedule, now)
        for fire in sorted(fires, key=lambda f: f.nominal):
            if fire.schedule_id in self.schedules:
                self._note(self.schedules[fire.schedule_id], fire)
        self.schedule_changes = ScheduleChanges()

    def take_changes(self) -> ChangeBatch:
        batch = super().take_changes()
        if self.schedule_changes:
            batch.schedules, self.schedule_changes = self.schedule_changes, ScheduleChanges()
        return batch
