"""Lookahead dispatch (core/lookahead.py): a long task goes to an agent shortly before a slot frees.

Long tasks (expected over ``prefetch_below_s``) are never prefetched for their own sake; without
the lookahead each one waited for the report of the task before it, a commit and an assignment
while its slot sat idle. Driven like the runtime drives the machine (``conftest.Sim``); every
machine is validated at teardown.
"""

from __future__ import annotations

import pytest

from corral.controller.core import events as ev
from corral.controller.core.lookahead import EndingSoon
from corral.controller.core.machine import MachineConfig
from corral.controller.core.model import AgentState, AttemptState, Resources, TaskState, WorkflowState
from corral.controller.core.placement import AgentView, Demand
from corral.controller.core.placement_filters import WindowFilter
from tests.unit.conftest import Sim, task_spec

T = TaskState
A = AttemptState


LATENCY = 0.02  # placed -> Started applied: the horizon is twice that (0.04 s), at most lookahead_s


def _start(sim: Sim, agent_id: str, attempt_id: str) -> None:
    """Its Started applied LATENCY after the placement (one sample of the dispatch latency)."""
    sim.now += LATENCY
    sim.started(agent_id, attempt_id)


def _view(agent_id: str) -> AgentView:
    return AgentView(agent_id, agent_id, frozenset({"default"}), {}, AgentState.CONNECTED, Resources(), slots=1)


def test_attempts_count_on_their_agent_once_their_expected_end_is_within_the_horizon() -> None:
    ending = EndingSoon()
    views = {"a1": _view("a1"), "a2": _view("a2")}
    ending.started("x", "a1", expected_end=10.0)
    ending.started("y", "a1", expected_end=12.0)
    ending.started("z", "a2", expected_end=30.0)
    ending.advance(9.0, views)
    assert ending.of("a1") == 0 and views["a1"].ending == 0
    ending.advance(12.0, views)
    assert ending.of("a1") == 2 and views["a1"].ending == 2 and views["a2"].ending == 0
    ending.advance(13.0, views)  # counted once, however often the horizon moves
    assert ending.of("a1") == 2
    ending.ended("x", views)
    assert ending.of("a1") == 1 and views["a1"].ending == 1
    ending.ended("z", views)  # ended before it was due: never counted
    ending.advance(40.0, views)
    assert ending.of("a2") == 0 and views["a2"].ending == 0
    ending.ended("y", views)
    assert ending.by_agent == {} and len(ending) == 0


def test_the_horizon_is_twice_the_dispatch_latency_at_most_the_cap() -> None:
    ending = EndingSoon()
    assert ending.horizon(0.05) == 0.0  # nothing measured: no lookahead
    ending.placed("x", 10.0)
    ending.took("x", 10.01)
    assert ending.latency_s == pytest.approx(0.01) and ending.horizon(0.05) == pytest.approx(0.02)
    ending.took("y", 99.0)  # not placed on a free slot: no sample
    assert ending.latency_s == pytest.approx(0.01)
    ending.placed("z", 20.0)
    ending.took("z", 20.11)
    assert ending.latency_s == pytest.approx(0.8 * 0.01 + 0.2 * 0.11)
    assert ending.horizon(0.05) == 0.05 and ending.horizon(0.0) == 0.0
    ending.placed("w", 30.0)
    ending.ended("w", {})  # ended before it started: forgotten
    assert ending._placed == {}


def test_the_heap_of_attempts_that_ended_early_stays_bounded() -> None:
    ending = EndingSoon()
    views = {"a1": _view("a1")}
    for i in range(10_000):
        ending.started(f"x{i}", "a1", expected_end=1e9 + i)  # far in the future
        ending.ended(f"x{i}", views)  # but each ends at once
    assert len(ending) == 0
    assert len(ending._heap) <= 2 * 1024 + 2


