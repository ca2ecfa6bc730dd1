"""Attempts: placing ready tasks, pulled work, reports from agents and workers, retries and timeouts."""

from __future__ import annotations

from corral.controller.core.access import secret_refs
from corral.controller.core.events import (
    Assign,
    Assignment,
    AttemptFinished,
    AttemptStarted,
    CancelAttempts,
    PullTask,
)
from corral.controller.core.model import AgentState, Attempt, AttemptState, Task, TaskState, WorkflowState
from corral.controller.core.placement import fits_now
from corral.controller.core.scheduling import plan
from corral.controller.core.transitions import move_attempt
from corral.controller.core.workflow_ops import WorkflowOps

__all__ = ["AttemptOps"]

A = AttemptState
T = TaskState
_MAX_PULL_SCAN = 256


class AttemptOps(WorkflowOps):
    """Handlers that create, confirm and end attempts."""

    def dispatch(self, task: Task, agent_id: str, gpu_ids: tuple[int, ...], now: float, pulled: bool) -> Assignment:
        """Create the next attempt of ``task`` on ``agent_id`` (allocation already taken)."""
        task.attempts += 1
        attempt = Attempt(
            id=self.new_id(),
            task_id=task.id,
            workflow_id=task.workflow_id,
            agent_id=agent_id,
            number=task.attempts,
            resources=task.resources,
            gpu_ids=gpu_ids,
            pulled=pulled,
            assigned_at=now,
        )
        self.attempts[attempt.id] = attempt
        self.active.setdefault(agent_id, set()).add(attempt.id)
        self.assign_seq += 1
        self.assign_order[attempt.id] = self.assign_seq
        self.touch_attempt(attempt)
        task.current_attempt_id = attempt.id
        task.agent_id = agent_id
        self.set_task_state(task, T.ASSIGNED, now)
        inputs = {self.tasks[d].name: self.tasks[d].result or b"null" for d in task.dependencies}
        refs = secret_refs(task.payload)
        secrets = self.access.reveal(task.namespace, refs) if refs else {}
        return Assignment(attempt.id, attempt.number, task, inputs, gpu_ids, secrets)

    def fails_for_secrets(self, task: Task, now: float) -> bool:
        """Fail a queued task for good when a secret its env refers to no longer exists."""
        refs = secret_refs(task.payload)
        if not refs:
            return False
        missing = self.access.missing_secrets(task.namespace, refs)
        if not missing:
            return False
        self.queue.discard(task.id)
        task.error = f"secret {missing[0]!r} does not exist in namespace {task.namespace!r} (deleted after submission)"
        task.finished_at = now
        self.set_task_state(task, T.FAILED, now, task.error)
        self.skip_descendants(task, now)
        self.finish_if_done(self.workflows[task.workflow_id], now)
        return True

    def schedule(self, now: float) -> None:
        """Place queued tasks on agents with room, then move prefetched work to idle slots."""
        # Release ended backoffs first, even when nothing can be placed: next_timer() must move on.
        self.queue.promote(now)
        self.place(now)
        if self.steal(now):
            self.place(now)

    def place(self, now: float) -> None:
        """Place as many queued tasks as the online agents have room for; one Assign per agent."""
        if not self.queue:
            return
        roomy = [view for view in self.views.values() if view.has_room()]
        if not roomy:
            return
        placements = plan(self.queue, lambda tid: self.demand(self.tasks[tid]), roomy, now, self.config.strategy)
        batches: dict[str, list[Assignment]] = {}
        for placement in placements:
            task = self.tasks[placement.task_id]
            if self.fails_for_secrets(task, now):
                continue
            self.queue.discard(task.id)
            gpu_ids = self.views[placement.agent_id].allocate(task.resources)
            batches.setdefault(placement.agent_id, []).append(
                self.dispatch(task, placement.agent_id, gpu_ids, now, pulled=False)
            )
        for agent_id, assignments in batches.items():
            self.emit(Assign(agent_id, assignments))

    def steal(self, now: float) -> bool:
        """Take back attempts waiting in one agent's prefetch queue when another agent has idle slots.

        Prefetch keeps agents busy, but near the end of a batch (or with uneven task lengths) it
        can leave one agent idle while another still holds queued work. Such attempts (assigned a
        while ago and never reported started) are cancelled on their agent, which drops them from
        its queue, and requeued here, to be placed on the idle agent in the same tick. Returns
        whether anything was taken back.
        """
        idle = [v for v in self.views.values() if v.state is AgentState.CONNECTED and v.outstanding < v.slots]
        if not idle:
            return False
        free = sum(v.slots - v.outstanding for v in idle)
        stolen = False
        for view in list(self.views.values()):
            surplus = view.outstanding - view.slots
            if surplus <= 0 or view in idle:
                continue
            # The agent runs its attempts in the order they came: the newest `surplus` ones are
            # the ones waiting in its queue; of those, move the ones not reported started.
            order = self.assign_order
            newest = sorted(
                (self.attempts[i] for i in self.active.get(view.id, ())),
                key=lambda a: (a.assigned_at, order.get(a.id, 0)),
                reverse=True,
            )[:surplus]
            waiting = [a for a in newest if a.state is A.ASSIGNED and now - a.assigned_at >= self.config.steal_after_s]
            taken: list[str] = []
            for attempt in waiting[:free]:
                task = self.tasks[attempt.task_id]
                demand = self.demand(task)
                if not any(fits_now(demand, target) for target in idle):
                    continue
                self.end_attempt(attempt, A.CANCELLED, now, "moved to an idle agent")
                self.make_ready(task, now)
                taken.append(attempt.id)
                free -= 1
            if taken:
                self.emit(CancelAttempts(view.id, taken, False, self.config.kill_grace_s))
                stolen = True
            if free <= 0:
                break
        return stolen

    def pull(self, event: PullTask, now: float) -> Assignment | None:
        """Hand the best queued task an external worker can run to it, or None."""
        self.queue.promote(now)
        chosen: Task | None = None
        doomed: list[Task] = []  # failed after the scan: the queue must not change while iterated
        for scanned, task_id in enumerate(self.queue.candidates(event.agent_types, now)):
            if scanned >= _MAX_PULL_SCAN:
                break
            task = self.tasks[task_id]
            if any(event.labels.get(k) != v for k, v in task.constraints.items()):
                continue
            if event.capacity is not None and task.resources.shortfall(event.capacity):
                continue
            if event.namespaces and task.namespace not in event.namespaces:
                continue
            if secret_refs(task.payload) and self.access.missing_secrets(task.namespace, secret_refs(task.payload)):
                doomed.append(task)
                continue
            chosen = task
            break
        for task in doomed:
            self.fails_for_secrets(task, now)
        if chosen is not None:
            task = chosen
            task_id = task.id
            self.queue.discard(task_id)
            assignment = self.dispatch(task, event.worker_id, (), now, pulled=True)
            attempt = self.attempts[assignment.attempt_id]
            self.mark_running(attempt, task, now)
            # Nobody heartbeats for a pulled attempt: its timeout (or a long lease) bounds it.
            limit = task.timeout_s + self.config.kill_grace_s if task.timeout_s else self.config.pull_lease_s
            self.deadlines[attempt.id] = now + limit
            return assignment
        return None

    def owned_active(self, reporter: str, attempt_id: str) -> Attempt | None:
        """The attempt if it is still active and belongs to ``reporter``: the fence on every report."""
        attempt = self.attempts.get(attempt_id)
        if attempt is None or not attempt.state.active or attempt.agent_id != reporter:
            return None
        task = self.tasks[attempt.task_id]
        if task.current_attempt_id != attempt.id:
            return None
        return attempt

    def mark_running(self, attempt: Attempt, task: Task, now: float, at: float | None = None) -> None:
        """``at`` is the start time by the agent's clock, when it said (reports arrive batched)."""
        if attempt.state is A.ASSIGNED:
            move_attempt(attempt, A.RUNNING)
        attempt.started_at = at if at is not None else now
        self.touch_attempt(attempt)
        task.started_at = attempt.started_at
        if task.state is T.ASSIGNED:
            self.set_task_state(task, T.RUNNING, now)

    def started(self, event: AttemptStarted, now: float) -> bool:
        attempt = self.owned_active(event.reporter, event.attempt_id)
        if attempt is None:
            return False
        self.unconfirmed.pop(attempt.id, None)
        if attempt.state is A.RUNNING:
            return True
        task = self.tasks[attempt.task_id]
        self.mark_running(attempt, task, now, event.at)
        if task.timeout_s:
            # Backstop only: the agent enforces the timeout itself and reports TIMED_OUT.
            self.deadlines[attempt.id] = now + task.timeout_s + self.config.kill_grace_s + self.config.lease_s
        return True

    def finished(self, event: AttemptFinished, now: float) -> bool:
        """Apply a final report; False (and nothing changed) when the fence rejects it."""
        attempt = self.owned_active(event.reporter, event.attempt_id)
        if attempt is None:
            return False
        task = self.tasks[attempt.task_id]
        workflow = self.workflows[task.workflow_id]
        attempt.exit_code = event.exit_code
        if attempt.started_at is not None and event.at is not None and not attempt.pulled:
            self.observe_run_time(attempt.workflow_id, max(0.0, event.at - attempt.started_at))
        task.exit_code = event.exit_code
        if event.outcome is A.SUCCEEDED:
            self.end_attempt(attempt, A.SUCCEEDED, now)
            # Start and end by the same (the agent's) clock when it said, so run times are exact
            # even when the agent's clock is off from the controller's.
            started = attempt.started_at
            if event.at is not None and started is not None and event.at >= started:
                attempt.finished_at = event.at
            task.result = event.result if event.result is not None else b"null"
            task.error = ""
            task.finished_at = attempt.finished_at
            self.set_task_state(task, T.COMPLETED, now)
            self.release_dependents(task, now)
        elif workflow.state is WorkflowState.CANCELLING:
            self.end_attempt(attempt, event.outcome, now, event.error)
            task.finished_at = now
            self.set_task_state(task, T.CANCELLED, now, "workflow cancelled")
        elif event.outcome in (A.CANCELLED, A.LOST):
            # Given back or stopped by its agent (drain, shutdown) rather than by us: run it
            # elsewhere, without spending a retry.
            self.end_attempt(attempt, event.outcome, now, event.error or "given back by its agent")
            self.make_ready(task, now)
        else:
            self.fail_attempt(attempt, task, event.outcome, event.error, event.retryable, now)
        self.finish_if_done(workflow, now)
        return True

    def fail_attempt(
        self, attempt: Attempt, task: Task, outcome: AttemptState, error: str, retryable: bool, now: float
    ) -> None:
        """A failed or timed-out attempt: retry with exponential backoff and jitter, or fail the task."""
        self.end_attempt(attempt, outcome, now, error)
        task.error = error or str(outcome)
        if retryable and task.retries_used < task.max_retries:
            task.retries_used += 1
            backoff = min(self.config.max_backoff_s, task.retry_backoff_s * 2 ** (task.retries_used - 1))
            jitter = self.config.backoff_jitter
            backoff *= 1.0 + self.rng.uniform(-jitter, jitter)
            self.make_ready(task, now, not_before=now + backoff)
        else:
            task.finished_at = now
            self.set_task_state(task, T.FAILED, now, task.error)
            self.skip_descendants(task, now)

    def lose_attempt(self, attempt: Attempt, now: float, why: str) -> None:
        """Its agent is gone or never re-reported it: requeue without spending a retry."""
        task = self.tasks[attempt.task_id]
        workflow = self.workflows[task.workflow_id]
        self.end_attempt(attempt, A.LOST, now, why)
        if workflow.state is WorkflowState.CANCELLING:
            task.finished_at = now
            self.set_task_state(task, T.CANCELLED, now, "workflow cancelled")
        else:
            self.make_ready(task, now)
        self.finish_if_done(workflow, now)

    def expire_deadlines(self, now: float) -> None:
        """Controller-side timeouts: pulled attempts past their limit, agents that never reported one."""
        for attempt_id, deadline in list(self.deadlines.items()):
            if deadline > now:
                continue
            attempt = self.attempts[attempt_id]
            task = self.tasks[attempt.task_id]
            if not attempt.pulled:
                self.emit(CancelAttempts(attempt.agent_id, [attempt.id], True, 0.0))
            workflow = self.workflows[task.workflow_id]
            error = "timed out (no report before the deadline)"
            if workflow.state is WorkflowState.CANCELLING:
                self.end_attempt(attempt, A.TIMED_OUT, now, error)
                task.finished_at = now
                self.set_task_state(task, T.CANCELLED, now, "workflow cancelled")
            else:
                self.fail_attempt(attempt, task, A.TIMED_OUT, error, True, now)
            self.finish_if_done(workflow, now)
        for attempt_id, deadline in list(self.unconfirmed.items()):
            if deadline <= now:
                self.lose_attempt(self.attempts[attempt_id], now, "not reported by its agent after reconnect")
