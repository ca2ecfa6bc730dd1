"""The machine's deadline component: latest starts of started workflows' tasks, at-risk timers.

:class:`~corral.controller.core.state.MachineState` owns one ``DeadlineBook`` and calls it when a
workflow with a deadline starts (or is restored) -> :meth:`plan_workflow`; a task is queued ->
:meth:`queue_terms`; each placement pass -> :meth:`due` (tasks that just became at risk are
re-pushed one band higher, workflows whose deadline passed get a ``deadline_missed`` event).
With no deadline anywhere the book stays empty and every call is one dict lookup or less.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from corral.controller.core.deadlines import RiskTimers, latest_finishes
from corral.controller.core.model import Task, Workflow

__all__ = ["DeadlineBook"]

_MAX_ADMISSIONS = 1024


class DeadlineBook:
    """Per task of a started workflow with a deadline: latest start and when it becomes at risk."""

    def __init__(self, at_risk_fraction: float, boost: int) -> None:
        self.at_risk_fraction = at_risk_fraction
        self.boost = boost
        self.latest_start: dict[str, float] = {}  # task id -> latest finish - expected duration
        self.risk_at: dict[str, float] = {}  # task id -> when its slack falls under the threshold
        self.tasks = RiskTimers()  # task ids to re-push when they become at risk
        self.workflows = RiskTimers()  # workflow ids to check at their deadline
        self.started: dict[str, float] = {}  # workflow id -> when it started (its tasks age from then)
        # Admission messages of recent submissions, for the SubmitWorkflow response (memory only,
        # taken by the response; bounded in case nobody takes them, e.g. in-process submits).
        self.admissions: dict[str, str] = {}

    def __bool__(self) -> bool:
        return bool(self.latest_start) or bool(self.workflows)

    def plan_workflow(self, workflow: Workflow, tasks: Sequence[Task], expected: Mapping[str, float]) -> None:
        """Latest starts of a workflow's tasks (O(V + E)); nothing when no deadline bounds it."""
        own = {task.id: task.deadline for task in tasks if task.deadline is not None}
        if workflow.deadline is None and not own:
            return
        parents = {task.id: task.dependencies for task in tasks}
        latest = latest_finishes(workflow.task_ids, parents, own, expected, workflow.deadline)
        ends = [d for d in (workflow.deadline, *own.values()) if d is not None]
        # The threshold: a share of the horizon from submit to the (earliest) deadline.
        threshold = self.at_risk_fraction * max(min(ends) - workflow.created_at, 0.0)
        for task_id, finish in latest.items():
            if math.isfinite(finish):
                start = finish - expected.get(task_id, 0.0)
                self.latest_start[task_id] = start
                self.risk_at[task_id] = start - threshold
        if workflow.deadline is not None and not workflow.state.terminal:
            self.workflows.add(workflow.deadline, workflow.id)
        self.started[workflow.id] = workflow.started_at if workflow.started_at is not None else workflow.created_at

    def queue_terms(self, task: Task, now: float) -> tuple[int, float, float]:
        """``(priority, latest start, aged since)`` for the queue: at-risk tasks gain ``boost`` points.

        A deadline task ages from its workflow's start rather than from when it became ready, so
        the later stages of a workflow are not pushed into ever newer ageing bands while its
        deadline comes nearer: within one priority, deadline work of workflows started in the
        same ageing window competes by slack alone. A task not yet at risk gets a timer (one per
        enqueue, popped once: O(log n)).
        """
        ready_at = task.ready_at or 0.0
        start = self.latest_start.get(task.id)
        if start is None:
            return task.priority, math.inf, ready_at
        since = min(ready_at, self.started.get(task.workflow_id, ready_at))
        risk_at = self.risk_at[task.id]
        if now >= risk_at:
            return task.priority + self.boost, start, since
        self.tasks.add(risk_at, task.id)
        return task.priority, start, since

    def slack(self, task_id: str, now: float) -> float | None:
        """``latest start - now`` (seconds; negative: late), or None without a deadline."""
        start = self.latest_start.get(task_id)
        return None if start is None else start - now

    def remember_admission(self, workflow_id: str, message: str) -> None:
        """Keep a submission's admission message until its response takes it (bounded)."""
        if len(self.admissions) >= _MAX_ADMISSIONS:
            del self.admissions[next(iter(self.admissions))]
        self.admissions[workflow_id] = message

    def note(self, task_id: str, now: float) -> str:
        """One line for explain: the slack and whether the task is at risk (boosted)."""
        start = self.latest_start.get(task_id)
        if start is None:
            return ""
        slack = start - now
        if now >= self.risk_at[task_id]:
            late = " (behind: it cannot finish in time at its expected duration)" if slack < 0 else ""
            return f"at risk: slack {slack:.1f}s{late}; while queued it ranks {self.boost} priority points up"
        return f"slack {slack:.1f}s; at risk in {self.risk_at[task_id] - now:.1f}s"

    def workflow_slack(self, task_ids: Sequence[str], now: float) -> float | None:
        """The least slack over a workflow's given (unfinished) tasks, or None."""
        slacks = [s for s in (self.latest_start.get(t) for t in task_ids) if s is not None]
        return min(slacks) - now if slacks else None

    def due(self, now: float) -> tuple[list[str], list[str]]:
        """``(tasks now at risk, workflows whose deadline passed)`` since the last call."""
        return self.tasks.due(now), self.workflows.due(now)

    def next_wakeup(self) -> float | None:
        """The earliest pending timer (the runtime ticks then), or None."""
        times = [t for t in (self.tasks.next_wakeup(), self.workflows.next_wakeup()) if t is not None]
        return min(times) if times else None

    def forget(self, workflow_id: str, task_ids: Sequence[str]) -> None:
        """Drop a finished workflow and its tasks."""
        self.started.pop(workflow_id, None)
        for task_id in task_ids:
            self.latest_start.pop(task_id, None)
            self.risk_at.pop(task_id, None)
