"""Issue 10 on the pure machine: fallback, allow_failure, min_success and approval tasks."""

from __future__ import annotations

import json

import pytest

from corral.controller.core import requests as rq
from corral.controller.core.fallbacks import ERRORS_INPUT, ResolveApproval
from corral.controller.core.machine import MachineConfig
from corral.controller.core.model import AttemptState, TaskState, WorkflowState
from corral.controller.errors import FailedPrecondition, InvalidArgument
from corral.controller.rpc.wire_spec import spec_to_proto, task_mapping
from corral.controller.spec import TaskSpec, parse_workflow
from tests.unit.conftest import Sim, task_spec

A = AttemptState
T = TaskState
W = WorkflowState
FAILED = A.FAILED


def _sim(make_sim: type[Sim]) -> Sim:
    sim = make_sim(config=MachineConfig(prefetch=0, backoff_jitter=0.0))
    sim.hello("a1", slots=8)
    return sim


def _fail(sim: Sim, wf: str, name: str, error: str = "boom") -> None:
    sim.finished("a1", sim.attempt_of(wf, name), FAILED, error=error)


def _ok(sim: Sim, wf: str, name: str, result: bytes = b"1") -> None:
    sim.finished("a1", sim.attempt_of(wf, name), result=result)


def _restored(make_sim: type[Sim], sim: Sim) -> Sim:
    fresh = make_sim(boot_time=sim.now, now=sim.now, store=sim.store, config=sim.config)
    fresh.machine.restore(sim.store.load(), sim.now)
    return fresh


# --- fallback -------------------------------------------------------------------------------------


def test_fallback_runs_after_every_retry_failed_with_retries_anew(make_sim: type[Sim]) -> None:
    sim = _sim(make_sim)
    spec = task_spec("t", retries=1, retry_backoff=0.001, fallback={"shell": "echo plan-b"})
    wf, step = sim.submit([spec, task_spec("after", "t")])
    assert json.loads(step.assignments()[0].task.run_payload) == {"shell": "echo t"}
    _fail(sim, wf, "t")
    step = sim.tick(after=1)
    assert json.loads(step.assignments()[0].task.run_payload) == {"shell": "echo t"}  # the retry
    step = sim.finished("a1", sim.attempt_of(wf, "t"), FAILED, error="boom")
    task = sim.task(wf, "t")
    assert task.fallback_used and task.retries_used == 0
    assert json.loads(step.assignments()[0].task.run_payload) == {"shell": "echo plan-b"}
    _fail(sim, wf, "t")  # the fallback's own retry
    sim.tick(after=1)
    _ok(sim, wf, "t", b'"b"')
    assert task.state is T.COMPLETED and task.result == b'"b"'
    _ok(sim, wf, "after")
    assert sim.machine.workflows[wf].state is W.COMPLETED
    assert task.attempts == 4
    assert _restored(make_sim, sim).task(wf, "t").fallback_used  # stored


def test_a_failed_fallback_fails_the_task_and_skips_dependents(make_sim: type[Sim]) -> None:
    sim = _sim(make_sim)
    wf, _ = sim.submit([task_spec("t", fallback={"shell": "false"}), task_spec("after", "t")])
    _fail(sim, wf, "t")
    sim.tick()
    _fail(sim, wf, "t", "fallback broke")
    assert sim.task(wf, "t").state is T.FAILED
    assert sim.task(wf, "after").state is T.SKIPPED
    assert sim.machine.workflows[wf].state is W.FAILED


def test_fallback_survives_a_controller_restart_mid_fallback(make_sim: type[Sim]) -> None:
    sim = _sim(make_sim)
    wf, _ = sim.submit([task_spec("t", fallback={"shell": "echo b"})])
    _fail(sim, wf, "t")
    fresh = _restored(make_sim, sim)
    task = fresh.task(wf, "t")
    assert task.fallback_used and json.loads(task.run_payload) == {"shell": "echo b"}
    # Its agent comes back without the attempt: the fallback is placed again, not the primary.
    fresh.hello("a1", slots=4, incarnation="new")
    step = fresh.run_for(60)
    assert [json.loads(a.task.run_payload) for a in step.assignments()] == [{"shell": "echo b"}]


# --- allow_failure ---------------------------------------------------------------------------------