def test_a_short_task_may_always_go_where_a_long_one_may() -> None:
    # Tasks ran long, so the prefetch window is closed (window == slots); one running attempt is
    # ending. Long tasks sent ahead of their slots must not starve a short (critical) one: it may
    # take that place too, and the agent starts it first if the controller ranks it first.
    view = _view("a1")
    view.slots, view.window, view.outstanding, view.ending = 4, 4, 4, 1
    short, long = Demand("default", prefetchable=True), Demand("default", prefetchable=False)
    assert long.window(view) == 5 and short.window(view) == 5
    assert WindowFilter().check(long, view) is None
    view.outstanding = 5
    assert WindowFilter().check(long, view) == "all 5 slots busy (4 + 1 ending soon)"
    view.window = 9  # the prefetch window open wider: a short task may use all of it
    assert short.window(view) == 9 and long.window(view) == 5


def test_a_long_task_is_sent_shortly_before_the_running_one_is_expected_to_end(sim: Sim) -> None:
    sim.hello("a1", slots=1)
    wf, step = sim.submit([task_spec(f"t{i}", estimated_duration=1.0) for i in range(3)])
    (first,) = step.assignments("a1")  # long tasks take a free slot only
    _start(sim, "a1", first.attempt_id)
    # Expected to end in 1 s: not within the lookahead (0.04 s) yet.
    assert sim.advance(0.9).assignments("a1") == []
    waiting = [t for t in sim.machine.tasks.values() if t.state is T.READY]
    assert len(waiting) == 2
    # 0.03 s before its expected end, one more long task is queued behind it on the agent.
    (queued,) = sim.advance(0.07).assignments("a1")
    assert sim.machine.views["a1"].outstanding == 2
    last = next(t for t in sim.machine.tasks.values() if t.state is T.READY)
    why = sim.machine.explain(last.id, sim.now)
    assert dict((aid, r) for aid, _, r in why.agents)["a1"] == "all 2 slots busy (1 + 1 ending soon)"
    # The running one ends: the queued one takes the slot and the window is the slot alone again.
    assert sim.finished("a1", first.attempt_id).assignments("a1") == []
    assert sim.machine.views["a1"].ending == 0
    sim.started("a1", queued.attempt_id)
    (final,) = sim.finished("a1", queued.attempt_id).assignments("a1")
    assert final.task.name == last.name
    sim.started("a1", final.attempt_id)
    sim.finished("a1", final.attempt_id)
    assert sim.machine.workflows[wf].state is WorkflowState.COMPLETED


def test_the_pass_comes_when_the_lookahead_opens_without_any_other_event(sim: Sim) -> None:
    sim.hello("a1", slots=1)
    _, step = sim.submit([task_spec("first", estimated_duration=1.0), task_spec("second", estimated_duration=1.0)])
    (first,) = step.assignments("a1")
    _start(sim, "a1", first.attempt_id)
    wake = sim.machine.next_timer()
    assert wake is not None and abs(wake - (sim.now + 1.0 - 2 * LATENCY)) < 1e-9
    (queued,) = sim.tick(at=wake).assignments("a1")
    assert queued.task.name == "second"
    # Counted: the same attempt asks for no pass again.
    assert sim.machine.next_timer() != wake


def test_a_task_without_a_known_duration_never_opens_the_lookahead(sim: Sim) -> None:
    sim.hello("a1", slots=1)
    # The second task is long; the running one has no estimate and no history: nothing is bound to it.
    _, step = sim.submit([task_spec("unknown"), task_spec("long", estimated_duration=1.0, dependencies=[])])
    (running,) = step.assignments("a1")
    assert running.task.name == "unknown"
    _start(sim, "a1", running.attempt_id)
    assert sim.advance(3600.0).assignments("a1") == []
    assert sim.machine.views["a1"].ending == 0


