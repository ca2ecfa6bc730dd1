"""Gangs (all-or-nothing placement), max_parallel, and AIMD on OOM kills, on the pure machine."""

from __future__ import annotations

import pytest

from corral.controller.core import events as ev
from corral.controller.core.machine import MachineConfig
from corral.controller.core.model import AttemptState, TaskState
from corral.controller.errors import InvalidArgument
from corral.controller.rpc.submission import admit_workflow
from corral.controller.rpc.wire_spec import spec_to_proto
from corral.controller.spec import parse_workflow
from tests.unit.conftest import Sim, task_spec

A = AttemptState
T = TaskState


def _sim(make_sim: type[Sim]) -> Sim:
    return make_sim(config=MachineConfig(prefetch=0))


def _placed(sim: Sim, wf: str, *names: str) -> set[str]:
    return {n for n in names if sim.task(wf, n).state in (T.ASSIGNED, T.RUNNING)}


# --- gangs ---------------------------------------------------------------------------------------


def test_gang_waits_until_every_member_is_ready(make_sim: type[Sim]) -> None:
    sim = _sim(make_sim)
    sim.hello("a1", slots=8)
    wf, step = sim.submit([task_spec("pre"), task_spec("g1", gang="g"), task_spec("g2", "pre", gang="g")])
    assert [a.task.name for a in step.assignments()] == ["pre"]
    g1 = sim.task(wf, "g1")
    assert g1.state is T.READY
    assert sim.machine.plan_reason(g1) == "gang g: waiting until all 2 tasks are ready (1 ready)"
    assert sim.machine.explain(g1.id, sim.now).reason == "gang g: waiting until all 2 tasks are ready (1 ready)"
    step = sim.finished("a1", sim.attempt_of(wf, "pre"))
    assert sorted(a.task.name for a in step.assignments()) == ["g1", "g2"]  # in the same pass


def test_gang_is_all_or_nothing_and_a_partial_fit_allocates_nothing(make_sim: type[Sim]) -> None:
    sim = _sim(make_sim)
    sim.hello("a1", cpu=8, slots=8)
    big = {"cpu_cores": 4}
    wf, step = sim.submit([task_spec(f"g{i}", gang="trio", resources=big) for i in range(3)])
    assert step.assignments() == []  # two would fit: none is placed
    g0 = sim.task(wf, "g0")
    assert sim.machine.plan_reason(g0) == "gang trio: waiting until all 3 tasks fit (2 fit now)"
    assert sim.machine.views["a1"].allocated.cpu_cores == 0  # the trial's allocations were released
    # The room the failed trial tried is free for others: a task needing all 8 cores runs.
    other, step = sim.submit([task_spec("whole", resources={"cpu_cores": 8})], name="other")
    assert [a.task.name for a in step.assignments()] == ["whole"]
    sim.finished("a1", sim.attempt_of(other, "whole"))
    assert _placed(sim, wf, "g0", "g1", "g2") == set()
    step = sim.hello("a2", cpu=4, slots=8)
    assert _placed(sim, wf, "g0", "g1", "g2") == {"g0", "g1", "g2"}
    assert {a.agent_id for a in step.of(ev.Assign)} == {"a1", "a2"}


def test_gang_members_depending_on_each_other_are_rejected(make_sim: type[Sim]) -> None:
    sim = _sim(make_sim)
    with pytest.raises(InvalidArgument) as caught:
        sim.submit([task_spec("a", gang="g"), task_spec("mid", "a"), task_spec("b", "mid", gang="g")])
    assert caught.value.violations[0].field == "tasks[0].gang"
    assert "could never be all ready" in caught.value.violations[0].description
    with pytest.raises(InvalidArgument) as caught:
        sim.submit([task_spec(f"t{i}", gang="huge") for i in range(65)])
    assert caught.value.violations[0].field == "tasks[64].gang"
    assert sim.machine.workflows == {}


# --- max_parallel --------------------------------------------------------------------------------


def test_max_parallel_caps_active_tasks(make_sim: type[Sim]) -> None:
    sim = _sim(make_sim)
    sim.hello("a1", slots=8)
    names = [f"t{i}" for i in range(5)]
    wf, step = sim.submit([task_spec(n) for n in names], max_parallel=2)
    first = [a.task.name for a in step.assignments()]
    assert len(first) == 2
    waiting = sim.task(wf, "t4")
    assert sim.machine.plan_reason(waiting) == "workflow at max_parallel 2"
    assert sim.machine.explain(waiting.id, sim.now).reason == "workflow at max_parallel 2"
    assert sim.machine.parallelism.current(wf) == 2
    # Another workflow is not held behind it.
    _, other = sim.submit([task_spec("free")], name="other")
    assert [a.task.name for a in other.assignments()] == ["free"]
    step = sim.finished("a1", sim.attempt_of(wf, first[0]))
    assert len(step.assignments()) == 1
    assert len(_placed(sim, wf, *names)) == 2