def test_allow_failure_lets_dependents_run_with_null_and_the_error(make_sim: type[Sim]) -> None:
    sim = _sim(make_sim)
    wf, _ = sim.submit([task_spec("flaky", allow_failure=True), task_spec("ok"), task_spec("join", "flaky", "ok")])
    _ok(sim, wf, "ok")
    attempt = sim.attempt_of(wf, "flaky")
    step = sim.finished("a1", attempt, FAILED, error="no network")
    (assignment,) = step.assignments()
    assert assignment.task.name == "join"
    assert assignment.inputs["flaky"] == b"null" and assignment.inputs["ok"] == b"1"
    assert json.loads(assignment.inputs[ERRORS_INPUT]) == {
        "flaky": {"state": "failed", "error": "no network", "reason": ""}
    }
    _ok(sim, wf, "join")
    assert sim.task(wf, "flaky").state is T.FAILED
    assert sim.machine.workflows[wf].state is W.COMPLETED  # the failure was allowed


def test_assignment_carries_errors_input(make_sim: type[Sim]) -> None:
    sim = make_sim(config=MachineConfig(prefetch=0))
    sim.hello("a1", slots=1)
    wf, _ = sim.submit([task_spec("flaky", allow_failure=True), task_spec("join", "flaky")])
    attempt = sim.attempt_of(wf, "flaky")
    step = sim.finished("a1", attempt, FAILED, error="down")
    (assignment,) = step.assignments()
    assert assignment.inputs["flaky"] == b"null"
    assert json.loads(assignment.inputs[ERRORS_INPUT])["flaky"]["error"] == "down"


def test_a_skipped_allow_failure_task_still_skips_its_dependents(make_sim: type[Sim]) -> None:
    sim = _sim(make_sim)
    wf, _ = sim.submit([task_spec("a"), task_spec("b", "a", allow_failure=True), task_spec("c", "b")])
    _fail(sim, wf, "a")
    assert sim.task(wf, "b").state is T.SKIPPED
    assert sim.task(wf, "c").state is T.SKIPPED
    assert sim.machine.workflows[wf].state is W.FAILED


# --- min_success ------------------------------------------------------------------------------------


def test_min_success_fan_in_runs_with_n_of_m(make_sim: type[Sim]) -> None:
    sim = _sim(make_sim)
    parts = [task_spec(f"p{i}") for i in range(4)]
    wf, _ = sim.submit([*parts, task_spec("join", "p0", "p1", "p2", "p3", min_success=2)])
    _fail(sim, wf, "p0")
    _ok(sim, wf, "p1")
    _fail(sim, wf, "p2")
    assert sim.task(wf, "join").state is T.PENDING  # p3 still runs
    _ok(sim, wf, "p3")
    assert sim.task(wf, "join").state is T.ASSIGNED
    _ok(sim, wf, "join")
    assert sim.machine.workflows[wf].state is W.COMPLETED  # its absorbed failures do not fail it


def test_min_success_skips_as_soon_as_n_is_out_of_reach(make_sim: type[Sim]) -> None:
    sim = _sim(make_sim)
    parts = [task_spec(f"p{i}") for i in range(4)]
    wf, _ = sim.submit([*parts, task_spec("join", "p0", "p1", "p2", "p3", min_success=3), task_spec("end", "join")])
    _fail(sim, wf, "p0")
    assert sim.task(wf, "join").state is T.PENDING
    _fail(sim, wf, "p1")
    assert sim.task(wf, "join").state is T.SKIPPED
    assert "min_success is 3" in sim.task(wf, "join").error
    assert sim.task(wf, "end").state is T.SKIPPED
    _ok(sim, wf, "p2")
    _ok(sim, wf, "p3")
    assert sim.machine.workflows[wf].state is W.FAILED


def test_min_success_counts_survive_a_restart(make_sim: type[Sim]) -> None:
    sim = _sim(make_sim)
    parts = [task_spec(f"p{i}") for i in range(3)]
    wf, _ = sim.submit([*parts, task_spec("join", "p0", "p1", "p2", min_success=2)])
    _fail(sim, wf, "p0")
    _ok(sim, wf, "p1")
    fresh = _restored(make_sim, sim)
    assert fresh.machine.unfinished_deps[fresh.task(wf, "join").id] == 1
    fresh.hello("a1", slots=4, running=(fresh.attempt_of(wf, "p2"),))
    fresh.finished("a1", fresh.attempt_of(wf, "p2"), FAILED, error="x")
    assert fresh.task(wf, "join").state is T.SKIPPED  # 1 of 3 completed < 2


# --- approvals --------------------------------------------------------------------------------------


def _answer(sim: Sim, wf: str, task: str, approve: bool, reason: str = "") -> object:
    return sim.do(ResolveApproval(wf, task, rq.Caller("alice"), approve, reason)).result


