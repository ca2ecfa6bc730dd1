"""The bench's zero-overhead list schedules and random DAGs: exact makespans on hand-made DAGs."""

from __future__ import annotations

import graphlib

import pytest

from bench.listsched import Dag, best_list_makespan, critical_path_first, fifo, list_schedule
from bench.randdag import random_layered
from bench.traces import DEFAULT_DIR, TRACES, load_trace


def dag(durations: list[float], parents: list[tuple[int, ...]]) -> Dag:
    return Dag(tuple(f"t{i}" for i in range(len(durations))), tuple(durations), tuple(parents))


def test_a_chain_takes_the_sum_of_its_durations_whatever_the_slots() -> None:
    chain = dag([2.0, 3.0, 4.0], [(), (0,), (1,)])
    for slots in (1, 2, 8):
        assert fifo(chain, slots).makespan == 9.0
        assert critical_path_first(chain, slots).makespan == 9.0
    assert fifo(chain, 1).starts == (0.0, 2.0, 5.0)
    assert chain.lower_bound(8) == 9.0


def test_critical_path_first_starts_the_long_chain_first_and_wins() -> None:
    # t0, t1 short and first in the file; t2 heads a 2 + 2 chain. 2 slots.
    graph = dag([1.0, 1.0, 2.0, 2.0], [(), (), (), (2,)])
    by_fifo = fifo(graph, 2)
    assert by_fifo.starts == (0.0, 0.0, 1.0, 3.0) and by_fifo.makespan == 5.0
    by_cp = critical_path_first(graph, 2)
    assert by_cp.starts == (0.0, 1.0, 0.0, 2.0) and by_cp.makespan == 4.0
    assert best_list_makespan(graph, 2) == (4.0, "cp")


def test_fifo_beats_critical_path_first_when_a_short_task_releases_work() -> None:
    # t3 (2) needs t0 (1) and t1 (4); t2 (4) is independent. CP runs t1, t2 first, t0 only at 4.
    graph = dag([1.0, 4.0, 4.0, 2.0], [(), (), (), (0, 1)])
    assert graph.upward_ranks() == [3.0, 6.0, 4.0, 2.0]
    assert fifo(graph, 2).makespan == 6.0
    assert critical_path_first(graph, 2).makespan == 7.0
    assert best_list_makespan(graph, 2) == (6.0, "fifo")


def test_fifo_is_file_order_while_arrival_order_serves_the_first_ready() -> None:
    # t0 (1) releases t2 (3) at time 1; t1 (3) is a root; t3 (1) is a root last in the file. 1 slot.
    graph = dag([1.0, 3.0, 3.0, 1.0], [(), (), (0,), ()])
    assert fifo(graph, 1).starts == (0.0, 1.0, 4.0, 7.0)  # the file's order among the ready
    assert list_schedule(graph, 1).starts == (0.0, 1.0, 5.0, 4.0)  # ready at 0 (t1, t3) before t2


def test_tasks_finishing_together_release_their_children_before_any_start() -> None:
    # t0 and t1 both end at 1. t0 releases t2 (rank 1), t1 releases t3 (rank 5); t4 (rank 1) waits
    # since 0. Both slots free at 1 must go to t3 and then t2 (tie with t4, earlier in the file).
    graph = dag([1.0, 1.0, 1.0, 5.0, 1.0], [(), (), (0,), (1,), ()])
    schedule = critical_path_first(graph, 2)
    assert schedule.starts == (0.0, 0.0, 1.0, 1.0, 2.0)
    assert schedule.makespan == 6.0


def test_bad_dags_and_slot_counts_are_refused() -> None:
    with pytest.raises(graphlib.CycleError):
        dag([1.0, 1.0], [(1,), (0,)])
    with pytest.raises(ValueError, match="duration must be finite"):
        dag([-1.0], [()])
    with pytest.raises(ValueError, match="out of range"):
        dag([1.0], [(3,)])
    with pytest.raises(ValueError, match="slots must be between 1"):
        fifo(dag([1.0], [()]), 0)
    with pytest.raises(ValueError, match="unknown parents"):
        Dag.from_mapping({"a": 1.0}, {"a": ["b"]})


def test_random_layered_dags_are_seeded_acyclic_and_mixed() -> None:
    first, again, other = random_layered(3, 0.01), random_layered(3, 0.01), random_layered(4, 0.01)
    assert first.durations == again.durations and first.parents == again.parents
    assert first.parents != other.parents
    graph = first.dag()  # checks acyclicity
    assert all(len(parents) <= 5 for parents in first.parents.values())
    assert max(graph.durations) > 5 * min(graph.durations)  # long and short tasks
    fan_out = max(len(children) for children in graph.children())
    assert fan_out >= 4  # some hub feeds many tasks
    assert first.with_estimates().tasks[0].estimated_duration == graph.durations[0]


@pytest.mark.skipif(not DEFAULT_DIR.is_dir(), reason="the WfCommons traces (../shared) are not beside the repository")
def test_the_references_reproduce_the_issue_table() -> None:
    # Issue 9's table: FIFO / bound and critical-path-first / bound, 8 slots, scale 0.01.
    table = {
        "blast": (1.043, 1.004),
        "epigenomics": (1.256, 1.374),
        "cycles": (1.272, 1.036),
        "seismology": (1.112, 1.006),
        "1000genome": (1.012, 1.000),
        "montage": (1.038, 1.015),
    }
    for name in TRACES:
        graph = load_trace(DEFAULT_DIR / name, 0.01).dag()
        bound = graph.lower_bound(8)
        expected = table[name.split("-")[0]]
        measured = (fifo(graph, 8).makespan / bound, critical_path_first(graph, 8).makespan / bound)
        assert measured == pytest.approx(expected, abs=0.0006), name
