"""Deadline handlers of the machine: resolve and admit deadlines at submit, at-risk and missed timers.

A mixin on :class:`~corral.controller.core.state.MachineState` (``WorkflowOps`` builds on it).
The arithmetic lives in :mod:`deadlines`; the per-task bookkeeping in :mod:`deadline_book`.
"""

from __future__ import annotations

from corral.controller.core.deadlines import Admission, Verdict, admit, critical_path, resolve
from corral.controller.core.events import SubmitWorkflow
from corral.controller.core.model import TaskState, Workflow
from corral.controller.core.state import MachineState
from corral.controller.errors import FailedPrecondition, InvalidArgument

__all__ = ["DeadlineOps"]


class DeadlineOps(MachineState):
    """Deadline admission at submit, and what happens when a deadline's timers pass."""

    def resolve_deadlines(self, event: SubmitWorkflow, now: float) -> None:
        """Turn relative deadlines absolute (at ``now``); past ones are INVALID_ARGUMENT."""
        workflow = event.workflow
        try:
            if workflow.deadline is not None:
                workflow.deadline = resolve(workflow.deadline, workflow.deadline_relative, now)
                workflow.deadline_relative = False
        except ValueError as exc:
            raise InvalidArgument.field("spec.deadline", str(exc)) from None
        for index, task in enumerate(event.tasks):
            if task.deadline is None:
                continue
            try:
                task.deadline = resolve(task.deadline, task.deadline_relative, now)
                task.deadline_relative = False
            except ValueError as exc:
                raise InvalidArgument.field(f"spec.tasks[{index}].deadline", str(exc)) from None

    def admit_deadline(self, event: SubmitWorkflow, now: float) -> Admission | None:
        """Judge the workflow's deadline (None without one, or with ``best_effort``).

        ``reject`` raises FAILED_PRECONDITION for an infeasible deadline before anything is stored.
        Cost: one pass over the new workflow and one over the ready queue, only for workflows that
        have a deadline and a policy that wants a verdict.
        """
        workflow = event.workflow
        ends = [d for d in (workflow.deadline, *(t.deadline for t in event.tasks)) if d is not None]
        if not ends or workflow.deadline_policy == "best_effort" or not self.config.deadline_scheduling:
            return None
        own_seconds = self.ordering.own_seconds
        expected = {t.id: own_seconds(t, workflow.name) for t in event.tasks}
        parents = {t.id: t.dependencies for t in event.tasks}
        path = critical_path(workflow.task_ids, parents, expected)
        top = max(t.priority for t in event.tasks)
        ordering, tasks = self.ordering, self.tasks
        ahead = 0.0
        for entry in self.queue.entries():
            if entry.priority >= top:
                queued = tasks.get(entry.task_id)
                ranked = ordering.rank_of(queued) if queued is not None else None
                ahead += ranked.expected_s if ranked is not None else 0.0
        slots = sum(self.agents[agent_id].inventory.slots for agent_id in self.views if agent_id in self.agents)
        verdict = admit(now, min(ends), path, ahead, slots, self.config.at_risk_fraction)
        if verdict.verdict is Verdict.INFEASIBLE and workflow.deadline_policy == "reject":
            raise FailedPrecondition(f"deadline cannot be met, nothing was stored: {verdict.message()}")
        workflow.deadline_verdict = verdict.verdict.value
        self.deadline_book.remember_admission(workflow.id, verdict.message())
        return verdict

    def deadline_due(self, now: float) -> None:
        """Re-push tasks that became at risk (one band up); log workflows past their deadline."""
        at_risk, missed = self.deadline_book.due(now)
        for task_id in at_risk:
            task = self.tasks.get(task_id)
            if task is not None and task.state is TaskState.READY and task_id in self.queue:
                entry = self.queue.entry(task_id)
                if entry is not None and entry.priority == task.priority:  # not boosted yet
                    self.queue.discard(task_id)
                    self.enqueue(task, now)
        for workflow_id in missed:
            workflow = self.workflows.get(workflow_id)
            if workflow is not None and not workflow.state.terminal:
                self.record_missed(workflow, now)

    def record_missed(self, workflow: Workflow, now: float) -> None:
        """The workflow is past its deadline and still running: log it (it keeps running)."""
        self.record(workflow, now, "deadline_missed", reason="deadline passed; the workflow keeps running")