def test_approval_waits_then_approve_completes_it(make_sim: type[Sim]) -> None:
    sim = _sim(make_sim)
    gate = task_spec("gate", "build", approval={"message": "ship it?"}, payload={})
    wf, _ = sim.submit([task_spec("build"), gate, task_spec("deploy", "gate")])
    with pytest.raises(FailedPrecondition, match="not waiting for approval yet"):
        _answer(sim, wf, "gate", True)
    _ok(sim, wf, "build")
    task = sim.task(wf, "gate")
    assert task.state is T.READY and task.id not in sim.machine.queue
    assert sim.machine.explain(task.id, sim.now).reason.startswith("waiting for approval: ship it?")
    assert sim.machine.next_timer() is None  # no timeout: nothing to wake up for
    _answer(sim, wf, "gate", True, "looks good")
    assert task.state is T.COMPLETED
    assert json.loads(task.result or b"")["approved_by"] == "alice"
    assert sim.task(wf, "deploy").state is T.ASSIGNED
    with pytest.raises(FailedPrecondition, match="already answered"):
        _answer(sim, wf, "gate", False)


def test_reject_fails_it_with_the_reason(make_sim: type[Sim]) -> None:
    sim = _sim(make_sim)
    wf, _ = sim.submit([task_spec("gate", approval={}, payload={}), task_spec("deploy", "gate")])
    _answer(sim, wf, "gate", False, "not today")
    task = sim.task(wf, "gate")
    assert task.state is T.FAILED and task.failure_reason == "rejected"
    assert task.error == "rejected by alice: not today"
    assert sim.task(wf, "deploy").state is T.SKIPPED
    assert sim.machine.workflows[wf].state is W.FAILED


def test_approval_timeout_fails_it_and_survives_a_restart(make_sim: type[Sim]) -> None:
    sim = _sim(make_sim)
    wf, _ = sim.submit([task_spec("gate", approval={"timeout": "1h"}, payload={})])
    task = sim.task(wf, "gate")
    assert sim.machine.next_timer() == pytest.approx(sim.now + 3600)
    fresh = _restored(make_sim, sim)
    assert fresh.machine.next_timer() == pytest.approx(sim.now + 3600)
    fresh.tick(after=3599)
    assert fresh.task(wf, "gate").state is T.READY
    fresh.tick(after=2)
    task = fresh.task(wf, "gate")
    assert task.state is T.FAILED and task.failure_reason == "approval_timeout"
    assert fresh.machine.workflows[wf].state is W.FAILED


def test_approve_refuses_a_task_that_is_not_an_approval(make_sim: type[Sim]) -> None:
    sim = _sim(make_sim)
    wf, _ = sim.submit([task_spec("t")])
    with pytest.raises(InvalidArgument, match="not an approval task"):
        _answer(sim, wf, "t", True)


def test_paused_workflow_keeps_waiting_and_resume_does_not_queue_it(make_sim: type[Sim]) -> None:
    sim = _sim(make_sim)
    wf, _ = sim.submit([task_spec("gate", approval={}, payload={})])
    sim.do(rq.PauseRequest(wf, rq.Caller()))
    sim.do(rq.ResumeRequest(wf, rq.Caller()))
    assert sim.task(wf, "gate").id not in sim.machine.queue
    _answer(sim, wf, "gate", True)
    assert sim.machine.workflows[wf].state is W.COMPLETED


