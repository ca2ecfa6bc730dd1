"""A workflow's queue order searched on its expected durations: a plan that beats both list schedules.

The queue's default score (:mod:`~corral.controller.core.rank`: upward rank plus a share of the
path behind a task) is a one-shot rule. On a workflow bound by total work rather than by its
critical path it can lose to plain submission order: epigenomics, 17 chains on 8 slots, runs
1.05x the FIFO list schedule under it. When a workflow's durations are known (estimates or
learned), :func:`searched_scores` therefore simulates the order the runtime will follow, a
greedy list schedule on the fleet's slots (a free slot takes the ready task of highest score),
and improves it with forward-backward passes (Tormos and Lova's "justification" for
resource-constrained project scheduling):

1. schedule the *reversed* graph greedily, the task that finished last going first; its times
   read backwards are a right-justified schedule;
2. schedule the graph forward again, earliest right-justified start first.

Each pass keeps the work packed and pulls the stragglers of the last schedule forward; a round
that does not shorten the makespan ends the search from that seed. Two seeds are searched: the
default score and submission order (FIFO, which wins where the default loses). The best
schedule found becomes the order: ``score = makespan - start`` (the plan's time left when the
task starts: the same units as an upward rank, and a greedy list schedule keyed by it
reproduces that schedule exactly).

Measured on the six WfCommons traces and four random layered DAGs (zero-overhead list schedules
on 8 slots, scale 0.01): geometric mean over the ten, against the better of FIFO and
critical-path first, 1.0047 with the default score and 0.9905 searched (epigenomics 1.049 ->
0.941, cycles 0.992 -> 0.967, one random DAG 1.005 -> 0.997); docs/DECISIONS.md has the table.

Bounded, because it runs in the tick that starts the workflow: nothing is searched for a
workflow over :data:`MAX_TASKS` tasks, for one the default already schedules within
:data:`NEAR_BOUND` of the lower bound (one simulation, O(V log V), decides that), or when the
fleet has no slots; the search stops after :data:`BUDGET_TASKS` simulated task starts; and the
default stays unless the search gains at least :data:`MIN_GAIN`. Pure and deterministic: the
same graph, durations and slots give the same order on every controller and in the simulator.
"""

from __future__ import annotations

import heapq
from array import array
from collections.abc import Sequence

from corral.controller.core.dag import Dag

__all__ = ["BUDGET_TASKS", "MAX_TASKS", "MIN_GAIN", "NEAR_BOUND", "searched_scores"]

MAX_TASKS = 1_000  # larger ones keep the default score: gains shrink with size, the cost does not
BUDGET_TASKS = 10_000  # simulated task starts per search (~10 ms here), seeds and directions together
NEAR_BOUND = 0.01  # the default within 1% of max(critical path, work / slots): nothing to gain
MIN_GAIN = 0.005  # a searched order replaces the default only when its makespan is 0.5% shorter
_ROUNDS = 8  # forward-backward rounds per seed at most (the traces converge within 5)


def searched_scores(
    dag: Dag, seconds: Sequence[float], rank: Sequence[float], score: Sequence[float], slots: int
) -> array[float] | None:
    """A better queue score for the workflow than ``score``, or None to keep it.

    ``seconds[i]``: the expected duration of position ``i`` (finite, >= 0); ``rank`` and ``score``:
    the upward ranks and default score :func:`~corral.controller.core.rank.ranks_by_position` gave
    for those durations (the highest rank is the critical path); ``slots``: the attempts the fleet
    can run at once for the workflow.
    """
    size = dag.size
    if slots <= 0 or size <= slots or size > MAX_TASKS:
        return None
    forward = _Graph(dag.starts, dag.children, dag.parents)
    start = array("d", bytes(8 * size))
    base = forward.schedule(seconds, [-s for s in score], slots, start)
    bound = max(max(rank, default=0.0), sum(seconds) / slots)
    if base <= bound * (1.0 + NEAR_BOUND):
        return None
    budget = BUDGET_TASKS - size
    backward = forward.reversed()
    best, best_start = base, start
    fifo_start = array("d", bytes(8 * size))
    seeds = [start]
    if budget >= size:
        budget -= size
        fifo = forward.schedule(seconds, range(size), slots, fifo_start)
        seeds.append(fifo_start)
        if fifo < best:
            best, best_start = fifo, fifo_start
    for seed in seeds:
        previous = float("inf")
        current = seed
        for _ in range(_ROUNDS):
            if budget < 2 * size:
                break
            budget -= 2 * size
            # Backward: the task that ended last goes first; its mirror is right-justified.
            mirrored = array("d", bytes(8 * size))
            span = backward.schedule(seconds, [-(current[i] + seconds[i]) for i in range(size)], slots, mirrored)
            keys = [span - mirrored[i] - seconds[i] for i in range(size)]
            following = array("d", bytes(8 * size))
            makespan = forward.schedule(seconds, keys, slots, following)
            if makespan < best:
                best, best_start = makespan, following
            if makespan >= previous:
                break
            previous = makespan
            current = following
    if best > base * (1.0 - MIN_GAIN):
        return None
    plan = array("d", bytes(8 * size))
    for i in range(size):
        plan[i] = best - best_start[i]
    return plan


class _Graph:
    """A graph in CSR form (``children[starts[i]:starts[i + 1]]``) with its in-degrees."""

    __slots__ = ("children", "fan_in", "starts")

    def __init__(self, starts: array[int], children: array[int], fan_in: array[int]) -> None:
        self.starts = starts
        self.children = children
        self.fan_in = fan_in

    def reversed(self) -> _Graph:
        """The same graph with every edge turned around (parents become children)."""
        size = len(self.fan_in)
        starts, children = self.starts, self.children
        out_degree = array("i", bytes(4 * size))
        back_starts = array("i", bytes(4 * (size + 1)))
        for node in range(size):
            out_degree[node] = starts[node + 1] - starts[node]
            for j in range(starts[node], starts[node + 1]):
                back_starts[children[j] + 1] += 1
        for i in range(size):
            back_starts[i + 1] += back_starts[i]
        fill = array("i", back_starts)
        back_children = array("i", bytes(4 * len(children)))
        for node in range(size):
            for j in range(starts[node], starts[node + 1]):
                child = children[j]
                back_children[fill[child]] = node
                fill[child] += 1
        return _Graph(back_starts, back_children, out_degree)

    def schedule(self, seconds: Sequence[float], keys: Sequence[float], slots: int, start: array[float]) -> float:
        """A greedy list schedule: a free slot takes the ready task of lowest key (ties: position).

        Writes each task's start into ``start`` and returns the makespan. Tasks ending at the same
        instant all release their children before any start, as in the bench's references.
        """
        starts, children = self.starts, self.children
        waiting = array("i", self.fan_in)
        ready = [(keys[i], i) for i in range(len(waiting)) if not waiting[i]]
        heapq.heapify(ready)
        running: list[tuple[float, int]] = []
        push, pop = heapq.heappush, heapq.heappop
        now = makespan = 0.0
        while ready or running:
            while ready and len(running) < slots:
                task = pop(ready)[1]
                start[task] = now
                end = now + seconds[task]
                if end > makespan:
                    makespan = end
                push(running, (end, task))
            now = running[0][0]
            while running and running[0][0] <= now:
                task = pop(running)[1]
                for j in range(starts[task], starts[task + 1]):
                    child = children[j]
                    waiting[child] -= 1
                    if not waiting[child]:
                        push(ready, (keys[child], child))
        return makespan
