"""The state machine's workflow lifecycle: placement, dependencies, retries, pause, cancel, explanations.

Driven exactly like the runtime drives it (see ``conftest.Sim``); every machine is validated at
teardown.
"""

from __future__ import annotations

import random

import pytest

from corral.controller.core import events as ev
from corral.controller.core.machine import MachineConfig
from corral.controller.core.model import AgentState, AttemptState, Resources, TaskState, WorkflowState
from corral.controller.core.placement import MAX_PASS_ADD, AgentView
from corral.controller.errors import FailedPrecondition, NotFound
from tests.unit.conftest import Sim, task_spec

T = TaskState
W = WorkflowState
A = AttemptState


# --- submission and placement -------------------------------------------------------------------


def test_submit_without_start_keeps_everything_pending(sim: Sim) -> None:
    sim.hello("a1")
    wf, step = sim.submit([task_spec("a"), task_spec("b", "a")], start=False)
    assert sim.machine.workflows[wf].state is W.PENDING
    assert {t.state for t in step.changes.tasks.values()} == {T.PENDING}
    assert step.of(ev.Assign) == []
    assert sim.machine.explain(sim.task(wf, "a").id, sim.now).reason.startswith("workflow not started")


def test_start_makes_roots_ready_and_places_them_on_a_connected_agent(sim: Sim) -> None:
    sim.hello("a1", cpu=4, memory=4096, slots=4)
    wf, _ = sim.submit([task_spec("a", resources={"cpu_cores": 1}), task_spec("b", "a"), task_spec("c")], start=False)
    step = sim.do(ev.StartWorkflow(wf))
    assert sim.machine.workflows[wf].state is W.RUNNING
    (assign,) = step.of(ev.Assign)  # one batch per agent
    assert assign.agent_id == "a1"
    assert sorted(a.task.name for a in assign.assignments) == ["a", "c"]
    assert sim.task(wf, "b").state is T.PENDING
    for assignment in assign.assignments:
        task = sim.task(wf, assignment.task.name)
        assert task.state is T.ASSIGNED
        assert task.current_attempt_id == assignment.attempt_id
        assert assignment.attempt_number == 1
        attempt = sim.machine.attempts[assignment.attempt_id]
        assert attempt.agent_id == "a1" and attempt.state is A.ASSIGNED
    view = sim.machine.views["a1"]
    assert view.allocated.cpu_cores == 1.0
    assert view.outstanding == 2
    # Committed: the store holds what the machine holds.
    stored = {t.name: t.state for t in sim.store.load().tasks}
    assert stored == {"a": T.ASSIGNED, "b": T.PENDING, "c": T.ASSIGNED}


def test_allocation_never_exceeds_capacity(sim: Sim) -> None:
    sim.hello("a1", cpu=4, memory=1000, slots=10)
    _, step = sim.submit([task_spec(f"t{i}", resources={"cpu_cores": 1.5, "memory_mb": 300}) for i in range(5)])
    assert len(step.assignments("a1")) == 2  # 3 x 1.5 cores > 4
    view = sim.machine.views["a1"]
    assert view.allocated.cpu_cores == 3.0 and view.allocated.memory_mb == 600
    waiting = [t for t in sim.machine.tasks.values() if t.state is T.READY]
    assert len(waiting) == 3
    why = sim.machine.explain(waiting[0].id, sim.now)
    assert why.reason.startswith("waiting for free capacity") and "cpu_cores" in why.reason
    assert not why.unschedulable
    # Finishing one frees room for exactly one more.
    first = step.assignments("a1")[0]
    done = sim.finished("a1", first.attempt_id)
    assert len(done.assignments("a1")) == 1
    assert sim.machine.views["a1"].allocated.cpu_cores == 3.0


