"""Issue 11 fleet hygiene in the core: manual cordon and uncordon, the drained state, removing agents."""

from __future__ import annotations

import pytest

from corral.controller.core import events as ev
from corral.controller.core.fleet_admin import CordonRequest, RemoveAgentRequest, UncordonRequest
from corral.controller.core.machine import MachineConfig
from corral.controller.core.model import AgentState, AttemptState, TaskState
from corral.controller.errors import FailedPrecondition, NotFound
from tests.unit.conftest import Sim, task_spec

S = AgentState


def _sim(make_sim: type[Sim]) -> Sim:
    sim = make_sim(config=MachineConfig(prefetch=0, backoff_jitter=0.0, cordon_after=3, cordon_cooldown_s=60.0))
    sim.hello("a1", slots=1)
    sim.hello("a2", slots=1)
    return sim


def _restored(make_sim: type[Sim], sim: Sim) -> Sim:
    fresh = make_sim(boot_time=sim.now, now=sim.now, store=sim.store, config=sim.config)
    fresh.machine.restore(sim.store.load(), sim.now)
    return fresh


def test_manual_cordon_holds_new_work_back_until_uncordoned_and_survives_a_restart(make_sim: type[Sim]) -> None:
    sim = _sim(make_sim)
    m = sim.machine
    agent = sim.do(CordonRequest("a2", "alice", "kernel upgrade")).result
    assert agent.cordoned_by == "alice" and agent.cordoned_until is None
    assert agent.cordon_reason == "cordoned by alice: kernel upgrade"
    assert m.views["a2"].held_back
    wf, step = sim.submit([task_spec("x"), task_spec("y")])
    assert [a.task.name for a in step.assignments()] == ["x"]  # only a1 takes work
    assert sim.task(wf, "x").agent_id == "a1"
    verdicts = {aid: why for aid, _, why in m.explain(sim.task(wf, "y").id, sim.now).agents}
    assert verdicts["a2"] == "cordoned by alice: kernel upgrade"
    # No timer: long after any cool-down it is still cordoned, and a restart keeps who and why.
    sim.advance(3600)
    assert m.agents["a2"].cordoned_by == "alice"
    fresh = _restored(make_sim, sim)
    assert fresh.machine.agents["a2"].cordon_reason == "cordoned by alice: kernel upgrade"
    fresh.hello("a1", slots=1)
    fresh.hello("a2", slots=1)
    assert fresh.machine.views["a2"].held_back and fresh.machine.cordons.holds("a2")
    agent = fresh.do(UncordonRequest("a2")).result
    assert agent.cordoned_by == "" and agent.cordon_reason == "" and not fresh.machine.views["a2"].held_back
    fresh.advance(1)
    assert {fresh.task(wf, "y").agent_id, fresh.task(wf, "x").agent_id} <= {"a1", "a2"}
    assert fresh.task(wf, "y").state in (TaskState.ASSIGNED, TaskState.RUNNING)


def test_uncordon_ends_an_automatic_cordon_early(make_sim: type[Sim]) -> None:
    from corral.controller.core.cordon import observe_finish
    from corral.controller.core.model import Attempt

    sim = _sim(make_sim)
    sim.hello("a3", slots=1)
    m = sim.machine
    for wf in ("w1", "w2", "w3"):
        observe_finish(m, Attempt(f"x-{wf}", "t", wf, "a2", 1), AttemptState.FAILED, sim.now)
        observe_finish(m, Attempt(f"y-{wf}", "t", wf, "a1", 1), AttemptState.SUCCEEDED, sim.now)
    assert m.agents["a2"].cordoned_until is not None and m.views["a2"].held_back
    sim.do(UncordonRequest("a2"))
    assert m.agents["a2"].cordoned_until is None and not m.cordons.holds("a2")
    assert not m.views["a2"].held_back
    assert m.next_timer() is None  # the cool-down's timer went with it


