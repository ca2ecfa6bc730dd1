"""The state machine's dispatch order and targets: priorities and ageing, pulled work, drains."""

from __future__ import annotations

import json

import pytest

from corral.controller.core import events as ev
from corral.controller.core.machine import MachineConfig
from corral.controller.core.model import AgentState, AttemptState, Resources, TaskState, WorkflowState
from corral.controller.errors import FailedPrecondition, NotFound
from tests.unit.conftest import Sim, task_spec

T = TaskState
W = WorkflowState
A = AttemptState


# --- priority -----------------------------------------------------------------------------------


def _one_slot() -> MachineConfig:
    return MachineConfig(prefetch=0)


def test_higher_priority_runs_first(make_sim: type[Sim]) -> None:
    sim = make_sim(config=_one_slot())
    wf, _ = sim.submit([task_spec("low", priority=10), task_spec("mid"), task_spec("high", priority=90)])
    order = []
    step = sim.hello("a1", slots=1)
    while True:
        (assignment,) = step.assignments()
        order.append(assignment.task.name)
        step = sim.finished("a1", assignment.attempt_id)
        if sim.machine.workflows[wf].state.terminal:
            break
    assert order == ["high", "mid", "low"]


def test_ageing_lets_a_low_priority_task_overtake(make_sim: type[Sim]) -> None:
    sim = make_sim(config=_one_slot())
    sim.hello("a1", slots=1)
    _, step = sim.submit([task_spec("blocker")], name="blocker")
    blocker = step.assignments()[0].attempt_id
    sim.submit([task_spec("low", priority=0)], name="low")
    # 100 priority points at 0.5/s take 200 s to make up: a fresh priority-100 task still wins
    # after 100 s of waiting, but not after 300 s.
    sim.advance(300)
    sim.submit([task_spec("high", priority=100)], name="high")
    (next_up,) = sim.finished("a1", blocker).assignments()
    assert next_up.task.name == "low"


def test_fresh_high_priority_beats_a_short_wait(make_sim: type[Sim]) -> None:
    sim = make_sim(config=_one_slot())
    sim.hello("a1", slots=1)
    _, step = sim.submit([task_spec("blocker")], name="blocker")
    sim.submit([task_spec("low", priority=0)], name="low")
    sim.advance(100)
    sim.submit([task_spec("high", priority=100)], name="high")
    (next_up,) = sim.finished("a1", step.assignments()[0].attempt_id).assignments()
    assert next_up.task.name == "high"


def test_workflow_priority_is_the_default_of_its_tasks(sim: Sim) -> None:
    wf, _ = sim.submit([task_spec("a"), task_spec("b", priority=5)], priority=80)
    assert sim.task(wf, "a").priority == 80 and sim.task(wf, "b").priority == 5


# --- pulled work (external workers) --------------------------------------------------------------


def _ext(name: str, **fields: object) -> dict[str, object]:
    return {"name": name, "agent_type": "ext", "payload": {"job": name}, **fields}


def test_pull_hands_out_a_task_matching_type_labels_and_capacity(sim: Sim) -> None:
    wf, _ = sim.submit([_ext("big", resources={"cpu_cores": 8}), _ext("gpu", constraints={"accel": "yes"})])
    small = Resources(cpu_cores=2)
    assert sim.do(ev.PullTask("w1", ("other",))).result is None
    assert sim.do(ev.PullTask("w1", ("ext",), {}, small)).result is None
    step = sim.do(ev.PullTask("w1", ("ext",), {"accel": "yes"}, small))
    assignment = step.result
    assert assignment is not None and assignment.task.name == "gpu"
    attempt = sim.machine.attempts[assignment.attempt_id]
    assert attempt.pulled and attempt.state is A.RUNNING and attempt.agent_id == "w1"
    assert sim.task(wf, "gpu").state is T.RUNNING
    assert sim.machine.deadlines[attempt.id] == sim.now + sim.machine.config.pull_lease_s
    other = sim.do(ev.PullTask("w2", ("ext",))).result
    assert other is not None and other.task.name == "big"
    assert json.loads(other.task.payload) == {"job": "big"}

    assert sim.finished("w2", assignment.attempt_id).result is False  # not w2's attempt
    assert sim.finished("w1", assignment.attempt_id, result=b'"ok"').result is True
    assert sim.finished("w1", assignment.attempt_id).result is False  # only once
    sim.finished("w2", other.attempt_id)
    assert sim.machine.workflows[wf].state is W.COMPLETED
    assert sim.task(wf, "gpu").result == b'"ok"'