def test_max_parallel_holds_a_gang_larger_than_its_room(make_sim: type[Sim]) -> None:
    sim = _sim(make_sim)
    sim.hello("a1", slots=8)
    wf, step = sim.submit([task_spec("solo"), task_spec("g1", gang="g"), task_spec("g2", gang="g")], max_parallel=2)
    # solo comes first (submission order); the gang of 2 then has room for 1 only: held whole.
    assert [a.task.name for a in step.assignments()] == ["solo"]
    assert sim.machine.plan_reason(sim.task(wf, "g1")) == "workflow at max_parallel 2"
    step = sim.finished("a1", sim.attempt_of(wf, "solo"))
    assert sorted(a.task.name for a in step.assignments()) == ["g1", "g2"]


# --- AIMD ----------------------------------------------------------------------------------------


def test_oom_kill_halves_the_limit_and_successes_grow_it_back(make_sim: type[Sim]) -> None:
    sim = _sim(make_sim)
    sim.hello("a1", slots=4)
    names = [f"t{i}" for i in range(12)]
    wf, step = sim.submit([task_spec(n, retries=3) for n in names])
    running = [a.task.name for a in step.assignments()]
    assert len(running) == 4
    step = sim.do(
        ev.AttemptFinished(
            "a1", sim.attempt_of(wf, running[0]), A.FAILED, 137, None, "out of memory", True, oom_killed=True
        )
    )
    assert sim.machine.parallelism.current(wf) == 2  # half of the 4 active, the killed one included
    halved = [e for e in step.changes.events if e.kind == "concurrency"]
    assert [e.message for e in halved] == [f"concurrency halved: OOM kill of task {running[0]} (limit 2)"]
    assert step.assignments() == []  # 3 still active, over the new limit
    # Window = the limit: 2 successes grow it to 3; placements follow the limit.
    sim.finished("a1", sim.attempt_of(wf, running[1]))
    sim.finished("a1", sim.attempt_of(wf, running[2]))
    assert sim.machine.parallelism.current(wf) == 3
    active = [n for n in names if sim.task(wf, n).state in (T.ASSIGNED, T.RUNNING)]
    assert len(active) <= 3
    waiting = next(
        sim.task(wf, n) for n in names if sim.task(wf, n).state is T.READY and sim.task(wf, n).not_before is None
    )
    assert sim.machine.plan_reason(waiting) == "workflow concurrency limited to 3 after OOM kills (AIMD)"


def test_aimd_limit_is_lifted_when_it_grows_back(make_sim: type[Sim]) -> None:
    sim = _sim(make_sim)
    sim.hello("a1", slots=2)
    wf, step = sim.submit([task_spec(f"t{i}", retries=3) for i in range(8)])
    a, b = (x.attempt_id for x in step.assignments())
    sim.do(ev.AttemptFinished("a1", a, A.FAILED, 137, None, "oom", True, oom_killed=True))
    assert sim.machine.parallelism.current(wf) == 1
    step = sim.finished("a1", b)  # window 1: grows to 2 = where it was halved from: lifted
    assert sim.machine.parallelism.current(wf) == 0
    assert any(e.message == "concurrency limit lifted after successes" for e in step.changes.events)


@pytest.mark.parametrize(
    "outcome",
    [A.TIMED_OUT, A.FAILED, A.LOST],
)
def test_no_reaction_to_timeouts_failures_or_fencing(make_sim: type[Sim], outcome: AttemptState) -> None:
    sim = _sim(make_sim)
    sim.hello("a1", slots=4)
    wf, step = sim.submit([task_spec(f"t{i}", retries=3) for i in range(8)])
    attempt = step.assignments()[0].attempt_id
    sim.do(ev.AttemptFinished("a1", attempt, outcome, 1, None, "timed out or killed", True, fenced=outcome is A.LOST))
    assert sim.machine.parallelism.current(wf) == 0
    assert not sim.machine.parallelism


def test_unused_features_build_no_rules(make_sim: type[Sim]) -> None:
    sim = _sim(make_sim)
    sim.hello("a1", slots=4)
    sim.submit([task_spec("t")])
    assert not sim.machine.gangs and not sim.machine.parallelism
    assert sim.machine.last_plan is not None and sim.machine.last_plan.held_workflows == {}


# --- reservations --------------------------------------------------------------------------------


def _starved(make_sim: type[Sim]) -> tuple[Sim, str, str, list[str]]:
    """Two 4-core tasks on an 8-core agent, then an 8-core task waiting past reserve_after_s."""
    sim = make_sim(config=MachineConfig(prefetch=0, reserve_after_s=60.0, reservation_expiry_factor=2.0))
    sim.hello("a1", cpu=8, slots=8)
    small = {"cpu_cores": 4}
    wf, step = sim.submit([task_spec(f"s{i}", resources=small, estimated_duration=100) for i in range(2)], name="small")
    smalls = [a.attempt_id for a in step.assignments()]
    for attempt_id in smalls:
        sim.started("a1", attempt_id)
    big_wf, step = sim.submit([task_spec("big", resources={"cpu_cores": 8})], name="big")
    assert step.assignments() == []
    return sim, wf, big_wf, smalls


