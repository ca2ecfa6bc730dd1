"""Compensation (sagas, issue 10): ``on_failure: compensate`` and the COMPENSATING workflow state.

When a workflow with ``on_failure: compensate`` would end FAILED or CANCELLED (graceful cancel),
the tasks that did their work (COMPLETED, or CANCELLED after they had started: killed while
running) and declare ``compensate:`` are undone, in reverse topological order: the compensation of
a task waits for those of its compensable descendants. The workflow is COMPENSATING meanwhile and
then ends in the state it was heading for; when a compensation fails (after its own retries) the
ones it held back are skipped and the workflow ends FAILED with ``compensation_failed``, and
``retry`` runs the failed and skipped compensations again. Force-cancel skips compensation and says
so in the event log.

A compensation is a task record of its own, placed like any task (the undone task's agent type,
resources and constraints), receiving that task's result as the input ``task``. It is not one of
its workflow's ``task_ids`` (listings and results show the workflow's own tasks; a task's status
carries its compensation's state), but it is counted in the workflow's task counts, so the
workflow cannot end while a compensation is live. ``Task.compensates`` names the task it undoes.
"""

from __future__ import annotations

import json
from collections import deque
from typing import TYPE_CHECKING

from corral.controller.core.cache import invalidate
from corral.controller.core.events import CancelAttempts
from corral.controller.core.model import AttemptState, Task, TaskState, Workflow, WorkflowState
from corral.controller.errors import FailedPrecondition

if TYPE_CHECKING:
    from corral.controller.core.workflow_ops import WorkflowOps

__all__ = [
    "COMPENSATION_FAILED",
    "Sagas",
    "begin",
    "compensation_of",
    "end",
    "failed_compensations",
    "force_cancel",
    "restore",
    "retry_compensations",
    "step",
]

T = TaskState
W = WorkflowState
COMPENSATION_FAILED = "compensation_failed"
_UNDONE_STATES = frozenset({T.COMPLETED, T.CANCELLED})


class Sagas:
    """The compensation records per task and workflow (memory; rebuilt from the tasks at restore)."""

    def __init__(self) -> None:
        self.of_task: dict[str, str] = {}  # task id -> its latest compensation's record id
        self.of_workflow: dict[str, list[str]] = {}  # workflow id -> every compensation record id

    def track(self, record: Task) -> None:
        self.of_task[record.compensates] = record.id
        self.of_workflow.setdefault(record.workflow_id, []).append(record.id)

    def hidden(self, workflow_id: str) -> int:
        """Compensation records of a workflow (counted in its task counts)."""
        return len(self.of_workflow.get(workflow_id, ()))


def compensation_of(machine: WorkflowOps, task: Task) -> Task | None:
    """The task's latest compensation record, if one was made."""
    record_id = machine.sagas.of_task.get(task.id)
    return machine.tasks[record_id] if record_id else None


def failed_compensations(machine: WorkflowOps, workflow: Workflow) -> list[Task]:
    """The workflow's latest compensations that failed or were skipped."""
    found = []
    for task_id in workflow.task_ids:
        record = compensation_of(machine, machine.tasks[task_id])
        if record is not None and record.state in (T.FAILED, T.SKIPPED, T.CANCELLED):
            found.append(record)
    return found


def _needs_undo(machine: WorkflowOps, task: Task) -> bool:
    if not task.compensate or task.state not in _UNDONE_STATES:
        return False
    if task.cache_source:
        return False  # completed from the cache: its effects belong to the workflow that ran it
    if task.state is T.CANCELLED and task.started_at is None:
        return False  # cancelled before it ran: nothing to undo
    record = compensation_of(machine, task)
    return record is None or record.state is not T.COMPLETED  # already undone: not twice


def begin(machine: WorkflowOps, workflow: Workflow, target: WorkflowState, now: float) -> bool:
    """Start compensating instead of ending ``target`` (FAILED or CANCELLED); False when nothing
    needs undoing (the workflow then ends as usual)."""
    undo = [machine.tasks[t] for t in workflow.task_ids if _needs_undo(machine, machine.tasks[t])]
    if not undo:
        return False
    chosen = {task.id for task in undo}
    records: dict[str, Task] = {}
    for task in undo:
        records[task.id] = _record(machine, task, now)
    # Reverse topological order: a compensation waits for those of its nearest compensable
    # descendants (through tasks that have nothing to undo).
    for task in undo:
        waits: list[str] = []
        seen: set[str] = set()
        pending = deque(machine.dependents[task.id])
        while pending:
            child = pending.popleft()
            if child in seen:
                continue
            seen.add(child)
            if child in chosen:
                waits.append(records[child].id)
            else:
                pending.extend(machine.dependents[child])
        records[task.id].dependencies = tuple(waits)
    workflow.compensation = str(target)
    machine.set_workflow_state(workflow, W.COMPENSATING, now, f"compensating {len(undo)} tasks ({target} after)")
    for record in records.values():
        machine.track_task(record)
        machine.sagas.track(record)
        machine.touch_task(record)
    _start(machine, list(records.values()), now)
    return True


