"""The state machine and its agents: fencing, leases, reconnects and restore from a snapshot."""

from __future__ import annotations

from collections.abc import Callable

from corral.controller.core import events as ev
from corral.controller.core.machine import Machine, MachineConfig
from corral.controller.core.model import AgentState, AttemptState, TaskState, WorkflowState
from tests.unit.conftest import Sim, task_spec

T = TaskState
W = WorkflowState
A = AttemptState
S = AgentState


def test_hello_opens_a_new_session_epoch_each_time(sim: Sim) -> None:
    first = sim.hello("a1").result
    second = sim.hello("a2").result
    third = sim.hello("a1").result
    assert first.session_epoch < second.session_epoch < third.session_epoch
    assert sim.machine.agents["a1"].session_epoch == third.session_epoch
    assert sim.store.load().meta["session_epoch"] == str(third.session_epoch)
    # A heartbeat of the replaced session is ignored.
    assert sim.do(ev.AgentHeartbeat("a1", first.session_epoch)).result is False
    assert sim.do(ev.AgentHeartbeat("a1", third.session_epoch)).result is True


# --- fencing ------------------------------------------------------------------------------------


def test_report_from_an_agent_that_does_not_own_the_attempt_is_rejected(sim: Sim) -> None:
    sim.hello("a1", slots=1)
    sim.hello("a2", slots=1)
    wf, step = sim.submit([task_spec("t")])
    (assignment,) = step.assignments()
    owner = sim.machine.attempts[assignment.attempt_id].agent_id
    intruder = "a2" if owner == "a1" else "a1"
    sim.quiet()
    for outcome in (A.SUCCEEDED, A.FAILED, A.CANCELLED):
        step = sim.finished(intruder, assignment.attempt_id, outcome)
        assert step.result is False
        assert not step.changes and step.actions == []
    assert sim.started(intruder, assignment.attempt_id).result is False
    assert sim.task(wf, "t").state is T.ASSIGNED
    assert sim.finished(owner, assignment.attempt_id).result is True


def test_report_for_an_old_attempt_after_a_requeue_is_rejected(sim: Sim) -> None:
    sim.hello("a1", slots=1)
    wf, step = sim.submit([task_spec("t")])
    old = step.assignments("a1")[0].attempt_id
    sim.started("a1", old)
    # a1 goes silent and is fenced; the task moves to a2 under a new attempt, which starts.
    sim.hello("a2", slots=1)
    fenced = sim.run_for(sim.machine.config.fence_total_s + 1, silent=("a1",))
    (new,) = fenced.assignments("a2")
    assert new.attempt_number == 2 and new.attempt_id != old
    assert sim.machine.attempts[old].state is A.LOST
    sim.started("a2", new.attempt_id)
    # a1 comes back and reports the old attempt as finished, and a2 reports the old id too.
    sim.hello("a1", running=(old,))
    sim.quiet()
    for reporter in ("a1", "a2"):
        step = sim.finished(reporter, old, result=b'"stale"')
        assert step.result is False
        assert not step.changes and step.actions == []
    assert sim.task(wf, "t").state is T.RUNNING and sim.task(wf, "t").result is None
    assert sim.finished("a2", new.attempt_id, result=b'"fresh"').result is True
    assert sim.task(wf, "t").result == b'"fresh"'


# --- leases -------------------------------------------------------------------------------------


def test_silent_agent_is_lost_and_its_attempts_requeued_without_spending_a_retry(sim: Sim) -> None:
    cfg = sim.machine.config
    sim.hello("a1", slots=1)
    wf, step = sim.submit([task_spec("t", retries=0)])
    attempt = step.assignments("a1")[0].attempt_id
    sim.started("a1", attempt)
    silent_since = sim.now
    sim.hello("a2", slots=1)
    assert sim.run_for(cfg.lease_s, silent=("a1",)).assignments() == []  # exactly at the lease: not yet
    assert sim.machine.agents["a1"].state is S.CONNECTED
    sim.beat("a2", at=sim.now + 1)
    assert sim.machine.agents["a1"].state is S.LOST
    assert "a1" not in sim.machine.views
    assert sim.machine.attempts[attempt].state is A.RUNNING  # lost is not fenced
    step = sim.run_for(silent_since + cfg.fence_total_s - sim.now, silent=("a1",))
    assert sim.machine.attempts[attempt].state is A.LOST
    assert sim.machine.attempts[attempt].error.startswith("fenced: agent a1 silent since")
    task = sim.task(wf, "t")
    assert task.retries_used == 0 and task.attempts == 2 and task.reruns_after_fence == 1
    assert task.agent_losses == 0
    (again,) = step.assignments("a2")
    assert again.task.id == task.id
    sim.finished("a2", again.attempt_id)
    assert sim.machine.workflows[wf].state is W.COMPLETED