def test_reservation_keeps_small_tasks_out_of_the_freed_room(make_sim: type[Sim]) -> None:
    sim, _, big_wf, smalls = _starved(make_sim)
    big = sim.task(big_wf, "big")
    sim.advance(59)
    assert not sim.machine.reservations  # not before reserve_after_s
    sim.advance(2)
    reservation = sim.machine.reservations.by_task[big.id]
    assert reservation.agent_id == "a1"
    assert 1060.0 <= reservation.made_at <= sim.now
    # Expected free when the 100 s smalls end (about 40 s), so the bound is 2 x max(40, 60) s.
    assert reservation.expires_at == pytest.approx(reservation.made_at + 120.0)
    assert sim.machine.plan_reason(big).startswith("reserved agent a1")
    sim.finished("a1", smalls[0])  # 4 cores free: a new small task would fit there
    _, step = sim.submit([task_spec("late", resources={"cpu_cores": 4})], name="late")
    assert step.assignments() == []  # the room is reserved for big
    step = sim.finished("a1", smalls[1])
    assert [a.task.name for a in step.assignments()] == ["big"]
    sim.tick()
    assert not sim.machine.reservations  # dropped once its task started


def test_unused_reservation_expires(make_sim: type[Sim]) -> None:
    sim, _, big_wf, smalls = _starved(make_sim)
    big = sim.task(big_wf, "big")
    sim.advance(61)
    expires_at = sim.machine.reservations.by_task[big.id].expires_at
    sim.finished("a1", smalls[0])
    _, step = sim.submit([task_spec("late", resources={"cpu_cores": 4})], name="late")
    assert step.assignments() == []
    sim.advance(expires_at - 1.0 - sim.now)
    assert big.id in sim.machine.reservations.by_task  # still held just before its bound
    step = sim.advance(1.0)
    assert any(e.kind == "reservation_ended" and "expired unused" in e.message for e in step.changes.events)
    assert [a.task.name for a in step.assignments()] == ["late"]  # the room is anyone's again
    assert big.id not in sim.machine.reservations.by_task


def test_a_member_retried_after_the_gang_started_is_placed_alone(make_sim: type[Sim]) -> None:
    sim = _sim(make_sim)
    sim.hello("a1", slots=8)
    wf, step = sim.submit([task_spec("g1", gang="g", retries=1), task_spec("g2", gang="g")])
    assert len(step.assignments()) == 2
    sim.finished("a1", sim.attempt_of(wf, "g1"), A.FAILED, error="boom")
    step = sim.advance(5)  # past the retry backoff; g2 still runs
    assert sim.task(wf, "g1").state is T.ASSIGNED
    assert sim.task(wf, "g2").state is T.ASSIGNED


@pytest.mark.parametrize("value", [0, -1])
def test_max_parallel_below_one_is_rejected_at_its_path(make_sim: type[Sim], value: int) -> None:
    sim = _sim(make_sim)
    proto = spec_to_proto(parse_workflow({"name": "wf", "max_parallel": 1, "tasks": [task_spec("t")]}))
    proto.max_parallel = value  # past the client's own check, as a raw caller could send it
    with pytest.raises(InvalidArgument) as caught:
        admit_workflow(proto, sim.new_id)
    assert [v.field for v in caught.value.violations] == ["max_parallel"]


def test_restart_restores_max_parallel_and_live_gangs_only(make_sim: type[Sim]) -> None:
    sim = _sim(make_sim)
    sim.hello("a1", slots=8)
    done, step = sim.submit([task_spec("d1", gang="old"), task_spec("d2", gang="old")], name="done")
    for assignment in step.assignments():
        sim.finished("a1", assignment.attempt_id)
    live, _ = sim.submit([task_spec(f"t{i}") for i in range(3)] + [task_spec("pre"), task_spec("g", "pre", gang="g")])
    limited, _ = sim.submit([task_spec(f"l{i}") for i in range(3)], name="limited", max_parallel=1)
    assert sim.machine.gangs.keys() == {live}  # the finished workflow's gang was forgotten
    fresh = make_sim(boot_time=sim.now, now=sim.now, store=sim.store, config=MachineConfig(prefetch=0))
    fresh.machine.restore(sim.store.load(), sim.now)
    assert fresh.machine.gangs.keys() == {live}
    assert fresh.machine.parallelism.current(limited) == 1
    assert fresh.task(done, "d1").state is T.COMPLETED


def test_held_tasks_do_not_end_the_pass_like_skips(make_sim: type[Sim]) -> None:
    sim = _sim(make_sim)
    sim.hello("a1", slots=8)
    # More held tasks than max_skips (256): were they counted as skips, "after" would not be reached.
    sim.submit([task_spec(f"t{i}", priority=90) for i in range(300)], max_parallel=1)
    _, step = sim.submit([task_spec("after", priority=10)], name="after")
    assert [a.task.name for a in step.assignments()] == ["after"]
    assert sim.machine.last_plan is not None and sim.machine.last_plan.stopped == ""
