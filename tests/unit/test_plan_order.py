"""The searched queue order: better than the default score where it can be, never worse, bounded.

Makespans are checked with the bench's own list scheduler (``bench.listsched``), written apart
from the core: the order the search returns must deliver, under a plain greedy list schedule, the
makespan it promises.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.listsched import Dag as RefDag
from bench.listsched import list_schedule
from corral.controller.core import plan_order
from corral.controller.core.dag import Dag
from corral.controller.core.plan_order import searched_scores
from corral.controller.core.rank import dag_of, ranks_by_position
from corral.controller.sim import Fleet, Simulator
from corral.controller.spec import parse_workflow

# Seven tasks on two slots where the default score (critical path first, with its lookahead)
# starts a and b, leaves f for later and ends at 22; starting a and f first ends at 18.
NAMES = "abcdefg"
PARENTS: tuple[tuple[int, ...], ...] = ((), (), (1,), (0,), (3,), (), (0, 5))
SECONDS = (6.0, 6.0, 4.0, 5.0, 2.0, 6.0, 6.0)


def graph(parents: Sequence[Sequence[int]]) -> Dag:
    ids = [f"t{i}" for i in range(len(parents))]
    return dag_of(ids, [[ids[p] for p in ps] for ps in parents])


def makespan(parents: Sequence[Sequence[int]], seconds: Sequence[float], score: Sequence[float], slots: int) -> float:
    """The greedy list schedule keyed by ``score`` (higher first), by the bench's scheduler."""
    ref = RefDag(
        names=tuple(f"t{i}" for i in range(len(parents))),
        durations=tuple(seconds),
        parents=tuple(tuple(ps) for ps in parents),
    )
    return list_schedule(ref, slots, [-s for s in score]).makespan


def default_score(dag: Dag, seconds: Sequence[float]) -> list[float]:
    return list(ranks_by_position(dag, seconds)[1])


def search(dag: Dag, seconds: Sequence[float], default: Sequence[float], slots: int) -> Sequence[float] | None:
    """:func:`searched_scores` from the default score, with the upward ranks that came with it."""
    return searched_scores(dag, seconds, ranks_by_position(dag, seconds)[0], default, slots)


def test_the_search_finds_the_shorter_order_the_default_misses() -> None:
    dag = graph(PARENTS)
    default = default_score(dag, SECONDS)
    assert makespan(PARENTS, SECONDS, default, 2) == 22.0
    searched = search(dag, SECONDS, default, 2)
    assert searched is not None
    assert makespan(PARENTS, SECONDS, searched, 2) == 18.0
    # The score is the plan's time left when each task starts: the first ones hold the makespan.
    assert max(searched) == 18.0
    assert searched[NAMES.index("a")] == searched[NAMES.index("f")] == 18.0


def test_a_workflow_run_by_the_core_follows_the_searched_order() -> None:
    tasks: list[dict[str, Any]] = [
        {
            "name": name,
            "payload": {"shell": "true"},
            "dependencies": [NAMES[p] for p in parents],
            "estimated_duration": seconds,
        }
        for name, parents, seconds in zip(NAMES, PARENTS, SECONDS, strict=True)
    ]
    spec = parse_workflow({"name": "wf", "tasks": tasks})
    assert Simulator(Fleet(1, 2)).run(spec).makespan == 18.0
    # The plan counts the workflow's max_parallel, not the fleet's slots: planned for 4 slots the
    # default order would stay, and on 2 it ends at 22.
    capped = parse_workflow({"name": "wf", "tasks": tasks, "max_parallel": 2})
    assert Simulator(Fleet(1, 4)).run(capped).makespan == 18.0


@pytest.mark.parametrize(
    ("parents", "seconds", "slots", "why"),
    [
        (PARENTS, SECONDS, 0, "no slots known"),
        (PARENTS, SECONDS, 7, "no more tasks than slots"),
        (((), (), (0,), (1,)), (1.0, 1.0, 1.0, 1.0), 2, "the default is at the lower bound"),
    ],
)
def test_nothing_is_searched_where_nothing_can_be_gained(
    parents: tuple[tuple[int, ...], ...], seconds: tuple[float, ...], slots: int, why: str
) -> None:
    dag = graph(parents)
    assert search(dag, seconds, default_score(dag, seconds), slots) is None, why


def test_a_workflow_over_the_size_limit_keeps_its_default(monkeypatch: pytest.MonkeyPatch) -> None:
    dag = graph(PARENTS)
    assert search(dag, SECONDS, default_score(dag, SECONDS), 2) is not None
    monkeypatch.setattr(plan_order, "MAX_TASKS", len(NAMES) - 1)
    assert search(dag, SECONDS, default_score(dag, SECONDS), 2) is None


@st.composite
def workflows(draw: st.DrawFn) -> tuple[list[tuple[int, ...]], list[float], int]:
    size = draw(st.integers(2, 24))
    parents = [tuple(sorted(draw(st.sets(st.integers(0, i - 1), max_size=3)))) if i else () for i in range(size)]
    seconds = draw(st.lists(st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.0, 7.0]), min_size=size, max_size=size))
    return parents, seconds, draw(st.integers(1, 4))


@settings(max_examples=300, deadline=None)
@given(workflows())
def test_a_searched_order_keeps_its_promise_and_beats_the_default(
    case: tuple[list[tuple[int, ...]], list[float], int],
) -> None:
    parents, seconds, slots = case
    dag = graph(parents)
    default = default_score(dag, seconds)
    searched = search(dag, seconds, default, slots)
    if searched is None:
        return
    assert search(dag, seconds, default, slots) == searched  # deterministic
    planned = makespan(parents, seconds, searched, slots)
    assert planned == pytest.approx(max(searched))  # the score is the plan's time left
    assert planned <= makespan(parents, seconds, default, slots) * (1.0 - plan_order.MIN_GAIN) + 1e-9
    bound = max(
        sum(seconds) / slots,
        max(
            RefDag(
                names=tuple(f"t{i}" for i in range(len(parents))),
                durations=tuple(seconds),
                parents=tuple(parents),
            ).upward_ranks()
        ),
    )
    assert planned >= bound - 1e-9