def test_heartbeats_keep_an_agent_alive(sim: Sim) -> None:
    sim.hello("a1")
    wf, _ = sim.submit([task_spec("t")])
    sim.advance(10 * sim.machine.config.lease_s)
    assert sim.machine.agents["a1"].state is S.CONNECTED
    assert sim.task(wf, "t").attempts == 1


def test_no_agent_is_lost_during_the_adoption_grace_after_boot(make_sim: Callable[..., Sim]) -> None:
    sim = make_sim(boot_time=0.0, now=0.0)
    cfg = sim.machine.config
    sim.hello("a1")
    wf, step = sim.submit([task_spec("t")])
    attempt = step.assignments()[0].attempt_id
    sim.tick(at=cfg.lease_s + 5)  # silent past its lease, but inside the grace
    assert sim.machine.agents["a1"].state is S.CONNECTED
    sim.tick(at=cfg.adopt_grace_s - 0.1)
    assert sim.machine.attempts[attempt].state is A.ASSIGNED
    sim.tick(at=cfg.adopt_grace_s)
    assert sim.machine.agents["a1"].state is S.LOST
    assert sim.machine.attempts[attempt].state is A.ASSIGNED  # owned until fenced
    sim.tick(at=cfg.fence_total_s)
    assert sim.machine.attempts[attempt].state is A.LOST
    assert sim.task(wf, "t").retries_used == 0


def test_clean_disconnect_keeps_attempts_until_the_lease_says_otherwise(sim: Sim) -> None:
    sim.hello("a1")
    wf, step = sim.submit([task_spec("t")])
    attempt = step.assignments()[0].attempt_id
    epoch = sim.machine.agents["a1"].session_epoch
    sim.do(ev.AgentGone("a1", epoch))
    assert sim.machine.agents["a1"].state is S.DISCONNECTED
    assert sim.machine.attempts[attempt].state is A.ASSIGNED
    gone_at = sim.now
    sim.tick(after=sim.machine.config.lease_s + 1)
    assert sim.machine.agents["a1"].state is S.LOST
    assert sim.task(wf, "t").state is T.ASSIGNED
    sim.tick(at=gone_at + sim.machine.config.fence_total_s)
    assert sim.task(wf, "t").state is T.READY


def test_gone_of_a_stale_session_is_ignored(sim: Sim) -> None:
    old = sim.hello("a1").result.session_epoch
    sim.hello("a1")
    sim.quiet()
    step = sim.do(ev.AgentGone("a1", old))
    assert not step.changes
    assert sim.machine.agents["a1"].state is S.CONNECTED


# --- reconnect ----------------------------------------------------------------------------------


def test_reconnect_reporting_an_owned_attempt_re_adopts_it(sim: Sim) -> None:
    sim.hello("a1")
    wf, step = sim.submit([task_spec("t")])
    attempt = step.assignments()[0].attempt_id
    sim.started("a1", attempt)
    sim.do(ev.AgentGone("a1", sim.machine.agents["a1"].session_epoch))
    welcome = sim.hello("a1", running=(attempt,)).result
    assert welcome.kill_attempt_ids == ()
    assert attempt not in sim.machine.unconfirmed
    assert sim.machine.views["a1"].outstanding == 1
    sim.advance(sim.machine.config.reconnect_grace_s * 4)
    assert sim.machine.attempts[attempt].state is A.RUNNING
    sim.finished("a1", attempt)
    assert sim.machine.workflows[wf].state is W.COMPLETED