def test_pulled_attempt_past_its_timeout_is_failed_and_retried(sim: Sim) -> None:
    wf, _ = sim.submit([_ext("t", timeout=30, retries=1)])
    assignment = sim.do(ev.PullTask("w1", ("ext",))).result
    deadline = sim.now + 30 + sim.machine.config.kill_grace_s
    assert sim.machine.deadlines[assignment.attempt_id] == deadline
    step = sim.tick(at=deadline)
    assert step.of(ev.CancelAttempts) == []  # nobody to tell
    assert sim.machine.attempts[assignment.attempt_id].state is A.TIMED_OUT
    task = sim.task(wf, "t")
    assert task.state is T.READY and task.retries_used == 1
    assert sim.finished("w1", assignment.attempt_id).result is False


# --- drain --------------------------------------------------------------------------------------


def test_drain_stops_new_placements_but_running_work_finishes(sim: Sim) -> None:
    sim.hello("a1", slots=1)
    wf, step = sim.submit([task_spec("first")])
    attempt = step.assignments("a1")[0].attempt_id
    step = sim.do(ev.DrainAgent("a1", grace_s=12))
    assert step.of(ev.DrainOrder) == [ev.DrainOrder("a1", 12)]
    assert sim.machine.agents["a1"].state is AgentState.DRAINING
    wf2, step = sim.submit([task_spec("second")], name="later")
    assert step.of(ev.Assign) == []
    assert sim.finished("a1", attempt).of(ev.Assign) == []
    assert sim.machine.workflows[wf].state is W.COMPLETED
    why = sim.machine.explain(sim.task(wf2, "second").id, sim.now)
    assert dict((aid, r) for aid, _, r in why.agents)["a1"] == "agent is draining"
    assert [a.task.name for a in sim.hello("a2").assignments("a2")] == ["second"]


def test_drain_of_unknown_or_disconnected_agent_is_refused(sim: Sim) -> None:
    with pytest.raises(NotFound):
        sim.do(ev.DrainAgent("ghost"))
    sim.hello("a1")
    sim.do(ev.AgentGone("a1", sim.machine.agents["a1"].session_epoch))
    with pytest.raises(FailedPrecondition):
        sim.do(ev.DrainAgent("a1"))
    assert not sim.quiet().changes


# --- moving prefetched work to idle agents ------------------------------------------------------


def test_prefetched_attempt_moves_to_an_idle_agent(sim: Sim) -> None:
    # Short tasks (by their estimate) may wait in an agent's prefetch queue beyond its slot.
    sim.hello("a0", slots=1)
    wf, step = sim.submit([task_spec("first", estimated_duration=0.01), task_spec("second", estimated_duration=0.01)])
    assert sorted(a.task.name for a in step.assignments("a0")) == ["first", "second"]
    queued = sim.attempt_of(wf, "second")

    # A second agent joins with its slot free while "second" still waits behind "first".
    sim.now += 0.05
    step = sim.hello("a1", slots=1)
    (cancel,) = step.of(ev.CancelAttempts)
    assert cancel.agent_id == "a0" and cancel.attempt_ids == [queued] and not cancel.force
    assert cancel.release_only  # a move: give it back only if not started
    # Two-phase: nothing moves until a0 says it released the attempt.
    assert not step.assignments("a1")
    assert sim.machine.attempts[queued].state is A.ASSIGNED
    assert sim.tick().of(ev.CancelAttempts) == []  # asked once, not again every tick

    step = sim.released("a0", queued)
    assert step.result is True
    (moved,) = step.assignments("a1")
    assert moved.task.name == "second" and moved.attempt_number == 2
    task = sim.task(wf, "second")
    assert task.retries_used == 0 and task.agent_id == "a1"
    assert sim.machine.attempts[queued].state is A.CANCELLED
    assert sim.machine.attempts[queued].error == "moved to an idle agent"

    # A late report of the moved attempt is fenced off and changes nothing.
    step = sim.finished("a0", queued, A.CANCELLED)
    assert step.result is False and not step.changes
    sim.finished("a0", sim.attempt_of(wf, "first"))
    sim.finished("a1", moved.attempt_id)
    assert sim.machine.workflows[wf].state is W.COMPLETED