def test_a_queued_long_task_moves_to_an_idle_agent_when_the_running_one_overruns(sim: Sim) -> None:
    sim.hello("a1", slots=1)
    wf, step = sim.submit([task_spec("first", estimated_duration=1.0), task_spec("second", estimated_duration=1.0)])
    (first,) = step.assignments("a1")
    _start(sim, "a1", first.attempt_id)
    (queued,) = sim.advance(0.97).assignments("a1")
    assert queued.task.name == "second"
    # "first" overruns its estimate; a second agent joins with its slot free.
    sim.now += 1.0
    (cancel,) = sim.hello("a2", slots=1).of(ev.CancelAttempts)
    assert cancel.agent_id == "a1" and cancel.attempt_ids == [queued.attempt_id] and cancel.release_only
    (moved,) = sim.released("a1", queued.attempt_id).assignments("a2")
    assert moved.task.name == "second"
    assert sim.task(wf, "second").retries_used == 0
    assert sim.machine.attempts[queued.attempt_id].state is A.CANCELLED


def test_assignments_carry_the_ready_queue_order_the_agent_keeps(sim: Sim) -> None:
    sim.hello("a1", slots=2)
    _, step = sim.submit(
        [
            task_spec("low", estimated_duration=0.05, priority=10),
            task_spec("high", estimated_duration=0.05, priority=90),
            task_spec("mid", estimated_duration=0.05),
        ]
    )
    assignments = step.assignments("a1")  # two slots and one prefetched: all three are sent
    assert [a.task.name for a in assignments] == ["high", "mid", "low"]
    orders = [a.order for a in assignments]
    assert all(len(o) == 3 for o in orders)
    assert orders == sorted(orders)  # the agent starts them in this order, whatever their arrival


def test_gang_members_never_take_a_slot_that_is_only_ending(make_sim: type[Sim]) -> None:
    sim = make_sim(config=MachineConfig(prefetch=0))
    sim.hello("a1", slots=2)
    _, step = sim.submit([task_spec("running", estimated_duration=1.0)], name="first")
    (running,) = step.assignments("a1")
    _start(sim, "a1", running.attempt_id)
    sim.advance(0.97)  # "running" is ending: a long task could be sent ahead of its slot
    members = [task_spec(f"g{i}", estimated_duration=1.0, gang="pair") for i in range(2)]
    wf, step = sim.submit(members, name="gang")
    # One slot is free and one is ending: the pair must start together, so neither is placed.
    assert sim.machine.views["a1"].ending == 1
    assert step.assignments("a1") == []
    assert sim.machine.plan_reason(sim.task(wf, "g0")) == "gang pair: waiting until all 2 tasks fit (1 fit now)"
    step = sim.finished("a1", running.attempt_id)
    assert sorted(a.task.name for a in step.assignments("a1")) == ["g0", "g1"]


def test_the_controller_flag_sets_the_horizon_and_zero_turns_it_off(make_sim: type[Sim]) -> None:
    from corral.controller.daemon import _config
    from corral.controller.flags import parse_args

    assert _config(parse_args([])).lookahead_s == 0.05
    assert _config(parse_args(["--lookahead", "0.2"])).lookahead_s == 0.2
    off = _config(parse_args(["--lookahead", "0"]))
    assert off.lookahead_s == 0.0
    sim = make_sim(config=off)
    sim.hello("a1", slots=1)
    _, step = sim.submit([task_spec("first", estimated_duration=1.0), task_spec("second", estimated_duration=1.0)])
    (first,) = step.assignments("a1")
    _start(sim, "a1", first.attempt_id)
    assert sim.advance(0.99).assignments("a1") == []  # free slots only
    assert len(sim.machine.ending) == 0


def test_no_measured_latency_means_no_lookahead(sim: Sim) -> None:
    # Agents that start what they are given at the instant it is placed (the simulator's) leave
    # nothing to cover: binding a task to a slot early would only cost the order.
    sim.hello("a1", slots=1)
    _, step = sim.submit([task_spec("first", estimated_duration=1.0), task_spec("second", estimated_duration=1.0)])
    (first,) = step.assignments("a1")
    sim.started("a1", first.attempt_id)
    assert sim.machine.ending.horizon(0.05) == 0.0
    assert sim.advance(0.999).assignments("a1") == []


def test_a_negative_horizon_is_refused() -> None:
    from corral.controller.flags import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--lookahead", "-1"])