def test_uncordon_of_an_agent_not_cordoned_changes_nothing(make_sim: type[Sim]) -> None:
    sim = _sim(make_sim)
    step = sim.do(UncordonRequest("a1"))
    assert step.result.name == "a1" and not step.changes


def test_cordon_of_an_unknown_agent_is_not_found_and_changes_nothing(make_sim: type[Sim]) -> None:
    sim = _sim(make_sim)
    with pytest.raises(NotFound):
        sim.do(CordonRequest("zz", "alice", ""))
    assert not sim.machine.cordons.manual


def test_a_drained_agent_ends_drained_and_can_be_removed(make_sim: type[Sim]) -> None:
    sim = _sim(make_sim)
    m = sim.machine
    sim.do(ev.DrainAgent("a2"))
    assert m.agents["a2"].state is S.DRAINING
    sim.do(ev.AgentGone("a2", m.agents["a2"].session_epoch))
    assert m.agents["a2"].state is S.DRAINED
    assert sim.store.load().agents and {a.state for a in sim.store.load().agents if a.id == "a2"} == {S.DRAINED}
    removed, requeued = sim.do(RemoveAgentRequest("a2", "alice")).result
    assert removed.name == "a2" and requeued == 0
    assert "a2" not in m.agents and all(a.id != "a2" for a in sim.store.load().agents)


def test_remove_refuses_a_connected_agent_unless_forced_then_requeues_its_attempts(make_sim: type[Sim]) -> None:
    sim = _sim(make_sim)
    m = sim.machine
    sim.do(CordonRequest("a1", "alice", "about to go"))
    wf, step = sim.submit([task_spec("t")])
    (assignment,) = step.assignments("a2")
    sim.started("a2", assignment.attempt_id)
    sim.quiet()
    with pytest.raises(FailedPrecondition, match="--force"):
        sim.do(RemoveAgentRequest("a2", "alice"))
    assert "a2" in m.agents and sim.task(wf, "t").state is TaskState.RUNNING
    sim.do(UncordonRequest("a1"))
    step = sim.do(RemoveAgentRequest("a2", "alice", force=True))
    assert step.result[1] == 1
    assert any(isinstance(a, ev.Disconnect) and a.agent_id == "a2" for a in step.actions)
    assert m.attempts[assignment.attempt_id].state is AttemptState.LOST
    assert "removed by alice" in m.attempts[assignment.attempt_id].error
    assert "a2" not in m.agents
    sim.advance(1)
    assert sim.task(wf, "t").agent_id == "a1"  # requeued at once, placed on the other agent


def test_remove_refuses_a_lost_agent_holding_attempts_unless_forced(make_sim: type[Sim]) -> None:
    sim = _sim(make_sim)
    m = sim.machine
    sim.do(CordonRequest("a1", "alice", ""))
    wf, step = sim.submit([task_spec("t")])
    (assignment,) = step.assignments("a2")
    sim.started("a2", assignment.attempt_id)
    sim.run_for(m.config.lease_s + 1, silent=("a2",))
    assert m.agents["a2"].state is S.LOST
    with pytest.raises(FailedPrecondition, match="holds 1 attempts"):
        sim.do(RemoveAgentRequest("a2", "alice"))
    assert sim.do(RemoveAgentRequest("a2", "alice", force=True)).result[1] == 1
    assert sim.task(wf, "t").state is TaskState.READY  # a1 is cordoned: it waits


def test_long_disconnected_agents_expire_after_the_ttl(make_sim: type[Sim]) -> None:
    sim = make_sim(config=MachineConfig(agent_ttl_s=100.0))
    sim.hello("a1")
    sim.hello("a2")
    sim.do(ev.AgentGone("a1", sim.machine.agents["a1"].session_epoch))
    sim.run_for(50, silent=("a1",))
    assert "a1" in sim.machine.agents
    sim.run_for(60, silent=("a1",))
    assert "a1" not in sim.machine.agents and "a2" in sim.machine.agents
    assert all(a.id != "a1" for a in sim.store.load().agents)