def test_the_move_takes_the_attempt_its_agent_would_start_last(make_sim: type[Sim]) -> None:
    # An agent starts its queued attempts in the controller's queue order, not in the order they
    # were assigned: here the later, more urgent one started first and the earlier one still waits.
    sim = make_sim(config=MachineConfig(prefetch=2))
    sim.hello("a0", slots=1)
    first, step = sim.submit([task_spec("busy", estimated_duration=0.01)], name="busy")
    sim.started("a0", step.assignments("a0")[0].attempt_id)
    sim.now += 0.05
    _, step = sim.submit([task_spec("later", estimated_duration=0.01, priority=10)], name="low")
    (waits,) = step.assignments("a0")
    sim.now += 0.05
    _, step = sim.submit([task_spec("urgent", estimated_duration=0.01, priority=90)], name="high")
    (urgent,) = step.assignments("a0")
    assert urgent.order < waits.order  # so a0 starts "urgent" first when "busy" ends
    sim.finished("a0", sim.attempt_of(first, "busy"))
    sim.started("a0", urgent.attempt_id)

    # An idle agent joins: the attempt still waiting on a0 is the one asked back, although it is
    # not the newest assignment there (that one runs: asking for it would move nothing).
    sim.now += 0.05
    (cancel,) = sim.hello("a1", slots=1).of(ev.CancelAttempts)
    assert cancel.agent_id == "a0" and cancel.attempt_ids == [waits.attempt_id] and cancel.release_only
    (moved,) = sim.released("a0", waits.attempt_id).assignments("a1")
    assert moved.task.name == "later"


def test_a_move_answered_by_started_leaves_the_attempt_where_it_is(sim: Sim) -> None:
    sim.hello("a0", slots=1)
    wf, _ = sim.submit([task_spec("first", estimated_duration=0.01), task_spec("second", estimated_duration=0.01)])
    queued = sim.attempt_of(wf, "second")
    sim.now += 0.05
    (cancel,) = sim.hello("a1", slots=1).of(ev.CancelAttempts)
    assert cancel.attempt_ids == [queued]
    # a0 had started it before the Cancel arrived: it stays on a0, nothing runs twice.
    step = sim.started("a0", queued)
    assert step.result is True and not step.assignments("a1")
    assert sim.machine.attempts[queued].state is A.RUNNING
    assert queued not in sim.machine.releasing
    # A Released after Started is refused.
    assert sim.released("a0", queued).result is False
    assert sim.task(wf, "second").agent_id == "a0"


def test_started_or_fresh_attempts_are_not_moved(sim: Sim) -> None:
    sim.hello("a0", slots=1)
    wf, _ = sim.submit([task_spec("first", estimated_duration=0.01), task_spec("second", estimated_duration=0.01)])
    # Just assigned (the agent may not even have it yet): left where it is.
    step = sim.hello("a1", slots=1)
    assert not step.of(ev.CancelAttempts)
    # Reported started: they run (an agent may hold more than the slots it declared), so none is
    # moved either, however long a0 holds more attempts than slots.
    sim.started("a0", sim.attempt_of(wf, "first"))
    sim.started("a0", sim.attempt_of(wf, "second"))
    sim.now += 0.05
    step = sim.tick()
    assert not step.of(ev.CancelAttempts)
