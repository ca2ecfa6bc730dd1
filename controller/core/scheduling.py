"""One scheduling pass: ``plan(view, now) -> Plan``, a pure function of a read-only view.

``plan`` walks the ready queue in its order, only for agent types that some agent has room for,
and places each task on the agent the placement pipeline (:mod:`~corral.controller.core.placement`)
picks. It allocates on *clones* of the agents so later placements in the same pass see earlier
ones; the caller (the state machine) applies the plan: it discards the placed ids from the queue
and allocates on its real views.

A task that fits nowhere right now is skipped rather than blocking the ones behind it, but a run of
``max_skips`` consecutive skips ends the pass, so one tick never scans a huge queue of tasks that
cannot run. The cost is O((placements + skips) * (log n + agents of the type)), never O(queue).

The plan records why tasks were left waiting **per demand class**, not per task, so a pass stays
O(placements + classes): the first time a class fails in a pass, the pipeline's explanation of it
against the pass's agents (at that moment) is its reason. :meth:`Plan.reason_for` maps a waiting
task to what the pass did with it, so explain reports what the scheduler actually decided.

Gangs and per-workflow concurrency limits (:mod:`~corral.controller.core.gangs`) and reservations
(:mod:`~corral.controller.core.reservations`) hook in through ``PlanView.rules``, ``reserved`` and
``stuck``; all are None or empty when no workflow uses them, so the pass then pays a flag check.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from corral.controller.core.fairshare import FairPicker, FairShare
from corral.controller.core.gangs import PassRules, admit
from corral.controller.core.model import Resources
from corral.controller.core.placement import (
    STRATEGIES,
    AgentView,
    Candidates,
    Demand,
    DemandClass,
    ScoreContext,
    choose,
    demand_class,
    explain,
)
from corral.controller.core.queues import OrderKey, ReadyQueue
from corral.controller.core.reservations import Reservation, hold

__all__ = ["Placement", "Plan", "PlanView", "Preemption", "Steal", "plan"]


@dataclass(frozen=True, slots=True)
class Placement:
    """Run ``task_id`` on ``agent_id`` with these GPU indexes."""

    task_id: str
    agent_id: str
    gpu_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Steal:
    """Ask ``agent_id`` to give back prefetched attempts it has not started (two-phase take-back).

    Only the agent's Released report requeues an attempt; a Started report keeps it there.
    """

    agent_id: str
    attempt_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Preemption:
    """Stop ``attempt_id`` (on ``agent_id``) to make room for ``for_task_id``.

    Added to the pass's plan by :func:`~corral.controller.core.preemption.preempt_pass`, which the
    machine runs right after :func:`plan` (and which sends the Cancels); see that module.
    """

    attempt_id: str
    agent_id: str
    for_task_id: str
    reason: str


@dataclass(slots=True)
class Plan:
    """What one scheduling pass decided at ``at``, and why it left the rest waiting."""

    at: float
    placements: list[Placement] = field(default_factory=list)
    steals: list[Steal] = field(default_factory=list)
    preemptions: list[Preemption] = field(default_factory=list)
    # The reason recorded for every demand class the pass tried and could not place.
    waiting: dict[DemandClass, str] = field(default_factory=dict)
    # Agent types the pass walked (some agent of the type had room when it began).
    considered: frozenset[str] = frozenset()
    # Types whose agents all filled up during the pass: their later tasks were not reached.
    filled: set[str] = field(default_factory=set)
    # Why the pass stopped before the end of the queue ("" when it did not).
    stopped: str = ""
    # Gang and concurrency-limit holds (gangs.py): reasons per task id and per workflow id.
    held_tasks: dict[str, str] = field(default_factory=dict)
    held_workflows: dict[str, str] = field(default_factory=dict)
    # A task that waited past reserve_after_s and did not fit (reservations.py reserves for it).
    stuck: str = ""
    # Agents whose pass window this pass filled, with that window (AgentView.grant).
    granted: dict[str, int] = field(default_factory=dict)

    def reason_for(self, demand: Demand, ready_at: float | None = None, task_id: str = "") -> str:
        """What this pass did about a waiting task with this demand.

        ``ready_at`` is when the task became ready: a task queued after the pass was not in it.
        """
        if ready_at is not None and ready_at > self.at:
            return "ready since the last scheduling pass; the next one will consider it"
        held = self.held_reason(task_id, demand.workflow_id)
        if held:
            return held
        found = self.waiting.get(demand_class(demand))
        if found is not None:
            return found
        agent_type = demand.agent_type
        if agent_type not in self.considered:
            return f"no agent running agent_type {agent_type!r} had room for new work"
        if agent_type in self.filled:
            return f"not reached: every agent running agent_type {agent_type!r} filled up in the pass"
        if self.stopped:
            return f"not reached: {self.stopped}"
        return "not reached in the pass (queued behind others, or in retry backoff)"

    def held_reason(self, task_id: str, workflow_id: str) -> str:
        """Why a gang or a concurrency limit held the task in this pass ("" when neither did)."""
        return self.held_tasks.get(task_id) or self.held_workflows.get(workflow_id) or ""


@dataclass(frozen=True, slots=True)
class PlanView:
    """The read-only inputs of a pass.

    ``demand(task_id)`` says what a queued task needs; ``agents`` are every agent's view (the
    pass clones those with room); ``running(workflow_id)`` counts a workflow's active attempts
    per agent id (spread scoring; asked only for workflows with spread tasks).
    """

    queue: ReadyQueue
    demand: Callable[[str], Demand]
    agents: Sequence[AgentView]
    strategy: str = "binpack"
    running: Callable[[str], Mapping[str, int]] | None = None
    max_skips: int = 256
    rules: PassRules | None = None  # gangs and concurrency limits; None when no workflow uses them
    reserved: Mapping[str, Reservation] | None = None  # agent id -> its reservation (reservations.py)
    stuck: Callable[[str], bool] | None = None  # whether a task that did not fit should reserve
    # Set only when several namespaces or a quota are in play: DRF order and quotas (fairshare.py).
    fair: FairShare | None = None


def plan(view: PlanView, now: float) -> Plan:
    """Placements for as many ready tasks as fit now, in queue order, with the reasons for the rest.

    Neither the agents nor the queue's contents are changed (the queue may promote tasks whose
    backoff passed by ``now``, which it would do anyway). Each placement is all-or-nothing: the
    task gets its whole requirement on one agent.
    """
    strategy = view.strategy
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown placement strategy {strategy!r} (known: {', '.join(STRATEGIES)})")
    result = Plan(at=now)
    reserved = view.reserved
    held: dict[str, tuple[AgentView, Resources, tuple[int, ...]]] = {}  # reserving task -> room held
    # Per agent type, only the clones that still have room: full agents drop out as they fill, so
    # each placement looks at the agents that could still take work, not the whole cluster.
    by_type: dict[str, list[AgentView]] = {}
    current: dict[str, AgentView] = {}  # every agent as the pass sees it (clones where it allocates)
    opened: list[AgentView] = []  # the clones, each with its pass window
    for agent in view.agents:
        if agent.has_room():
            clone = agent.clone()
            clone.window = agent.pass_window()
            opened.append(clone)
            if reserved and agent.id in reserved:  # only its task may use the reserved room
                held[reserved[agent.id].task_id] = (clone, *hold(clone, reserved[agent.id]))
            current[agent.id] = clone
            for agent_type in clone.agent_types:
                by_type.setdefault(agent_type, []).append(clone)
        else:
            current[agent.id] = agent
    result.considered = frozenset(by_type)
    if not by_type:
        result.stopped = "no agent had room for new work"
        return result
    candidates = Candidates({t: list(members) for t, members in by_type.items()})
    ctx = ScoreContext(current, view.running)
    queue = view.queue

    # Promote once up front: later walks then never move items between heaps mid-iteration.
    queue.promote(now)
    # Merge one candidate stream per agent type ourselves (rather than one merged stream) so a type
    # whose agents fill up can be dropped mid-pass without rewalking the others.
    streams: list[tuple[OrderKey, str, str, Iterator[str]]] = []
    for agent_type in sorted(by_type):
        stream = queue.candidates((agent_type,), now)
        first = next(stream, None)
        if first is not None:
            streams.append((queue.order_key(first), first, agent_type, stream))
    heapq.heapify(streams)

    placements = result.placements
    waiting = result.waiting
    rules = view.rules
    skips = 0
    picker = None if view.fair is None else FairPicker(view.fair, view.demand, queue, by_type, now)
    while streams or picker is not None:
        if skips >= view.max_skips:
            result.stopped = f"the pass ended after {skips} tasks in a row could not be placed"
            break
        if picker is None:
            _, task_id, agent_type, stream = heapq.heappop(streams)
        else:
            picked = picker.pop(waiting, by_type)
            if picked is None:
                break
            _, task_id, agent_type, stream = picked
        if agent_type not in by_type:
            result.filled.add(agent_type)
            continue  # every agent of this type filled up earlier in this pass
        demand = view.demand(task_id)
        key = demand_class(demand)
        mine = held.pop(task_id, None) if held else None
        if mine is not None:  # the reserving task itself: it may use the reserved room
            mine[0].release(mine[1], mine[2])
            waiting.pop(key, None)  # its class may have failed without the room
        group = None if rules is None else admit(rules, task_id, demand, view.demand, current.values(), strategy, ctx)
        if group is not None:
            for member, agent_id in group:  # a whole gang, on agents its trial chose
                agent = current[agent_id]
                placements.append(Placement(member, agent_id, agent.allocate(view.demand(member).resources)))
                if not agent.has_room():
                    _drop_full(by_type, agent, result.filled)
            if not by_type:
                break
            if rules is not None and rules.held >= rules.max_held:
                result.stopped = f"the pass ended after holding {rules.held} tasks (gangs, max_parallel)"
                break
        elif key in waiting:
            # Its class already failed in this pass, and placements only take capacity away.
            skips += 1
            _note_stuck(view, result, task_id)
        else:
            chosen = choose(demand, candidates.of(demand, key), strategy, ctx, prefiltered=True)
            if chosen is None:
                skips += 1
                waiting[key] = _reason(demand, list(current.values()))
                _note_stuck(view, result, task_id)
            else:
                skips = 0
                gpu_ids = chosen.allocate(demand.resources)
                placements.append(Placement(task_id, chosen.id, gpu_ids))
                if rules is not None:
                    rules.started(demand.workflow_id)
                if picker is not None:
                    picker.placed(demand)
                if demand.spread:
                    ctx.placed(demand.workflow_id, chosen)
                if not chosen.has_room():
                    _drop_full(by_type, chosen, result.filled)
                    if not by_type:
                        break
        if mine is not None and not (placements and placements[-1].task_id == task_id):
            mine[0].allocate(mine[1])  # not placed (it fits nowhere yet): the room stays reserved
        following = next(stream, None)
        if following is not None:
            heapq.heappush(streams, (queue.order_key(following), following, agent_type, stream))
    if rules is not None:
        result.held_tasks, result.held_workflows = rules.held_tasks, rules.held_workflows
    for clone in opened:
        if clone.outstanding >= clone.window:
            result.granted[clone.id] = clone.window
    return result


def _note_stuck(view: PlanView, result: Plan, task_id: str) -> None:
    if view.stuck is not None and not result.stuck and view.stuck(task_id):
        result.stuck = task_id


def _reason(demand: Demand, agents: Sequence[AgentView]) -> str:
    """The pipeline's summary of why ``demand`` fits on none of the pass's agents right now."""
    summary, _ = explain(demand, agents)
    return summary or "no agent could take it in the pass"


def _drop_full(by_type: dict[str, list[AgentView]], full: AgentView, filled: set[str]) -> None:
    for full_type in full.agent_types:
        members = [v for v in by_type.get(full_type, ()) if v is not full]
        if members:
            by_type[full_type] = members
        else:
            by_type.pop(full_type, None)
            filled.add(full_type)
