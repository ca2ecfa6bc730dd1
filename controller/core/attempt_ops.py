"""Attempts: placing ready tasks, pulled work, reports from agents and workers, retries and timeouts."""

from __future__ import annotations

from collections.abc import Mapping

from corral.controller.core.access import secret_refs
from corral.controller.core.assignment_leases import AssignmentLeases
from corral.controller.core.cache import store_result
from corral.controller.core.cordon import observe_finish
from corral.controller.core.dynamic import map_inputs
from corral.controller.core.events import (
    Assign,
    Assignment,
    AttemptAccepted,
    AttemptFinished,
    AttemptReleased,
    AttemptStarted,
    CancelAttempts,
    PullTask,
)
from corral.controller.core.exits import exit_words
from corral.controller.core.fairshare import fair_for
from corral.controller.core.fallbacks import add_error_inputs, try_fallback
from corral.controller.core.group_ops import on_finished, pass_rules
from corral.controller.core.model import (
    AgentState,
    Attempt,
    AttemptState,
    Task,
    TaskState,
    WorkflowState,
    shared_result,
)
from corral.controller.core.placement import fits_now
from corral.controller.core.preemption import preempt_pass, preempted, start_preemptors
from corral.controller.core.reservations import after_pass, stuck_test, sweep
from corral.controller.core.scheduling import Plan, PlanView, Steal, plan
from corral.controller.core.transitions import move_attempt

__all__ = ["AttemptOps"]

A = AttemptState
T = TaskState
_MAX_PULL_SCAN = 256
_UNORDERED: tuple[tuple[float, ...], int] = ((), 0)  # an attempt restored without its queue order