def _record(machine: WorkflowOps, task: Task, now: float) -> Task:
    """A compensation record for ``task`` (PENDING; dependencies set by the caller)."""
    spec = json.loads(task.compensate)
    return Task(
        id=f"t-{machine.new_id()}",
        workflow_id=task.workflow_id,
        name=f"{task.name}~compensate",
        index=task.index,
        agent_type=task.agent_type,
        payload=json.dumps(spec["payload"], separators=(",", ":")).encode(),
        type=task.type,
        resources=task.resources,
        priority=task.priority,
        timeout_s=spec.get("timeout"),
        max_retries=spec.get("retries", 0),
        retry_backoff_s=spec.get("retry_backoff", 1.0),
        constraints=task.constraints,
        namespace=task.namespace,
        constraint_exprs=task.constraint_exprs,
        affinity=task.affinity,
        created_at=now,
        compensates=task.id,
    )


def _start(machine: WorkflowOps, records: list[Task], now: float) -> None:
    machine.count_unfinished([r.id for r in records])
    for record in records:
        if machine.unfinished_deps[record.id] == 0:
            machine.make_ready(record, now, kind="compensating", reason=f"undoes {record.name.split('~')[0]!r}")


def step(machine: WorkflowOps, workflow: Workflow, now: float) -> bool:
    """The workflow's tasks are all terminal: end a compensation, or start one instead of ending
    FAILED or CANCELLED. False: end as usual (nothing to undo, or it completed)."""
    if workflow.state is W.COMPENSATING:
        end(machine, workflow, now)
        return True
    counts = machine.counts[workflow.id]
    if workflow.state is W.CANCELLING:
        target = W.CANCELLED
    elif counts[T.FAILED] or counts[T.SKIPPED] or counts[T.CANCELLED]:
        target = W.FAILED
        if not workflow.error:
            failed = [machine.tasks[t] for t in workflow.task_ids if machine.tasks[t].state is T.FAILED]
            workflow.error = (
                f"task {failed[0].name!r} failed: {failed[0].error}" if failed else "tasks did not complete"
            )
    else:
        return False
    return begin(machine, workflow, target, now)


def restore(machine: WorkflowOps, tasks: list[Task]) -> None:
    """Index the compensation records among restored tasks (oldest first: the latest wins)."""
    for record in sorted((t for t in tasks if t.compensates), key=lambda t: t.created_at):
        machine.sagas.track(record)


def end(machine: WorkflowOps, workflow: Workflow, now: float) -> None:
    """Every compensation ended: the workflow ends as it was heading, or FAILED (compensation_failed)."""
    failed = failed_compensations(machine, workflow)
    target = W(workflow.compensation) if workflow.compensation else W.FAILED
    if machine.cache.entries:
        # An undone task's cached result describes effects that no longer exist: a later run (or
        # another workflow) must run it again rather than reuse it.
        for task_id in workflow.task_ids:
            task = machine.tasks[task_id]
            record = compensation_of(machine, task)
            if record is not None and record.state is T.COMPLETED:
                invalidate(machine, task)
    if failed:
        first = next((r for r in failed if r.state is T.FAILED), failed[0])  # the cause, not what it skipped
        workflow.error = f"{COMPENSATION_FAILED}: compensation of {first.name.split('~')[0]!r} {first.state}" + (
            f": {first.error}" if first.error else ""
        )
        machine.set_workflow_state(workflow, W.FAILED, now, workflow.error)
    else:
        machine.set_workflow_state(workflow, target, now, workflow.error)


def retry_compensations(machine: WorkflowOps, workflow: Workflow, now: float) -> bool:
    """``retry`` of a workflow whose compensation failed: its failed and skipped compensations run
    again (the workflow's tasks do not). False when no compensation failed."""
    failed = failed_compensations(machine, workflow)
    if not failed:
        return False
    for record in failed:
        record.error = ""
        record.retries_used = 0
        record.finished_at = None
        record.current_attempt_id = None
        record.agent_id = None
        machine.set_task_state(record, T.PENDING, now, kind="reset", reason="compensation retried")
    workflow.error = ""
    workflow.finished_at = None
    machine.set_workflow_state(workflow, W.COMPENSATING, now, f"retrying {len(failed)} compensations")
    _start(machine, failed, now)
    return True


def force_cancel(machine: WorkflowOps, workflow: Workflow, now: float) -> None:
    """Force-cancel skips compensation: live compensations are cancelled at once (their attempts
    killed), and the event log says so."""
    by_agent: dict[str, list[str]] = {}
    for record_id in machine.sagas.of_workflow.get(workflow.id, ()):
        record = machine.tasks[record_id]
        if record.state.terminal:
            continue
        if record.state in (T.ASSIGNED, T.RUNNING) and record.current_attempt_id:
            attempt = machine.attempts[record.current_attempt_id]
            if not attempt.pulled:
                by_agent.setdefault(attempt.agent_id, []).append(attempt.id)
            machine.end_attempt(attempt, AttemptState.CANCELLED, now, "workflow force-cancelled")
        machine.queue.discard(record.id)
        record.finished_at = now
        machine.set_task_state(record, T.CANCELLED, now, "compensation skipped (force-cancel)")
    for agent_id, attempt_ids in by_agent.items():
        machine.emit(CancelAttempts(agent_id, attempt_ids, True, machine.config.kill_grace_s))
    machine.record(workflow, now, "compensation_skipped", reason="force-cancel skips compensation")


def check_cancel(workflow: Workflow, force: bool) -> None:
    """A graceful cancel cannot stop a compensation; force-cancel can (and skips the rest)."""
    if workflow.state is W.COMPENSATING and not force:
        raise FailedPrecondition(
            f"workflow {workflow.id} is compensating; `corral cancel --force` skips the remaining compensations"
        )