def test_window_is_slots_plus_prefetch_for_short_tasks(make_sim: type[Sim]) -> None:
    sim = make_sim(config=MachineConfig(prefetch=1))
    sim.hello("a1", slots=2)
    _, step = sim.submit([task_spec(f"t{i}", estimated_duration=0.05) for i in range(6)])
    assert len(step.assignments("a1")) == 3
    ready = next(t for t in sim.machine.tasks.values() if t.state is T.READY)
    why = sim.machine.explain(ready.id, sim.now)
    assert "all slots busy" in why.reason
    assert dict((aid, r) for aid, _, r in why.agents)["a1"] == "all 3 slots busy (2 + 1 prefetch)"
    # Starting does not free a place in the window; finishing does.
    first = step.assignments("a1")[0].attempt_id
    assert sim.started("a1", first).of(ev.Assign) == []
    assert len(sim.finished("a1", first).assignments("a1")) == 1


def test_a_deep_prefetch_window_opens_by_doubling(make_sim: type[Sim]) -> None:
    # An idle agent gets twice its slots in one pass, not its whole window: hundreds of attempts
    # committed and sent at once would delay the first ones' start. Its reports open the rest.
    sim = make_sim(config=MachineConfig(prefetch=100))
    sim.hello("a1", slots=2)
    _, step = sim.submit([task_spec(f"t{i}", estimated_duration=0.01) for i in range(300)])
    first = step.assignments("a1")
    assert len(first) == 4 and sim.machine.views["a1"].window == 102
    ready = next(t for t in sim.machine.tasks.values() if t.state is T.READY)
    assert not sim.machine.explain(ready.id, sim.now).unschedulable
    # Each pass may bring it to twice what the last pass filled (or what it holds, if more):
    # 4 granted -> 8, then 8 -> 16, then 16 -> 32.
    held = 4
    for added in (5, 9, 17):
        done = sim.finished("a1", first.pop(0).attempt_id)
        more = done.assignments("a1")
        assert len(more) == added
        first.extend(more)
        held += added - 1
        assert sim.machine.views["a1"].outstanding == held
    # A busy agent's window is not cut: holding half its window, a pass may fill all of it.
    view = sim.machine.views["a1"].clone()
    view.outstanding = view.window // 2
    assert view.pass_window() == view.window


def test_an_agent_that_runs_its_work_before_the_next_pass_still_opens_up(make_sim: type[Sim]) -> None:
    # Its outstanding count falls back to 0 between passes: twice that alone kept it at 2 a pass.
    sim = make_sim(config=MachineConfig(prefetch=100))
    sim.hello("a1", slots=1)
    _, step = sim.submit([task_spec(f"t{i}", estimated_duration=0.01) for i in range(300)])
    batch = step.assignments("a1")
    sizes = [len(batch)]
    for _ in range(4):
        # The whole batch ends before the next pass: its reports arrive in one tick.
        for assignment in batch[:-1]:
            done = ev.AttemptFinished("a1", assignment.attempt_id, AttemptState.SUCCEEDED, 0, b"null", "", True)
            sim.machine.handle(done, sim.now)
        batch = sim.finished("a1", batch[-1].attempt_id).assignments("a1")
        sizes.append(len(batch))
    assert sizes == [2, 4, 8, 16, 32]


def test_one_pass_adds_at_most_max_pass_add_attempts_to_an_agent() -> None:
    view = AgentView("a1", "a1", frozenset({"default"}), {}, AgentState.CONNECTED, Resources(), slots=1)
    view.window = view.grant = 1024
    view.outstanding = 10
    assert view.pass_window() == 10 + MAX_PASS_ADD  # a deep window fills over several passes
    view.outstanding = 900
    assert view.pass_window() == 1024


def test_the_slow_start_begins_again_once_the_work_ran_out(make_sim: type[Sim]) -> None:
    sim = make_sim(config=MachineConfig(prefetch=100))
    sim.hello("a1", slots=1)
    _, step = sim.submit([task_spec(f"t{i}", estimated_duration=0.01) for i in range(3)])
    first = step.assignments("a1")
    assert len(first) == 2 and sim.machine.views["a1"].grant == 2
    last = sim.finished("a1", first[0].attempt_id).assignments("a1")
    assert len(last) == 1  # the queue is empty now: nothing filled the window
    assert sim.machine.views["a1"].grant == 0
    for assignment in (first[1], last[0]):
        sim.finished("a1", assignment.attempt_id)
    _, step = sim.submit([task_spec(f"u{i}", estimated_duration=0.01) for i in range(300)], name="again")
    assert len(step.assignments("a1")) == 2


