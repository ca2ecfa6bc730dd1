"""Issue 12: finished workflows leave memory after being idle, come back from the store on demand,
and are forgotten past retention (core/lifecycle.py), on a fake clock."""

from __future__ import annotations

import sys
from collections.abc import Callable

import pytest

from corral.controller.core import events as ev
from corral.controller.core import requests as rq
from corral.controller.core.lifecycle import Evicted, ForgetWorkflows, ReadmitWorkflow, retention_queries
from corral.controller.core.machine import MachineConfig
from corral.controller.core.model import AttemptState, TaskState, WorkflowState
from corral.controller.core.runs import RetryRequest
from corral.controller.errors import NotFound
from corral.controller.store.base import WorkflowQuery
from tests.unit.conftest import Sim, task_spec

T = TaskState
W = WorkflowState
CALLER = rq.Caller()


def _finish_all(sim: Sim, workflow_id: str, *, fail: str = "") -> None:
    """Run every task of the workflow to its end on agent a1 (``fail``: the task that fails)."""
    for _ in range(20):
        workflow = sim.machine.workflows[workflow_id]
        if workflow.state.terminal:
            return
        for task_id in workflow.task_ids:
            task = sim.machine.tasks[task_id]
            if task.state in (T.ASSIGNED, T.RUNNING) and task.current_attempt_id:
                outcome = AttemptState.FAILED if task.name == fail else AttemptState.SUCCEEDED
                sim.finished("a1", task.current_attempt_id, outcome, retryable=False)
    raise AssertionError("the workflow did not end")


@pytest.fixture
def evicting(make_sim: Callable[..., Sim]) -> Sim:
    sim = make_sim(config=MachineConfig(evict_after_s=30.0))
    sim.hello("a1", slots=8)
    return sim


def test_a_finished_workflow_leaves_memory_after_being_idle(evicting: Sim) -> None:
    sim = evicting
    done, _ = sim.submit([task_spec("a"), task_spec("b", "a")], name="done", key="k-done")
    _finish_all(sim, done)
    running, _ = sim.submit([task_spec("slow")], name="running")
    finished_at = sim.now
    sim.advance(25)
    assert done in sim.machine.workflows  # idle, but not long enough
    sim.advance(10)
    m = sim.machine
    assert done not in m.workflows
    assert not [t for t in m.tasks.values() if t.workflow_id == done]
    assert not [a for a in m.attempts.values() if a.workflow_id == done]
    assert not [k for k in m.by_name if k[0] == done]
    assert done not in m.counts and done not in m.lifecycle.idle
    assert m.idempotency[("default", "k-done")] == done  # the key stays indexed
    assert m.lifecycle.evicted == 1
    assert running in m.workflows  # running ones stay
    # The store keeps all of it.
    record = sim.store.load_workflow(done)
    assert record is not None and record.workflow.state is W.COMPLETED
    assert record.workflow.finished_at == finished_at
    assert {t.name: t.state for t in record.tasks} == {"a": T.COMPLETED, "b": T.COMPLETED}
    with pytest.raises(NotFound):
        sim.machine.handle(rq.WorkflowQuery(done, CALLER), sim.now)


def test_a_disabled_eviction_keeps_everything(sim: Sim) -> None:
    sim.hello("a1")
    done, _ = sim.submit([task_spec("a")])
    _finish_all(sim, done)
    sim.advance(3600)
    assert done in sim.machine.workflows


def test_a_watched_workflow_stays_until_its_watcher_leaves(evicting: Sim) -> None:
    sim = evicting
    done, _ = sim.submit([task_spec("a")])
    _finish_all(sim, done)
    sim.machine.watched.add(done)
    sim.advance(60)
    assert done in sim.machine.workflows
    sim.machine.watched.discard(done)
    sim.advance(2)
    assert done not in sim.machine.workflows


