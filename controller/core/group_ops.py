"""Machine glue for gangs and concurrency limits: the pass's rules, and AIMD on finished attempts.

Free functions over the machine's state (not a mixin), so the shared handlers each call them with
one line and only when the feature is in use (a flag check otherwise).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from corral.controller.core.gangs import GangInfo, PassRules
from corral.controller.core.model import AttemptState, Task, TaskState, Workflow

if TYPE_CHECKING:
    from corral.controller.core.events import AttemptFinished
    from corral.controller.core.state import MachineState as State

_UNPLACED = (TaskState.PENDING, TaskState.READY)

__all__ = ["forget_groups", "on_finished", "pass_rules", "track_groups"]


def track_groups(state: State, workflow: Workflow | None, task: Task | None) -> None:
    """Index a workflow's ``max_parallel`` or a task's gang (submission and restore)."""
    if workflow is not None and workflow.max_parallel:
        state.parallelism.max_parallel[workflow.id] = workflow.max_parallel
    if task is not None and task.gang:
        state.gangs.setdefault(task.workflow_id, {}).setdefault(task.gang, []).append(task.id)


def forget_groups(state: State, workflow_id: str) -> None:
    """The workflow ended: drop its gangs and limits."""
    state.gangs.pop(workflow_id, None)
    state.parallelism.forget(workflow_id)


def pass_rules(state: State) -> PassRules:
    """The rules of one pass: gang lookups and the limited workflows' limits and active counts.

    O(active attempts) for the counts, paid only while some workflow is limited.
    """
    tasks, queue, gangs = state.tasks, state.queue, state.gangs

    def gang_of(task_id: str) -> GangInfo | None:
        task = tasks[task_id]
        if not task.gang:
            return None
        # Only the members still to be placed: one retried after the rest started (or ended) is
        # placed alone, rather than waiting for members that will never be READY again.
        members = gangs.get(task.workflow_id, {}).get(task.gang, [task_id])
        return GangInfo(task.gang, tuple(m for m in members if tasks[m].state in _UNPLACED))

    def placeable(task_id: str) -> bool:
        return tasks[task_id].state is TaskState.READY and task_id in queue and queue.delayed(task_id) is None

    limits: dict[str, tuple[int, str]] = {}
    running: dict[str, int] = {}
    par = state.parallelism
    if par:
        for workflow_id in {*par.max_parallel, *par.aimd}:
            found = par.limit(workflow_id)
            if found is not None:
                limits[workflow_id] = found
        if limits:
            for held in state.active.values():
                for attempt_id in held:
                    workflow_id = state.attempts[attempt_id].workflow_id
                    if workflow_id in limits:
                        running[workflow_id] = running.get(workflow_id, 0) + 1
    return PassRules(gang_of, placeable, limits, running)


def active_count(state: State, workflow_id: str) -> int:
    """The workflow's ASSIGNED/RUNNING attempts (O(active attempts); asked on an OOM kill only)."""
    attempts = state.attempts
    return sum(1 for held in state.active.values() for a in held if attempts[a].workflow_id == workflow_id)


def on_finished(state: State, event: AttemptFinished, task: Task, now: float) -> None:
    """AIMD: halve the workflow's limit on an OOM kill; count successes toward growing it back.

    Called before the attempt ends, so the active count includes the OOM-killed attempt. Only
    ``oom_killed`` reacts: timeouts, fencing and lost agents do not.
    """
    par = state.parallelism
    workflow = state.workflows[task.workflow_id]
    if event.oom_killed and event.outcome is AttemptState.FAILED:
        before = par.current(workflow.id)
        limit = par.oom_killed(workflow.id, active_count(state, workflow.id))
        if limit != before:
            why = f"concurrency halved: OOM kill of task {task.name} (limit {limit})"
            state.record(workflow, now, "concurrency", task, message=why, reason="oom_killed")
    elif event.outcome is AttemptState.SUCCEEDED and workflow.id in par.aimd:
        grown = par.succeeded(workflow.id)
        if grown is not None:
            why = f"concurrency limit grown to {grown}" if grown else "concurrency limit lifted after successes"
            state.record(workflow, now, "concurrency", task, message=why, reason="successes")
