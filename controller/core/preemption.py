"""Preemption: stop running preemptible work of lower base priority to start a task that fits nowhere.

A pass (:func:`preempt_pass`, run after the ordinary placement pass) looks at the head of the
ready queue for tasks the pass could not place. For each it picks, on ONE agent, the smallest set
of running attempts whose tasks are ``preemptible``, of strictly lower BASE priority (ageing never
counts: a long-waiting low-priority task must not be able to evict anything) and preempted fewer
than their ``max_preemptions`` times, such that the task fits on that agent once they are gone.
Victims are taken lowest priority first, then most recently started (least work lost), and the set
is then pruned of any victim the task does not need.

The victims get a Cancel (SIGTERM, then the kill grace). Until every one of them has ended, the
resources each frees are held by a placeholder allocation on the agent's view, so no other task
takes them (the reservation); once all have ended (reported, or lost through their fence/lease),
:func:`start_preemptors` places the preemptor on that agent at once. A preempted attempt's task is
requeued without spending a retry or a poison count, and its ``preemptions`` counter grows.

No cycles: a victim's base priority is strictly lower than its preemptor's, so a preemptor can
never be chosen as a victim for one of its victims (the priority order is a strict order and base
priorities never change). Gangs (when they exist) must be preempted whole: see :func:`_expand`.

Pure: no clock, no I/O; the machine calls in with ``now``. Memory only: after a controller restart
the cancelled victims report as given back and are requeued as such (not counted as preempted).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import TYPE_CHECKING

from corral.controller.core.events import Assign, CancelAttempts
from corral.controller.core.model import AgentState, Attempt, AttemptState, Resources, Task, TaskState
from corral.controller.core.placement import AgentView, Demand, fits_now
from corral.controller.core.scheduling import Plan, Preemption

if TYPE_CHECKING:
    from corral.controller.core.attempt_ops import AttemptOps

__all__ = ["Candidate", "Pending", "Preempter", "choose_victims", "preempt_pass", "preemption_note", "start_preemptors"]

# Queued tasks looked at per pass as possible preemptors (the head of the queue only: a pass
# stays bounded however long the queue is).
MAX_PREEMPTORS_SCANNED = 16


@dataclass(frozen=True, slots=True)
class Candidate:
    """A running attempt that may be preempted: its base priority and when it started."""

    attempt_id: str
    task_id: str
    name: str
    priority: int
    started_at: float | None  # None: assigned, not started yet (nothing lost by stopping it)
    resources: Resources
    gpu_ids: tuple[int, ...]
    assigned_at: float = 0.0  # breaks ties between attempts not started yet: the newest goes first


@dataclass(slots=True)
class Pending:
    """A preemption in progress: victims still to end, and the placeholders holding freed room."""

    for_task_id: str
    agent_id: str
    victims: set[str]
    reason: str
    count: int
    # Placeholders on the agent's view: (the view, what it holds). A view rebuilt since (the agent
    # reconnected) no longer holds them, so only those on the current view are released.
    held: list[tuple[AgentView, Resources, tuple[int, ...]]] = field(default_factory=list)


class Preempter:
    """The machine's preemption bookkeeping. ``enabled`` turns on with the first preemptible task,
    so a cluster that never uses preemption pays one flag check per pass."""

    def __init__(self) -> None:
        self.enabled = False
        self.pending: dict[str, Pending] = {}  # preemptor task id -> its preemption
        self.victim_of: dict[str, str] = {}  # victim attempt id -> preemptor task id

    def reason_for_victim(self, attempt_id: str) -> str | None:
        """Why this active attempt is being stopped, or None when it is not a victim."""
        owner = self.victim_of.get(attempt_id)
        return self.pending[owner].reason if owner is not None else None

    def victim_ended(self, attempt: Attempt, view: AgentView | None) -> None:
        """A victim's attempt ended (any way): hold what it freed for the preemptor."""
        owner = self.victim_of.pop(attempt.id, None)
        if owner is None:
            return
        pending = self.pending[owner]
        pending.victims.discard(attempt.id)
        if view is not None and view.id == pending.agent_id:
            gpu_ids = view.allocate(attempt.resources)
            pending.held.append((view, attempt.resources, gpu_ids))

    def held_on(self, view: AgentView) -> list[Resources]:
        """The placeholders reserving room on this view (for the machine's invariant checks)."""
        return [r for p in self.pending.values() for v, r, _ in p.held if v is view]


