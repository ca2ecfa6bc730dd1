"""The ready queue: aged-priority order (against a brute-force sort), backoff, lazy removal."""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import islice

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.controller.core.queues import ReadyQueue


def test_priority_then_fifo() -> None:
    queue = ReadyQueue(ageing_per_s=0.0)
    queue.push("low", "shell", 10, ready_at=0.0)
    queue.push("high", "shell", 90, ready_at=5.0)
    queue.push("mid1", "shell", 50, ready_at=1.0)
    queue.push("mid2", "shell", 50, ready_at=1.0)
    assert list(queue.candidates(["shell"], now=10.0)) == ["high", "mid1", "mid2", "low"]


def test_candidates_do_not_remove_and_merge_types() -> None:
    queue = ReadyQueue(ageing_per_s=0.0)
    queue.push("s1", "shell", 10, ready_at=0.0)
    queue.push("p1", "python", 30, ready_at=0.0)
    queue.push("s2", "shell", 20, ready_at=0.0)
    queue.push("g1", "gpu", 99, ready_at=0.0)
    assert list(queue.candidates(["shell", "python"], now=1.0)) == ["p1", "s2", "s1"]
    assert list(queue.candidates(["shell", "python"], now=1.0)) == ["p1", "s2", "s1"]
    assert list(queue.candidates(["missing"], now=1.0)) == []
    assert len(queue) == 4
    assert queue.agent_types() == {"shell", "python", "gpu"}


def _serve_until(queue: ReadyQueue, target: str, ticks: int) -> int | None:
    """Each second a fresh priority-100 task arrives and the head of the queue is served."""
    for t in range(ticks):
        queue.push(f"fresh-{t}", "shell", 100, ready_at=float(t))
        head = next(queue.candidates(["shell"], now=float(t)))
        queue.discard(head)
        if head == target:
            return t
    return None


def test_ageing_prevents_starvation() -> None:
    queue = ReadyQueue(ageing_per_s=0.5)
    queue.push("old-low", "shell", 0, ready_at=0.0)
    # At 0.5/s the waiting task's effective priority passes 100 after 200 s.
    served_at = _serve_until(queue, "old-low", ticks=1000)
    assert served_at is not None and 200 <= served_at <= 202


def test_without_ageing_a_low_priority_task_starves() -> None:
    queue = ReadyQueue(ageing_per_s=0.0)
    queue.push("old-low", "shell", 0, ready_at=0.0)
    assert _serve_until(queue, "old-low", ticks=1000) is None


def test_effective_priority() -> None:
    queue = ReadyQueue(ageing_per_s=0.5)
    queue.push("a", "shell", 10, ready_at=100.0)
    entry = queue.entry("a")
    assert entry is not None
    assert entry.effective_priority(300.0, queue.ageing_per_s) == 110.0


def test_repush_replaces() -> None:
    queue = ReadyQueue()
    queue.push("a", "shell", 10, ready_at=0.0)
    queue.push("b", "shell", 20, ready_at=0.0)
    queue.push("a", "python", 90, ready_at=0.0)
    assert len(queue) == 2
    assert list(queue.candidates(["shell"], now=0.0)) == ["b"]
    assert list(queue.candidates(["python"], now=0.0)) == ["a"]
    assert queue.agent_types() == {"shell", "python"}


def test_discard_and_membership() -> None:
    queue = ReadyQueue()
    queue.push("a", "shell", 10, ready_at=0.0)
    queue.push("b", "shell", 10, ready_at=1.0, not_before=50.0)
    assert "a" in queue and "b" in queue and "c" not in queue
    queue.discard("a")
    queue.discard("b")
    queue.discard("never-there")
    assert len(queue) == 0 and "a" not in queue
    assert list(queue.candidates(["shell"], now=100.0)) == []
    assert queue.next_wakeup() is None
    assert queue.agent_types() == set()


def test_backoff_delays_until_not_before() -> None:
    queue = ReadyQueue(ageing_per_s=0.0)
    queue.push("retry", "shell", 99, ready_at=0.0, not_before=30.0)
    queue.push("other", "shell", 1, ready_at=0.0)
    assert queue.delayed("retry") == 30.0
    assert queue.delayed("other") is None
    assert queue.next_wakeup() == 30.0
    assert list(queue.candidates(["shell"], now=29.9)) == ["other"]
    assert queue.agent_types() == {"shell"}
    queue.promote(30.0)
    assert queue.delayed("retry") is None
    assert queue.next_wakeup() is None
    assert list(queue.candidates(["shell"], now=30.0)) == ["retry", "other"]


def test_candidates_promote_due_tasks() -> None:
    queue = ReadyQueue()
    queue.push("retry", "shell", 1, ready_at=0.0, not_before=5.0)
    assert list(queue.candidates(["shell"], now=6.0)) == ["retry"]


