"""Dependency insights (AnalyzeDependencies): redundant dependencies and immediate dominators, on
small DAGs by hand and on random DAGs against networkx's own transitive reduction and dominators."""

from __future__ import annotations

import sys

import networkx as nx
import pytest
from hypothesis import given, settings

from corral.controller.core import analysis
from corral.controller.core.analysis import DependencyInsights, dependency_insights

from .test_analysis import dags


def test_a_shortcut_beside_a_chain_is_redundant() -> None:
    # a -> b -> c, and c also names a: already implied through b.
    insights = dependency_insights(["a", "b", "c"], [[], ["a"], ["b", "a"]])
    assert insights.redundant_edges == (("a", "c"),)
    # The shortcut is a path to c that bypasses b: a, not b, dominates c.
    assert insights.immediate_dominators == {"b": "a", "c": "a"}
    assert dependency_insights(["a", "b", "c"], [[], ["a"], ["b"]]).immediate_dominators == {"b": "a", "c": "b"}
    assert insights.computed


def test_a_diamond_has_no_redundancy_and_its_join_is_dominated_by_the_fork() -> None:
    insights = dependency_insights(["a", "b", "c", "d"], [[], ["a"], ["a"], ["b", "c"]])
    assert insights.redundant_edges == ()
    # d is reached through b or c: only a lies on every path.
    assert insights.immediate_dominators == {"b": "a", "c": "a", "d": "a"}


def test_redundant_edges_come_in_submission_order() -> None:
    names = ["a", "b", "c", "d"]
    deps = [[], ["a"], ["a", "b"], ["b", "c", "a"]]
    # c -> a (via b), d -> b (via c), d -> a (via b or c).
    assert dependency_insights(names, deps).redundant_edges == (("a", "c"), ("b", "d"), ("a", "d"))


def test_tasks_only_the_virtual_root_dominates_are_left_out() -> None:
    # Two roots joined by j: no real task is on every path to j; then k hangs below j.
    insights = dependency_insights(["r1", "r2", "j", "k"], [[], [], ["r1", "r2"], ["j"]])
    assert insights.immediate_dominators == {"k": "j"}
    assert dependency_insights(["solo"], [[]]) == DependencyInsights((), {}, True)


def test_a_large_graph_is_not_analysed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(analysis, "MAX_INSIGHT_TASKS", 3)
    assert dependency_insights(["a", "b", "c", "d"], [[], ["a"], ["b"], ["c"]]) == DependencyInsights(computed=False)
    monkeypatch.setattr(analysis, "MAX_INSIGHT_TASKS", 100)
    monkeypatch.setattr(analysis, "MAX_INSIGHT_EDGES", 2)
    assert not dependency_insights(["a", "b", "c", "d"], [[], ["a"], ["b"], ["c"]]).computed


@pytest.mark.parametrize(
    ("names", "deps", "message"),
    [
        (["a", "b"], [["b"], ["a"]], "cycle"),
        (["a"], [["zzz"]], "unknown task 'zzz'"),
        (["a", "a"], [[], []], "not unique"),
        (["a"], [], "differ in length"),
    ],
)
def test_bad_graphs_are_refused(names: list[str], deps: list[list[str]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        dependency_insights(names, deps)


def test_a_long_chain_with_shortcuts_is_fast() -> None:
    # Where networkx's transitive_reduction takes many seconds (O(tasks x edges) Python steps).
    n = 3000
    names = [f"t{i}" for i in range(n)]
    deps = [[] if i == 0 else [f"t{i - 1}", *([f"t{i - 7}"] if i >= 7 else [])] for i in range(n)]
    insights = dependency_insights(names, deps)
    assert len(insights.redundant_edges) == n - 7
    # Past the first jump, every task can be bypassed by one: only t0 lies on every path.
    assert len(insights.immediate_dominators) == n - 1
    assert insights.immediate_dominators[f"t{n - 1}"] == "t0"


def test_networkx_is_not_imported_by_the_planning_path() -> None:
    # The controller's submission and planning import analysis; only dependency_insights needs networkx.
    import subprocess

    code = (
        "import sys; from corral.controller.core import analysis, machine; "
        "from corral.controller.rpc import submission; "
        "analysis.analyze(['a', 'b'], [[], ['a']], [1.0, 1.0]); "
        "assert 'networkx' not in sys.modules, 'networkx imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@settings(max_examples=200, deadline=None)
@given(dags())
def test_agrees_with_networkx_on_random_dags(dag: tuple[list[str], list[list[str]], list[float]]) -> None:
    names, deps, _ = dag
    insights = dependency_insights(names, deps)
    graph = nx.DiGraph()
    graph.add_nodes_from(names)
    graph.add_edges_from((d, name) for name, ds in zip(names, deps, strict=True) for d in ds)
    reduced = nx.transitive_reduction(graph)
    assert set(insights.redundant_edges) == {e for e in graph.edges if not reduced.has_edge(*e)}
    assert len(insights.redundant_edges) == len(set(insights.redundant_edges))
    root = ("virtual root",)
    graph.add_edges_from((root, name) for name, ds in zip(names, deps, strict=True) if not ds)
    expected = {n: d for n, d in nx.immediate_dominators(graph, root).items() if d != root and n != root and d != n}
    assert dict(insights.immediate_dominators) == expected
