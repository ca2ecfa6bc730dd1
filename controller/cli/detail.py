"""What ``corral status`` says about each task (issue 11): its display state and a one-line DETAIL.

The display state is the stored state, except ``unplaceable``: a READY task that no connected agent
can ever take (the status's ``unschedulable`` flag, whose reason is ``waiting_reason``). It is
computed here, at the edge, and never stored. DETAIL says, in one line, what every non-terminal task
waits for (the same reasons ``corral explain`` gives) and why a failed task failed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from corral.controller.sdk.history import exit_description
from corral.controller.sdk.types import TaskStatus

__all__ = ["UNPLACEABLE", "display_state", "queued_and_run", "task_detail", "task_details"]

UNPLACEABLE = "unplaceable"

_SHOWN_DEPS = 3


def display_state(task: TaskStatus) -> str:
    """``unplaceable`` for a READY task no agent can take, else its state."""
    if task.state == "ready" and task.unschedulable:
        return UNPLACEABLE
    return task.state


def _seconds(value: float) -> str:
    return f"{value:.0f}s" if value < 120 else f"{value / 60:.0f}m"


def _waiting_on(task: TaskStatus, by_name: Mapping[str, TaskStatus]) -> str:
    unfinished = [
        f"{name} ({by_name[name].state})"
        for name in task.dependencies
        if name in by_name and by_name[name].state not in ("completed",)
    ]
    if not unfinished:
        return ""
    more = len(unfinished) - _SHOWN_DEPS
    return "waiting on " + ", ".join(unfinished[:_SHOWN_DEPS]) + (f" and {more} more" if more > 0 else "")


def task_detail(
    task: TaskStatus, by_name: Mapping[str, TaskStatus], workflow_state: str, now: datetime | None = None
) -> str:
    """One line: why a non-terminal task is where it is, or how a terminal one ended."""
    moment = now or datetime.now(UTC)
    state = task.state
    if task.compensation_state:  # issue 10: its compensation's outcome
        return f"compensation {task.compensation_state}" + (f" ({task.error})" if task.error else "")
    if state == "failed":
        detail = task.error or task.failure_reason or "failed"
        if task.exit_code_known and task.exit_code < 0 and not task.error:
            detail = f"killed by {exit_description(task.exit_code)}"
        return detail
    if state == "completed":
        return f"CACHED from {task.cache_source}" if task.cache_source else ""
    if state in ("cancelled", "skipped"):
        return task.error
    if task.approval_state == "waiting":
        return f"waiting for approval: `corral approve {task.workflow_id[:12]}/{task.name}`"
    if state == "pending":
        if task.waiting_reason:
            return task.waiting_reason
        deps = _waiting_on(task, by_name)
        if deps:
            return deps
        if workflow_state == "pending":
            return "its workflow has not started (`corral submit --start`)"
        if workflow_state == "paused":
            return "its workflow is paused"
        return "waiting to be queued"
    if state == "ready":
        if task.unschedulable:
            return f"no agent can take it: {task.waiting_reason}" if task.waiting_reason else "no agent can take it"
        if workflow_state == "paused":
            return "its workflow is paused"
        reason = task.waiting_reason or task.plan_reason or "queued for placement"
        if task.ready_at is not None:
            reason += f" (queued {_seconds((moment - task.ready_at).total_seconds())})"
        return reason
    where = f"on {task.agent_id}" if task.agent_id else ""
    if state == "assigned":
        return f"assigned {where}, starting (attempt {task.attempts})".replace("  ", " ")
    if state == "running":
        since = ""
        if task.started_at is not None:
            since = f" for {_seconds((moment - task.started_at).total_seconds())}"
        return f"running {where}{since} (attempt {task.attempts})".replace("  ", " ")
    return task.waiting_reason or task.plan_reason


def task_details(tasks: Sequence[TaskStatus], workflow_state: str) -> list[str]:
    """:func:`task_detail` of each task, in order."""
    by_name = {task.name: task for task in tasks}
    now = datetime.now(UTC)
    return [task_detail(task, by_name, workflow_state, now) for task in tasks]


def queued_and_run(task: TaskStatus, now: datetime | None = None) -> tuple[float | None, float | None]:
    """``(queued_s, run_s)`` of the current attempt, apart.

    Queued: from when it last became READY to its start (or now, while it waits). Run: from its
    start to its end (or now, while it runs). A requeued task waits again: its old start is before
    its new ``ready_at``, so its run time is not counted until the new attempt starts.
    """
    moment = now or datetime.now(UTC)
    started = task.started_at
    ready = task.ready_at
    if started is not None and ready is not None and started < ready:
        started = None  # the start of an attempt before a requeue: not this wait's
    queued = None
    if ready is not None:
        end = started or (task.finished_at if task.state not in ("ready", "pending") else None) or moment
        queued = max((end - ready).total_seconds(), 0.0)
    run = None
    if started is not None:
        end = task.finished_at if task.finished_at is not None and task.finished_at >= started else moment
        run = max((end - started).total_seconds(), 0.0) if task.state != "ready" else None
    return queued, run
