"""One scheduling step: match ready tasks to agents, as a pure function of a read-only view.

``plan`` walks the ready queue in effective-priority order, only for agent types that some agent
has room for, and places each task on the agent :func:`~corral.controller.core.placement.choose`
picks. It allocates on *clones* of the agents so later placements in the same step see earlier
ones; the caller (the state machine) commits the result: it discards the placed ids from the queue
and allocates on its real views.

A task that fits nowhere right now is skipped rather than blocking the ones behind it, but a run of
``max_skips`` consecutive skips ends the step, so one tick never scans a huge queue of tasks that
cannot run. The cost is O((placements + skips) * (log n + agents of the type)), never O(queue).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from corral.controller.core.placement import STRATEGIES, AgentView, Demand, choose
from corral.controller.core.queues import ReadyQueue

__all__ = ["Placement", "plan"]


@dataclass(frozen=True, slots=True)
class Placement:
    """Run ``task_id`` on ``agent_id`` with these GPU indexes."""

    task_id: str
    agent_id: str
    gpu_ids: tuple[int, ...]


def plan(
    queue: ReadyQueue,
    demands: Callable[[str], Demand],
    agents: Sequence[AgentView],
    now: float,
    strategy: str = "binpack",
    max_skips: int = 256,
) -> list[Placement]:
    """Placements for as many ready tasks as fit now, in effective-priority order.

    ``demands(task_id)`` says what a queued task needs. Neither ``agents`` nor the queue's contents
    are changed (the queue may promote tasks whose backoff passed by ``now``, which it would do
    anyway). Each placement is all-or-nothing: the task gets its whole requirement on one agent.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown placement strategy {strategy!r} (known: {', '.join(STRATEGIES)})")
    # Per agent type, only the clones that still have room: full agents drop out as they fill, so
    # each placement looks at the agents that could still take work, not the whole cluster.
    by_type: dict[str, list[AgentView]] = {}
    for agent in agents:
        if agent.has_room():
            view = agent.clone()
            for agent_type in view.agent_types:
                by_type.setdefault(agent_type, []).append(view)
    if not by_type:
        return []

    # Promote once up front: later walks then never move items between heaps mid-iteration.
    queue.promote(now)
    # Merge one candidate stream per agent type ourselves (rather than one merged stream) so a type
    # whose agents fill up can be dropped mid-step without rewalking the others.
    streams: list[tuple[tuple[float, float, int], str, str, Iterator[str]]] = []
    for agent_type in sorted(by_type):
        stream = queue.candidates((agent_type,), now)
        first = next(stream, None)
        if first is not None:
            streams.append((queue.order_key(first), first, agent_type, stream))
    heapq.heapify(streams)

    placements: list[Placement] = []
    skips = 0
    while streams and skips < max_skips:
        _, task_id, agent_type, stream = heapq.heappop(streams)
        if agent_type not in by_type:
            continue  # every agent of this type filled up earlier in this step
        demand = demands(task_id)
        chosen = choose(demand, by_type.get(demand.agent_type, ()), strategy)
        if chosen is None:
            skips += 1
        else:
            skips = 0
            gpu_ids = chosen.allocate(demand.resources)
            placements.append(Placement(task_id, chosen.id, gpu_ids))
            if not chosen.has_room():
                for full_type in chosen.agent_types:
                    members = [v for v in by_type.get(full_type, ()) if v is not chosen]
                    if members:
                        by_type[full_type] = members
                    else:
                        by_type.pop(full_type, None)
                if not by_type:
                    break
        following = next(stream, None)
        if following is not None:
            heapq.heappush(streams, (queue.order_key(following), following, agent_type, stream))
    return placements
