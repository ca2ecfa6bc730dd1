"""Preemption in the state machine: victim choice, the reservation, the preemptor's wait, no retry spent."""

from __future__ import annotations

from typing import Any

from corral.controller.core import events as ev
from corral.controller.core.model import AgentState, AttemptState, Resources, TaskState
from corral.controller.core.placement import AgentView, Demand
from corral.controller.core.preemption import Candidate, choose_victims, preemption_note
from corral.controller.core.state import MachineConfig
from corral.controller.rpc.wire import task_status

from .conftest import Sim, task_spec

CPU1 = {"cpu_cores": 1}


def _low(sim: Sim, names_priorities: list[tuple[str, int]], **fields: Any) -> str:
    """Submit and start one preemptible 1-cpu task per (name, priority), each started 1 s after the last."""
    spec = {"preemptible": True, **fields}
    wf, _ = sim.submit([task_spec(n, resources=CPU1, priority=p, **spec) for n, p in names_priorities], name="low")
    for name, _p in names_priorities:
        sim.now += 1.0
        sim.started("a1", sim.attempt_of(wf, name))
    return wf


def _cancels(step_actions: list[ev.Action]) -> list[ev.CancelAttempts]:
    return [a for a in step_actions if isinstance(a, ev.CancelAttempts)]


def test_minimal_set_of_the_most_recently_started(sim: Sim) -> None:
    sim.hello("a1", cpu=4, slots=4)
    low = _low(sim, [("l1", 10), ("l2", 10), ("l3", 10), ("l4", 10)])
    _, step = sim.submit([task_spec("big", resources={"cpu_cores": 2}, priority=100)], name="high")
    (cancel,) = _cancels(step.actions)
    newest = {sim.attempt_of(low, "l3"), sim.attempt_of(low, "l4")}
    assert set(cancel.attempt_ids) == newest  # two, not four; the ones that ran least
    assert cancel.agent_id == "a1" and not cancel.force and cancel.grace_s == sim.config.kill_grace_s
    plan = sim.machine.last_plan
    assert plan is not None and {p.attempt_id for p in plan.preemptions} == newest


def test_lowest_base_priority_first_then_most_recent(sim: Sim) -> None:
    sim.hello("a1", cpu=4, slots=4)
    low = _low(sim, [("p10", 10), ("p20a", 20), ("p20b", 20), ("p30", 30)])
    _, step = sim.submit([task_spec("big", resources={"cpu_cores": 2}, priority=100)], name="high")
    (cancel,) = _cancels(step.actions)
    # p10 started first but has the lowest priority; then the newer of the two 20s.
    assert set(cancel.attempt_ids) == {sim.attempt_of(low, "p10"), sim.attempt_of(low, "p20b")}


def test_pruned_to_what_the_preemptor_needs() -> None:
    view = AgentView("a1", "a1", frozenset({"shell"}), {}, _connected(), Resources(cpu_cores=4), slots=4, window=4)
    small = Candidate("s", "ts", "s", 10, 5.0, Resources(cpu_cores=1), ())
    large = Candidate("l", "tl", "l", 20, 1.0, Resources(cpu_cores=3), ())
    view.allocate(small.resources)
    view.allocate(large.resources)
    demand = Demand("shell", Resources(cpu_cores=3))
    # Taken in order: small (lowest priority) is not enough, then large; small is then unneeded.
    assert choose_victims(demand, view, [small, large], 100) == [large]
    assert choose_victims(demand, view, [small, large], 20) == []  # large is not of lower priority


def _connected() -> AgentState:
    return AgentState.CONNECTED


def test_never_non_preemptible_nor_equal_priority(sim: Sim) -> None:
    sim.hello("a1", cpu=2, slots=4)
    wf, _ = sim.submit(
        [
            task_spec("keep", resources=CPU1, priority=10),
            task_spec("same", resources=CPU1, priority=100, preemptible=True),
        ],
        name="low",
    )
    sim.started("a1", sim.attempt_of(wf, "keep"))
    sim.started("a1", sim.attempt_of(wf, "same"))
    _, step = sim.submit([task_spec("big", resources=CPU1, priority=100)], name="high")
    later = sim.advance(30.0)
    assert not _cancels(step.actions) and not _cancels(later.actions)


def test_aged_priority_never_preempts(make_sim: Any) -> None:
    sim = make_sim(config=MachineConfig(ageing_per_s=10.0, ageing_step=0.0))
    sim.hello("a1", cpu=2, slots=4)
    _low(sim, [("l1", 20), ("l2", 20)])
    wf, _ = sim.submit([task_spec("old", resources=CPU1, priority=10, preemptible=True)], name="waits")
    # Aged far past 20 by now, but its base priority is 10: nothing is stopped for it.
    step = sim.run_for(60.0)
    assert not _cancels(step.actions)
    assert sim.task(wf, "old").state is TaskState.READY