def test_long_or_unknown_tasks_only_take_free_slots(make_sim: type[Sim]) -> None:
    sim = make_sim(config=MachineConfig(prefetch=1))
    sim.hello("a1", slots=2)
    _, step = sim.submit([task_spec("long", estimated_duration=60), *[task_spec(f"t{i}") for i in range(4)]])
    assert len(step.assignments("a1")) == 2
    ready = next(t for t in sim.machine.tasks.values() if t.state is T.READY)
    why = sim.machine.explain(ready.id, sim.now)
    assert dict((aid, r) for aid, _, r in why.agents)["a1"] == "all 2 slots busy"
    assert not why.unschedulable


def test_gpus_are_given_by_index_and_returned(sim: Sim) -> None:
    sim.hello("g1", gpus=2)
    _, step = sim.submit([task_spec("x", resources={"gpu_count": 1}), task_spec("y", resources={"gpu_count": 1})])
    given = sorted(a.gpu_ids for a in step.assignments("g1"))
    assert given == [(0,), (1,)]
    sim.submit([task_spec("z", resources={"gpu_count": 1})], name="more")
    first = step.assignments("g1")[0]
    freed = sim.finished("g1", first.attempt_id)
    (again,) = freed.assignments("g1")
    assert again.gpu_ids == first.gpu_ids


# --- dependencies -------------------------------------------------------------------------------


def test_dependencies_release_dependents_with_results_as_inputs(sim: Sim) -> None:
    sim.hello("a1")
    wf, step = sim.submit(
        [task_spec("fetch"), task_spec("parse"), task_spec("join", "fetch", "parse"), task_spec("report", "join")]
    )
    by_name = {a.task.name: a for a in step.assignments()}
    assert set(by_name) == {"fetch", "parse"}
    sim.started("a1", by_name["fetch"].attempt_id)
    first = sim.finished("a1", by_name["fetch"].attempt_id, result=b'{"rows": 3}')
    assert first.assignments() == []
    join = sim.task(wf, "join")
    assert join.state is T.PENDING
    assert sim.machine.explain(join.id, sim.now).waiting_on == ("parse",)
    second = sim.finished("a1", by_name["parse"].attempt_id, result=b"[1, 2]")
    (assignment,) = second.assignments("a1")
    assert assignment.task.name == "join"
    assert dict(assignment.inputs) == {"fetch": b'{"rows": 3}', "parse": b"[1, 2]"}
    third = sim.finished("a1", assignment.attempt_id, result=None)
    (last,) = third.assignments()
    assert dict(last.inputs) == {"join": b"null"}  # no result is JSON null
    done = sim.finished("a1", last.attempt_id)
    assert sim.machine.workflows[wf].state is W.COMPLETED
    assert done.of(ev.WorkflowDone) == [ev.WorkflowDone(wf)]
    assert sim.machine.workflows[wf].finished_at == sim.now


# --- retries and failure ------------------------------------------------------------------------


def test_failed_task_with_retries_backs_off_exponentially_with_jitter(sim: Sim) -> None:
    sim.hello("a1")
    wf, step = sim.submit([task_spec("flaky", retries=2, retry_backoff=4.0)])
    attempt = step.assignments()[0].attempt_id
    expected_rng = random.Random(0)  # the machine's RNG: jitter is reproducible
    jitter = sim.machine.config.backoff_jitter

    failed_at = sim.now
    step = sim.finished("a1", attempt, A.FAILED, error="exit 1")
    task = sim.task(wf, "flaky")
    assert task.state is T.READY and task.retries_used == 1
    assert step.assignments() == []
    backoff = 4.0 * (1 + expected_rng.uniform(-jitter, jitter))
    assert task.not_before == pytest.approx(failed_at + backoff)
    assert 3.0 <= task.not_before - failed_at <= 5.0
    why = sim.machine.explain(task.id, sim.now)
    assert why.reason.startswith("retry backoff") and "exit 1" in why.reason
    assert sim.machine.next_timer() == pytest.approx(task.not_before)

    assert sim.tick(at=task.not_before - 0.01).assignments() == []
    (second,) = sim.tick(at=task.not_before).assignments()
    assert second.attempt_number == 2 and second.attempt_id != attempt

    failed_at = sim.now
    sim.finished("a1", second.attempt_id, A.TIMED_OUT)
    backoff = 8.0 * (1 + expected_rng.uniform(-jitter, jitter))  # doubled
    assert task.not_before == pytest.approx(failed_at + backoff)
    assert task.retries_used == 2
    (third,) = sim.tick(at=task.not_before).assignments()
    sim.finished("a1", third.attempt_id, A.FAILED, error="still broken")
    assert task.state is T.FAILED and task.attempts == 3 and task.error == "still broken"
    assert sim.machine.workflows[wf].state is W.FAILED
    assert [a.state for a in sim.machine.attempts.values()] == [A.FAILED, A.TIMED_OUT, A.FAILED]