class AttemptOps(AssignmentLeases):
    """Handlers that create, confirm and end attempts."""

    def dispatch(
        self,
        task: Task,
        agent_id: str,
        gpu_ids: tuple[int, ...],
        now: float,
        pulled: bool,
        principal: str = "",
        order: tuple[float, ...] = (),
    ) -> Assignment:
        """Create the next attempt of ``task`` on ``agent_id`` (allocation already taken).

        An agent's attempt must be acknowledged (Accepted or Started) within the assignment lease.
        ``order``: the task's ready-queue order, which the agent keeps among the attempts it queues.
        """
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
            principal=principal,
            run=self.workflows[task.workflow_id].run,
        )
        self.attempts[attempt.id] = attempt
        lease = self.config.assignment_lease_s
        if not pulled and lease > 0:
            deadline = now + lease
            self.unacknowledged[attempt.id] = deadline
            self.ack_queue.append((deadline, attempt.id))
        self.active.setdefault(agent_id, set()).add(attempt.id)
        if task.agent_type == "python" and not pulled:  # its worker keeps a child per workflow
            self.holders.ran(task.workflow_id, agent_id)
        if not pulled and self.config.lookahead_s > 0:
            view = self.views.get(agent_id)
            if view is not None and view.outstanding <= view.slots:  # a free slot: it starts at once
                self.ending.placed(attempt.id, now)
        self.assign_seq += 1
        # The agent starts the attempts it queues by (order, arrival): kept for the steal pass.
        self.assign_order[attempt.id] = (order, self.assign_seq)
        self.touch_attempt(attempt)
        task.current_attempt_id = attempt.id
        task.agent_id = agent_id
        self.set_task_state(task, T.ASSIGNED, now, progress=True)
        inputs = {self.tasks[d].name: self.tasks[d].result or b"null" for d in task.dependencies}
        if task.dynamic is not None and task.dynamic.map_item is not None:
            inputs = map_inputs(self, task, task.dynamic.map_item)  # a map child (core/dynamic.py)
        if task.compensates:  # a compensation (issue 10) receives the result of the task it undoes
            inputs = {"task": self.tasks[task.compensates].result or b"null"}
        if self.fallbacks.enabled:
            add_error_inputs(self, task, inputs)
        refs = secret_refs(task.run_payload if task.fallback_used else task.payload)
        secrets = self.access.reveal(task.namespace, refs) if refs else {}
        keep_for = 0.0
        if task.on_disconnect == "keep":
            keep_for = task.max_disconnect_s if task.max_disconnect_s is not None else self.config.max_disconnect_s
        checkpoint = self.checkpoints.get(task.id) if self.checkpoints else None
        return Assignment(attempt.id, attempt.number, task, inputs, gpu_ids, secrets, keep_for, checkpoint, order)

    def fails_for_secrets(self, task: Task, now: float) -> bool:
        """Fail a queued task for good when a secret its env refers to no longer exists."""
        refs = secret_refs(task.run_payload if task.fallback_used else task.payload)
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
        self.steal(now)

    def place(self, now: float) -> None:
        """Plan a pass over the queue and apply it: one Assign per agent; the plan is kept for explain."""
        if self.deadline_book:
            self.deadline_due(now)
        preempting = self.preempter.enabled
        if preempting:
            start_preemptors(self, now)
        if not self.queue:
            if self.granted:  # the work ran out: the next burst starts slow again
                self.grant({})
            return
        if self.ending:
            horizon = self.ending.horizon(self.config.lookahead_s)
            if horizon > 0:
                self.ending.advance(now + horizon, self.views)
        if not any(view.has_room() for view in self.views.values()):
            # Nothing can be placed; record that cheaply (no queue walk) so explain can say so.
            self.last_plan = Plan(at=now, stopped="no agent had room for new work")
            if preempting:
                preempt_pass(self, self.last_plan, now)
            return
        if self.reservations:
            sweep(self, now)
        view = PlanView(
            self.queue,
            lambda tid: self.demand(self.tasks[tid]),
            list(self.views.values()),
            self.config.strategy,
            self.running_per_agent,
            rules=pass_rules(self) if self.gangs or self.parallelism else None,
            reserved=self.reservations.by_agent or None,
            stuck=stuck_test(self, now),
            fair=fair_for(self.access.namespaces, self.views.values(), self.active, self.attempts, self.tasks),
        )
        result = plan(view, now)
        self.last_plan = result
        if result.granted or self.granted:
            self.grant(result.granted)
        if result.stuck or self.reservations:
            after_pass(self, result, now)
        batches: dict[str, list[Assignment]] = {}
        for placement in result.placements:
            task = self.tasks[placement.task_id]
            if self.fails_for_secrets(task, now):
                continue
            queue = self.queue
            order = queue.order_key(task.id)[:3] if task.id in queue else ()
            queue.discard(task.id)
            gpu_ids = self.views[placement.agent_id].allocate(task.resources)
            batches.setdefault(placement.agent_id, []).append(
                self.dispatch(task, placement.agent_id, gpu_ids, now, pulled=False, order=order)
            )
        for agent_id, assignments in batches.items():
            self.emit(Assign(agent_id, assignments))
        if preempting:
            preempt_pass(self, result, now)

    def grant(self, granted: Mapping[str, int]) -> None:
        """Keep the pass windows a pass filled (``Plan.granted``) for the next pass's slow start;
        clear the other agents' grants."""
        views = self.views
        for agent_id in self.granted.difference(granted):
            view = views.get(agent_id)
            if view is not None:
                view.grant = 0
        for agent_id, window in granted.items():
            views[agent_id].grant = window
        self.granted = set(granted)

    def running_per_agent(self, workflow_id: str) -> dict[str, int]:
        """Active attempts of ``workflow_id`` per agent id (spread scoring).

        O(active attempts); a pass asks it only for workflows with spread tasks, once each.
        """
        counts: dict[str, int] = {}
        attempts = self.attempts
        for agent_id, held in self.active.items():
            n = sum(1 for attempt_id in held if attempts[attempt_id].workflow_id == workflow_id)
            if n:
                counts[agent_id] = n
        return counts

    def steal(self, now: float) -> bool:
        """Ask back attempts waiting in one agent's prefetch queue when another agent has idle slots.

        Prefetch keeps agents busy, but near the end of a batch (or with uneven task lengths) it
        can leave one agent idle while another still holds queued work. Such attempts (assigned a
        while ago and never reported started) are moved in two phases: the agent is asked to give
        them back if it has not started them (a Cancel with ``release_only``) and they are marked
        releasing; only its Released report requeues one (see :meth:`released`). If it says
        Started instead, the attempt stays where it is. The take-backs are added to this tick's
        plan (``Plan.steals``). Returns whether anything was asked back.
        """
        # Nothing waits in any agent's prefetch queue (the common case): no scan of the fleet.
        crowded = self.crowded
        if crowded:
            views = self.views
            for agent_id in [a for a in crowded if a not in views or views[a].outstanding <= views[a].slots]:
                crowded.discard(agent_id)  # went offline, or its view was rebuilt smaller
        if not crowded:
            return False
        idle = [
            v
            for v in self.views.values()
            if v.state is AgentState.CONNECTED and not v.held_back and v.outstanding < v.slots
        ]
        if not idle:
            return False
        # Idle slots already promised to attempts on their way back are not offered twice.
        free = sum(v.slots - v.outstanding for v in idle) - len(self.releasing)
        if free <= 0:
            return False
        asked = False
        releasing = self.releasing
        for view in list(self.views.values()):
            if view.outstanding <= view.slots or view in idle:
                continue
            held = [self.attempts[i] for i in self.active.get(view.id, ())]
            surplus = view.outstanding - view.slots - sum(1 for a in held if a.id in releasing)
            if surplus <= 0:
                continue
            # `surplus` attempts wait in its queue. Of those not reported started, the ones it
            # would start last (its own order: queue order, then arrival) are the likeliest still
            # to wait there, whatever order they were assigned in: a Started may be on its way.
            order = self.assign_order
            last = sorted(
                (a for a in held if a.state is A.ASSIGNED and a.id not in releasing),
                key=lambda a: order.get(a.id, _UNORDERED),
                reverse=True,
            )[:surplus]
            waiting = [a for a in last if now - a.assigned_at >= self.config.steal_after_s]
            taken: list[str] = []
            for attempt in waiting[:free]:
                demand = self.demand(self.tasks[attempt.task_id])
                if not any(fits_now(demand, target) for target in idle):
                    continue
                releasing.add(attempt.id)
                taken.append(attempt.id)
                free -= 1
            if taken:
                self.emit(CancelAttempts(view.id, taken, False, self.config.kill_grace_s, release_only=True))
                asked = True
                if self.last_plan is None or self.last_plan.at != now:
                    # Nothing queued this tick, so no pass ran: the take-backs are the tick's plan.
                    self.last_plan = Plan(at=now, stopped="nothing queued")
                self.last_plan.steals.append(Steal(view.id, tuple(taken)))
            if free <= 0:
                break
        return asked

    def pull(self, event: PullTask, now: float) -> Assignment | None:
        """Hand the best queued task an external worker can run to it, or None."""
        self.queue.promote(now)
        chosen: Task | None = None
        doomed: list[Task] = []  # failed after the scan: the queue must not change while iterated
        fair = fair_for(self.access.namespaces, self.views.values(), self.active, self.attempts, self.tasks)
        for scanned, task_id in enumerate(self.queue.candidates(event.agent_types, now)):
            if scanned >= _MAX_PULL_SCAN:
                break
            task = self.tasks[task_id]
            if any(event.labels.get(k) != v for k, v in task.constraints.items()):
                continue
            if task.constraint_exprs and not all(e.matches(event.labels) for e in task.constraint_exprs):
                continue
            if event.capacity is not None and task.resources.shortfall(event.capacity):
                continue
            if event.namespaces and task.namespace not in event.namespaces:
                continue
            if fair is not None and fair.over_quota(task.namespace, task.resources):
                continue
            refs = secret_refs(task.payload)
            if refs and self.access.missing_secrets(task.namespace, refs):
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
            assignment = self.dispatch(task, event.worker_id, (), now, pulled=True, principal=event.principal)
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
            if not attempt.pulled and self.config.lookahead_s > 0:
                self.ending.took(attempt.id, now)
                self.expect_end(attempt, task, now)
        attempt.started_at = at if at is not None else now
        self.touch_attempt(attempt)
        task.started_at = attempt.started_at
        if task.state is T.ASSIGNED:
            unwritten = task.id not in self._dirty_tasks and task.id not in self._moved_tasks
            self.set_task_state(task, T.RUNNING, now, progress=True)
            if unwritten:
                # The attempt's row already says RUNNING (and when): the task's is not rewritten
                # for it (one write less per task); restore derives the task's state from its
                # attempt, and the task's next change writes it.
                del self._moved_tasks[task.id]

    def expect_end(self, attempt: Attempt, task: Task, now: float) -> None:
        """Count the attempt for lookahead dispatch (core/lookahead.py) when its duration is known:
        its estimate, else its task's learned one (never a guess from other tasks)."""
        seconds = self.ordering.own_seconds(task, self.workflows[task.workflow_id].name)
        if seconds > 0:
            self.ending.started(attempt.id, attempt.agent_id, now + seconds)

    def refuse_late(self, reporter: str, attempt_id: str) -> None:
        """A Started or Accepted for an attempt that was taken back from (or never given to) this
        agent: it must not run, so the agent is told to kill it at once."""
        attempt = self.attempts.get(attempt_id)
        if attempt is not None and attempt.pulled:
            return
        self.emit(CancelAttempts(reporter, [attempt_id], True, 0.0))

    def accepted(self, event: AttemptAccepted, now: float) -> bool:
        """The agent holds the assignment; False (and a kill order) when it is not its to hold."""
        attempt = self.owned_active(event.reporter, event.attempt_id)
        if attempt is None:
            self.refuse_late(event.reporter, event.attempt_id)
            return False
        self.acknowledged(event.reporter, attempt.id)
        return True

    def released(self, event: AttemptReleased, now: float) -> bool:
        """The agent gave back an attempt it never started: place it elsewhere, no retry spent."""
        attempt = self.owned_active(event.reporter, event.attempt_id)
        if attempt is None or attempt.state is not A.ASSIGNED:
            return False  # unknown, not its own, or already started (then its Finished follows)
        late = self.withdrawing.get(attempt.id)
        if late is not None:
            # Withdrawn unstarted for a fenced attempt's success: that result completes the task.
            old = self.attempts[late.attempt_id]
            self.end_attempt(attempt, A.CANCELLED, now, f"withdrawn: attempt {old.number} succeeded late")
            self.accept_late(old, self.tasks[attempt.task_id], late, now)
            return True
        moved = attempt.id in self.releasing
        why = "moved to an idle agent" if moved else "released by its agent"
        self.requeue(attempt, A.CANCELLED, now, why, kind="requeued")
        return True

    def started(self, event: AttemptStarted, now: float) -> bool:
        attempt = self.owned_active(event.reporter, event.attempt_id)
        if attempt is None:
            self.refuse_late(event.reporter, event.attempt_id)
            return False
        self.unconfirmed.pop(attempt.id, None)
        self.releasing.discard(attempt.id)  # started before the move reached it: it stays
        self.withdrawing.pop(attempt.id, None)  # the replacement runs: a late success is too late
        self.acknowledged(event.reporter, attempt.id)
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
            return self.late_success(event, now)
        task = self.tasks[attempt.task_id]
        workflow = self.workflows[task.workflow_id]
        observe_finish(self, attempt, event.outcome, now)  # cascade prevention (cordon.py)
        attempt.exit_code = event.exit_code
        attempt.peak_rss_bytes = event.peak_rss_bytes
        attempt.cpu_s = event.cpu_s
        if attempt.started_at is not None and event.at is not None and not attempt.pulled:
            self.observe_run_time(attempt.workflow_id, max(0.0, event.at - attempt.started_at))
        task.exit_code = event.exit_code
        if event.oom_killed or self.parallelism:
            on_finished(self, event, task, now)
        if event.outcome is A.SUCCEEDED:
            self.end_attempt(attempt, A.SUCCEEDED, now)
            # Start and end by the same (the agent's) clock when it said, so run times are exact
            # even when the agent's clock is off from the controller's.
            started = attempt.started_at
            if event.at is not None and started is not None and event.at >= started:
                attempt.finished_at = event.at
            if started is not None and attempt.finished_at is not None:
                self.learn_duration(task, attempt.finished_at - started, now, attempt.peak_rss_bytes, attempt.cpu_s)
            task.result = shared_result(event.result)
            task.error = ""
            if self.checkpoints:
                self.checkpoints.drop((task.id,))  # completed: nothing resumes from it
            task.finished_at = attempt.finished_at
            self.set_task_state(task, T.COMPLETED, now, attempt.usage_note(), progress=True)
            if task.cache is not None:
                store_result(self, task, attempt, now)
            self.release_dependents(task, now)
        elif workflow.state is WorkflowState.CANCELLING:
            self.end_attempt(attempt, event.outcome, now, event.error)
            task.finished_at = now
            killed = exit_words(event.exit_code)  # issue 11: the signal that stopped it, in the log
            self.set_task_state(
                task, T.CANCELLED, now, f"workflow cancelled ({killed})" if killed else "workflow cancelled"
            )
        elif attempt.id in self.preempter.victim_of:
            preempted(self, attempt, task, now)  # stopped for a preemptor: no retry spent
        elif event.outcome in (A.CANCELLED, A.LOST):
            # Given back or stopped by its agent (drain, shutdown, its supervisor fenced it)
            # rather than by us: run it elsewhere, without spending a retry.
            if event.fenced and attempt.state is A.RUNNING:
                task.reruns_after_fence += 1
            if event.fenced:
                self.hold_until_beat(attempt.agent_id, now)
            why = event.error or ("fenced by its supervisor" if event.fenced else "given back by its agent")
            self.end_attempt(attempt, event.outcome, now, why)
            self.make_ready(task, now, kind="fenced" if event.fenced else "requeued", reason=why)
        else:
            # Issue 11: an attempt killed without a message says by what ("killed by SIGKILL (-9)").
            error = event.error or exit_words(event.exit_code)
            self.fail_attempt(attempt, task, event.outcome, error, event.retryable, now)
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
            why = f"retry {task.retries_used} of {task.max_retries} in {backoff:.1f}s after: {task.error}"
            self.make_ready(task, now, not_before=now + backoff, kind="retry", reason=why)
        elif task.rules is None or not try_fallback(self, task, now):
            task.finished_at = now
            note = attempt.usage_note()
            message = f"{task.error} ({note})" if note else task.error
            self.set_task_state(task, T.FAILED, now, message, reason=task.error)
            self.skip_descendants(task, now)

    def late_success(self, event: AttemptFinished, now: float) -> bool:
        """A success reported for a fenced or lost attempt of this agent: accepted while its
        replacement has not started (the task waits in the queue, or its replacement is withdrawn
        two-phase: a release-only Cancel, completed by the Released report). Else rejected: the
        task runs (or ran) again, and that rerun is counted on it."""
        attempt = self.attempts.get(event.attempt_id)
        if (
            event.outcome is not A.SUCCEEDED
            or attempt is None
            or attempt.state is not A.LOST
            or attempt.pulled
            or attempt.agent_id != event.reporter
        ):
            return False
        task = self.tasks[attempt.task_id]
        if task.state is T.READY:
            self.queue.discard(task.id)
            self.accept_late(attempt, task, event, now)
            return True
        replacement = self.attempts.get(task.current_attempt_id or "")
        if task.state is not T.ASSIGNED or replacement is None or replacement.state is not A.ASSIGNED:
            return False
        if replacement.pulled or replacement.id in self.withdrawing:
            return False
        self.withdrawing[replacement.id] = event
        self.releasing.discard(replacement.id)
        self.emit(CancelAttempts(replacement.agent_id, [replacement.id], False, 0.0, release_only=True))
        return True

    def accept_late(self, attempt: Attempt, task: Task, event: AttemptFinished, now: float) -> None:
        """Complete ``task`` with a late success of its earlier ``attempt`` (nothing replaces it now)."""
        if attempt.error.startswith("fenced") and attempt.started_at is not None:
            task.reruns_after_fence = max(0, task.reruns_after_fence - 1)  # it does not run again
        why = f"late success of attempt {attempt.number} accepted (it had been requeued: {attempt.error})"
        move_attempt(attempt, A.SUCCEEDED)
        if event.at is not None and attempt.started_at is not None and event.at >= attempt.started_at:
            attempt.finished_at = event.at
        attempt.exit_code = event.exit_code
        attempt.error = ""
        attempt.peak_rss_bytes = event.peak_rss_bytes
        attempt.cpu_s = event.cpu_s
        self.touch_attempt(attempt)
        task.current_attempt_id = attempt.id
        task.agent_id = attempt.agent_id
        task.result = shared_result(event.result)
        task.error = ""
        task.exit_code = event.exit_code
        task.finished_at = attempt.finished_at or now
        self.set_task_state(task, T.COMPLETED, now, attempt.usage_note(), kind="completed", reason=why)
        if task.cache is not None:
            store_result(self, task, attempt, now)
        self.release_dependents(task, now)
        self.finish_if_done(self.workflows[task.workflow_id], now)

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
