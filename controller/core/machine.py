"""The controller's state machine: ``handle(event, now)`` plus timers, as a pure object.

Usage by the runtime, once per tick::

    result = machine.handle(event, now)      # for each event of the tick (may raise CorralError)
    machine.tick(now)                        # timers (leases, deadlines, backoff) and placement
    store.commit(machine.take_changes())     # one transaction
    for action in machine.take_actions(): ...  # only after the commit

No I/O, no clock, no randomness except the injected seeded RNG and id factory.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from corral.controller.core import events as ev
from corral.controller.core.attempt_list import attempt_handlers
from corral.controller.core.cordon import cordon_verdicts, expire_cordons, restore_cordon
from corral.controller.core.fairshare import fair_for
from corral.controller.core.fallbacks import (
    ResolveApproval,
    approval_explanation,
    awaits_approval,
    dependency_done,
    expire_approvals,
    resolve_approval,
)
from corral.controller.core.fleet_admin import fleet_handlers
from corral.controller.core.group_ops import track_groups
from corral.controller.core.lifecycle import evict_idle, lifecycle_handlers
from corral.controller.core.model import AgentState, AttemptState, Task, TaskState, WorkflowState
from corral.controller.core.placement import AgentView, demand_class, describe_class, explain
from corral.controller.core.queries import request_handlers
from corral.controller.core.runs import run_handlers
from corral.controller.core.sagas import restore as restore_sagas
from corral.controller.core.schedule_ops import ScheduleOps
from corral.controller.core.state import MachineConfig
from corral.controller.store.base import Snapshot

__all__ = ["Explanation", "Machine", "MachineConfig"]

T = TaskState
# Workflow states whose READY tasks are queued (COMPENSATING: its compensations, issue 10).
_QUEUEING = frozenset({WorkflowState.RUNNING, WorkflowState.COMPENSATING})


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why a task is (not) running."""

    reason: str
    waiting_on: tuple[str, ...] = ()
    agents: tuple[tuple[str, str, str], ...] = ()  # (agent id, name, reason or "")
    unschedulable: bool = False
    # READY tasks: what the last scheduling pass recorded for the task's demand class, how long
    # ago that pass ran (-1: no pass yet), and the class. ``reason``/``agents`` are a fresh
    # evaluation; these say what the scheduler actually did.
    last_plan_reason: str = ""
    last_plan_age_s: float = -1.0
    demand_class: str = ""