def test_reconnect_reporting_a_reassigned_attempt_is_told_to_kill_it(sim: Sim) -> None:
    sim.hello("a1", slots=1)
    _, step = sim.submit([task_spec("t")])
    old = step.assignments()[0].attempt_id
    sim.hello("a2", slots=1)
    sim.run_for(sim.machine.config.fence_total_s + 1, silent=("a1",))
    welcome = sim.hello("a1", running=(old, "never-heard-of")).result
    assert welcome.kill_attempt_ids == tuple(sorted((old, "never-heard-of")))
    assert sim.machine.attempts[old].state is A.LOST


def test_owned_attempt_not_reported_on_reconnect_is_lost_after_the_grace(sim: Sim) -> None:
    grace = sim.machine.config.reconnect_grace_s
    sim.hello("a1")
    wf, step = sim.submit([task_spec("t", retries=0)])
    attempt = step.assignments()[0].attempt_id
    sim.started("a1", attempt)
    welcome = sim.hello("a1", running=()).result
    assert welcome.kill_attempt_ids == ()
    assert sim.machine.unconfirmed[attempt] == sim.now + grace
    assert sim.machine.next_timer() == sim.now + grace
    sim.tick(after=grace - 0.5)
    assert sim.machine.attempts[attempt].state is A.RUNNING
    step = sim.tick(after=0.5)
    assert sim.machine.attempts[attempt].state is A.LOST
    task = sim.task(wf, "t")
    assert task.retries_used == 0
    (again,) = step.assignments("a1")  # requeued, and the agent has room again
    assert again.attempt_number == 2


def test_finished_report_within_the_reconnect_grace_wins(sim: Sim) -> None:
    grace = sim.machine.config.reconnect_grace_s
    sim.hello("a1")
    wf, step = sim.submit([task_spec("t")])
    attempt = step.assignments()[0].attempt_id
    sim.hello("a1", running=())
    sim.tick(after=grace / 2)
    assert sim.finished("a1", attempt, result=b"42").result is True
    assert attempt not in sim.machine.unconfirmed
    step = sim.tick(after=grace * 2)
    assert not step.changes
    assert sim.task(wf, "t").result == b"42"
    assert sim.machine.workflows[wf].state is W.COMPLETED


def test_started_report_confirms_an_unconfirmed_attempt(sim: Sim) -> None:
    sim.hello("a1")
    _, step = sim.submit([task_spec("t")])
    attempt = step.assignments()[0].attempt_id
    sim.hello("a1", running=())
    sim.started("a1", attempt)
    sim.tick(after=sim.machine.config.reconnect_grace_s + 1)
    assert sim.machine.attempts[attempt].state is A.RUNNING


# --- restore ------------------------------------------------------------------------------------


def _restored(sim: Sim, make_sim: Callable[..., Sim], now: float) -> Sim:
    """A fresh machine booted at ``now`` from everything ``sim`` committed to its store."""
    fresh = make_sim(boot_time=now, now=now, store=sim.store)
    fresh.machine.restore(sim.store.load(), now)
    fresh.quiet()
    fresh.machine.validate()
    return fresh


