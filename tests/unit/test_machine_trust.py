"""The state machine against agents that misbehave: unacknowledged assignments are taken back,
late starts are refused, the agent table stays bounded, and namespaces scope placement."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from corral.controller.core import events as ev
from corral.controller.core import requests as rq
from corral.controller.core.machine import MachineConfig
from corral.controller.core.model import AgentState, AttemptState, Inventory, Resources, TaskState, WorkflowState
from corral.controller.errors import ResourceExhausted
from tests.unit.conftest import Sim, task_spec

T = TaskState
W = WorkflowState
A = AttemptState
S = AgentState


def _silent(make_sim: Callable[..., Sim], **config: float) -> Sim:
    """A simulation whose agents acknowledge nothing unless the test says so."""
    return make_sim(config=MachineConfig(**config), auto_accept=False)  # type: ignore[arg-type]


# --- the assignment lease -----------------------------------------------------------------------


def test_unacknowledged_assignment_is_taken_back_and_its_agent_held_back(make_sim: Callable[..., Sim]) -> None:
    sim = _silent(make_sim)
    sim.hello("black", slots=4)
    wf, step = sim.submit([task_spec("t")])
    (assignment,) = step.assignments("black")
    attempt_id = assignment.attempt_id

    # Within the lease nothing happens.
    assert not sim.advance(2.9).of(ev.CancelAttempts)
    assert sim.machine.attempts[attempt_id].state is A.ASSIGNED

    step = sim.advance(0.2)
    attempt = sim.machine.attempts[attempt_id]
    assert attempt.state is A.LOST
    assert attempt.error == "not acknowledged by agent black within 3s"
    (cancel,) = step.of(ev.CancelAttempts)
    assert cancel.agent_id == "black" and cancel.attempt_ids == [attempt_id] and cancel.force
    task = sim.task(wf, "t")
    assert task.state is T.READY and task.retries_used == 0  # no retry spent
    # Held back: the task is not handed to the same blackhole again.
    assert not step.assignments("black")
    assert "unacknowledged" in sim.machine.explain(task.id, sim.now).agents[0][2]

    # A working agent gets it.
    sim.auto_accept = True
    (moved,) = sim.hello("good", slots=1).assignments("good")
    assert moved.task.name == "t" and moved.attempt_number == 2
    sim.finished("good", moved.attempt_id)
    assert sim.machine.workflows[wf].state is W.COMPLETED


def test_an_unacknowledged_assignment_of_a_vanished_agent_waits_for_the_fence(make_sim: Callable[..., Sim]) -> None:
    # The agent may have started it just before it died, its Accepted lost with it: taking it back
    # at the assignment lease could run two copies. It follows the fence clock instead.
    sim = _silent(make_sim)
    sim.hello("dying", slots=1)
    wf, step = sim.submit([task_spec("t")])
    (assignment,) = step.assignments("dying")
    attempt_id = assignment.attempt_id
    silent_since = sim.machine.agents["dying"].last_seen
    sim.do(ev.AgentGone("dying", sim.machine.agents["dying"].session_epoch))
    step = sim.run_for(5.0, silent=["dying"])
    assert not step.of(ev.CancelAttempts)
    assert sim.machine.attempts[attempt_id].state is A.ASSIGNED
    fenced_at = silent_since + sim.machine.config.fence_total_s
    sim.run_for(fenced_at - sim.now - 0.01, silent=["dying"])
    assert sim.machine.attempts[attempt_id].state is A.ASSIGNED, "not before the fence deadline"
    sim.run_for(0.05, silent=["dying"])
    assert sim.machine.attempts[attempt_id].state is A.LOST
    assert sim.task(wf, "t").state is T.READY


def test_an_agent_silent_since_the_assignment_keeps_it_past_the_lease(make_sim: Callable[..., Sim]) -> None:
    # A partition looks like a live stream until its keepalive fails: the agent may have started
    # the attempt, its Started held up behind the fault. Taking it back would run two copies.
    sim = _silent(make_sim)
    sim.hello("cut", slots=1)
    _, step = sim.submit([task_spec("t")])
    (assignment,) = step.assignments("cut")
    attempt_id = assignment.attempt_id
    step = sim.run_for(8.0, silent=["cut"])
    assert not step.of(ev.CancelAttempts)
    assert sim.machine.attempts[attempt_id].state is A.ASSIGNED
    # The fault heals: its Started arrives, the one copy runs on.
    assert sim.started("cut", attempt_id).result is True
    assert sim.machine.attempts[attempt_id].state is A.RUNNING
    assert not sim.machine.unacknowledged


def test_an_agent_that_speaks_without_acknowledging_loses_the_assignment(make_sim: Callable[..., Sim]) -> None:
    # Heard from after the assignment yet silent about it: its Assign was lost (a blackhole).
    sim = _silent(make_sim)
    sim.hello("cut", slots=1)
    wf, step = sim.submit([task_spec("t")])
    attempt_id = step.assignments("cut")[0].attempt_id
    assert not sim.run_for(5.0, silent=["cut"]).of(ev.CancelAttempts)
    sim.do(ev.AgentHeartbeat("cut", sim.machine.agents["cut"].session_epoch))
    step = sim.run_for(3.5)
    (cancel,) = step.of(ev.CancelAttempts)
    assert cancel.attempt_ids == [attempt_id]
    assert sim.machine.attempts[attempt_id].state is A.LOST
    assert sim.task(wf, "t").state is T.READY and sim.task(wf, "t").retries_used == 0


def test_assignment_leases_start_again_when_the_store_takes_writes_again(make_sim: Callable[..., Sim]) -> None:
    # While the store refused writes the agent's Accepted could not be recorded: its assignment
    # must not be taken back at the old deadline once writes resume.
    sim = _silent(make_sim)
    sim.hello("a1", slots=1)
    _, step = sim.submit([task_spec("t")])
    (assignment,) = step.assignments("a1")
    sim.advance(2.5)
    sim.do(ev.StorageResumed())
    assert not sim.advance(2.9).of(ev.CancelAttempts)
    assert sim.machine.attempts[assignment.attempt_id].state is A.ASSIGNED
    assert sim.advance(0.2).of(ev.CancelAttempts), "a full lease from the resume, then taken back"


def test_accepted_or_started_within_the_lease_keeps_the_attempt(make_sim: Callable[..., Sim]) -> None:
    sim = _silent(make_sim)
    sim.hello("a1", slots=1)
    wf, step = sim.submit([task_spec("x", estimated_duration=0.01), task_spec("y", estimated_duration=0.01)])
    x, y = sim.attempt_of(wf, "x"), sim.attempt_of(wf, "y")
    sim.now += 1.0
    assert sim.accepted("a1", x).result is True
    assert sim.started("a1", y).result is True
    step = sim.advance(10.0)
    assert not step.of(ev.CancelAttempts)
    assert sim.machine.attempts[x].state is A.ASSIGNED
    assert sim.machine.attempts[y].state is A.RUNNING
    assert not sim.machine.unacknowledged


def test_late_start_of_a_taken_back_attempt_is_refused_with_a_kill(make_sim: Callable[..., Sim]) -> None:
    sim = _silent(make_sim)
    sim.hello("slow", slots=1)
    wf, step = sim.submit([task_spec("t")])
    attempt_id = step.assignments()[0].attempt_id
    sim.advance(3.5)
    assert sim.machine.attempts[attempt_id].state is A.LOST
    sim.quiet()

    step = sim.started("slow", attempt_id)
    assert step.result is False
    (kill,) = step.of(ev.CancelAttempts)
    assert kill.agent_id == "slow" and kill.attempt_ids == [attempt_id] and kill.force
    assert sim.machine.attempts[attempt_id].state is A.LOST  # unchanged
    # A late Accepted is refused the same way.
    step = sim.accepted("slow", attempt_id)
    assert step.result is False and step.of(ev.CancelAttempts)[0].force
    assert sim.task(wf, "t").state is T.READY


def test_an_acknowledgement_lifts_the_hold_back_and_so_does_time(make_sim: Callable[..., Sim]) -> None:
    sim = _silent(make_sim, hold_back_s=30.0)
    sim.hello("a1", slots=1)
    wf, _step = sim.submit([task_spec("kept"), task_spec("lost")])
    kept = sim.attempt_of(wf, "kept")
    sim.accepted("a1", kept)
    # The second task waits (one slot); assigning it needs room, so finish "kept" first, late.
    sim.advance(1.0)
    sim.finished("a1", kept)
    lost = sim.attempt_of(wf, "lost")
    assert sim.machine.attempts[lost].agent_id == "a1"
    sim.advance(3.5)
    assert sim.machine.attempts[lost].state is A.LOST
    assert sim.machine.views["a1"].held_back

    # Hold-back ends after hold_back_s even without an ack: the agent is probed again.
    sim.advance(29.0)
    assert sim.task(wf, "lost").state is T.READY
    sim.advance(1.0)
    again = sim.attempt_of(wf, "lost")
    assert again != lost and sim.machine.attempts[again].agent_id == "a1"
    # ...and swallowing that one holds it back again.
    sim.advance(3.5)
    assert sim.machine.attempts[again].state is A.LOST and sim.machine.views["a1"].held_back


def test_an_acknowledgement_of_another_attempt_lifts_the_hold_at_once(make_sim: Callable[..., Sim]) -> None:
    sim = _silent(make_sim)
    sim.hello("a1", slots=2)
    wf, _ = sim.submit([task_spec("kept"), task_spec("lost")])
    kept, lost = sim.attempt_of(wf, "kept"), sim.attempt_of(wf, "lost")
    sim.accepted("a1", kept)
    sim.advance(3.5)
    assert sim.machine.attempts[lost].state is A.LOST and sim.machine.views["a1"].held_back
    step = sim.started("a1", kept)
    assert "a1" not in sim.machine.held_back
    (again,) = step.assignments("a1")  # placed there again in the same tick
    assert again.task.name == "lost" and again.attempt_number == 2


def test_released_by_the_agent_during_a_workflow_cancel_cancels_the_task(sim: Sim) -> None:
    sim.hello("a1", slots=1)
    wf, _ = sim.submit([task_spec("run", estimated_duration=0.01), task_spec("queued", estimated_duration=0.01)])
    running, queued = sim.attempt_of(wf, "run"), sim.attempt_of(wf, "queued")
    sim.started("a1", running)
    step = sim.do(ev.CancelWorkflow(wf))
    (cancel,) = step.of(ev.CancelAttempts)
    assert set(cancel.attempt_ids) == {running, queued} and not cancel.release_only
    assert sim.released("a1", queued).result is True
    assert sim.task(wf, "queued").state is T.CANCELLED
    sim.finished("a1", running, A.CANCELLED)
    assert sim.machine.workflows[wf].state is W.CANCELLED


def test_reconnect_reporting_an_unacknowledged_attempt_acknowledges_it(make_sim: Callable[..., Sim]) -> None:
    sim = _silent(make_sim)
    sim.hello("a1", slots=1)
    _wf, step = sim.submit([task_spec("t")])
    attempt_id = step.assignments()[0].attempt_id
    sim.hello("a1", slots=1, running=(attempt_id,))
    sim.advance(10.0)
    assert sim.machine.attempts[attempt_id].state is A.ASSIGNED


# --- a bounded agent table ----------------------------------------------------------------------


def test_gone_agents_holding_nothing_are_forgotten_after_the_ttl(make_sim: Callable[..., Sim]) -> None:
    sim = make_sim(config=MachineConfig(agent_ttl_s=100.0))
    sim.hello("gone", slots=1)
    sim.hello("stays", slots=1)
    sim.do(ev.AgentGone("gone", sim.machine.agents["gone"].session_epoch))
    sim.advance(99.0)
    assert "gone" in sim.machine.agents
    step = sim.advance(2.5)
    assert "gone" not in sim.machine.agents and "stays" in sim.machine.agents
    assert step.changes.deleted_agents == {"gone"} or "gone" not in {a.id for a in sim.store.load().agents}
    assert {a.id for a in sim.store.load().agents} == {"stays"}
    # Coming back is simply a new agent.
    sim.hello("gone", slots=1)
    assert sim.machine.agents["gone"].state is S.CONNECTED
    assert {a.id for a in sim.store.load().agents} == {"gone", "stays"}


def test_past_max_agents_the_oldest_forgettable_agent_is_evicted_else_refused(make_sim: Callable[..., Sim]) -> None:
    sim = make_sim(config=MachineConfig(max_agents=2))
    sim.hello("a1", slots=1)
    sim.hello("a2", slots=1)
    epoch = sim.machine.epoch
    with pytest.raises(ResourceExhausted, match="max_agents=2"):
        sim.hello("a3", slots=1)
    assert sim.machine.epoch == epoch and "a3" not in sim.machine.agents
    assert not sim.quiet().changes
    # A known name past the cap is fine: it is not a new agent.
    sim.hello("a1", slots=1)

    sim.do(ev.AgentGone("a2", sim.machine.agents["a2"].session_epoch))
    sim.hello("a3", slots=1)
    assert set(sim.machine.agents) == {"a1", "a3"}
    assert {a.id for a in sim.store.load().agents} == {"a1", "a3"}


def test_an_agent_holding_attempts_is_never_evicted(make_sim: Callable[..., Sim]) -> None:
    sim = make_sim(config=MachineConfig(max_agents=1))
    sim.hello("busy", slots=1)
    sim.submit([task_spec("t")])
    sim.do(ev.AgentGone("busy", sim.machine.agents["busy"].session_epoch))
    with pytest.raises(ResourceExhausted):
        sim.hello("other", slots=1)
    assert set(sim.machine.agents) == {"busy"}


# --- namespaces ---------------------------------------------------------------------------------


def _scoped_hello(sim: Sim, agent_id: str, namespaces: tuple[str, ...]) -> ev.Welcome:
    inventory = Inventory(Resources(cpu_cores=8, memory_mb=8192), slots=4)
    step = sim.do(ev.AgentHello(agent_id, agent_id, agent_types=("shell",), inventory=inventory, namespaces=namespaces))
    welcome: ev.Welcome = step.result
    return welcome


def test_an_agent_scoped_to_namespaces_only_gets_their_tasks(sim: Sim) -> None:
    _scoped_hello(sim, "team-a-agent", ("team-a",))
    sim.do(rq.CreateNamespaceRequest("team-a"))
    wf_default, _ = sim.submit([task_spec("d")], name="plain", start=False)
    wf_team, _ = sim.submit([task_spec("t")], name="team", start=False, namespace="team-a")
    sim.do(ev.StartWorkflow(wf_default))
    step = sim.do(ev.StartWorkflow(wf_team))
    assert sim.task(wf_team, "t").state is T.ASSIGNED
    assert sim.task(wf_default, "d").state is T.READY
    assert [a.task.name for a in step.assignments("team-a-agent")] == ["t"]
    why = sim.machine.explain(sim.task(wf_default, "d").id, sim.now)
    assert why.reason == "no connected agent of that type may run namespace 'default'"
    assert "runs only namespaces team-a" in why.agents[0][2]
    # An unscoped agent runs any namespace.
    (assignment,) = _scoped_hello_step(sim, "any")
    assert assignment.task.name == "d"


def _scoped_hello_step(sim: Sim, agent_id: str) -> list[ev.Assignment]:
    inventory = Inventory(Resources(cpu_cores=8, memory_mb=8192), slots=4)
    return sim.do(ev.AgentHello(agent_id, agent_id, agent_types=("shell",), inventory=inventory)).assignments(agent_id)