# --- bad input -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "path"),
    [
        ({"name": "t", "payload": {"shell": "x"}, "fallback": {"nope": 1}}, "tasks[0].fallback"),
        ({"name": "t", "payload": {"shell": "x"}, "min_success": 1}, "tasks[0].min_success"),
        ({"name": "t", "payload": {"shell": "x"}, "min_success": 0}, "tasks[0].min_success"),
        ({"name": "t", "payload": {"shell": "x"}, "approval": {}}, "tasks[0].approval"),
        ({"name": "t", "approval": {"timeout": "soon"}}, "tasks[0].approval.timeout"),
        ({"name": "t", "approval": {"message": "a\x00b"}}, "tasks[0].approval.message"),
        ({"name": "t", "approval": {"bogus": 1}}, "tasks[0].approval.bogus"),
        ({"name": "t", "payload": {"shell": "x"}, "allow_failure": "maybe"}, "tasks[0].allow_failure"),
    ],
)
def test_bad_rules_name_their_field(task: dict[str, object], path: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_workflow({"name": "w", "tasks": [task]})
    assert [v.field for v in caught.value.violations] == [path]


def test_rules_round_trip_the_wire() -> None:
    spec = parse_workflow(
        {
            "name": "w",
            "tasks": [
                task_spec("a", fallback={"shell": "echo b"}, allow_failure=True),
                task_spec("b", "a", min_success=1),
                {"name": "g", "approval": {"timeout": 60, "message": "ok?"}, "dependencies": ["b"]},
            ],
        }
    )
    message = spec_to_proto(spec)
    back = [TaskSpec.model_validate(task_mapping(t, f"tasks[{i}]")) for i, t in enumerate(message.tasks)]
    assert back == spec.tasks


# --- cordon on failures (cascade prevention) -----------------------------------------------------------


def _cordon_sim(make_sim: type[Sim], agents: int = 3) -> Sim:
    config = MachineConfig(prefetch=0, backoff_jitter=0.0, cordon_after=3, cordon_cooldown_s=60.0)
    sim = make_sim(config=config)
    for i in range(agents):
        sim.hello(f"a{i}", slots=1)
    return sim


def _observe(sim: Sim, agent: str, workflow: str, outcome: AttemptState) -> None:
    from corral.controller.core.cordon import observe_finish
    from corral.controller.core.model import Attempt

    observe_finish(sim.machine, Attempt(f"x-{agent}-{workflow}", "t", workflow, agent, 1), outcome, sim.now)


def test_cordon_needs_failures_from_3_workflows_that_succeed_elsewhere(make_sim: type[Sim]) -> None:
    sim = _cordon_sim(make_sim)
    m = sim.machine
    for wf in ("w1", "w2", "w3"):
        _observe(sim, "a2", wf, FAILED)
    assert m.agents["a2"].cordoned_until is None  # no evidence that these workflows work elsewhere
    _observe(sim, "a0", "w1", A.SUCCEEDED)
    _observe(sim, "a0", "w2", A.SUCCEEDED)
    assert m.agents["a2"].cordoned_until is None  # two witnessed workflows, not three
    _observe(sim, "a2", "w1", A.CANCELLED)  # not the agent's verdict on a task: ignored
    _observe(sim, "a1", "w3", A.SUCCEEDED)
    assert m.agents["a2"].cordoned_until is not None


def test_a_success_on_the_agent_resets_its_streak(make_sim: type[Sim]) -> None:
    sim = _cordon_sim(make_sim)
    for wf in ("w1", "w2"):
        _observe(sim, "a2", wf, FAILED)
    _observe(sim, "a2", "w9", A.SUCCEEDED)
    _observe(sim, "a2", "w3", FAILED)
    for wf in ("w1", "w2", "w3"):
        _observe(sim, "a0", wf, A.SUCCEEDED)
    assert sim.machine.agents["a2"].cordoned_until is None


def test_failures_of_one_workflow_never_cordon(make_sim: type[Sim]) -> None:
    sim = _cordon_sim(make_sim)
    for _ in range(10):
        _observe(sim, "a2", "w1", FAILED)
    _observe(sim, "a0", "w1", A.SUCCEEDED)
    assert sim.machine.agents["a2"].cordoned_until is None


def test_cordon_holds_back_the_agent_for_the_cool_down_and_survives_a_restart(make_sim: type[Sim]) -> None:
    sim = _cordon_sim(make_sim)
    m = sim.machine
    for wf in ("w1", "w2", "w3"):
        _observe(sim, "a2", wf, FAILED)
        _observe(sim, "a0", wf, A.SUCCEEDED)
    agent = m.agents["a2"]
    assert agent.cordoned_until == pytest.approx(sim.now + 60)
    assert "from 3 workflows" in agent.cordon_reason
    assert m.views["a2"].held_back
    # Never more than a third of the agents of a type: a1 failing the same way stays uncordoned.
    for wf in ("w1", "w2", "w3"):
        _observe(sim, "a1", wf, FAILED)
    assert m.agents["a1"].cordoned_until is None
    # New work goes elsewhere, and explain's verdicts say why a2 takes none.
    wf, step = sim.submit([task_spec("x"), task_spec("y"), task_spec("z")], name="after")
    assert {a.task.name for a in step.assignments()} == {"x", "y"}  # a0 and a1, one slot each
    z = sim.task(wf, "z")
    verdicts = {aid: why for aid, _, why in m.explain(z.id, sim.now).agents}
    assert verdicts["a2"].startswith("cordoned"), verdicts
    fresh = _restored(make_sim, sim)
    assert fresh.machine.cordons.until["a2"] == pytest.approx(sim.now + 60)
    fresh.hello("a2", slots=1)
    assert fresh.machine.views["a2"].held_back
    fresh.advance(61)  # heartbeating all along
    assert fresh.machine.agents["a2"].cordoned_until is None
    assert fresh.task(wf, "z").agent_id == "a2"  # the cool-down is over: it takes work again


def test_repeated_failures_of_one_workflow_do_not_hide_the_others(make_sim: type[Sim]) -> None:
    sim = _cordon_sim(make_sim)
    for wf in ("w1", "w2", "w3", "w3", "w3", "w3"):  # a retry landing on it again and again
        _observe(sim, "a2", wf, FAILED)
    for wf in ("w1", "w2", "w3"):
        _observe(sim, "a0", wf, A.SUCCEEDED)
    assert sim.machine.agents["a2"].cordoned_until is not None