@pytest.mark.parametrize("agents", ["none", "full"])
def test_next_timer_moves_past_a_backoff_that_ended(make_sim: type[Sim], agents: str) -> None:
    sim = make_sim(config=MachineConfig(prefetch=0))
    if agents == "full":
        sim.hello("a1", slots=1)
        sim.submit([task_spec("hog")], name="hog")
    wf, _ = sim.submit([_pulled("t", retries=3)])
    assignment = sim.do(ev.PullTask("w1", ("ext",))).result
    sim.finished("w1", assignment.attempt_id, A.FAILED)
    not_before = sim.task(wf, "t").not_before
    assert not_before is not None
    if agents == "full":
        sim.beat("a1", at=not_before)
    else:
        sim.tick(at=not_before)
    wake = sim.machine.next_timer()
    assert wake is None or wake > sim.now


def test_backoff_is_capped(make_sim: type[Sim]) -> None:
    sim = make_sim(config=MachineConfig(max_backoff_s=5.0, backoff_jitter=0.0))
    sim.hello("a1")
    wf, step = sim.submit([task_spec("t", retries=3, retry_backoff=100.0)])
    sim.finished("a1", step.assignments()[0].attempt_id, A.FAILED)
    assert sim.task(wf, "t").not_before == sim.now + 5.0


def test_permanent_failure_spends_no_retry(sim: Sim) -> None:
    sim.hello("a1")
    wf, step = sim.submit([task_spec("t", retries=5)])
    sim.finished("a1", step.assignments()[0].attempt_id, A.FAILED, error="bad payload", retryable=False)
    assert sim.task(wf, "t").state is T.FAILED
    assert sim.machine.workflows[wf].state is W.FAILED


def test_failure_skips_descendants_and_fails_the_workflow_after_independent_branches(sim: Sim) -> None:
    sim.hello("a1")
    wf, step = sim.submit(
        [task_spec("a"), task_spec("b", "a"), task_spec("c", "b"), task_spec("d"), task_spec("e", "d")]
    )
    attempts = {x.task.name: x.attempt_id for x in step.assignments()}
    sim.finished("a1", attempts["a"], A.FAILED, error="boom")
    assert sim.task(wf, "a").state is T.FAILED
    assert sim.task(wf, "b").state is T.SKIPPED and sim.task(wf, "c").state is T.SKIPPED
    assert "upstream task 'a' failed" in sim.task(wf, "c").error
    assert sim.machine.workflows[wf].state is W.RUNNING  # d and e still run
    (e,) = sim.finished("a1", attempts["d"]).assignments()
    assert e.task.name == "e"
    assert sim.machine.workflows[wf].state is W.RUNNING
    done = sim.finished("a1", e.attempt_id)
    workflow = sim.machine.workflows[wf]
    assert workflow.state is W.FAILED
    assert workflow.error == "task 'a' failed: boom"
    assert sim.task(wf, "e").state is T.COMPLETED
    assert done.of(ev.WorkflowDone) == [ev.WorkflowDone(wf)]


def test_agent_stopped_attempt_is_requeued_free_of_charge(sim: Sim) -> None:
    sim.hello("a1")
    wf, step = sim.submit([task_spec("t")])
    attempt = step.assignments()[0].attempt_id
    step = sim.finished("a1", attempt, A.CANCELLED, error="agent draining")
    task = sim.task(wf, "t")
    assert task.retries_used == 0 and task.state is T.ASSIGNED
    assert step.assignments()[0].attempt_number == 2