class Machine(ScheduleOps):
    """All workflow, task, attempt and agent state of one controller, and every transition of it."""

    def __init__(
        self,
        config: MachineConfig | None = None,
        *,
        new_id: Callable[[], str],
        rng: random.Random | None = None,
        boot_time: float = 0.0,
    ) -> None:
        super().__init__(config or MachineConfig(), new_id, rng or random.Random(0), boot_time)
        self._handlers: dict[type, Callable[[Any, float], Any]] = {
            ev.SubmitWorkflow: self.submit,
            ev.StartWorkflow: lambda e, now: self.start(e.workflow_id, now),
            ev.CancelWorkflow: self.cancel,
            ev.PauseWorkflow: lambda e, now: self.pause(e.workflow_id, now),
            ev.ResumeWorkflow: lambda e, now: self.resume(e.workflow_id, now),
            ev.AgentHello: self.hello,
            ev.AgentHeartbeat: self.heartbeat,
            ev.AgentHeartbeats: lambda e, now: [self.heartbeat(beat, now) for beat in e.beats],
            ev.AgentGone: self.gone,
            ev.StorageResumed: lambda e, now: self.restart_assignment_leases(now),
            ev.AgentReports: self.reports,
            ev.DrainAgent: self.drain,
            ev.AttemptStarted: self.started,
            ev.AttemptAccepted: self.accepted,
            ev.AttemptReleased: self.released,
            ev.AttemptFinished: self.finished,
            ev.PullTask: self.pull,
        }
        self._handlers.update(request_handlers(self))
        self._handlers.update(run_handlers(self))
        self._handlers[ResolveApproval] = lambda e, now: resolve_approval(self, e, now)
        self._handlers.update(self.schedule_handlers())
        self._handlers.update(fleet_handlers(self))
        self._handlers.update(attempt_handlers(self))
        self._handlers.update(lifecycle_handlers(self))

    def handle(self, event: ev.Event, now: float) -> Any:
        """Apply one event. Raises a CorralError (and changes nothing) for a request it refuses."""
        return self._handlers[type(event)](event, now)

    def tick(self, now: float) -> None:
        """Timers, then placement of ready tasks onto agents with room."""
        self.expire_leases(now)
        self.expire_fences(now)
        self.expire_deadlines(now)
        self.expire_assignments(now)
        self.forget_agents(now)
        if self.lifecycle.idle:
            evict_idle(self, now)
        if self.fallbacks.approvals:
            expire_approvals(self, now)
        if self.cordons.until:
            expire_cordons(self, now)
        self.ordering.flush_if_due(now)
        if self.held or self.schedule_heap:
            self.run_timers(now)
        self.schedule(now)

    def next_timer(self) -> float | None:
        """The earliest time at which :meth:`tick` has something to do without any new event."""
        times = [t for t in (self.queue.next_wakeup(), self.deadline_book.next_wakeup()) if t is not None]
        times.extend(self.deadlines.values())
        times.extend(self.unconfirmed.values())
        times.extend(self.fence_at.values())
        times.extend(self.held_back.values())
        times.extend(self.fallbacks.approvals.values())
        times.extend(self.cordons.until.values())
        timed = self.next_time_timer()
        if timed is not None:
            times.append(timed)
        assignment = self.next_assignment_deadline()
        if assignment is not None:
            times.append(assignment)
        if self.queue and self.ending:
            # A pass when the next running attempt comes within the lookahead (once each: the
            # pass counts it, and only a non-empty queue asks, so an idle controller never spins).
            due = self.ending.next_end()
            horizon = self.ending.horizon(self.config.lookahead_s)
            if due is not None and horizon > 0:
                times.append(due - horizon)
        return min(times) if times else None

    # --- boot -----------------------------------------------------------------------------------

    def restore(self, snapshot: Snapshot, now: float) -> None:
        """Rebuild memory from the store. Agents must reconnect; unreported attempts wait for them."""
        self.epoch = int(snapshot.meta.get("session_epoch", "0"))
        self.event_seq = max(self.event_seq, snapshot.last_event_seq)
        self.access.restore(snapshot.access)
        for workflow in snapshot.workflows:
            self.workflows[workflow.id] = workflow
            if workflow.max_parallel and not workflow.state.terminal:
                track_groups(self, workflow, None)
            if workflow.idempotency_key:
                self.idempotency[(workflow.namespace, workflow.idempotency_key)] = workflow.id
            if workflow.state.terminal:
                self.lifecycle.moved(workflow.id, True, now)
        # Finished workflows a live load left in the store: only their keys (see store.live).
        for workflow_id, namespace, key in snapshot.evicted_keys:
            self.idempotency[(namespace, key)] = workflow_id
        running = {a.id: a for a in snapshot.attempts if a.state is AttemptState.RUNNING}
        for task in snapshot.tasks:
            # A task's row is not rewritten when its attempt starts (mark_running): its running
            # attempt's row says so.
            if task.state is T.ASSIGNED and task.current_attempt_id in running:
                task.state = T.RUNNING
                task.started_at = running[task.current_attempt_id].started_at
            self.track_task(task)
        self.count_unfinished(self.tasks)
        for agent in snapshot.agents:
            if agent.state in (AgentState.CONNECTED, AgentState.DRAINING):
                agent.state = AgentState.DISCONNECTED
            agent.last_seen = max(agent.last_seen, now)
            self.agents[agent.id] = agent
            restore_cordon(self, agent.id, agent.cordoned_until, agent.cordoned_by)
        # Unreported attempts wait for their agents: a ``stop`` one at least until its supervisor
        # has surely fenced itself (the controller cannot know when the agent last heard from it),
        # a ``keep`` one for its max_disconnect.
        adopt_deadline = now + max(self.config.adopt_grace_s, self.config.fence_total_s)
        for attempt in snapshot.attempts:
            self.attempts[attempt.id] = attempt
            if attempt.state.active:
                self.active.setdefault(attempt.agent_id, set()).add(attempt.id)
                if attempt.pulled:
                    self.deadlines[attempt.id] = now + self.config.pull_lease_s
                elif self.tasks[attempt.task_id].on_disconnect == "keep":
                    self.fence_at[attempt.id] = max(adopt_deadline, self.fence_deadline(attempt, now, now))
                else:
                    self.fence_at[attempt.id] = adopt_deadline
        # Completed tasks' attempts stay in the store (core/settled.py).
        self.settled.settle_all(snapshot.tasks, self.attempts, self.tasks)
        self.ordering.book.restore(snapshot.durations)
        self.checkpoints.restore(snapshot.checkpoints)
        self.run_book.restore(snapshot.runs)
        restore_sagas(self, snapshot.tasks)
        self.cache.restore(snapshot.cache_entries)
        for workflow in self.workflows.values():
            if workflow.state in (WorkflowState.RUNNING, WorkflowState.PAUSED, WorkflowState.CANCELLING):
                self.rank_workflow(workflow)
        # In the order they became ready, so FIFO among equals survives the restart.
        ready = [
            task
            for task in self.tasks.values()
            if task.state is T.READY and self.workflows[task.workflow_id].state in _QUEUEING
        ]
        ready.sort(key=lambda task: task.ready_at or 0.0)
        for task in ready:
            self.enqueue(task)
        self.restore_schedules(snapshot.schedules, snapshot.schedule_fires, now)

    # --- explanations ---------------------------------------------------------------------------

    def explain(self, task_id: str, now: float) -> Explanation:
        """Why this task is not running (or what it is doing)."""
        task = self.task(task_id)
        if task.rules is not None and (awaiting := approval_explanation(self, task, now)):
            return Explanation(awaiting)
        workflow = self.workflows[task.workflow_id]
        views = list(self.views.values())
        names = {agent.id: agent.name for agent in self.agents.values()}
        if task.state is T.PENDING:
            waiting = tuple(self.tasks[d].name for d in task.dependencies if self.tasks[d].state is not T.COMPLETED)
            if workflow.state is WorkflowState.PENDING:
                return Explanation("workflow not started (ExecuteWorkflow starts it)", waiting)
            if not waiting and (held := self.held_reason(task, now)):
                return Explanation(held)
            total = len(task.dependencies)
            return Explanation(f"waiting on dependencies: {', '.join(waiting)} ({len(waiting)} of {total})", waiting)
        if task.state is T.READY:
            demand = self.demand(task)
            summary, per_agent = explain(demand, views)
            verdicts = tuple((aid, names.get(aid, aid), reason) for aid, reason in per_agent)
            if self.cordons.until or self.cordons.manual:
                verdicts = cordon_verdicts(self, verdicts)
            unschedulable = bool(summary) and not summary.startswith("waiting for free capacity")
            last = self.last_plan
            planned = (
                self.plan_reason(task),
                now - last.at if last is not None else -1.0,
                describe_class(demand),
            )
            if workflow.state is WorkflowState.PAUSED:
                return Explanation("workflow paused", (), verdicts, unschedulable, *planned)
            if task.not_before is not None and task.not_before > now:
                return Explanation(
                    f"retry backoff: attempt {task.attempts} failed ({task.error}); "
                    f"next try in {task.not_before - now:.1f}s",
                    (),
                    verdicts,
                    unschedulable,
                    *planned,
                )
            held = last.held_reason(task.id, task.workflow_id) if last is not None else ""
            fair = fair_for(self.access.namespaces, views, self.active, self.attempts, self.tasks)
            summary = summary or (fair.over_quota(task.namespace, task.resources) if fair is not None else "")
            return Explanation(
                summary or held or "queued: will be placed on the next scheduling tick",
                (),
                verdicts,
                unschedulable,
                *planned,
            )
        if task.state in (T.ASSIGNED, T.RUNNING):
            where = names.get(task.agent_id or "", task.agent_id or "?")
            agent = self.agents.get(task.agent_id or "")
            attempt_id = task.current_attempt_id or ""
            if agent is not None and agent.state in (AgentState.LOST, AgentState.DISCONNECTED, AgentState.DRAINED):
                silent = now - agent.last_seen
                due = self.fence_at.get(attempt_id)
                fate = f"; requeued in {max(0.0, due - now):.1f}s unless it returns" if due is not None else ""
                where = f"{where} (attempt {task.attempts}); agent {agent.state}, silent {silent:.1f}s"
                return Explanation(f"{task.state} on {where}{fate}")
            return Explanation(f"{task.state} on {where} (attempt {task.attempts})")
        if task.cache_source:  # issue 10
            return Explanation(f"completed from the cache (CACHED): the result of {task.cache_source}")
        if task.failure_reason == "poison":
            return Explanation(f"{task.state} (poison): {task.error}")
        return Explanation(f"{task.state}" + (f": {task.error}" if task.error else ""))

    def plan_reason(self, task: Task) -> str:
        """What the last scheduling pass recorded for a READY task ("" for other tasks).

        Looked up through the task's demand class (:meth:`Plan.reason_for`), so it costs no queue
        walk and agrees with what the pass did.
        """
        if task.state is not T.READY:
            return ""
        if self.workflows[task.workflow_id].state not in _QUEUEING:
            return "not queued: its workflow is not running"
        last = self.last_plan
        if last is None:
            return "no scheduling pass yet"
        if task.not_before is not None and task.not_before > last.at:
            return "in retry backoff during the last pass"
        return last.reason_for(self.demand(task), task.ready_at, task.id)

    def waiting_reasons(self, tasks: list[Task], now: float) -> Iterator[tuple[Task, str, bool]]:
        """``(task, reason, unschedulable)`` for status listings; placement verdicts cached per demand."""
        cache: dict[object, tuple[str, bool]] = {}
        views: list[AgentView] = list(self.views.values())
        for task in tasks:
            if task.state is not T.READY:
                yield task, self.held_reason(task, now) if self.held and task.state is T.PENDING else "", False
                continue
            demand = self.demand(task)
            key = demand_class(demand)
            if key not in cache:
                summary, _ = explain(demand, views)
                cache[key] = (summary, bool(summary) and not summary.startswith("waiting for free capacity"))
            summary, unschedulable = cache[key]
            if task.rules is not None and task.rules.approval:
                summary, unschedulable = "waiting for approval", False
            elif self.workflows[task.workflow_id].state is WorkflowState.PAUSED:
                summary = "workflow paused"
            elif task.not_before is not None and task.not_before > now:
                summary = "retry backoff"
            yield task, summary, unschedulable

    # --- invariants -----------------------------------------------------------------------------

    def validate(self) -> None:
        """Check every invariant of the state; raises AssertionError naming the first broken one."""
        for task in self.tasks.values():
            workflow = self.workflows[task.workflow_id]
            queued = task.id in self.queue
            should_queue = task.state is T.READY and workflow.state in _QUEUEING and not awaits_approval(task)
            assert queued == should_queue, f"task {task.name}: queued={queued}, state {task.state}/{workflow.state}"
            if task.state in (T.ASSIGNED, T.RUNNING):
                attempt = self.attempts.get(task.current_attempt_id or "")
                assert attempt is not None and attempt.state.active, f"task {task.name} {task.state} without attempt"
            unfinished = sum(1 for d in task.dependencies if not dependency_done(self.tasks[d], task))
            assert unfinished == self.unfinished_deps[task.id], f"task {task.name}: dependency count"
            if task.state is not T.PENDING and not task.state.terminal:
                assert unfinished == 0, f"task {task.name} is {task.state} with unfinished dependencies"
        for workflow in self.workflows.values():
            counted = sum(self.counts[workflow.id].values())
            assert counted == len(workflow.task_ids) + self.sagas.hidden(workflow.id), f"workflow {workflow.id}: counts"
            if workflow.state.terminal:
                assert self.remaining(workflow.id) == 0, f"workflow {workflow.id} ended with live tasks"
        for attempt_id in self.fence_at.keys() | self.withdrawing.keys():
            assert self.attempts[attempt_id].state.active, (
                f"attempt {attempt_id}: fence or withdrawal of an ended attempt"
            )
        for attempt_id in self.unacknowledged.keys() | self.releasing:
            attempt = self.attempts[attempt_id]
            assert attempt.state is AttemptState.ASSIGNED, f"attempt {attempt_id}: awaits an ack but is {attempt.state}"
        for attempt in self.attempts.values():
            owned = attempt.id in self.active.get(attempt.agent_id, set())
            assert owned == attempt.state.active, f"attempt {attempt.id}: active index"
            if attempt.state.active:
                task = self.tasks[attempt.task_id]
                assert task.current_attempt_id == attempt.id, f"attempt {attempt.id} is not its task's current one"
        for agent_id, view in self.views.items():
            held = [self.attempts[a] for a in self.active.get(agent_id, ())]
            reserved = self.preempter.held_on(view)  # room freed by preemption victims, kept for the preemptor
            assert view.outstanding == len(held) + len(reserved), f"agent {agent_id}: outstanding {view.outstanding}"
            if view.outstanding > view.slots:
                assert agent_id in self.crowded, f"agent {agent_id}: prefetched work but not marked crowded"
            for name in ("cpu_cores", "memory_mb", "gpu_count"):
                total = sum(getattr(a.resources, name) for a in held) + sum(getattr(r, name) for r in reserved)
                assert abs(getattr(view.allocated, name) - total) < 1e-6, f"agent {agent_id}: {name} allocation"
