"""Workflow lifecycle: submit, start, pause, resume, cancel, and how task outcomes move a workflow."""

from __future__ import annotations

from collections import deque

from corral.controller.core import sagas
from corral.controller.core.cache import lookup
from corral.controller.core.deadline_ops import DeadlineOps
from corral.controller.core.dynamic import expand_or_gather
from corral.controller.core.events import CancelAttempts, CancelWorkflow, SubmitWorkflow
from corral.controller.core.fallbacks import absorbed_failures, ready_approval, skip_tolerant
from corral.controller.core.group_ops import forget_groups, track_groups
from corral.controller.core.lifecycle import Evicted
from corral.controller.core.model import (
    AttemptState,
    Task,
    TaskState,
    Workflow,
    WorkflowState,
)
from corral.controller.core.runs import pause_on_failure, paused_on_failure, skip_held_failures
from corral.controller.errors import FailedPrecondition

__all__ = ["WorkflowOps"]

W = WorkflowState
T = TaskState


class WorkflowOps(DeadlineOps):
    """Handlers for the Orchestrator's workflow requests and the workflow-level consequences of tasks."""

    def submit(self, event: SubmitWorkflow, now: float) -> tuple[str, bool]:
        """Store a new workflow; returns ``(workflow id, deduplicated)``."""
        workflow = event.workflow
        # Raises NotFound (with the command that creates it) before anything changes.
        self.access.namespace(workflow.namespace)
        key = (workflow.namespace, workflow.idempotency_key) if workflow.idempotency_key else None
        if key and key in self.idempotency:
            existing = self.workflows.get(self.idempotency[key])
            if existing is None:
                raise Evicted(self.idempotency[key])  # the runtime takes it back in and submits again
            if event.start and existing.state is W.PENDING:
                self.start(existing.id, now)
            return existing.id, True
        if workflow.deadline is not None or any(task.deadline is not None for task in event.tasks):
            self.resolve_deadlines(event, now)  # raises before anything changes
            admission = self.admit_deadline(event, now)
        else:
            admission = None
        self.submitted.append(event)
        workflow.created_at = now
        self.workflows[workflow.id] = workflow
        if key:
            self.idempotency[key] = workflow.id
        if workflow.max_parallel:
            track_groups(self, workflow, None)
        for task in event.tasks:
            task.created_at = now
            self.track_task(task)
            self.touch_task(task)
        self.count_unfinished(workflow.task_ids)
        self.touch_workflow(workflow)
        self.record(workflow, now, "submitted", reason=f"{len(event.tasks)} tasks")
        if admission is not None:
            self.record(workflow, now, "deadline_admission", reason=admission.message())
        if event.start:
            self.start(workflow.id, now)
        return workflow.id, False

    def start(self, workflow_id: str, now: float) -> Workflow:
        workflow = self.workflow(workflow_id)
        if workflow.state.terminal:
            raise FailedPrecondition(f"workflow {workflow_id} already {workflow.state}; it cannot start again")
        if workflow.state is not W.PENDING:
            return workflow  # already started: starting is idempotent
        workflow.started_at = now
        self.set_workflow_state(workflow, W.RUNNING, now)
        self.rank_workflow(workflow)  # before any task is queued: the queue orders by the scores
        for task_id in workflow.task_ids:
            # PENDING: a cached task completed above may have made its dependents ready already.
            if self.unfinished_deps[task_id] == 0 and self.tasks[task_id].state is T.PENDING:
                self.make_ready(self.tasks[task_id], now)
        return workflow

    def pause(self, workflow_id: str, now: float) -> Workflow:
        workflow = self.workflow(workflow_id)
        if workflow.state is W.PAUSED:
            return workflow
        if workflow.state is not W.RUNNING:
            raise FailedPrecondition(f"workflow {workflow_id} is {workflow.state}; only a running workflow pauses")
        self.set_workflow_state(workflow, W.PAUSED, now)
        for task_id in workflow.task_ids:
            if self.tasks[task_id].state is T.READY:
                self.queue.discard(task_id)
        return workflow

    def resume(self, workflow_id: str, now: float) -> Workflow:
        workflow = self.workflow(workflow_id)
        if workflow.state is W.RUNNING:
            return workflow
        if workflow.state is not W.PAUSED:
            raise FailedPrecondition(f"workflow {workflow_id} is {workflow.state}; only a paused workflow resumes")
        held = paused_on_failure(self, workflow)
        self.set_workflow_state(workflow, W.RUNNING, now)
        if held:
            skip_held_failures(self, workflow, now)
        for task_id in workflow.task_ids:
            task = self.tasks[task_id]
            if task.state is T.READY:
                self.enqueue(task)
        self.finish_if_done(workflow, now)
        return workflow

    def cancel(self, event: CancelWorkflow, now: float) -> Workflow:
        workflow = self.workflow(event.workflow_id)
        if workflow.state.terminal:
            raise FailedPrecondition(f"workflow {workflow.id} already {workflow.state}; nothing to cancel")
        if workflow.on_failure == "compensate":
            sagas.check_cancel(workflow, event.force)
            if event.force:
                sagas.force_cancel(self, workflow, now)
        if workflow.state is W.CANCELLING and not event.force:
            return workflow
        workflow.error = event.reason or ("cancelled (forced)" if event.force else "cancelled")
        by_agent: dict[str, list[str]] = {}
        for task_id in workflow.task_ids:
            task = self.tasks[task_id]
            if task.state in (T.PENDING, T.READY):
                self.queue.discard(task_id)
                self.set_task_state(task, T.CANCELLED, now, "workflow cancelled")
                task.finished_at = now
            elif task.state in (T.ASSIGNED, T.RUNNING) and task.current_attempt_id:
                attempt = self.attempts[task.current_attempt_id]
                if not attempt.pulled:
                    by_agent.setdefault(attempt.agent_id, []).append(attempt.id)
                if event.force or attempt.pulled:
                    # External workers cannot be told to stop; their late reports are rejected.
                    self.end_attempt(attempt, AttemptState.CANCELLED, now, "workflow cancelled")
                    self.set_task_state(task, T.CANCELLED, now, "workflow cancelled")
                    task.finished_at = now
        for agent_id, attempt_ids in by_agent.items():
            self.emit(CancelAttempts(agent_id, attempt_ids, event.force, self.config.kill_grace_s))
        if self.remaining(workflow.id) == 0:
            if event.force or workflow.on_failure != "compensate" or not sagas.begin(self, workflow, W.CANCELLED, now):
                self.set_workflow_state(workflow, W.CANCELLED, now, workflow.error)
        elif workflow.state is not W.CANCELLING:
            self.set_workflow_state(workflow, W.CANCELLING, now, workflow.error)
        return workflow

    # --- consequences of task outcomes ----------------------------------------------------------

    def make_ready(
        self, task: Task, now: float, not_before: float | None = None, *, kind: str = "", reason: str = ""
    ) -> None:
        """Move a task to READY; queue it when its workflow runs (paused ones queue on resume).

        ``kind``/``reason`` name the event-log entry ("retry", "requeued", "fenced", ...).
        """
        if task.dynamic is not None and task.dynamic.map_over:
            expand_or_gather(self, task, now)  # a map task runs nothing itself (core/dynamic.py)
            return
        task.ready_at = now
        task.not_before = not_before
        if task.rules is not None and ready_approval(self, task):
            self.set_task_state(task, T.READY, now, "waiting for approval", kind="waiting_approval")
            return
        # A plain "ready" (its dependencies done, or its workflow started) changed only progress
        # columns; a retry, requeue or fallback also changed other fields: written whole.
        self.set_task_state(task, T.READY, now, kind=kind, reason=reason, progress=not kind)
        task.agent_id = None
        if task.cache is not None and lookup(self, task, now):
            return  # completed from the cache (issue 10)
        state = self.workflows[task.workflow_id].state
        if state is W.RUNNING or state is W.COMPENSATING:
            self.enqueue(task)

    def release_dependents(self, task: Task, now: float) -> None:
        """A task completed: dependents whose last dependency this was become ready."""
        workflow = self.workflows[task.workflow_id]
        for child_id in self.dependents[task.id]:
            self.unfinished_deps[child_id] -= 1
            child = self.tasks[child_id]
            ready = self.unfinished_deps[child_id] == 0 and child.state is T.PENDING
            if ready and workflow.state in (W.RUNNING, W.PAUSED, W.COMPENSATING):
                self.make_ready(child, now)

    def skip_descendants(self, task: Task, now: float, *, hold: bool = True) -> None:
        """A task failed for good: everything downstream of it can never run.

        ``on_failure: pause`` (issue 10) pauses the workflow instead, its descendants held PENDING;
        ``allow_failure`` / ``min_success`` edges release their dependents instead of skipping them.
        """
        if hold and self.workflows[task.workflow_id].on_failure == "pause" and pause_on_failure(self, task, now):
            return
        if self.fallbacks.enabled:
            skip_tolerant(self, task, now)
            return
        pending = deque(self.dependents[task.id])
        message = f"upstream task {task.name!r} failed"
        while pending:
            child = self.tasks[pending.popleft()]
            if child.state is T.PENDING:
                self.set_task_state(child, T.SKIPPED, now, message)
                child.finished_at = now
                child.error = message
                pending.extend(self.dependents[child.id])

    def finish_if_done(self, workflow: Workflow, now: float) -> None:
        """End the workflow once every task is terminal."""
        if workflow.state.terminal or workflow.state is W.PENDING or self.remaining(workflow.id):
            return
        if workflow.on_failure == "pause" and paused_on_failure(self, workflow):
            return  # waits for a retry (or a resume, which fails it)
        if workflow.on_failure == "compensate" and sagas.step(self, workflow, now):
            return
        counts = self.counts[workflow.id]
        if workflow.state is W.CANCELLING:
            self.set_workflow_state(workflow, W.CANCELLED, now, workflow.error)
        elif (counts[T.FAILED] or counts[T.SKIPPED] or counts[T.CANCELLED]) and not (
            self.fallbacks.enabled and absorbed_failures(self, workflow)
        ):
            if not workflow.error:
                failed = [self.tasks[t] for t in workflow.task_ids if self.tasks[t].state is T.FAILED]
                workflow.error = (
                    f"task {failed[0].name!r} failed: {failed[0].error}" if failed else "tasks did not complete"
                )
            self.set_workflow_state(workflow, W.FAILED, now, workflow.error)
        else:
            self.set_workflow_state(workflow, W.COMPLETED, now)
        if self.gangs or self.parallelism:
            forget_groups(self, workflow.id)