def test_controller_timeout_backstop_kills_a_silent_attempt(sim: Sim) -> None:
    sim.hello("a1")
    wf, step = sim.submit([task_spec("slow", timeout=10, retries=1)])
    attempt = step.assignments()[0].attempt_id
    sim.started("a1", attempt)
    cfg = sim.machine.config
    deadline = sim.now + 10 + cfg.kill_grace_s + cfg.lease_s
    assert sim.machine.next_timer() == deadline
    sim.beat("a1", at=deadline - 1)
    step = sim.tick(at=deadline)
    assert ev.CancelAttempts("a1", [attempt], True, 0.0) in step.actions
    assert sim.machine.attempts[attempt].state is A.TIMED_OUT
    assert sim.task(wf, "slow").retries_used == 1


def _pulled(name: str, **fields: object) -> dict[str, object]:
    return {"name": name, "agent_type": "ext", "payload": {"job": name}, **fields}


# --- pause and resume ---------------------------------------------------------------------------


def test_pause_stops_dispatch_and_resume_continues(sim: Sim) -> None:
    wf, _ = sim.submit([task_spec("a"), task_spec("b")])
    step = sim.do(ev.PauseWorkflow(wf))
    assert sim.machine.workflows[wf].state is W.PAUSED
    assert sim.hello("a1").of(ev.Assign) == []
    assert sim.beat("a1", at=sim.now + 10).of(ev.Assign) == []
    why = sim.machine.explain(sim.task(wf, "a").id, sim.now)
    assert why.reason == "workflow paused"
    assert sim.do(ev.PauseWorkflow(wf)).changes.workflows == {}  # pausing twice is a no-op
    step = sim.do(ev.ResumeWorkflow(wf))
    assert sim.machine.workflows[wf].state is W.RUNNING
    assert sorted(a.task.name for a in step.assignments("a1")) == ["a", "b"]


def test_running_work_finishes_while_paused_and_dependents_wait(sim: Sim) -> None:
    sim.hello("a1")
    wf, step = sim.submit([task_spec("a"), task_spec("b", "a")])
    attempt = step.assignments()[0].attempt_id
    sim.do(ev.PauseWorkflow(wf))
    step = sim.finished("a1", attempt)
    assert sim.task(wf, "a").state is T.COMPLETED
    assert sim.task(wf, "b").state is T.READY
    assert step.of(ev.Assign) == []
    (b,) = sim.do(ev.ResumeWorkflow(wf)).assignments()
    sim.finished("a1", b.attempt_id)
    assert sim.machine.workflows[wf].state is W.COMPLETED


def test_workflow_paused_with_its_last_task_running_completes(sim: Sim) -> None:
    sim.hello("a1")
    wf, step = sim.submit([task_spec("a")])
    sim.do(ev.PauseWorkflow(wf))
    sim.finished("a1", step.assignments()[0].attempt_id)
    assert sim.machine.workflows[wf].state is W.COMPLETED


# --- cancel -------------------------------------------------------------------------------------


def test_graceful_cancel_asks_agents_and_ends_after_their_reports(sim: Sim) -> None:
    sim.hello("a1")
    wf, step = sim.submit([task_spec("a"), task_spec("b"), task_spec("c", "a")])
    attempts = {x.task.name: x.attempt_id for x in step.assignments()}
    sim.started("a1", attempts["a"])
    step = sim.do(ev.CancelWorkflow(wf, reason="operator"))
    (cancel,) = step.of(ev.CancelAttempts)
    assert cancel.agent_id == "a1" and sorted(cancel.attempt_ids) == sorted(attempts.values())
    assert not cancel.force and cancel.grace_s == sim.machine.config.kill_grace_s
    workflow = sim.machine.workflows[wf]
    assert workflow.state is W.CANCELLING and workflow.error == "operator"
    assert sim.task(wf, "c").state is T.CANCELLED
    assert sim.task(wf, "a").state is T.RUNNING
    sim.finished("a1", attempts["a"], A.CANCELLED)
    assert sim.task(wf, "a").state is T.CANCELLED
    assert workflow.state is W.CANCELLING
    # A task that finishes before its kill lands keeps its result; the workflow still ends cancelled.
    step = sim.finished("a1", attempts["b"], result=b"7")
    assert sim.task(wf, "b").state is T.COMPLETED
    assert workflow.state is W.CANCELLED
    assert step.of(ev.WorkflowDone) == [ev.WorkflowDone(wf)]


