"""Runs of a workflow (issue 10): retry from failure, rerun, the runs list and ``on_failure: pause``."""

from __future__ import annotations

import random

import pytest

from corral.controller.core import events as ev
from corral.controller.core.machine import Machine
from corral.controller.core.model import AttemptState, TaskState, WorkflowState
from corral.controller.core.requests import Caller
from corral.controller.core.runs import ListRunsQuery, RerunRequest, RetryRequest
from corral.controller.errors import FailedPrecondition
from tests.unit.conftest import Sim, task_spec

T = TaskState
W = WorkflowState
A = AttemptState
ME = Caller()


def _six(sim: Sim, **workflow_fields: object) -> str:
    """t1 -> t2 -> t3 -> t4 -> t5 -> t6 (a chain; t4 is the one that fails)."""
    specs = [task_spec("t1")] + [task_spec(f"t{i}", f"t{i - 1}") for i in range(2, 7)]
    wf, _ = sim.submit(specs, **workflow_fields)  # type: ignore[arg-type]
    return wf


def _run_until(sim: Sim, wf: str, fail: str = "") -> list[str]:
    """Complete every placed task in order (failing ``fail``); the names that ran."""
    ran: list[str] = []
    while True:
        live = [
            sim.machine.tasks[t]
            for t in sim.machine.workflows[wf].task_ids
            if sim.machine.tasks[t].state in (T.ASSIGNED, T.RUNNING)
        ]
        if not live:
            return ran
        for task in live:
            ran.append(task.name)
            attempt = sim.attempt_of(wf, task.name)
            sim.started("a1", attempt)
            if task.name == fail:
                sim.finished("a1", attempt, A.FAILED, error="flag missing", retryable=False)
            else:
                sim.finished("a1", attempt, result=f'"{task.name}"'.encode())


def test_retry_runs_only_the_failed_and_skipped_tasks_and_keeps_results(sim: Sim) -> None:
    sim.hello("a1")
    wf = _six(sim)
    assert _run_until(sim, wf, fail="t4") == ["t1", "t2", "t3", "t4"]
    workflow = sim.machine.workflows[wf]
    assert workflow.state is W.FAILED
    assert [sim.task(wf, f"t{i}").state for i in (5, 6)] == [T.SKIPPED, T.SKIPPED]
    sim.do(RetryRequest(wf, ME))
    assert workflow.state is W.RUNNING and workflow.run == 2
    assert sim.task(wf, "t3").result == b'"t3"'  # kept
    assert sim.task(wf, "t4").state is T.ASSIGNED  # its dependency t3 is COMPLETED
    assert _run_until(sim, wf) == ["t4", "t5", "t6"]
    assert workflow.state is W.COMPLETED
    # Attempt numbers go on across runs; each attempt knows its run.
    t4 = sim.task(wf, "t4")
    assert t4.attempts == 2
    assert sorted(a.run for a in sim.store.task_attempts(t4.id)) == [1, 2]
    _, views = sim.machine.handle(ListRunsQuery(wf, ME), sim.now)
    assert [(v.run.number, v.run.kind, v.state, v.attempts, v.failed_attempts) for v in views] == [
        (1, "submit", W.FAILED, 4, 1),
        (2, "retry", W.COMPLETED, 3, 0),
    ]
    assert views[1].tasks_run == ("t4", "t5", "t6")


def test_retry_from_a_task_reruns_it_and_its_descendants(sim: Sim) -> None:
    sim.hello("a1")
    wf = _six(sim)
    _run_until(sim, wf, fail="t4")
    sim.do(RetryRequest(wf, ME, from_task="t2"))
    assert [sim.task(wf, f"t{i}").state for i in range(1, 7)] == [T.COMPLETED, T.ASSIGNED] + [T.PENDING] * 4
    assert _run_until(sim, wf) == ["t2", "t3", "t4", "t5", "t6"]
    _, views = sim.machine.handle(ListRunsQuery(wf, ME), sim.now)
    assert views[1].run.from_task == "t2"


def test_rerun_resets_every_task_and_clears_results(sim: Sim) -> None:
    sim.hello("a1")
    wf = _six(sim)
    _run_until(sim, wf)
    assert sim.machine.workflows[wf].state is W.COMPLETED
    sim.do(RerunRequest(wf, ME))
    assert sim.task(wf, "t6").result is None
    assert _run_until(sim, wf) == [f"t{i}" for i in range(1, 7)]
    assert sim.machine.workflows[wf].run == 2


def test_retry_and_rerun_are_refused_while_the_workflow_runs_or_has_nothing_to_retry(sim: Sim) -> None:
    sim.hello("a1")
    wf = _six(sim)
    with pytest.raises(FailedPrecondition, match="only a workflow that ended"):
        sim.machine.handle(RetryRequest(wf, ME), sim.now)
    with pytest.raises(FailedPrecondition):
        sim.machine.handle(RerunRequest(wf, ME), sim.now)
    _run_until(sim, wf)
    with pytest.raises(FailedPrecondition, match="only a workflow that ended"):
        sim.machine.handle(RetryRequest(wf, ME), sim.now)  # COMPLETED: rerun, not retry
    assert sim.machine.workflows[wf].run == 1


def test_on_failure_pause_holds_descendants_and_retry_resumes(sim: Sim) -> None:
    sim.hello("a1")
    wf = _six(sim, on_failure="pause")
    _run_until(sim, wf, fail="t4")
    workflow = sim.machine.workflows[wf]
    assert workflow.state is W.PAUSED
    assert [sim.task(wf, f"t{i}").state for i in (4, 5, 6)] == [T.FAILED, T.PENDING, T.PENDING]
    sim.do(RetryRequest(wf, ME))
    assert workflow.state is W.RUNNING and workflow.run == 2
    assert _run_until(sim, wf) == ["t4", "t5", "t6"]
    assert workflow.state is W.COMPLETED


def test_pause_on_failure_of_a_leaf_stays_paused_and_resume_fails_it(sim: Sim) -> None:
    sim.hello("a1")
    wf, _ = sim.submit([task_spec("a"), task_spec("b", "a")], on_failure="pause")
    _run_until(sim, wf, fail="a")
    workflow = sim.machine.workflows[wf]
    assert workflow.state is W.PAUSED
    sim.do(ev.ResumeWorkflow(wf))
    assert workflow.state is W.FAILED
    assert sim.task(wf, "b").state is T.SKIPPED


def test_runs_survive_a_restore_from_the_store(sim: Sim) -> None:
    sim.hello("a1")
    wf = _six(sim)
    _run_until(sim, wf, fail="t4")
    sim.do(RetryRequest(wf, ME, fresh=True))
    _run_until(sim, wf)
    restored = Machine(new_id=sim.new_id, rng=random.Random(0))
    restored.restore(sim.store.load(), sim.now)
    workflow, views = restored.handle(ListRunsQuery(wf, ME), sim.now)
    assert workflow.run == 2 and workflow.state is W.COMPLETED
    assert [(v.run.kind, v.run.fresh, v.state, v.attempts) for v in views] == [
        ("submit", False, W.FAILED, 4),
        ("retry", True, W.COMPLETED, 3),
    ]
    restored.validate()
