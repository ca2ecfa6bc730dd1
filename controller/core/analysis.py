"""DAG analysis of a workflow: execution stages, critical path and parallelism.

The input is a graph that :func:`corral.controller.core.graph.graph_problems` already accepted
(unique names, known dependencies, no cycle). The same function computes the *planned* critical
path (durations = estimates) and the *executed* one (durations = measured run times).

It walks a :class:`~corral.controller.core.dag.Dag` (flat arrays by position: no lists per task,
which a 200k-task submission paid at its peak), linear in tasks + edges: stages are the
generations bucketed in submission order, the critical path is :meth:`Dag.longest_path`.
networkx would build a graph of Python dicts first and is several times slower here.

:func:`dependency_insights` is the heavier, user-facing part, for AnalyzeDependencies only (never
on the planning path): the dependencies a transitive reduction removes, and each task's immediate
dominator. Dominators come from networkx (imported lazily, only there); the reduction is a bitset
pass of our own, checked against ``networkx.transitive_reduction`` in the tests: networkx's takes
O(tasks x edges) Python steps (24 s on a 2,000-task DAG with a long chain), this one 0.08 s.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from corral.controller.core.dag import Dag, DagCycleError

#: Bounds of :func:`dependency_insights`: above them it computes nothing (memory grows with
#: tasks squared / 8 bytes at worst, 50 MB at the bound; time with edges x tasks / 64).
MAX_INSIGHT_TASKS = 20_000
MAX_INSIGHT_EDGES = 200_000

__all__ = [
    "MAX_INSIGHT_EDGES",
    "MAX_INSIGHT_TASKS",
    "DependencyInsights",
    "ExecutionPlan",
    "Stage",
    "analyze",
    "dependency_insights",
    "path_weights",
]


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


def path_weights(durations: Iterable[float]) -> tuple[array[float], array[float], float]:
    """``(measured, weights, total measured)`` of tasks for a longest-path walk.

    Negative or NaN durations (a bad estimate, a clock step in a measurement) count as zero rather
    than corrupting the walk (``value > 0`` is False for NaN). With nothing measured at all each task
    weighs 1, so the heaviest path is the longest chain.
    """
    measured = array("d", (value if value > 0 else 0.0 for value in durations))
    total = sum(measured)
    return measured, (measured if total > 0 else array("d", [1.0]) * len(measured)), total


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

    try:
        dag = Dag(names, dependencies, strict=True)
    except DagCycleError:
        raise ValueError("the dependency graph has a cycle") from None

    measured, weights, total_measured = path_weights(durations)
    total_weight = total_measured if total_measured > 0 else float(n)

    # Stages are the topological generations: a task's is one past its latest dependency's.
    # Positions in flat arrays (core/dag.py): a 200k-task submission is planned while its records
    # are being built, and lists of lists per task cost ~300 bytes each.
    starts = dag.starts
    generation = dag.generations()
    members: list[array[int]] = [array("i") for _ in range(max(generation) + 1)]
    for i in range(n):
        members[generation[i]].append(i)  # submission order within each stage
    stages: list[Stage] = []
    for index, stage in enumerate(members):
        stage_max = 0.0
        for i in stage:
            if measured[i] > stage_max:
                stage_max = measured[i]
        stages.append(Stage(index, tuple(names[i] for i in stage), stage_max))
    del members, generation

    path = dag.longest_path(weights)
    critical_weight = 0.0
    for i in path:
        critical_weight += weights[i]
    factor = total_weight / critical_weight if critical_weight > 0 else 1.0
    return ExecutionPlan(
        stages=tuple(stages),
        critical_path=tuple(names[i] for i in path),
        estimated_duration_s=sum(measured[i] for i in path),
        # Rounding in the two sums can put a single chain a hair under 1.0.
        parallelism_factor=max(1.0, factor),
        task_count=n,
        total_work_s=total_measured,
        roots=tuple(names[i] for i in range(n) if not dag.parents[i]),
        leaves=tuple(names[i] for i in range(n) if starts[i] == starts[i + 1]),
        max_width=max(len(s.task_names) for s in stages),
        depth=len(stages),
    )


@dataclass(frozen=True, slots=True)
class DependencyInsights:
    """What a workflow's graph says beyond its plan (see :func:`dependency_insights`)."""

    #: (dependency, dependent) pairs already implied through another path, in submission order.
    redundant_edges: tuple[tuple[str, str], ...] = ()
    #: task -> its immediate dominator, for tasks dominated by another task (see dependency_insights).
    immediate_dominators: Mapping[str, str] = field(default_factory=dict)
    #: False when the graph is over MAX_INSIGHT_TASKS or MAX_INSIGHT_EDGES (nothing was computed).
    computed: bool = True