def test_victim_requeued_without_a_retry_and_reservation_held(sim: Sim) -> None:
    sim.hello("a1", cpu=2, slots=4)
    low = _low(sim, [("l1", 10), ("l2", 10)], retries=2)
    high, step = sim.submit([task_spec("big", resources={"cpu_cores": 2}, priority=100)], name="high")
    (cancel,) = _cancels(step.actions)
    assert len(cancel.attempt_ids) == 2
    big = sim.task(high, "big")
    assert "preempting 2 tasks on agent a1" in preemption_note(sim.machine, big)
    assert preemption_note(sim.machine, sim.task(low, "l1")).startswith("preempted by big")

    # The first victim ends (SIGTERM -> exit 143, reported as failed): requeued, nothing spent.
    first = sim.finished("a1", cancel.attempt_ids[0], AttemptState.FAILED, error="exit 143")
    victim = sim.machine.tasks[sim.machine.attempts[cancel.attempt_ids[0]].task_id]
    assert victim.state is TaskState.READY
    assert (victim.retries_used, victim.agent_losses, victim.preemptions) == (0, 0, 1)
    assert victim.last_preemption.startswith("preempted by big (priority 100)")
    assert victim.not_before is None  # no backoff either
    # Its room is reserved: the requeued victim (which fits there) is not placed back on it,
    # and the preemptor does not start before the other victim has ended.
    assert not first.assignments()
    assert sim.advance(5.0).assignments() == []
    assert big.state is TaskState.READY

    last = sim.finished("a1", cancel.attempt_ids[1], AttemptState.CANCELLED)
    (placed,) = last.assignments("a1")
    assert placed.task.id == big.id
    event = sim.store.workflow_events(low, task_id=victim.id)
    assert [e.kind for e in event if e.kind == "preempted"] == ["preempted"]
    assert "big" in next(e.reason for e in event if e.kind == "preempted")
    status = task_status(sim.machine, victim, "", False)
    assert status.preemptions == 1 and status.last_preemption.startswith("preempted by big")


def test_hysteresis_cap(sim: Sim) -> None:
    sim.hello("a1", cpu=1, slots=4)
    low = _low(sim, [("l1", 10)], max_preemptions=1)
    _, step = sim.submit([task_spec("h1", resources=CPU1, priority=100)], name="high1")
    (cancel,) = _cancels(step.actions)
    done = sim.finished("a1", cancel.attempt_ids[0], AttemptState.CANCELLED)
    (placed,) = done.assignments("a1")
    sim.started("a1", placed.attempt_id)
    sim.finished("a1", placed.attempt_id)  # h1 completes; l1 runs again
    sim.started("a1", sim.attempt_of(low, "l1"))
    assert sim.task(low, "l1").preemptions == 1
    _, again = sim.submit([task_spec("h2", resources=CPU1, priority=100)], name="high2")
    assert not _cancels(again.actions)  # preempted once already: no longer a victim


def test_preemptor_gone_releases_the_reservation(sim: Sim) -> None:
    sim.hello("a1", cpu=1, slots=4)
    low = _low(sim, [("l1", 10)])
    high, step = sim.submit([task_spec("h", resources=CPU1, priority=100)], name="high")
    (cancel,) = _cancels(step.actions)
    sim.do(ev.CancelWorkflow(high))
    assert sim.task(high, "h").state is TaskState.CANCELLED
    done = sim.finished("a1", cancel.attempt_ids[0], AttemptState.CANCELLED)
    # The preemptor is gone: the reservation is dropped and the victim takes its room back.
    (placed,) = done.assignments("a1")
    assert placed.task.id == sim.task(low, "l1").id
    assert sim.task(low, "l1").preemptions == 1 and not sim.machine.preempter.pending


def test_unused_feature_costs_a_flag(sim: Sim) -> None:
    sim.hello("a1", cpu=1, slots=1)
    sim.submit([task_spec("a", resources=CPU1, priority=10), task_spec("b", resources=CPU1, priority=100)])
    assert not sim.machine.preempter.enabled


def test_victim_lost_with_its_agent_ends_the_wait(sim: Sim) -> None:
    sim.hello("a1", cpu=1, slots=4)
    sim.hello("a2", cpu=0.5, slots=4)  # too small for either task: only a1 can run them
    low = _low(sim, [("l1", 10)])
    high, step = sim.submit([task_spec("h", resources=CPU1, priority=100)], name="high")
    (cancel,) = _cancels(step.actions)
    victim = sim.machine.attempts[cancel.attempt_ids[0]]
    # a1 goes silent and never reports: the victim is given up once its fence has surely fired.
    sim.run_for(sim.config.fence_total_s + 2 * sim.config.lease_s, silent=["a1"])
    assert victim.state is AttemptState.LOST
    assert not sim.machine.preempter.pending and not sim.machine.preempter.victim_of
    assert sim.task(high, "h").state is TaskState.READY  # its agent is gone: it waits for room
    assert sim.task(low, "l1").preemptions == 0  # lost, not preempted: counted as a loss instead