def test_force_cancel_ends_at_once_and_rejects_later_reports(sim: Sim) -> None:
    sim.hello("a1")
    wf, step = sim.submit([task_spec("a"), task_spec("b", "a")])
    attempt = step.assignments()[0].attempt_id
    step = sim.do(ev.CancelWorkflow(wf, force=True))
    assert sim.machine.workflows[wf].state is W.CANCELLED
    assert step.of(ev.CancelAttempts) == [ev.CancelAttempts("a1", [attempt], True, sim.machine.config.kill_grace_s)]
    assert sim.machine.attempts[attempt].state is A.CANCELLED
    assert sim.machine.views["a1"].outstanding == 0
    late = sim.finished("a1", attempt)
    assert late.result is False
    assert not late.changes and late.actions == []
    assert sim.do(ev.AttemptStarted("a1", attempt)).result is False


def test_cancel_of_a_pending_workflow_ends_at_once(sim: Sim) -> None:
    wf, _ = sim.submit([task_spec("a")], start=False)
    sim.do(ev.CancelWorkflow(wf))
    assert sim.machine.workflows[wf].state is W.CANCELLED


def test_timeout_backstop_during_graceful_cancel_still_ends_the_workflow(sim: Sim) -> None:
    sim.hello("a1")
    wf, step = sim.submit([task_spec("stuck", timeout=5, retries=3)])
    attempt = step.assignments()[0].attempt_id
    sim.started("a1", attempt)
    sim.do(ev.CancelWorkflow(wf))
    deadline = sim.machine.deadlines[attempt]
    sim.beat("a1", at=deadline - 1)  # alive, but never reports the attempt
    sim.tick(at=deadline)
    assert sim.machine.workflows[wf].state is W.CANCELLED


# --- explanations of tasks that cannot run -------------------------------------------------------


@pytest.mark.parametrize(
    ("resources", "name"),
    [({"gpu_count": 1}, "gpu_count"), ({"memory_mb": 100_000}, "memory_mb"), ({"cpu_cores": 64}, "cpu_cores")],
)
def test_task_bigger_than_any_agent_stays_ready_and_says_which_resource(
    sim: Sim, resources: dict[str, float], name: str
) -> None:
    sim.hello("small", cpu=4, memory=4096)
    sim.hello("medium", cpu=8, memory=8192)
    wf, step = sim.submit([task_spec("big", resources=resources)])
    assert step.of(ev.Assign) == []
    task = sim.task(wf, "big")
    assert task.state is T.READY
    why = sim.machine.explain(task.id, sim.now)
    assert why.unschedulable
    assert why.reason.startswith(f"not enough {name} on any agent")
    verdicts = {aid: reason for aid, _, reason in why.agents}
    assert set(verdicts) == {"small", "medium"}
    assert all(f"needs {name}" in r for r in verdicts.values())
    # A bigger agent joining places it.
    assert len(sim.hello("huge", cpu=128, memory=1 << 20, gpus=4).assignments("huge")) == 1


def test_waiting_reasons_lists_why_ready_tasks_wait(sim: Sim) -> None:
    sim.hello("small", cpu=4)
    wf, _ = sim.submit([task_spec("big", resources={"cpu_cores": 64}), task_spec("after", "big")])
    tasks = [sim.task(wf, "big"), sim.task(wf, "after")]
    listed = [
        (task.name, reason, unschedulable)
        for task, reason, unschedulable in sim.machine.waiting_reasons(tasks, sim.now)
    ]
    assert listed[1] == ("after", "", False)
    assert listed[0][0] == "big" and listed[0][2] is True and "cpu_cores" in listed[0][1]