def test_restore_keeps_completed_work_and_waits_for_agents_to_re_adopt(sim: Sim, make_sim: Callable[..., Sim]) -> None:
    sim.hello("a1")
    wf, step = sim.submit([task_spec("a"), task_spec("b", "a"), task_spec("c", "b")], key="once")
    sim.finished("a1", step.assignments()[0].attempt_id, result=b'{"n": 1}')
    b_attempt = sim.attempt_of(wf, "b")
    sim.started("a1", b_attempt)
    pending_wf, _ = sim.submit([task_spec("later")], name="later", start=False)
    old_epoch = sim.machine.epoch

    boot = sim.now + 3600.0
    fresh = _restored(sim, make_sim, boot)
    machine = fresh.machine
    assert fresh.task(wf, "a").state is T.COMPLETED
    assert fresh.task(wf, "a").result == b'{"n": 1}'
    assert fresh.task(wf, "b").state is T.RUNNING
    assert fresh.task(wf, "c").state is T.PENDING
    assert machine.workflows[pending_wf].state is W.PENDING
    assert machine.agents["a1"].state is S.DISCONNECTED
    cfg = machine.config
    assert machine.fence_at == {b_attempt: boot + max(cfg.adopt_grace_s, cfg.fence_total_s)}
    # The idempotency key survived.
    again, step = fresh.submit([task_spec("a")], key="once")
    assert again == wf and step.result == (wf, True)

    welcome = fresh.hello("a1", running=(b_attempt,)).result
    assert welcome.session_epoch > old_epoch
    assert welcome.kill_attempt_ids == ()
    assert machine.unconfirmed == {} and machine.fence_at == {}
    (c,) = fresh.finished("a1", b_attempt, result=b"2").assignments("a1")
    assert dict(c.inputs) == {"b": b"2"}
    fresh.finished("a1", c.attempt_id)
    assert machine.workflows[wf].state is W.COMPLETED


def test_restore_requeues_unreported_attempts_only_after_the_adoption_grace(
    sim: Sim, make_sim: Callable[..., Sim]
) -> None:
    sim.hello("a1")
    wf, step = sim.submit([task_spec("t", retries=0)])
    attempt = step.assignments()[0].attempt_id
    sim.started("a1", attempt)

    boot = sim.now + 60.0
    fresh = _restored(sim, make_sim, boot)
    cfg = fresh.machine.config
    grace = max(cfg.adopt_grace_s, cfg.fence_total_s)  # until its supervisor has surely fenced it
    fresh.tick(at=boot + grace - 0.1)  # the old agent is silent, but nothing is requeued yet
    assert fresh.machine.attempts[attempt].state is A.RUNNING
    fresh.hello("a2")
    step = fresh.tick(at=boot + grace)
    assert fresh.machine.attempts[attempt].state is A.LOST
    task = fresh.task(wf, "t")
    assert task.retries_used == 0
    (again,) = step.assignments("a2")
    assert again.attempt_number == 2
    # The old agent finally returns with the attempt: it is told to kill it.
    assert fresh.hello("a1", running=(attempt,)).result.kill_attempt_ids == (attempt,)


def test_restore_requeues_ready_tasks_and_keeps_backoff(sim: Sim, make_sim: Callable[..., Sim]) -> None:
    sim.hello("a1", slots=1)
    wf, step = sim.submit([task_spec("flaky", retries=2, retry_backoff=50.0), task_spec("queued")])
    attempts = {a.task.name: a.attempt_id for a in step.assignments()}
    sim.finished("a1", attempts["flaky"], A.FAILED, error="oops")
    not_before = sim.task(wf, "flaky").not_before
    assert not_before is not None
    fresh = _restored(sim, make_sim, sim.now + 1)
    flaky = fresh.task(wf, "flaky")
    assert flaky.state is T.READY and flaky.not_before == not_before and flaky.retries_used == 1
    assert flaky.id in fresh.machine.queue
    fresh.hello("a2", slots=2)  # room for "queued" too, requeued when the adoption grace ends
    step = fresh.advance(not_before - fresh.now)
    assert [a.task.name for a in step.assignments("a2")] == ["flaky"]


def test_restore_of_a_paused_workflow_does_not_queue_it(sim: Sim, make_sim: Callable[..., Sim]) -> None:
    wf, _ = sim.submit([task_spec("a")])
    sim.do(ev.PauseWorkflow(wf))
    fresh = _restored(sim, make_sim, sim.now + 1)
    assert fresh.task(wf, "a").id not in fresh.machine.queue
    assert fresh.hello("a1").of(ev.Assign) == []
    (a,) = fresh.do(ev.ResumeWorkflow(wf)).assignments()
    assert a.task.name == "a"


def test_restore_of_an_empty_store_is_an_empty_machine(make_sim: Callable[..., Sim]) -> None:
    sim = make_sim()
    machine = Machine(MachineConfig(), new_id=sim.new_id)
    machine.restore(sim.store.load(), 0.0)
    machine.validate()
    assert machine.workflows == {} and machine.epoch == 0