def choose_victims(demand: Demand, view: AgentView, candidates: Sequence[Candidate], priority: int) -> list[Candidate]:
    """The minimal victims on ``view`` after which ``demand`` fits and runs at once ([] if none do).

    Only candidates of base priority below ``priority`` qualify; they are taken lowest priority
    first, then most recently started, and any the demand turns out not to need are dropped.
    """
    eligible = sorted(
        (c for c in candidates if c.priority < priority),
        key=lambda c: (c.priority, -(c.started_at if c.started_at is not None else float("inf")), -c.assigned_at),
    )
    trial = view.clone()
    chosen: list[Candidate] = []
    for candidate in eligible:
        if _runs_now(demand, trial):
            break
        trial.release(candidate.resources, candidate.gpu_ids)
        chosen.append(candidate)
    if not chosen or not _runs_now(demand, trial):
        return []
    # Prune: a victim taken early (low priority) may be unneeded once a bigger one was added.
    for candidate in list(reversed(chosen)):
        rest = [c for c in chosen if c is not candidate]
        check = view.clone()
        for c in rest:
            check.release(c.resources, c.gpu_ids)
        if _runs_now(demand, check):
            chosen = rest
    return _expand(chosen)


def _expand(victims: list[Candidate]) -> list[Candidate]:
    """Hook for gangs: a victim in a gang must bring its whole gang (no gangs yet: unchanged)."""
    return victims


def _runs_now(demand: Demand, view: AgentView) -> bool:
    """Fits with a free slot (starts now, not queued behind the agent's running work)."""
    return view.outstanding < view.slots and fits_now(demand, view)


def _cap(ops: AttemptOps, task: Task) -> int:
    return task.max_preemptions if task.max_preemptions is not None else ops.config.max_preemptions


def _candidates(ops: AttemptOps) -> dict[str, list[Candidate]]:
    """Per connected agent, its active attempts that may be preempted now."""
    found: dict[str, list[Candidate]] = {}
    victim_of = ops.preempter.victim_of
    for agent_id, held in ops.active.items():
        view = ops.views.get(agent_id)
        if view is None or view.state is not AgentState.CONNECTED or view.held_back:
            continue
        for attempt_id in held:
            attempt = ops.attempts[attempt_id]
            task = ops.tasks[attempt.task_id]
            if (
                not task.preemptible
                or attempt.pulled
                or attempt_id in victim_of
                or task.current_attempt_id != attempt_id
                or task.preemptions >= _cap(ops, task)
            ):
                continue
            found.setdefault(agent_id, []).append(
                Candidate(
                    attempt_id,
                    task.id,
                    task.name,
                    task.priority,
                    attempt.started_at,
                    attempt.resources,
                    attempt.gpu_ids,
                    attempt.assigned_at,
                )
            )
    return found


