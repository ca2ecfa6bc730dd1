"""DAG analysis of a workflow: execution stages, critical path and parallelism.

The input is a graph that :func:`corral.controller.core.graph.graph_problems` already accepted
(unique names, known dependencies, no cycle). The same function computes the *planned* critical
path (durations = estimates) and the *executed* one (durations = measured run times).

One Kahn-style pass over integer indexes does everything: it is linear in tasks + edges (plus a
sort per stage to keep submission order), which keeps a 100,000-task workflow well under a second.
networkx would build a graph of Python dicts first and is several times slower here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["ExecutionPlan", "Stage", "analyze"]


@dataclass(frozen=True, slots=True)
class Stage:
    """One topological generation: tasks whose dependencies all lie in earlier stages."""

    index: int
    task_names: tuple[str, ...]  # in submission order
    estimated_duration_s: float  # the longest estimate in the stage


@dataclass(frozen=True, slots=True)
class ExecutionPlan:
    """The shape of a workflow: how deep, how wide, and which chain of tasks bounds its run time."""

    stages: tuple[Stage, ...]
    critical_path: tuple[str, ...]
    estimated_duration_s: float  # sum of the durations along the critical path
    parallelism_factor: float  # total work / critical path length, >= 1.0
    task_count: int
    total_work_s: float
    roots: tuple[str, ...]
    leaves: tuple[str, ...]
    max_width: int
    depth: int


def _duration(value: float) -> float:
    # Negative or NaN durations (a bad estimate, a clock step in a measurement) count as zero
    # rather than corrupting the longest-path computation; `value > 0` is False for NaN.
    return float(value) if value > 0 else 0.0


def analyze(names: Sequence[str], dependencies: Sequence[Sequence[str]], durations: Sequence[float]) -> ExecutionPlan:
    """Analyse a valid DAG given parallel sequences of task names, dependency names and durations.

    Stages are the topological generations, names in submission order within each stage. The
    critical path is the longest path weighted by ``durations``; when every duration is zero each
    task weighs 1, so the path is the longest by task count. ``parallelism_factor`` divides total
    work by the critical path length under the same weights.

    Raises ``ValueError`` when the sequences differ in length, a dependency is unknown or the graph
    has a cycle (callers are expected to have run ``graph_problems`` first).
    """
    n = len(names)
    if len(dependencies) != n or len(durations) != n:
        raise ValueError(
            f"names, dependencies and durations differ in length ({n}, {len(dependencies)}, {len(durations)})"
        )
    if n == 0:
        return ExecutionPlan((), (), 0.0, 1.0, 0, 0.0, (), (), 0, 0)

    index = {name: i for i, name in enumerate(names)}
    if len(index) != n:
        raise ValueError("task names are not unique")
    preds: list[list[int]] = [[] for _ in range(n)]
    children: list[list[int]] = [[] for _ in range(n)]
    for i, deps in enumerate(dependencies):
        mine = preds[i]
        for dep in deps:
            j = index.get(dep)
            if j is None:
                raise ValueError(f"task {names[i]!r} depends on unknown task {dep!r}")
            mine.append(j)
            children[j].append(i)

    measured = [_duration(d) for d in durations]
    total_measured = sum(measured)
    # With no durations at all, weigh each task 1 so the critical path is the longest chain.
    weights = measured if total_measured > 0 else [1.0] * n
    total_weight = total_measured if total_measured > 0 else float(n)

    # Kahn by generations. `dist[i]` is the heaviest path ending at i (inclusive); `best[i]` is the
    # predecessor on it. Predecessors are all final before i is reached, so one pass suffices.
    remaining = [len(p) for p in preds]
    dist = [0.0] * n
    best = [-1] * n
    current = [i for i in range(n) if remaining[i] == 0]
    stages: list[Stage] = []
    seen = 0
    while current:
        stage_max = 0.0
        following: list[int] = []
        for i in current:
            longest = 0.0
            pick = -1
            for p in preds[i]:
                d = dist[p]
                # On ties keep the earliest-submitted predecessor, so the path is deterministic.
                if pick == -1 or d > longest or (d == longest and p < pick):
                    longest = d
                    pick = p
            dist[i] = longest + weights[i]
            best[i] = pick
            if measured[i] > stage_max:
                stage_max = measured[i]
            for c in children[i]:
                remaining[c] -= 1
                if remaining[c] == 0:
                    following.append(c)
        seen += len(current)
        stages.append(Stage(len(stages), tuple(names[i] for i in current), stage_max))
        following.sort()
        current = following
    if seen != n:
        raise ValueError("the dependency graph has a cycle")

    end = 0
    for i in range(1, n):
        if dist[i] > dist[end]:
            end = i
    path: list[int] = []
    node = end
    while node != -1:
        path.append(node)
        node = best[node]
    path.reverse()

    critical_weight = dist[end]
    factor = total_weight / critical_weight if critical_weight > 0 else 1.0
    return ExecutionPlan(
        stages=tuple(stages),
        critical_path=tuple(names[i] for i in path),
        estimated_duration_s=sum(measured[i] for i in path),
        # Rounding in the two sums can put a single chain a hair under 1.0.
        parallelism_factor=max(1.0, factor),
        task_count=n,
        total_work_s=total_measured,
        roots=tuple(names[i] for i in range(n) if not preds[i]),
        leaves=tuple(names[i] for i in range(n) if not children[i]),
        max_width=max(len(s.task_names) for s in stages),
        depth=len(stages),
    )
