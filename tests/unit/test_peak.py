"""The controller's peak on a big workflow (issue 12): ranks and critical paths by position.

The walks over a whole workflow (its ranks when it starts, its executed critical path when it
ends) now run on :class:`~corral.controller.core.dag.Dag` arrays instead of dicts per task id.
They must give exactly what the dict-based walks gave: the reference implementations below are
the previous code, compared bit for bit on random DAGs.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.controller.core.analysis import analyze
from corral.controller.core.dag import Dag, DagCycleError
from corral.controller.core.model import AttemptState, TaskState, WorkflowState
from corral.controller.core.rank import GraphRanks, RankCycleError, rank_graph, structural_ranks
from corral.controller.core.requests import Caller
from corral.controller.core.runs import RetryRequest
from corral.controller.rpc import wire
from corral.controller.sim import Fleet, Simulator
from corral.controller.spec import parse_workflow
from tests.unit.conftest import Sim, task_spec


def _old_topological(
    task_ids: Sequence[str], parents: Mapping[str, Sequence[str]]
) -> tuple[list[str], dict[str, list[str]]]:
    members = set(task_ids)
    children: dict[str, list[str]] = {t: [] for t in task_ids}
    waiting: dict[str, int] = {}
    for t in task_ids:
        count = 0
        for p in parents.get(t, ()):
            if p in members:
                children[p].append(t)
                count += 1
        waiting[t] = count
    order = [t for t in task_ids if waiting[t] == 0]
    k = 0
    while k < len(order):
        for c in children[order[k]]:
            waiting[c] -= 1
            if waiting[c] == 0:
                order.append(c)
        k += 1
    assert len(order) == len(members)
    return order, children


def _old_rank_graph(
    task_ids: Sequence[str], parents: Mapping[str, Sequence[str]], duration: Callable[[str], float], lookahead: float
) -> GraphRanks:
    order, children = _old_topological(task_ids, parents)
    own = {t: (s if (s := duration(t)) > 0 and math.isfinite(s) else 0.0) for t in task_ids}
    top = dict.fromkeys(task_ids, 0.0)
    for t in order:
        reach = top[t] + own[t]
        for c in children[t]:
            if reach > top[c]:
                top[c] = reach
    rank: dict[str, float] = {}
    for t in reversed(order):
        below = 0.0
        for c in children[t]:
            if rank[c] > below:
                below = rank[c]
        rank[t] = own[t] + below
    return GraphRanks(rank, {t: rank[t] + lookahead * top[t] for t in order})


def _old_structural(task_ids: Sequence[str], parents: Mapping[str, Sequence[str]], lookahead: float) -> GraphRanks:
    order, children = _old_topological(task_ids, parents)
    fan_in = dict.fromkeys(task_ids, 0)
    depth = dict.fromkeys(task_ids, 0)
    for t in order:
        for c in children[t]:
            fan_in[c] += 1
            depth[c] = max(depth[c], depth[t] + 1)
    below: dict[str, float] = {}
    for t in reversed(order):
        below[t] = 1.0 + sum(below[c] / fan_in[c] for c in children[t])
    return GraphRanks(below, {t: below[t] + lookahead * depth[t] for t in order})


@st.composite
def graphs(draw: st.DrawFn) -> tuple[list[str], dict[str, list[str]], dict[str, float]]:
    """A random DAG in shuffled submission order, with a few parents outside it and odd durations."""
    n = draw(st.integers(1, 30))
    topo = [f"t{i}" for i in range(n)]
    parents: dict[str, list[str]] = {}
    for i, name in enumerate(topo):
        picks = draw(st.lists(st.integers(0, i - 1), unique=True, max_size=4)) if i else []
        parents[name] = [topo[j] for j in picks] + (["outside"] if draw(st.booleans()) and i % 5 == 0 else [])
    names = list(draw(st.permutations(topo)))
    values = st.one_of(st.floats(0.0, 50.0), st.sampled_from([0.0, -1.0, math.nan, math.inf, 0.1, 0.3]))
    durations = {name: draw(values) for name in names}
    return names, parents, durations


@settings(max_examples=150, deadline=None)
@given(graphs(), st.sampled_from([0.0, 0.5, 0.8, 1.0]))
def test_ranks_by_position_are_the_dict_walks_bit_for_bit(
    graph: tuple[list[str], dict[str, list[str]], dict[str, float]], lookahead: float
) -> None:
    names, parents, durations = graph
    assert rank_graph(names, parents, durations.__getitem__, lookahead) == _old_rank_graph(
        names, parents, durations.__getitem__, lookahead
    )
    assert structural_ranks(names, parents, lookahead) == _old_structural(names, parents, lookahead)


@settings(max_examples=150, deadline=None)
@given(graphs())
def test_longest_path_is_analyze_critical_path(graph: tuple[list[str], dict[str, list[str]], dict[str, float]]) -> None:
    names, parents, durations = graph
    deps = [[p for p in parents[n] if p != "outside"] for n in names]
    measured = [durations[n] for n in names]
    plan = analyze(names, deps, measured)
    weights = [d if d > 0 else 0.0 for d in measured]
    if sum(weights) <= 0:
        weights = [1.0] * len(names)
    path = Dag(names, deps).longest_path(weights)
    assert tuple(names[i] for i in path) == plan.critical_path


def test_a_cycle_is_refused_with_its_size() -> None:
    with pytest.raises(DagCycleError, match="3 tasks"):
        Dag(["a", "b", "c", "d"], [["c"], ["a"], ["b"], []])
    with pytest.raises(RankCycleError, match="2 tasks"):
        structural_ranks(["a", "b"], {"a": ["b"], "b": ["a"]})
    assert Dag([], []).longest_path([]) == []


def test_a_finished_workflows_result_carries_the_executed_critical_path() -> None:
    rng = random.Random(7)
    tasks = []
    for i in range(60):
        deps = sorted({f"t{j}" for j in rng.sample(range(i), min(i, 2))}) if i else []
        tasks.append({"name": f"t{i}", "payload": {"shell": "true"}, "dependencies": deps})
    sim = Simulator(Fleet(agents=2, slots=2), default_duration_s=0.5)
    spec = parse_workflow({"name": "shape", "tasks": tasks})
    assert sim.run(spec, duration=lambda task: 0.1 + (int(task.name[1:]) * 3 % 7) / 10).state == "completed"
    machine = sim.machine
    workflow = next(iter(machine.workflows.values()))
    expected = wire.executed_plan(machine, workflow).critical_path
    assert len(expected) > 2
    assert tuple(wire.executed_critical_path(machine, workflow)) == expected
    result = wire.workflow_result(machine, workflow, sim.now)
    assert tuple(result.critical_path) == expected
    # Positions come from each record's index; a record whose index is not its place (as a
    # compensation record shares its task's) is found through a dict instead, with the same path.
    first, last = (machine.tasks[workflow.task_ids[i]] for i in (0, -1))
    first.index, last.index = last.index, first.index
    assert tuple(wire.executed_critical_path(machine, workflow)) == expected


def test_a_finished_task_drops_its_rank_and_a_retry_ranks_it_again(sim: Sim) -> None:
    sim.hello("a1")
    wf, _ = sim.submit([task_spec("a", estimated_duration=4.0), task_spec("b", "a", estimated_duration=2.0)])
    ordering = sim.machine.ordering
    a, b = sim.task(wf, "a"), sim.task(wf, "b")
    ranked_a, ranked_b = ordering.rank_of(a), ordering.rank_of(b)
    assert ranked_a is not None and ranked_a.rank_s == 6.0
    assert ranked_b is not None and ranked_b.rank_s == 2.0
    attempt = sim.attempt_of(wf, "a")
    sim.started("a1", attempt)
    sim.finished("a1", attempt)
    assert a.state is TaskState.COMPLETED and ordering.rank_of(a) is None
    done = wire.task_status(sim.machine, a)
    assert (done.rank_s, done.expected_duration_s, done.duration_source) == (0.0, 0.0, "")  # as after readmission
    waiting = wire.task_status(sim.machine, b)
    assert (waiting.rank_s, waiting.expected_duration_s, waiting.duration_source) == (2.0, 2.0, "estimate")
    attempt = sim.attempt_of(wf, "b")
    sim.started("a1", attempt)
    sim.finished("a1", attempt, AttemptState.FAILED, error="boom", retryable=False)
    assert sim.machine.workflows[wf].state is WorkflowState.FAILED and not ordering.ranks  # ended: dropped
    sim.do(RetryRequest(wf, Caller()))  # the retried task is ranked again for the queue
    ranked_b = ordering.rank_of(b)
    assert ranked_b is not None and ranked_b.rank_s == 2.0 and b.state is not TaskState.COMPLETED
    assert ordering.rank_of(a) is None  # still completed: shows its real times
