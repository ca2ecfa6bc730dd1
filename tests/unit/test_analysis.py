"""DAG analysis: stages, critical path and parallelism, checked on examples and random DAGs."""

from __future__ import annotations

from itertools import pairwise

import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.controller.core.analysis import ExecutionPlan, Stage, analyze


def test_diamond() -> None:
    plan = analyze(["a", "b", "c", "d"], [[], ["a"], ["a"], ["b", "c"]], [1.0, 5.0, 2.0, 1.0])
    assert plan.stages == (
        Stage(0, ("a",), 1.0),
        Stage(1, ("b", "c"), 5.0),
        Stage(2, ("d",), 1.0),
    )
    assert plan.critical_path == ("a", "b", "d")
    assert plan.estimated_duration_s == 7.0
    assert plan.total_work_s == 9.0
    assert plan.parallelism_factor == pytest.approx(9.0 / 7.0)
    assert plan.roots == ("a",)
    assert plan.leaves == ("d",)
    assert (plan.max_width, plan.depth, plan.task_count) == (2, 3, 4)


def test_stage_keeps_submission_order_not_discovery_order() -> None:
    # "z" is submitted first but unlocked last by the walk; the stage still lists it first.
    names = ["z", "root2", "y", "root1"]
    deps = [["root1"], [], ["root2"], []]
    plan = analyze(names, deps, [0.0] * 4)
    assert [s.task_names for s in plan.stages] == [("root2", "root1"), ("z", "y")]


def test_zero_durations_weigh_each_task_one() -> None:
    names = ["a", "b", "c", "x"]
    plan = analyze(names, [[], ["a"], ["b"], []], [0.0] * 4)
    assert plan.critical_path == ("a", "b", "c")
    assert plan.estimated_duration_s == 0.0
    assert plan.parallelism_factor == pytest.approx(4 / 3)


def test_longest_by_duration_not_by_count() -> None:
    names = ["a", "b", "c", "long"]
    plan = analyze(names, [[], ["a"], ["b"], []], [1.0, 1.0, 1.0, 10.0])
    assert plan.critical_path == ("long",)
    assert plan.estimated_duration_s == 10.0
    assert plan.parallelism_factor == pytest.approx(13.0 / 10.0)


def test_single_task_and_empty() -> None:
    single = analyze(["only"], [[]], [3.0])
    assert single.critical_path == ("only",)
    assert single.parallelism_factor == 1.0
    assert single.estimated_duration_s == 3.0
    empty = analyze([], [], [])
    assert empty == ExecutionPlan((), (), 0.0, 1.0, 0, 0.0, (), (), 0, 0)


def test_independent_tasks_are_one_wide_stage() -> None:
    names = [f"t{i}" for i in range(5)]
    plan = analyze(names, [[] for _ in names], [2.0] * 5)
    assert plan.depth == 1 and plan.max_width == 5
    assert plan.parallelism_factor == pytest.approx(5.0)
    assert plan.roots == plan.leaves == tuple(names)


def test_bad_durations_count_as_zero() -> None:
    plan = analyze(["a", "b"], [[], ["a"]], [-5.0, float("nan")])
    assert plan.total_work_s == 0.0
    assert plan.critical_path == ("a", "b")


@pytest.mark.parametrize(
    ("names", "deps", "durations", "message"),
    [
        (["a"], [], [1.0], "differ in length"),
        (["a", "b"], [[], ["nope"]], [1.0, 1.0], "unknown task 'nope'"),
        (["a", "b"], [["b"], ["a"]], [1.0, 1.0], "cycle"),
        (["a", "a"], [[], []], [1.0, 1.0], "not unique"),
    ],
)
def test_invalid_input_raises(names: list[str], deps: list[list[str]], durations: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        analyze(names, deps, durations)


@st.composite
def dags(draw: st.DrawFn) -> tuple[list[str], list[list[str]], list[float]]:
    """A random DAG: edges go forward in a hidden topological order; submission order is shuffled."""
    n = draw(st.integers(1, 25))
    topo = [f"t{i}" for i in range(n)]
    deps_of: dict[str, list[str]] = {}
    for i, name in enumerate(topo):
        earlier = draw(st.lists(st.integers(0, i - 1), unique=True, max_size=4)) if i else []
        deps_of[name] = [topo[j] for j in earlier]
    names = draw(st.permutations(topo))
    if draw(st.booleans()):
        durations = [0.0] * n
    else:
        durations = draw(st.lists(st.integers(0, 20).map(float), min_size=n, max_size=n))
    return list(names), [deps_of[name] for name in names], durations


@settings(max_examples=200, deadline=None)
@given(dags())
def test_invariants_on_random_dags(dag: tuple[list[str], list[list[str]], list[float]]) -> None:
    names, deps, durations = dag
    plan = analyze(names, deps, durations)
    position = {name: i for i, name in enumerate(names)}
    stage_of = {name: s.index for s in plan.stages for name in s.task_names}

    # Every task in exactly one stage, stages in submission order, and stages are the generations.
    assert sorted(stage_of) == sorted(names)
    assert sum(len(s.task_names) for s in plan.stages) == len(names)
    graph: nx.DiGraph[str] = nx.DiGraph()
    graph.add_nodes_from(names)
    graph.add_edges_from((d, name) for name, ds in zip(names, deps, strict=True) for d in ds)
    generations = [set(g) for g in nx.topological_generations(graph)]
    assert [set(s.task_names) for s in plan.stages] == generations
    for stage in plan.stages:
        assert list(stage.task_names) == sorted(stage.task_names, key=position.__getitem__)
        assert stage.estimated_duration_s == max(durations[position[t]] for t in stage.task_names)
    for name, ds in zip(names, deps, strict=True):
        for d in ds:
            assert stage_of[d] < stage_of[name]

    # The critical path is a real path from a root, and no path is heavier.
    path = plan.critical_path
    assert path and not deps[position[path[0]]]
    for before, after in pairwise(path):
        assert graph.has_edge(before, after)
    weight = {n: (d if sum(durations) > 0 else 1.0) for n, d in zip(names, durations, strict=True)}
    heaviest: dict[str, float] = {}
    for node in nx.topological_sort(graph):
        heaviest[node] = weight[node] + max((heaviest[p] for p in graph.predecessors(node)), default=0.0)
    path_weight = sum(weight[n] for n in path)
    assert path_weight == max(heaviest.values())
    assert plan.estimated_duration_s == sum(durations[position[n]] for n in path)

    assert plan.total_work_s == sum(durations)
    assert plan.parallelism_factor >= 1.0
    assert plan.parallelism_factor == pytest.approx(max(1.0, sum(weight.values()) / path_weight))
    assert plan.depth == len(plan.stages)
    assert plan.max_width == max(len(s.task_names) for s in plan.stages)
    assert set(plan.roots) == {n for n in names if graph.in_degree(n) == 0}
    assert set(plan.leaves) == {n for n in names if graph.out_degree(n) == 0}


def test_large_layered_dag() -> None:
    # Correctness at scale (speed is measured by bench/, not asserted here).
    layers, width = 50, 200
    names = [f"l{layer}_{i}" for layer in range(layers) for i in range(width)]
    deps = [
        [] if layer == 0 else [f"l{layer - 1}_{(i + k) % width}" for k in (0, 7, 13)]
        for layer in range(layers)
        for i in range(width)
    ]
    plan = analyze(names, deps, [1.0] * len(names))
    assert plan.depth == layers and plan.max_width == width
    assert len(plan.critical_path) == layers
    assert plan.parallelism_factor == pytest.approx(width)