def test_no_agent_of_the_type_is_explained(sim: Sim) -> None:
    sim.hello("a1", types=("shell",))
    wf, _ = sim.submit([{"name": "py", "agent_type": "python", "payload": {"function": "mod:fn"}}])
    why = sim.machine.explain(sim.task(wf, "py").id, sim.now)
    assert why.reason == "no connected agent runs agent_type 'python'"
    assert why.unschedulable
    assert why.agents == (("a1", "a1", "does not run agent_type 'python' (runs: shell)"),)


def test_no_agents_at_all_is_explained(sim: Sim) -> None:
    wf, _ = sim.submit([task_spec("a")])
    why = sim.machine.explain(sim.task(wf, "a").id, sim.now)
    assert why.reason == "no agents connected" and why.unschedulable


def test_label_constraints_pick_the_agent(sim: Sim) -> None:
    sim.hello("east", labels={"zone": "east"})
    sim.hello("west", labels={"zone": "west"})
    _, step = sim.submit([task_spec("t", constraints={"zone": "west"})])
    assert [a.task.name for a in step.assignments("west")] == ["t"]
    wf2, _ = sim.submit([task_spec("n", constraints={"zone": "north"})], name="nowhere")
    why = sim.machine.explain(sim.task(wf2, "n").id, sim.now)
    assert why.reason == "no agent has label zone=north" and why.unschedulable


# --- idempotency and refusals --------------------------------------------------------------------


def test_idempotency_key_returns_the_first_workflow(sim: Sim) -> None:
    first, _ = sim.submit([task_spec("a")], key="k-1", start=False)
    again, step = sim.submit([task_spec("a"), task_spec("b")], key="k-1", start=False)
    assert again == first
    assert step.result == (first, True)
    assert not step.changes
    assert len(sim.machine.workflows) == 1 and len(sim.machine.tasks) == 1
    # A retry that asks to start starts the first submission.
    _, step = sim.submit([task_spec("a")], key="k-1", start=True)
    assert sim.machine.workflows[first].state is W.RUNNING
    other, _ = sim.submit([task_spec("a")], key="k-2")
    assert other != first


def test_acting_on_a_finished_workflow_is_a_failed_precondition(sim: Sim) -> None:
    sim.hello("a1")
    wf, step = sim.submit([task_spec("a")])
    sim.finished("a1", step.assignments()[0].attempt_id)
    assert sim.machine.workflows[wf].state is W.COMPLETED
    for event in (ev.StartWorkflow(wf), ev.PauseWorkflow(wf), ev.ResumeWorkflow(wf), ev.CancelWorkflow(wf)):
        with pytest.raises(FailedPrecondition):
            sim.machine.handle(event, sim.now)
        assert not sim.machine.take_changes()
        assert sim.machine.take_actions() == []


def test_resume_of_a_running_workflow_is_a_noop_and_pause_of_a_pending_one_refused(sim: Sim) -> None:
    wf, _ = sim.submit([task_spec("a")], start=False)
    with pytest.raises(FailedPrecondition):
        sim.do(ev.PauseWorkflow(wf))
    with pytest.raises(FailedPrecondition):
        sim.do(ev.ResumeWorkflow(wf))
    sim.do(ev.StartWorkflow(wf))
    assert not sim.do(ev.StartWorkflow(wf)).changes  # starting twice is idempotent
    assert not sim.do(ev.ResumeWorkflow(wf)).changes


@pytest.mark.parametrize(
    "event",
    [
        ev.StartWorkflow("wf-nope"),
        ev.PauseWorkflow("wf-nope"),
        ev.ResumeWorkflow("wf-nope"),
        ev.CancelWorkflow("wf-nope"),
        ev.DrainAgent("nobody"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_unknown_ids_are_not_found_and_change_nothing(sim: Sim, event: ev.Event) -> None:
    with pytest.raises(NotFound):
        sim.machine.handle(event, sim.now)
    assert not sim.machine.take_changes()
    with pytest.raises(NotFound):
        sim.machine.explain("t-nope", sim.now)


def test_reports_for_unknown_attempts_are_rejected(sim: Sim) -> None:
    sim.hello("a1")
    sim.quiet()
    assert sim.finished("a1", "no-such-attempt").result is False
    assert sim.started("a1", "no-such-attempt").result is False
    assert not sim.quiet().changes
