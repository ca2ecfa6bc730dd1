"""Upward ranks and queue scores on small graphs worked out by hand."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.controller.core.rank import RankCycleError, rank_graph, structural_ranks


def test_chain_rank_is_the_remaining_work() -> None:
    # a(1) -> b(2) -> c(4)
    durations = {"a": 1.0, "b": 2.0, "c": 4.0}
    ranks = rank_graph(["a", "b", "c"], {"b": ["a"], "c": ["b"]}, durations.__getitem__, lookahead=0.0)
    assert ranks.rank == {"a": 7.0, "b": 6.0, "c": 4.0}
    assert ranks.score == ranks.rank  # lookahead 0 is plain critical-path-first


def test_diamond_takes_the_longer_branch() -> None:
    #      s(1)
    #     /    \
    #  x(10)   y(2)
    #     \    /
    #      j(3)
    durations = {"s": 1.0, "x": 10.0, "y": 2.0, "j": 3.0}
    parents = {"x": ["s"], "y": ["s"], "j": ["x", "y"]}
    ranks = rank_graph(["s", "x", "y", "j"], parents, durations.__getitem__, lookahead=0.5)
    assert ranks.rank == {"s": 14.0, "x": 13.0, "y": 5.0, "j": 3.0}
    # score = rank + 0.5 * (longest path from the start to the task): top(j) = 1 + 10.
    assert ranks.score == {"s": 14.0, "x": 13.5, "y": 5.5, "j": 3.0 + 0.5 * 11.0}


def test_lookahead_prefers_a_started_chain_over_a_fresh_one_of_slightly_higher_rank() -> None:
    # Chain p: p1(5) -> p2(10). Chain q: q1(11). After p1 ran, p2 (rank 10) competes with q1 (11).
    durations = {"p1": 5.0, "p2": 10.0, "q1": 11.0}
    ranks = rank_graph(["p1", "p2", "q1"], {"p2": ["p1"]}, durations.__getitem__, lookahead=0.8)
    assert ranks.rank["q1"] > ranks.rank["p2"]
    assert ranks.score["p2"] == 10.0 + 0.8 * 5.0 > ranks.score["q1"] == 11.0


def test_unit_durations_give_the_height() -> None:
    parents = {"b": ["a"], "c": ["a"], "d": ["b"], "e": ["d", "c"]}
    ranks = rank_graph(list("abcde"), parents, lambda _t: 1.0, lookahead=0.0)
    assert ranks.rank == {"a": 4.0, "b": 3.0, "c": 2.0, "d": 2.0, "e": 1.0}


def test_bad_durations_count_as_zero_and_outside_parents_are_ignored() -> None:
    durations = {"a": math.nan, "b": -3.0, "c": math.inf}
    ranks = rank_graph(["a", "b", "c"], {"b": ["a", "elsewhere"], "c": ["b"]}, durations.__getitem__)
    assert ranks.rank == {"a": 0.0, "b": 0.0, "c": 0.0}


def test_cycle_is_refused() -> None:
    with pytest.raises(RankCycleError, match="2 tasks"):
        rank_graph(["a", "b", "c"], {"a": ["b"], "b": ["a"]}, lambda _t: 1.0)


def test_large_graph_is_linear_and_iterative() -> None:
    # A 50k-long chain would overflow a recursive implementation.
    n = 50_000
    ids = [f"t{i}" for i in range(n)]
    parents = {ids[i]: [ids[i - 1]] for i in range(1, n)}
    ranks = rank_graph(ids, parents, lambda _t: 1.0, lookahead=0.0)
    assert ranks.rank["t0"] == n and ranks.rank[ids[-1]] == 1.0


@st.composite
def _dags(draw: st.DrawFn) -> tuple[list[str], dict[str, list[str]], dict[str, float]]:
    n = draw(st.integers(1, 12))
    ids = [f"t{i}" for i in range(n)]
    parents = {ids[i]: draw(st.lists(st.sampled_from(ids[:i]), unique=True)) if i else [] for i in range(n)}
    durations = {t: draw(st.floats(0, 100)) for t in ids}
    order = draw(st.permutations(ids))  # the input order must not matter
    return list(order), parents, durations


@settings(max_examples=200, deadline=None)
@given(_dags(), st.sampled_from([0.0, 0.8, 1.0]))
def test_matches_the_recursive_definition(
    dag: tuple[list[str], dict[str, list[str]], dict[str, float]], w: float
) -> None:
    ids, parents, durations = dag
    children = {t: [c for c in ids if t in parents[c]] for t in ids}

    def rank(t: str) -> float:
        return durations[t] + max((rank(c) for c in children[t]), default=0.0)

    def top(t: str) -> float:
        return max((top(p) + durations[p] for p in parents[t]), default=0.0)

    ranks = rank_graph(ids, parents, durations.__getitem__, lookahead=w)
    for t in ids:
        assert ranks.rank[t] == pytest.approx(rank(t))
        assert ranks.score[t] == pytest.approx(rank(t) + w * top(t))


def test_structural_ranks_count_tasks_below_sharing_joins() -> None:
    #   a
    #  / \
    # b   c     d (alone)
    #  \ /
    #   e
    #   |
    #   f
    parents = {"b": ["a"], "c": ["a"], "e": ["b", "c"], "f": ["e"]}
    ranks = structural_ranks(list("abcdef"), parents, lookahead=0.5)
    assert ranks.rank == {"f": 1.0, "e": 2.0, "b": 2.0, "c": 2.0, "a": 5.0, "d": 1.0}
    # score = rank + 0.5 per dependency level above: a 0, b/c 1, e 2, f 3, d 0.
    assert ranks.score == {"f": 2.5, "e": 3.0, "b": 2.5, "c": 2.5, "a": 5.0, "d": 1.0}
    with pytest.raises(RankCycleError):
        structural_ranks(["a", "b"], {"a": ["b"], "b": ["a"]})


@settings(max_examples=100, deadline=None)
@given(_dags())
def test_structural_ranks_are_exact_descendant_counts_on_trees(
    dag: tuple[list[str], dict[str, list[str]], dict[str, float]],
) -> None:
    ids, parents, _ = dag
    tree = {t: ps[:1] for t, ps in parents.items()}  # at most one parent each: a forest
    children = {t: [c for c in ids if t in tree[c]] for t in ids}

    def count(t: str) -> int:
        return 1 + sum(count(c) for c in children[t])

    ranks = structural_ranks(ids, tree)
    assert ranks.rank == {t: pytest.approx(count(t)) for t in ids}