def test_a_readmitted_workflow_answers_as_before_and_leaves_again(evicting: Sim) -> None:
    sim = evicting
    done, _ = sim.submit([task_spec("a"), task_spec("b", "a")])
    _finish_all(sim, done)
    before = sim.machine.handle(rq.WorkflowQuery(done, CALLER), sim.now)
    states_before = {sim.machine.tasks[t].name: sim.machine.tasks[t].state for t in before.task_ids}
    sim.advance(31)
    record = sim.store.load_workflow(done)
    assert record is not None
    step = sim.do(ReadmitWorkflow(record, sim.machine.lifecycle.forgets))
    assert step.result is True
    assert not step.changes  # a readmission writes nothing
    again = sim.machine.handle(rq.WorkflowQuery(done, CALLER), sim.now)
    assert again.state is W.COMPLETED
    assert {sim.machine.tasks[t].name: sim.machine.tasks[t].state for t in again.task_ids} == states_before
    assert sim.machine.remaining(done) == 0
    task_a = sim.task(done, "a")
    logs = sim.machine.handle(rq.LogsQuery(task_a.id, CALLER), sim.now)
    # Its completed attempt stays in the store (core/settled.py): known from the task, ended.
    assert (logs.attempt_id, logs.finished, logs.unconfirmed) == (task_a.current_attempt_id, True, False)
    assert task_a.current_attempt_id not in sim.machine.attempts
    sim.machine.validate()
    sim.advance(31)
    assert done not in sim.machine.workflows  # idle again from the readmission


def test_an_idempotent_resubmit_of_an_evicted_workflow_finds_it(evicting: Sim) -> None:
    sim = evicting
    first, _ = sim.submit([task_spec("a")], key="once")
    _finish_all(sim, first)
    sim.advance(31)
    with pytest.raises(Evicted) as raised:
        sim.submit([task_spec("a")], key="once")
    assert raised.value.workflow_id == first
    assert not sim.machine.take_changes()  # the refused submit left nothing behind
    record = sim.store.load_workflow(first)
    assert record is not None
    sim.do(ReadmitWorkflow(record, sim.machine.lifecycle.forgets))
    again, step = sim.submit([task_spec("a")], key="once")
    assert again == first
    assert step.result == (first, True)


def test_retry_of_an_evicted_failed_workflow_runs_its_failed_task_again(evicting: Sim) -> None:
    sim = evicting
    wf, _ = sim.submit([task_spec("ok"), task_spec("bad")])
    _finish_all(sim, wf, fail="bad")
    assert sim.machine.workflows[wf].state is W.FAILED
    sim.advance(31)
    assert wf not in sim.machine.workflows
    record = sim.store.load_workflow(wf)
    assert record is not None
    sim.do(ReadmitWorkflow(record, sim.machine.lifecycle.forgets))
    step = sim.do(RetryRequest(wf, CALLER))
    assert sim.machine.workflows[wf].state is W.RUNNING
    assert sim.machine.workflows[wf].run == 2
    assert [a.task.name for a in step.assignments("a1")] == ["bad"]
    _finish_all(sim, wf)
    assert sim.machine.workflows[wf].state is W.COMPLETED
    assert wf not in sim.machine.lifecycle.idle or sim.machine.lifecycle.idle[wf] == sim.now


def test_eviction_is_bounded_per_tick(make_sim: Callable[..., Sim]) -> None:
    sim = make_sim(config=MachineConfig(evict_after_s=10.0, evict_tasks_per_tick=3))
    sim.hello("a1", slots=8)
    ids = []
    for i in range(4):
        wf, _ = sim.submit([task_spec("a"), task_spec("b")], name=f"wf{i}")
        _finish_all(sim, wf)
        ids.append(wf)
    sim.tick(after=11)
    assert sum(wf in sim.machine.workflows for wf in ids) == 2  # 2 x 2 tasks reach the budget of 3
    sim.tick(after=1)
    assert not any(wf in sim.machine.workflows for wf in ids)