def preempt_pass(ops: AttemptOps, result: Plan, now: float) -> None:
    """After a placement pass: start preemptions for queued tasks that fit nowhere (``result.preemptions``)."""
    preempter = ops.preempter
    if not ops.queue:
        return
    # Only the head of the queue (lazily: never a walk of the whole queue), and only then the
    # running attempts (O(active)): most passes with nothing waiting stop at the first line.
    head = islice(ops.queue.candidates(ops.queue.agent_types(), now), MAX_PREEMPTORS_SCANNED)
    waiting = [ops.tasks[t] for t in head if t not in preempter.pending]
    if not waiting:
        return
    by_agent = _candidates(ops)
    if not by_agent:
        return
    lowest = min(c.priority for cands in by_agent.values() for c in cands)
    for task in waiting:
        if task.priority <= lowest:
            continue
        demand = ops.demand(task)
        best: tuple[tuple[int, int], str, list[Candidate]] | None = None
        for agent_id, cands in by_agent.items():
            view = ops.views[agent_id]
            if _runs_now(demand, view):
                best = None  # it fits somewhere now: the next pass places it, nothing to stop
                break
            victims = choose_victims(demand, view, cands, task.priority)
            if victims:
                rank = (len(victims), sum(v.priority for v in victims))
                if best is None or rank < best[0]:
                    best = (rank, agent_id, victims)
        if best is None:
            continue
        _, agent_id, victims = best
        _start(ops, result, task, agent_id, victims)
        chosen = {v.attempt_id for v in victims}
        by_agent[agent_id] = [c for c in by_agent[agent_id] if c.attempt_id not in chosen]
        if not by_agent[agent_id]:
            del by_agent[agent_id]
        if not by_agent:
            break


def _start(ops: AttemptOps, result: Plan, task: Task, agent_id: str, victims: list[Candidate]) -> None:
    reason = f"preempted by {task.name} (priority {task.priority}) of workflow {task.workflow_id}"
    preempter = ops.preempter
    preempter.pending[task.id] = Pending(task.id, agent_id, {v.attempt_id for v in victims}, reason, len(victims))
    for victim in victims:
        preempter.victim_of[victim.attempt_id] = task.id
        result.preemptions.append(Preemption(victim.attempt_id, agent_id, task.id, reason))
    ops.emit(CancelAttempts(agent_id, [v.attempt_id for v in victims], False, ops.config.kill_grace_s))


def preemption_note(ops: AttemptOps, task: Task) -> str:
    """For explain: "preempting N tasks on agent X" for a preemptor waiting for its victims,
    "preempted by ..." for a victim being stopped, else ""."""
    preempter = ops.preempter
    pending = preempter.pending.get(task.id)
    if pending is None:
        why = preempter.reason_for_victim(task.current_attempt_id or "")
        return f"{why}: stopping (SIGTERM, then kill after {ops.config.kill_grace_s:g}s)" if why else ""
    agent = ops.agents.get(pending.agent_id)
    where = agent.name if agent is not None else pending.agent_id
    waiting = len(pending.victims)
    return f"preempting {pending.count} tasks on agent {where} ({waiting} still stopping; the room is reserved)"


def start_preemptors(ops: AttemptOps, now: float) -> None:
    """Place every preemptor whose victims have all ended, on the room they freed."""
    preempter = ops.preempter
    done = [p for p in preempter.pending.values() if not p.victims]
    for pending in done:
        del preempter.pending[pending.for_task_id]
        view = ops.views.get(pending.agent_id)
        for held_view, resources, gpu_ids in pending.held:
            if held_view is view:
                held_view.release(resources, gpu_ids)
        task = ops.tasks[pending.for_task_id]
        if task.state is not TaskState.READY or task.id not in ops.queue or view is None:
            continue  # cancelled, placed elsewhere, or the agent went away: the next pass decides
        if not _runs_now(ops.demand(task), view) or ops.fails_for_secrets(task, now):
            continue
        ops.queue.discard(task.id)
        gpu_ids = view.allocate(task.resources)
        ops.emit(Assign(view.id, [ops.dispatch(task, view.id, gpu_ids, now, pulled=False)]))


def preempted(ops: AttemptOps, attempt: Attempt, task: Task, now: float) -> None:
    """A victim reported its end: requeue its task without spending a retry; count it."""
    reason = ops.preempter.reason_for_victim(attempt.id) or "preempted"
    task.preemptions += 1
    task.last_preemption = reason
    ops.end_attempt(attempt, AttemptState.CANCELLED, now, reason)
    ops.make_ready(task, now, kind="preempted", reason=reason)
