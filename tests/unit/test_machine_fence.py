"""Issue 8 in the state machine: lost vs fenced, keep tasks, poison by incarnation, late success,
heartbeat echoes, report batches and the event log. All on the fake clock of :class:`Sim`."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from corral.controller.core import events as ev
from corral.controller.core.machine import MachineConfig
from corral.controller.core.model import AgentState, AttemptState, TaskState, WorkflowState
from corral.controller.rpc import wire
from corral.v1 import types_pb2 as pb
from tests.unit.conftest import Sim, Step, task_spec

T = TaskState
W = WorkflowState
A = AttemptState
S = AgentState


def _running(sim: Sim, *specs: dict[str, object], agent: str = "a1", **workflow: object) -> tuple[str, str]:
    """Submit a workflow whose first task runs on ``agent`` (the only agent): (workflow id, attempt id)."""
    sim.hello(agent, slots=1, incarnation=f"{agent}-1")
    wf, step = sim.submit(list(specs) or [task_spec("t")], **workflow)
    attempt = step.assignments(agent)[0].attempt_id
    sim.started(agent, attempt)
    return wf, attempt


# --- config -------------------------------------------------------------------------------------


def test_fence_after_must_exceed_the_lease() -> None:
    with pytest.raises(ValueError, match=r"fence_after_s .* must be longer than lease_s"):
        MachineConfig(lease_s=15.0, fence_after_s=15.0)
    with pytest.raises(ValueError, match="max_agent_losses"):
        MachineConfig(max_agent_losses=0)
    config = MachineConfig(fence_after_s=30.0, kill_grace_s=10.0)
    assert config.fence_margin_s == pytest.approx(0.8)
    assert config.fence_total_s == pytest.approx(40.8)


# --- lost vs fenced -----------------------------------------------------------------------------


def test_silent_agent_is_lost_at_its_lease_but_keeps_its_attempts(sim: Sim) -> None:
    cfg = sim.machine.config
    wf, attempt = _running(sim)
    silent_since = sim.now
    sim.hello("a2", slots=1)
    step = sim.run_for(cfg.lease_s + 0.5, silent=("a1",))
    assert sim.machine.agents["a1"].state is S.LOST
    assert ev.Disconnect("a1", sim.machine.agents["a1"].session_epoch) in step.actions
    assert "a1" not in sim.machine.views  # nothing new is placed on it
    assert sim.machine.attempts[attempt].state is A.RUNNING
    assert sim.task(wf, "t").state is T.RUNNING and step.assignments() == []
    assert sim.machine.fence_at == {attempt: silent_since + cfg.fence_total_s}
    assert sim.machine.next_timer() is not None and sim.machine.next_timer() <= silent_since + cfg.fence_total_s
    assert "agent lost, silent" in sim.machine.explain(sim.task(wf, "t").id, sim.now).reason


def test_the_fence_counts_from_the_last_echo_not_from_the_last_heartbeat(sim: Sim) -> None:
    """Only an echo renews the supervisors' lease: heartbeats applied after the last echo (as in a
    one-way partition, where they still arrive and the echoes do not) do not push the requeue back."""
    cfg = sim.machine.config
    wf, attempt = _running(sim, task_spec("t", retries=0))
    sim.beat("a1", at=sim.now + 1.0)  # a session's first heartbeat: echoed at once
    echoed_at = sim.now
    assert sim.machine.echoed["a1"][1] == echoed_at
    step = sim.beat("a1", at=echoed_at + cfg.echo_every_s * 0.8)  # applied, not echoed
    assert not step.of(ev.HeartbeatAck) and sim.machine.agents["a1"].last_seen > echoed_at
    sim.hello("a2", slots=1)
    deadline = echoed_at + cfg.fence_total_s
    step = sim.run_for(deadline - 0.01 - sim.now, silent=("a1",))
    assert sim.machine.agents["a1"].state is S.LOST
    assert sim.machine.fence_at == {attempt: deadline}
    assert sim.machine.attempts[attempt].state is A.RUNNING and step.assignments() == []
    step = sim.run_for(0.01, silent=("a1",))
    assert sim.machine.attempts[attempt].state is A.LOST
    assert sim.task(wf, "t").reruns_after_fence == 1
    assert len(step.assignments("a2")) == 1


def test_stop_attempt_is_requeued_exactly_at_fence_after_plus_grace_plus_margin(sim: Sim) -> None:
    cfg = sim.machine.config
    wf, attempt = _running(sim, task_spec("t", retries=0))
    deadline = sim.now + cfg.fence_total_s
    sim.hello("a2", slots=1)
    step = sim.run_for(deadline - 0.01 - sim.now, silent=("a1",))
    assert sim.machine.attempts[attempt].state is A.RUNNING and step.assignments() == []
    step = sim.run_for(0.01, silent=("a1",))
    assert sim.machine.attempts[attempt].state is A.LOST
    task = sim.task(wf, "t")
    assert task.retries_used == 0 and task.agent_losses == 0 and task.reruns_after_fence == 1
    (again,) = step.assignments("a2")
    assert again.attempt_number == 2
    kinds = [e.kind for e in sim.store.workflow_events(wf, task_id=task.id)]
    assert kinds == ["placed", "running", "fenced", "placed"]
    fenced = sim.store.workflow_events(wf, task_id=task.id)[2]
    assert fenced.reason.startswith("fenced: agent a1 silent since") and fenced.agent_id == "a1"


def test_an_assigned_attempt_fenced_counts_a_possible_rerun(sim: Sim) -> None:
    # No Started came, but the agent may have started it and died before reporting it: the
    # controller cannot tell, so the replacement counts as a possible rerun.
    sim.hello("a1", slots=1)
    wf, _ = sim.submit([task_spec("t")])
    sim.run_for(sim.machine.config.fence_total_s + 1, silent=("a1",))
    task = sim.task(wf, "t")
    assert task.state is T.READY and task.reruns_after_fence == 1


def test_reconnect_before_the_fence_re_adopts_and_counts_nothing(sim: Sim) -> None:
    cfg = sim.machine.config
    wf, attempt = _running(sim)
    sim.run_for(cfg.fence_total_s - 1, silent=("a1",))
    assert sim.machine.agents["a1"].state is S.LOST
    welcome = sim.hello("a1", running=(attempt,), incarnation="a1-1").result
    assert welcome.kill_attempt_ids == ()
    assert sim.machine.fence_at == {} and sim.machine.unconfirmed == {}
    sim.advance(cfg.fence_total_s * 2)
    task = sim.task(wf, "t")
    assert task.state is T.RUNNING and task.attempts == 1
    assert (task.agent_losses, task.reruns_after_fence) == (0, 0)


def test_keep_attempt_runs_through_the_fence_and_is_requeued_after_max_disconnect(sim: Sim) -> None:
    cfg = sim.machine.config
    wf, attempt = _running(sim, task_spec("t", on_disconnect="keep", max_disconnect="2m"))
    silent_since = sim.now
    sim.hello("a2", slots=1)
    sim.run_for(cfg.fence_total_s + 5, silent=("a1",))
    assert sim.machine.attempts[attempt].state is A.RUNNING
    step = sim.run_for(silent_since + 120.0 - 0.01 - sim.now, silent=("a1",))
    assert sim.machine.attempts[attempt].state is A.RUNNING and step.assignments() == []
    step = sim.run_for(0.01, silent=("a1",))
    assert sim.machine.attempts[attempt].state is A.LOST
    assert "max_disconnect (120s)" in sim.machine.attempts[attempt].error
    task = sim.task(wf, "t")
    assert (task.agent_losses, task.reruns_after_fence) == (0, 0)
    (again,) = step.assignments("a2")
    assert again.max_disconnect_s == 120.0 and again.task.on_disconnect == "keep"


def test_keep_attempt_is_requeued_when_its_agent_returns_without_it(sim: Sim) -> None:
    cfg = sim.machine.config
    _wf, attempt = _running(sim, task_spec("t", on_disconnect="keep"))
    sim.run_for(cfg.fence_total_s + 5, silent=("a1",))
    sim.hello("a1", slots=1, running=(), incarnation="a1-1")
    assert sim.machine.unconfirmed == {attempt: sim.now + cfg.reconnect_grace_s}
    step = sim.tick(after=cfg.reconnect_grace_s)
    assert sim.machine.attempts[attempt].state is A.LOST
    (again,) = step.assignments("a1")
    assert again.attempt_number == 2 and again.max_disconnect_s == cfg.max_disconnect_s


def test_keep_attempt_reported_on_return_is_re_adopted(sim: Sim) -> None:
    wf, attempt = _running(sim, task_spec("t", on_disconnect="keep"))
    sim.run_for(sim.machine.config.fence_total_s + 5, silent=("a1",))
    assert sim.hello("a1", running=(attempt,), incarnation="a1-2").result.kill_attempt_ids == ()
    assert sim.machine.attempts[attempt].state is A.RUNNING
    assert sim.finished("a1", attempt, result=b"7").result is True
    assert sim.machine.workflows[wf].state is W.COMPLETED


def test_a_supervisor_fenced_report_requeues_without_a_retry(sim: Sim) -> None:
    wf, attempt = _running(sim, task_spec("t", retries=0))
    sim.quiet()
    step = sim.do(ev.AttemptFinished("a1", attempt, A.LOST, None, None, "lease expired", True, fenced=True))
    assert step.result is True
    task = sim.task(wf, "t")
    # Its agent's lease ran out: work placed before an echo renews it would be refused at start.
    assert task.state is T.READY and task.attempts == 1
    assert (task.retries_used, task.reruns_after_fence, task.agent_losses) == (0, 1, 0)
    assert [e.kind for e in step.changes.events] == ["fenced"]
    # Its next heartbeat is echoed, and only then is the task placed on it again.
    step = sim.do(ev.AgentHeartbeat("a1", sim.machine.agents["a1"].session_epoch))
    kinds = [type(a).__name__ for a in step.actions]
    assert kinds.index("HeartbeatAck") < kinds.index("Assign"), kinds
    assert task.state is T.ASSIGNED and task.attempts == 2  # placed again on the same agent


# --- poison -------------------------------------------------------------------------------------


def test_a_task_that_kills_its_agent_three_times_fails_as_poison(sim: Sim) -> None:
    sim.hello("a1", slots=1, incarnation="a1-1")
    wf, step = sim.submit([task_spec("bad", retries=5), task_spec("after", "bad")])
    attempt = step.assignments("a1")[0].attempt_id
    for loss in range(1, 4):
        sim.started("a1", attempt)
        step = sim.hello("a1", slots=1, incarnation=f"a1-{loss + 1}")  # the agent died and restarted
        bad = sim.task(wf, "bad")
        assert bad.agent_losses == loss
        assert sim.machine.attempts[attempt].error.startswith("died with its agent a1")
        if loss < 3:
            (assignment,) = step.assignments("a1")
            attempt = assignment.attempt_id
    assert bad.state is T.FAILED and bad.failure_reason == "poison"
    assert bad.retries_used == 0
    assert bad.error == "poison: 3 attempts died with their agent (max_agent_losses=3; agents: a1)"
    assert sim.task(wf, "after").state is T.SKIPPED
    assert sim.machine.workflows[wf].state is W.FAILED
    assert sim.machine.explain(bad.id, sim.now).reason.startswith("failed (poison)")
    assert sim.store.workflow_events(wf, task_id=bad.id)[-1].kind == "poison"
    stored = {t.id: t for t in sim.store.load().tasks}[bad.id]
    assert (stored.agent_losses, stored.failure_reason) == (3, "poison")


def test_the_poison_limit_comes_from_the_task_then_the_workflow(sim: Sim) -> None:
    sim.hello("a1", slots=2, incarnation="i0")
    wf, step = sim.submit(
        [task_spec("own", max_agent_losses=1), task_spec("inherits")], max_agent_losses=2, name="limits"
    )
    for assignment in step.assignments("a1"):
        sim.started("a1", assignment.attempt_id)
    step = sim.hello("a1", slots=2, incarnation="i1")
    assert sim.task(wf, "own").state is T.FAILED and sim.task(wf, "own").failure_reason == "poison"
    inherits = sim.task(wf, "inherits")
    assert inherits.agent_losses == 1 and inherits.state is T.ASSIGNED
    sim.started("a1", step.assignments("a1")[0].attempt_id)
    sim.hello("a1", slots=2, incarnation="i2")
    assert inherits.state is T.FAILED and "max_agent_losses=2" in inherits.error


def test_partitions_fencing_and_re_adoption_never_count_toward_poison(sim: Sim) -> None:
    cfg = sim.machine.config
    wf, attempt = _running(sim, task_spec("t", retries=0))
    for _ in range(4):  # partitions that heal (same incarnation)
        sim.run_for(cfg.lease_s + 2, silent=("a1",))
        sim.hello("a1", slots=1, running=(attempt,), incarnation="a1-1")
    for n in range(4):  # agent restarts whose supervisors kept the task (re-adopted)
        sim.hello("a1", slots=1, running=(attempt,), incarnation=f"a1-new-{n}")
    task = sim.task(wf, "t")
    assert task.agent_losses == 0 and task.attempts == 1
    sim.run_for(cfg.fence_total_s + 1, silent=("a1",))  # fenced
    sim.hello("a1", slots=1, running=(), incarnation="a1-after-fence")
    assert task.agent_losses == 0 and task.state is T.READY  # nothing placed before its lease is renewed
    sim.beat("a1")
    assert task.agent_losses == 0 and task.state is T.ASSIGNED


def test_an_agent_back_after_the_fence_gets_work_only_once_its_lease_is_renewed(sim: Sim) -> None:
    # Its supervisors fenced (the lease ran out): anything placed on it before an echo renews the
    # lease would be refused at start, before it has even reported what they fenced.
    cfg = sim.machine.config
    wf, _ = _running(sim)
    sim.run_for(cfg.fence_total_s + 1, silent=("a1",))
    assert sim.task(wf, "t").state is T.READY
    assert not sim.hello("a1", slots=1, incarnation="a1-1").assignments("a1")
    step = sim.beat("a1")  # its first heartbeat: echoed, then the task goes back to it
    assert [type(a) for a in step.actions][:2] == [ev.HeartbeatAck, ev.Assign]
    assert sim.task(wf, "t").state is T.ASSIGNED
    # Back within the fence (a short partition): nothing lapsed, so no wait for a heartbeat.
    sim.finished("a1", sim.attempt_of(wf, "t"))
    sim.run_for(cfg.lease_s + 2, silent=("a1",))
    sim.hello("a1", slots=1, incarnation="a1-1")
    _, step = sim.submit([task_spec("u")], name="after")
    assert [a.task.name for a in step.assignments("a1")] == ["u"]


def test_a_finished_but_unacked_attempt_of_a_new_incarnation_is_not_a_loss(sim: Sim) -> None:
    wf, attempt = _running(sim)
    sim.hello("a1", slots=1, finishing=(attempt,), incarnation="a1-2")
    assert attempt in sim.machine.unconfirmed
    assert sim.finished("a1", attempt, result=b"1").result is True
    assert sim.task(wf, "t").agent_losses == 0 and sim.machine.workflows[wf].state is W.COMPLETED


def test_an_unstarted_attempt_of_a_dead_agent_is_requeued_without_a_count(sim: Sim) -> None:
    sim.hello("a1", slots=1, incarnation="a1-1")
    wf, _ = sim.submit([task_spec("t")])
    step = sim.hello("a1", slots=1, incarnation="a1-2")
    task = sim.task(wf, "t")
    assert task.agent_losses == 0 and task.attempts == 2
    assert step.assignments("a1")[0].attempt_number == 2


# --- late success -------------------------------------------------------------------------------


def test_late_success_of_a_fenced_attempt_is_accepted_while_its_task_waits(sim: Sim) -> None:
    wf, attempt = _running(sim)
    sim.run_for(sim.machine.config.fence_total_s + 1, silent=("a1",))
    task = sim.task(wf, "t")
    assert task.state is T.READY and task.reruns_after_fence == 1  # no other agent to run it
    # a1 comes back (its session is fresh) and reports the success stuck behind the fault.
    sim.hello("a1", slots=1, finishing=(attempt,), incarnation="a1-1")
    sim.beat("a1")  # its first heartbeat renews its lease (echoed): only then is work placed on it
    task = sim.task(wf, "t")
    (replacement_id,) = [a for a in sim.machine.active.get("a1", ())]
    step = sim.finished("a1", attempt, result=b'"late"')
    assert step.result is True
    # The task had been placed again on the same agent after its Hello: withdrawn two-phase.
    (cancel,) = step.of(ev.CancelAttempts)
    assert cancel.attempt_ids == [replacement_id] and cancel.release_only
    assert task.state is T.ASSIGNED
    step = sim.released("a1", replacement_id)
    assert task.state is T.COMPLETED and task.result == b'"late"' and task.current_attempt_id == attempt
    assert task.reruns_after_fence == 0
    assert attempt not in sim.machine.attempts  # completed: it left memory once committed
    states = {a.id: a.state for a in sim.store.task_attempts(task.id)}
    assert states[attempt] is A.SUCCEEDED
    assert sim.machine.attempts[replacement_id].state is A.CANCELLED
    assert sim.machine.workflows[wf].state is W.COMPLETED
    assert "late success of attempt 1 accepted" in step.changes.events[0].reason


def test_late_success_is_accepted_at_once_when_nothing_was_placed_again(sim: Sim) -> None:
    wf, attempt = _running(sim)
    sim.run_for(sim.machine.config.fence_total_s + 1, silent=("a1",))
    sim.do(ev.PauseWorkflow(wf))  # nothing gets placed while it is paused
    sim.hello("a1", slots=1, finishing=(attempt,), incarnation="a1-1")
    assert sim.finished("a1", attempt, result=b"1").result is True
    task = sim.task(wf, "t")
    assert task.state is T.COMPLETED and task.id not in sim.machine.queue


def test_late_success_is_rejected_once_the_replacement_started(sim: Sim) -> None:
    wf, attempt = _running(sim)
    sim.hello("a2", slots=1)
    step = sim.run_for(sim.machine.config.fence_total_s + 1, silent=("a1",))
    (replacement,) = step.assignments("a2")
    sim.started("a2", replacement.attempt_id)
    sim.hello("a1", slots=1, finishing=(attempt,), incarnation="a1-1")
    assert sim.finished("a1", attempt, result=b'"late"').result is False
    task = sim.task(wf, "t")
    assert task.state is T.RUNNING and task.reruns_after_fence == 1


def test_a_replacement_that_starts_before_its_release_wins(sim: Sim) -> None:
    wf, attempt = _running(sim)
    sim.hello("a2", slots=1)
    step = sim.run_for(sim.machine.config.fence_total_s + 1, silent=("a1",))
    (replacement,) = step.assignments("a2")
    sim.hello("a1", slots=1, finishing=(attempt,), incarnation="a1-1")
    assert sim.finished("a1", attempt, result=b'"late"').result is True  # withdrawal asked
    sim.started("a2", replacement.attempt_id)  # too late: it already started
    assert sim.released("a2", replacement.attempt_id).result is False
    sim.finished("a2", replacement.attempt_id, result=b'"rerun"')
    task = sim.task(wf, "t")
    assert task.result == b'"rerun"' and task.reruns_after_fence == 1


# --- heartbeats and reports as events -----------------------------------------------------------


def test_a_heartbeat_is_echoed_after_its_tick_and_commits_nothing(sim: Sim) -> None:
    epoch = sim.hello("a1").result.session_epoch
    sim.quiet()
    step = sim.do(ev.AgentHeartbeat("a1", epoch, seq=41), at=sim.now + 1)
    assert step.result is True
    assert step.actions == [ev.HeartbeatAck("a1", epoch, 41)]
    assert not step.changes
    assert sim.machine.agents["a1"].last_seen == sim.now


def test_a_heartbeat_of_a_stale_session_is_refused_and_not_echoed(sim: Sim) -> None:
    old = sim.hello("a1").result.session_epoch
    sim.hello("a1")
    sim.quiet()
    step = sim.do(ev.AgentHeartbeat("a1", old, seq=3))
    assert step.result is False and step.actions == []


def test_every_agent_that_ran_a_python_attempt_of_a_workflow_is_told_when_it_ends(sim: Sim) -> None:
    """Their python workers keep a child per workflow: each agent lets go of it when told, once."""
    epochs = {a: sim.hello(a, types=("python", "shell"), slots=1).result.session_epoch for a in ("a1", "a2", "a3")}
    python = {"agent_type": "python", "payload": {"function": "m:f"}}
    wf, step = sim.submit([task_spec("p", **python), task_spec("q", **python), task_spec("s")])
    placed = {x.task.name: (agent, x.attempt_id) for agent in epochs for x in step.assignments(agent)}
    assert {agent for agent, _ in placed.values()} == {"a1", "a2", "a3"}
    for agent, attempt in placed.values():
        sim.started(agent, attempt)
    (p_agent, p), (q_agent, q), (s_agent, s_attempt) = placed["p"], placed["q"], placed["s"]

    def report(agent: str, attempt: str, outcome: AttemptState) -> Step:
        return sim.do(ev.AgentReports(agent, epochs[agent], (ev.AttemptFinished(agent, attempt, outcome, 0, b"1"),)))

    step = report(p_agent, p, A.SUCCEEDED)
    assert step.of(ev.Ack) == [ev.Ack(p_agent, epochs[p_agent], [p])]  # the workflow goes on
    step = report(s_agent, s_attempt, A.SUCCEEDED)
    assert step.of(ev.Ack) == [ev.Ack(s_agent, epochs[s_agent], [s_attempt])]
    step = report(q_agent, q, A.FAILED)
    assert sim.machine.workflows[wf].state is W.FAILED
    # Both agents that ran its python attempts hear of its end (not the one that ran only a shell task).
    assert sorted(step.of(ev.Ack), key=lambda a: (a.agent_id, len(a.attempt_ids))) == sorted(
        [
            ev.Ack(q_agent, epochs[q_agent], [q]),
            ev.Ack(p_agent, epochs[p_agent], [], (wf,)),
            ev.Ack(q_agent, epochs[q_agent], [], (wf,)),
        ],
        key=lambda a: (a.agent_id, len(a.attempt_ids)),
    )
    assert len(sim.machine.holders) == 0


def test_a_report_batch_applies_in_order_and_acks_finished_reports(sim: Sim) -> None:
    epoch = sim.hello("a1", slots=2).result.session_epoch
    wf, step = sim.submit([task_spec("a"), task_spec("b")])
    a, b = (x.attempt_id for x in step.assignments("a1"))
    big = b'"' + b"x" * sim.machine.config.max_result_bytes + b'"'
    reports = (
        ev.AttemptStarted("a1", a),
        ev.AttemptStarted("a1", b),
        ev.AttemptFinished("a1", a, A.SUCCEEDED, 0, b"1", session_epoch=epoch),
        ev.AttemptFinished("a1", b, A.SUCCEEDED, 0, big, session_epoch=epoch),
    )
    step = sim.do(ev.AgentReports("a1", epoch, reports))
    assert step.result is True
    assert ev.Ack("a1", epoch, [a, b]) in step.actions
    assert sim.task(wf, "a").state is T.COMPLETED
    failed = sim.task(wf, "b")
    assert failed.state is T.FAILED and "over the max_result_bytes=262144 limit" in failed.error
    # A batch from a stale session applies nothing and acks nothing.
    sim.hello("a1")
    sim.quiet()
    stale = sim.do(ev.AgentReports("a1", epoch, (ev.AttemptStarted("a1", a),)))
    assert stale.result is False and stale.actions == [] and not stale.changes


# --- restart ------------------------------------------------------------------------------------


def test_after_a_restart_unreported_attempts_wait_for_the_fence_or_max_disconnect(
    sim: Sim, make_sim: Callable[..., Sim]
) -> None:
    sim.hello("a1", slots=2, incarnation="a1-1")
    wf, step = sim.submit([task_spec("stop"), task_spec("keep", on_disconnect="keep", max_disconnect=600)])
    attempts = {x.task.name: x.attempt_id for x in step.assignments("a1")}
    for attempt in attempts.values():
        sim.started("a1", attempt)
    boot = sim.now + 10.0
    fresh = make_sim(boot_time=boot, now=boot, store=sim.store, config=MachineConfig(adopt_grace_s=5.0))
    fresh.machine.restore(sim.store.load(), boot)
    fresh.quiet()
    cfg = fresh.machine.config
    assert fresh.machine.fence_at == {attempts["stop"]: boot + cfg.fence_total_s, attempts["keep"]: boot + 600.0}
    assert fresh.machine.event_seq == sim.machine.event_seq  # the log continues where it was
    fresh.hello("a2", slots=2)
    fresh.run_for(cfg.fence_total_s - 0.01)
    assert fresh.machine.attempts[attempts["stop"]].state is A.RUNNING
    fresh.run_for(0.01)
    assert fresh.machine.attempts[attempts["stop"]].state is A.LOST
    assert fresh.machine.attempts[attempts["keep"]].state is A.RUNNING
    fresh.run_for(boot + 600.0 - fresh.now)
    assert fresh.machine.attempts[attempts["keep"]].state is A.LOST
    assert fresh.task(wf, "stop").agent_losses == 0


def test_a_started_task_restores_running_from_its_attempt_row(sim: Sim, make_sim: Callable[..., Sim]) -> None:
    """mark_running does not rewrite the task's row (its attempt's says RUNNING): restore derives it."""
    sim.hello("a1", slots=2)
    wf, step = sim.submit([task_spec("a"), task_spec("b")])
    a, _ = (x.attempt_id for x in step.assignments("a1"))
    started = sim.started("a1", a)
    assert sim.task(wf, "a").id not in started.changes.tasks  # the attempt row carries it
    assert started.changes.attempts[a].state is A.RUNNING
    stored = {t.name: t for t in sim.store.load().tasks}
    assert stored["a"].state == "assigned" and stored["b"].state == "assigned"
    fresh = make_sim(store=sim.store, now=sim.now + 1.0, boot_time=sim.now + 1.0)
    fresh.machine.restore(sim.store.load(), fresh.now)
    fresh.quiet()
    restored = fresh.task(wf, "a")
    assert restored.state == "running" and restored.started_at == sim.task(wf, "a").started_at
    assert fresh.task(wf, "b").state == "assigned"  # never started: stays assigned
    assert fresh.machine.counts[wf]["running"] == 1 and fresh.machine.counts[wf]["assigned"] == 1
    sim.finished("a1", a)  # the next change writes the task's row whole
    assert {t.name: t.state for t in sim.store.load().tasks}["a"] == "completed"


# --- the event log ------------------------------------------------------------------------------


def test_every_transition_is_logged_with_its_kind_and_committed_with_its_tick(sim: Sim) -> None:
    sim.hello("a1", slots=1)
    wf, step = sim.submit([task_spec("flaky", retries=1, retry_backoff=1.0)])
    # A plain "ready" is published to watchers but not stored.
    assert [e.kind for e in step.changes.events] == ["submitted", "started", "placed"]
    attempt = step.assignments("a1")[0].attempt_id
    sim.started("a1", attempt)
    sim.finished("a1", attempt, A.FAILED, error="exit 1")
    step = sim.run_for(5.0)
    sim.finished("a1", step.assignments("a1")[0].attempt_id, result=b"2")
    events = sim.store.workflow_events(wf)
    assert [e.kind for e in events] == [
        "submitted",
        "started",
        "placed",
        "running",
        "retry",
        "placed",
        "completed",
        "completed",
    ]
    assert [e.seq for e in events] == sorted(e.seq for e in events)
    retry = events[4]
    assert retry.reason.startswith("retry 1 of 1 in") and retry.reason.endswith("after: exit 1")
    assert events[-1].task_id == "" and events[-1].workflow_state is W.COMPLETED
    assert sim.store.load().last_event_seq == events[-1].seq


def test_watchers_see_every_transition_with_the_seq_of_the_log(sim: Sim) -> None:
    sim.hello("a1", slots=1)
    wf, _ = sim.submit([task_spec("t")], start=False)
    sim.machine.watched.add(wf)
    step = sim.do(ev.StartWorkflow(wf))
    published = [a.event for a in step.of(ev.Publish)]
    assert [e.kind for e in published] == ["started", "ready", "placed"]
    stored = sim.store.workflow_events(wf)
    assert [e.kind for e in stored] == ["submitted", "started", "placed"]
    assert [e.seq for e in stored[1:]] == [published[0].seq, published[2].seq]  # same seq; "ready" not stored
    assert stored[2] == published[2]


def test_the_wire_carries_the_new_fields(sim: Sim) -> None:
    sim.hello("a1", slots=2, incarnation="i1")
    wf, step = sim.submit([task_spec("k", on_disconnect="keep", max_disconnect="5m"), task_spec("s")])
    by_name = {a.task.name: wire.assignment_to_proto(a) for a in step.assignments("a1")}
    assert (by_name["k"].on_disconnect, by_name["k"].max_disconnect_s) == (pb.ON_DISCONNECT_KEEP, 300.0)
    assert (by_name["s"].on_disconnect, by_name["s"].max_disconnect_s) == (pb.ON_DISCONNECT_STOP, 0.0)
    task = sim.task(wf, "s")
    task.agent_losses, task.reruns_after_fence, task.failure_reason = 2, 1, "poison"
    status = wire.task_status(sim.machine, task)
    assert (status.agent_losses, status.reruns_after_fence, status.failure_reason) == (2, 1, "poison")
    (placed,) = sim.store.workflow_events(wf, task_id=task.id)
    message = wire.event_to_proto(placed)
    assert (message.kind, message.seq, message.agent_id) == ("placed", placed.seq, "a1")


def test_heartbeats_are_echoed_at_most_every_heartbeat_echo_s_and_a_new_session_at_once(sim: Sim) -> None:
    epoch = sim.hello("a1").result.session_epoch
    sim.quiet()
    every = sim.machine.config.echo_every_s
    start = sim.now
    echoed = []
    for seq in range(1, 12):  # one heartbeat a second for 11 s
        step = sim.do(ev.AgentHeartbeat("a1", epoch, seq=seq), at=start + seq)
        assert step.result is True
        echoed += [a.seq for a in step.actions if isinstance(a, ev.HeartbeatAck)]
    assert echoed == [1, 1 + int(every), 1 + 2 * int(every)]
    # A new session's first heartbeat is echoed at once: its agent has no lease renewed on it yet.
    fresh = sim.hello("a1").result.session_epoch
    step = sim.do(ev.AgentHeartbeat("a1", fresh, seq=1), at=sim.now + 0.1)
    assert step.actions == [ev.HeartbeatAck("a1", fresh, 1)]


def test_the_echo_interval_is_at_most_a_sixth_of_fence_after() -> None:
    assert MachineConfig().echo_every_s == 5.0
    assert MachineConfig(lease_s=3.0, fence_after_s=6.0).echo_every_s == 1.0