def test_many_discards_keep_order_and_walk_is_lazy() -> None:
    # Discarding two tasks in three makes stale heap items outnumber live ones, which sweeps them.
    queue = ReadyQueue(ageing_per_s=0.0)
    for i in range(5000):
        queue.push(f"t{i}", "shell", i % 100, ready_at=float(i))
    for i in range(5000):
        if i % 3:
            queue.discard(f"t{i}")
    expected = sorted(
        (f"t{i}" for i in range(5000) if i % 3 == 0),
        key=lambda tid: (-(int(tid[1:]) % 100), int(tid[1:])),
    )
    assert list(islice(queue.candidates(["shell"], now=0.0), 10)) == expected[:10]
    assert list(queue.candidates(["shell"], now=0.0)) == expected
    assert len(queue) == len(expected)


def test_many_discards_while_delayed() -> None:
    queue = ReadyQueue(ageing_per_s=0.0)
    for i in range(300):
        queue.push(f"t{i}", "shell", 0, ready_at=float(i), not_before=1000.0 + i)
    for i in range(300):
        if i % 5:
            queue.discard(f"t{i}")
    assert queue.next_wakeup() == 1000.0
    queue.discard("t0")
    assert queue.next_wakeup() == 1005.0
    assert list(queue.candidates(["shell"], now=1100.0)) == [f"t{i}" for i in range(5, 101, 5)]
    assert queue.delayed("t105") == 1105.0


def test_a_queue_emptied_of_live_tasks_keeps_no_stale_items() -> None:
    # Fewer items than the sweep's threshold, so only the empty-heap rule can drop them: stale
    # items would keep finished tasks' ids (and the allocator arenas around them) alive.
    queue = ReadyQueue(ageing_per_s=0.0)
    for i in range(20):
        queue.push(f"t{i}", "shell", 0, ready_at=float(i))
        queue.push(f"d{i}", "shell", 0, ready_at=float(i), not_before=1000.0 + i)
    for i in range(20):
        queue.discard(f"t{i}")
    for i in range(10):
        queue.discard(f"d{i}")
    assert all(not heap for heap in queue._heaps.values())
    assert len(queue._delayed) == 20  # ten still live: not cleared
    assert list(queue.candidates(["shell"], now=1015.0)) == [f"d{i}" for i in range(10, 16)]  # promoted
    for i in range(10, 20):
        queue.discard(f"d{i}")
    assert not queue._delayed and all(not heap for heap in queue._heaps.values()) and len(queue) == 0
    queue.push("again", "shell", 0, ready_at=0.0)
    assert list(queue.candidates(["shell"], now=0.0)) == ["again"]


@dataclass
class _Model:
    agent_type: str
    priority: int
    ready_at: float
    not_before: float | None
    seq: int
    score: float


_ids = st.sampled_from([f"t{i}" for i in range(12)])
_types = st.sampled_from(["shell", "python", "gpu"])
_ops = st.one_of(
    st.tuples(
        st.just("push"),
        _ids,
        _types,
        st.integers(0, 100),
        st.integers(0, 200).map(float),
        st.none() | st.integers(0, 300).map(float),
        st.sampled_from([0.0, 1.0, 2.5, 7.0]),
    ),
    st.tuples(st.just("discard"), _ids),
    st.tuples(st.just("promote"), st.integers(0, 300).map(float)),
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(_ops, max_size=40),
    st.sampled_from([0.0, 0.5, 2.0]),
    st.sampled_from([0.0, 10.0]),
    st.integers(0, 300).map(float),
    st.sets(_types, min_size=1),
)
def test_matches_brute_force(
    ops: list[tuple[object, ...]], ageing: float, step: float, now: float, types: set[str]
) -> None:
    queue = ReadyQueue(ageing_per_s=ageing, ageing_step=step)
    model: dict[str, _Model] = {}
    seq = 0
    for op in ops:
        if op[0] == "push":
            _, tid, agent_type, priority, ready_at, not_before, score = op
            assert isinstance(tid, str) and isinstance(agent_type, str) and isinstance(priority, int)
            assert isinstance(ready_at, float) and (not_before is None or isinstance(not_before, float))
            assert isinstance(score, float)
            queue.push(tid, agent_type, priority, ready_at, not_before, score)
            seq += 1
            model[tid] = _Model(agent_type, priority, ready_at, not_before, seq, score)
        elif op[0] == "discard":
            assert isinstance(op[1], str)
            queue.discard(op[1])
            model.pop(op[1], None)
        else:
            assert isinstance(op[1], float)
            queue.promote(op[1])
            for m in model.values():
                if m.not_before is not None and m.not_before <= op[1]:
                    m.not_before = None

    assert len(queue) == len(model)
    assert queue.agent_types() == {m.agent_type for m in model.values()}
    for tid, m in model.items():
        assert tid in queue
        assert queue.delayed(tid) == m.not_before
    waiting = [m.not_before for m in model.values() if m.not_before is not None]
    assert queue.next_wakeup() == (min(waiting) if waiting else None)

    # candidates() promotes what is due by `now`, then yields by aged priority (in whole steps
    # of ageing counted from the epoch, or continuous with step 0), then score, then FIFO.
    eligible = [
        (tid, m) for tid, m in model.items() if m.agent_type in types and (m.not_before is None or m.not_before <= now)
    ]

    def aged(m: _Model) -> float:
        if step:
            steps_now = math.floor(ageing * now / step)
            return m.priority + step * (steps_now - math.floor(ageing * m.ready_at / step))
        return m.priority + ageing * (now - m.ready_at)

    expected = [tid for tid, m in sorted(eligible, key=lambda e: (-aged(e[1]), -e[1].score, e[1].seq))]
    assert list(queue.candidates(types, now)) == expected