def test_forget_deletes_finished_workflows_and_keeps_running_ones(evicting: Sim) -> None:
    sim = evicting
    gone, _ = sim.submit([task_spec("a")], key="k1")
    _finish_all(sim, gone)
    sim.advance(31)  # evicted: only the store and the key index hold it
    in_memory, _ = sim.submit([task_spec("a")], name="fresh")
    _finish_all(sim, in_memory)
    running, _ = sim.submit([task_spec("a")], name="running")
    record = sim.store.load_workflow(gone)
    assert record is not None
    forgets = sim.machine.lifecycle.forgets
    step = sim.do(ForgetWorkflows(((gone, "default", "k1"), (in_memory, "default", ""), (running, "default", ""))))
    assert sorted(step.result) == sorted([gone, in_memory])
    assert step.changes.forgotten_workflows == {gone, in_memory}
    assert ("default", "k1") not in sim.machine.idempotency
    assert in_memory not in sim.machine.workflows and running in sim.machine.workflows
    assert sim.store.load_workflow(gone) is None and sim.store.load_workflow(running) is not None
    # A readmission read before the forget is refused: its record may be half deleted.
    assert sim.do(ReadmitWorkflow(record, forgets)).result is False
    assert gone not in sim.machine.workflows
    # The key is free again: a new submission with it makes a new workflow.
    again, step = sim.submit([task_spec("a")], key="k1")
    assert again != gone and step.result == (again, False)


def test_retention_queries_per_namespace() -> None:
    queries = retention_queries(86400.0, {"keep": 0.0, "short": 60.0}, 100_000.0, 100)
    assert queries == [
        WorkflowQuery(namespaces=("short",), finished_before=100_000.0 - 60, limit=100),
        WorkflowQuery(exclude_namespaces=("keep", "short"), finished_before=100_000.0 - 86400, limit=100),
    ]
    assert retention_queries(0.0, {}, 5.0, 10) == []  # no retention: nothing ever goes
    assert retention_queries(0.0, {"short": 1.0}, 5.0, 10) == [
        WorkflowQuery(namespaces=("short",), finished_before=4.0, limit=10)
    ]


def test_the_event_log_survives_eviction(evicting: Sim) -> None:
    sim = evicting
    done, _ = sim.submit([task_spec("a")])
    _finish_all(sim, done)
    sim.advance(31)
    kinds = [e.kind for e in sim.store.workflow_events(done)]
    assert kinds[0] == "submitted" and kinds[-1] == "completed"
    assert isinstance(ev.SubmitWorkflow, type)


def test_the_per_task_tables_shrink_once_a_large_workflow_left(evicting: Sim) -> None:
    sim = evicting
    big, _ = sim.submit([task_spec(f"t{i}") for i in range(6000)], name="big", start=False)
    small, _ = sim.submit([task_spec("a")], name="small", start=False)
    full = sys.getsizeof(sim.machine.tasks)
    sim.do(ev.CancelWorkflow(big))
    sim.advance(31)
    assert big not in sim.machine.workflows and small in sim.machine.workflows
    assert sys.getsizeof(sim.machine.tasks) * 20 < full  # a dict's table never shrinks by deleting
    assert (big, "t0") not in sim.machine.by_name and len(sim.machine.by_name) == 1
    assert sim.task(small, "a").state is T.PENDING  # what is left is all there


def test_a_read_keeps_a_finished_workflow_in_memory_for_another_period(evicting: Sim) -> None:
    # A big result is read page by page: the workflow must not leave memory between two pages.
    sim = evicting
    done, _ = sim.submit([task_spec("a")], name="done")
    _finish_all(sim, done)
    sim.advance(25)
    sim.machine.handle(rq.WorkflowQuery(done, CALLER), sim.now)
    sim.advance(25)
    assert done in sim.machine.workflows  # 50 s after it ended, 25 s after the read
    sim.advance(10)
    assert done not in sim.machine.workflows