def dependency_insights(names: Sequence[str], dependencies: Sequence[Sequence[str]]) -> DependencyInsights:
    """Redundant dependencies and immediate dominators of a valid DAG (``analyze``'s input).

    - A dependency ``a -> b`` is **redundant** when ``b`` also depends on ``a`` through another path
      (``a -> c -> ... -> b``): the transitive reduction drops it. Harmless, but it says nothing.
    - The **immediate dominator** of ``b`` is the nearest task every path from a root to ``b`` goes
      through (a virtual root stands above all roots). Tasks only that virtual root dominates (the
      roots, and tasks reachable from two roots by disjoint paths) are left out. A dominator
      failing means everything it dominates is skipped: the chokepoints of a workflow.

    Above :data:`MAX_INSIGHT_TASKS` tasks or :data:`MAX_INSIGHT_EDGES` dependencies it returns
    ``computed=False`` and nothing else. Raises ``ValueError`` like :func:`analyze` on a graph
    that is not a DAG of known names.
    """
    n = len(names)
    if len(dependencies) != n:
        raise ValueError(f"names and dependencies differ in length ({n}, {len(dependencies)})")
    edge_count = sum(len(deps) for deps in dependencies)
    if n > MAX_INSIGHT_TASKS or edge_count > MAX_INSIGHT_EDGES:
        return DependencyInsights(computed=False)
    index = {name: i for i, name in enumerate(names)}
    if len(index) != n:
        raise ValueError("task names are not unique")
    children: list[list[int]] = [[] for _ in range(n)]
    preds: list[list[int]] = [[] for _ in range(n)]
    for i, deps in enumerate(dependencies):
        for dep in dict.fromkeys(deps):  # a dependency named twice is one edge
            j = index.get(dep)
            if j is None:
                raise ValueError(f"task {names[i]!r} depends on unknown task {dep!r}")
            children[j].append(i)
            preds[i].append(j)
    order = _topological(preds, children)
    redundant = _redundant(order, preds, children)
    return DependencyInsights(
        redundant_edges=tuple((names[j], names[i]) for i in range(n) for j in preds[i] if (j, i) in redundant),
        immediate_dominators=_dominators(names, preds, children),
    )


def _topological(preds: list[list[int]], children: list[list[int]]) -> list[int]:
    remaining = [len(p) for p in preds]
    order = [i for i, r in enumerate(remaining) if r == 0]
    for i in order:  # grows while it is walked
        for c in children[i]:
            remaining[c] -= 1
            if remaining[c] == 0:
                order.append(c)
    if len(order) != len(preds):
        raise ValueError("the dependency graph has a cycle")
    return order


def _redundant(order: list[int], preds: list[list[int]], children: list[list[int]]) -> set[tuple[int, int]]:
    """Edges (parent, child) of the transitive closure minus the reduction: one pass from the leaves.

    ``reach[u]`` is the set of tasks reachable from ``u`` as the bits of an int; an edge ``u -> c`` is
    redundant when ``c`` is reachable through another child of ``u``. A set is dropped once every
    parent has used it, so memory follows the live frontier, not the whole graph.
    """
    reach: list[int] = [0] * len(order)
    parents_left = [len(p) for p in preds]
    found: set[tuple[int, int]] = set()
    for u in reversed(order):
        via = 0
        for c in children[u]:
            via |= reach[c]
        mine = via
        for c in children[u]:
            if via >> c & 1:
                found.add((u, c))
            mine |= 1 << c
            parents_left[c] -= 1
            if parents_left[c] == 0:
                reach[c] = 0
        reach[u] = mine
    return found


def _dominators(names: Sequence[str], preds: list[list[int]], children: list[list[int]]) -> dict[str, str]:
    # Only here: networkx costs ~100 ms to import and a dict-of-dicts graph, neither of which the
    # controller's hot paths (submission, planning) pay.
    import networkx as nx

    n = len(names)
    graph = nx.DiGraph()
    graph.add_nodes_from(range(n + 1))
    graph.add_edges_from((u, c) for u in range(n) for c in children[u])
    graph.add_edges_from((n, i) for i in range(n) if not preds[i])  # n: the virtual root
    idom: dict[int, int] = nx.immediate_dominators(graph, n)
    return {names[i]: names[d] for i in range(n) if (d := idom.get(i, n)) != n and d != i}