# --- issue 9: score within a band, ageing in steps ---------------------------------------------


def test_score_orders_within_a_band_fifo_among_equal_scores() -> None:
    queue = ReadyQueue(ageing_per_s=0.5, ageing_step=30.0)  # one band = 60 s of readiness
    queue.push("short-path", "shell", 50, ready_at=0.0, score=1.0)
    queue.push("critical", "shell", 50, ready_at=10.0, score=9.0)
    queue.push("mid-a", "shell", 50, ready_at=20.0, score=5.0)
    queue.push("mid-b", "shell", 50, ready_at=5.0, score=5.0)
    queue.push("urgent", "shell", 51, ready_at=30.0, score=0.0)  # higher priority: ahead of any score
    assert list(queue.candidates(["shell"], now=40.0)) == ["urgent", "critical", "mid-a", "mid-b", "short-path"]


def test_an_older_band_goes_before_a_higher_score() -> None:
    queue = ReadyQueue(ageing_per_s=0.5, ageing_step=30.0)
    queue.push("old", "shell", 50, ready_at=59.0, score=1.0)  # band of [0, 60)
    queue.push("new", "shell", 50, ready_at=61.0, score=100.0)  # band of [60, 120)
    assert list(queue.candidates(["shell"], now=61.0)) == ["old", "new"]


def test_ageing_steps_let_a_low_priority_task_overtake() -> None:
    # 0.5 points/s in steps of 30 points: a priority-0 task waiting passes fresh priority-100 work
    # once 4 steps (240 s) separate their windows, about when continuous ageing would (200 s).
    queue = ReadyQueue(ageing_per_s=0.5, ageing_step=30.0)
    queue.push("old-low", "shell", 0, ready_at=0.0)
    for t in range(1000):
        queue.push(f"fresh-{t}", "shell", 100, ready_at=float(t), score=1e9)
        head = next(queue.candidates(["shell"], now=float(t)))
        queue.discard(head)
        if head == "old-low":
            break
    assert 200 <= t <= 240


def test_a_low_score_task_is_served_while_high_scores_keep_arriving() -> None:
    queue = ReadyQueue(ageing_per_s=0.5, ageing_step=30.0)
    queue.push("low", "shell", 50, ready_at=0.0, score=0.0)
    served = None
    for t in range(1000):
        queue.push(f"hot-{t}", "shell", 50, ready_at=float(t), score=1000.0)
        head = next(queue.candidates(["shell"], now=float(t)))
        queue.discard(head)
        if head == "low":
            served = t
            break
    # Served once its window (60 s) has passed and the hot tasks of that window are gone.
    assert served is not None and 60 <= served <= 120


def test_repush_with_a_new_score_leaves_no_stale_order() -> None:
    queue = ReadyQueue(ageing_per_s=0.0)
    queue.push("a", "shell", 50, ready_at=0.0, score=1.0)
    queue.push("b", "shell", 50, ready_at=0.0, score=2.0)
    queue.push("a", "shell", 50, ready_at=0.0, score=3.0)  # replaces a's entry: the old item is stale
    assert list(queue.candidates(["shell"], now=0.0)) == ["a", "b"]
    assert queue.order_key("a") < queue.order_key("b")
    queue.push("r", "shell", 50, ready_at=0.0, not_before=5.0, score=9.0)
    assert list(queue.candidates(["shell"], now=4.0)) == ["a", "b"]
    assert list(queue.candidates(["shell"], now=5.0)) == ["r", "a", "b"]  # its score survives the backoff


@pytest.mark.parametrize("kwargs", [{"ageing_per_s": -1.0}, {"ageing_step": -1.0}, {"ageing_step": math.inf}])
def test_bad_ageing_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be a finite number"):
        ReadyQueue(**kwargs)
