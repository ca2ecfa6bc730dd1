"""Completed tasks' attempts leave memory once committed (core/settled.py, issue 12)."""

from __future__ import annotations

import random

import pytest

from corral.controller.core import events as ev
from corral.controller.core import requests as rq
from corral.controller.core.attempt_list import ListAttemptsQuery
from corral.controller.core.lifecycle import ForgetWorkflows
from corral.controller.core.machine import Machine, MachineConfig
from corral.controller.core.model import AttemptState, TaskState
from corral.controller.errors import InvalidArgument
from corral.controller.rpc import wire
from tests.unit.conftest import Sim, task_spec

ME = rq.Caller()
MB = 1024 * 1024


def _finish(sim: Sim, agent_id: str, attempt_id: str, rss: int = 0, cpu: float = 0.0) -> ev.AttemptFinished:
    report = ev.AttemptFinished(
        agent_id, attempt_id, AttemptState.SUCCEEDED, 0, b"null", "", True, peak_rss_bytes=rss, cpu_s=cpu
    )
    sim.do(report)
    return report


def test_a_completed_attempt_leaves_memory_with_the_tick_that_commits_it(sim: Sim) -> None:
    sim.hello("a1")
    wf, _ = sim.submit([task_spec("a"), task_spec("b", "a")])
    a = sim.task(wf, "a")
    first = sim.attempt_of(wf, "a")
    sim.started("a1", first)
    step = sim.do(
        ev.AttemptFinished("a1", first, AttemptState.SUCCEEDED, 0, b"1", "", True, peak_rss_bytes=5 * MB, cpu_s=0.5)
    )
    assert step.changes.attempts[first].state is AttemptState.SUCCEEDED  # its row went with this tick
    assert first not in sim.machine.attempts
    assert a.state is TaskState.COMPLETED and a.current_attempt_id == first
    shown = wire.task_status(sim.machine, a)
    assert (shown.attempt_id, shown.peak_rss_bytes, shown.cpu_s) == (first, 5 * MB, 0.5)
    second = sim.attempt_of(wf, "b")
    assert sim.machine.attempts[second].state is AttemptState.ASSIGNED  # running work stays
    sim.machine.validate()
    # A late repeat of the report is refused as before (the task is done), and changes nothing.
    assert sim.do(ev.AttemptFinished("a1", first, AttemptState.SUCCEEDED, 0, b"2", "", True)).result is False
    assert a.result == b"1"


def test_a_retried_task_keeps_its_failed_attempt_and_lists_from_the_store(sim: Sim) -> None:
    sim.hello("a1")
    wf, _ = sim.submit([task_spec("a", retries=1, retry_backoff=0.0)])
    a = sim.task(wf, "a")
    failed = sim.attempt_of(wf, "a")
    sim.started("a1", failed)
    sim.finished("a1", failed, AttemptState.FAILED, error="boom")
    sim.advance(5)
    final = sim.attempt_of(wf, "a")
    assert final != failed
    sim.started("a1", final)
    sim.finished("a1", final)
    assert a.state is TaskState.COMPLETED
    assert failed in sim.machine.attempts and final not in sim.machine.attempts
    answer = sim.machine.handle(ListAttemptsQuery(wf, "a", ME), sim.now)
    assert answer.in_store  # the servicer reads the task's attempts from the store
    assert [(x.id, x.state) for x in sim.store.task_attempts(a.id)] == [
        (failed, AttemptState.FAILED),
        (final, AttemptState.SUCCEEDED),
    ]


def test_logs_of_a_settled_attempt_name_it_and_others_need_the_store(sim: Sim) -> None:
    sim.hello("a1")
    wf, _ = sim.submit([task_spec("a"), task_spec("b")])
    a, b = sim.task(wf, "a"), sim.task(wf, "b")
    for name in ("a", "b"):
        attempt_id = sim.attempt_of(wf, name)
        sim.started("a1", attempt_id)
        sim.finished("a1", attempt_id)
    own = sim.machine.handle(rq.LogsQuery(a.id, ME), sim.now)
    assert (own.attempt_id, own.finished, own.unconfirmed) == (a.current_attempt_id, True, False)
    # Another task's attempt id: not confirmed here; the servicer asks the store (and refuses it).
    other = sim.machine.handle(rq.LogsQuery(a.id, ME, b.current_attempt_id or ""), sim.now)
    assert other.unconfirmed and other.attempt_id == b.current_attempt_id


def test_an_unknown_attempt_id_is_refused_while_nothing_left_memory(sim: Sim) -> None:
    sim.hello("a1")
    wf, _ = sim.submit([task_spec("a")])
    a = sim.task(wf, "a")
    with pytest.raises(InvalidArgument):
        sim.machine.handle(rq.LogsQuery(a.id, ME, "nope"), sim.now)


def test_a_pulled_attempt_stays_in_memory(sim: Sim) -> None:
    tasks = [{"name": "p", "agent_type": "ext", "payload": {}}]
    wf, _ = sim.submit(tasks, name="pulled")
    pulled = sim.do(ev.PullTask("w1", ("ext",))).result
    assert pulled is not None
    sim.finished("w1", pulled.attempt_id)
    assert sim.task(wf, "p").state is TaskState.COMPLETED
    # Its worker may repeat its report over the Scheduler API: answered from memory.
    assert sim.machine.attempts[pulled.attempt_id].state is AttemptState.SUCCEEDED
    assert not sim.machine.settled.away(wf)


def test_a_restored_machine_holds_no_completed_attempt(sim: Sim) -> None:
    sim.hello("a1")
    wf, _ = sim.submit([task_spec("a"), task_spec("b")])
    done = sim.attempt_of(wf, "a")
    sim.started("a1", done)
    _finish(sim, "a1", done, rss=3 * MB, cpu=0.25)
    running = sim.attempt_of(wf, "b")
    sim.started("a1", running)
    restored = Machine(MachineConfig(), new_id=sim.new_id, rng=random.Random(1))
    restored.restore(sim.store.load(), sim.now)
    assert done not in restored.attempts
    assert restored.attempts[running].state is AttemptState.RUNNING
    a = restored.tasks[sim.task(wf, "a").id]
    assert restored.settled.usage(a) == (3 * MB, 0.25)
    restored.validate()


def test_an_evicted_workflow_leaves_nothing_in_the_book(sim: Sim) -> None:
    sim.hello("a1")
    wf, _ = sim.submit([task_spec("a")])
    attempt_id = sim.attempt_of(wf, "a")
    sim.started("a1", attempt_id)
    sim.finished("a1", attempt_id)
    assert sim.machine.settled.away(wf)
    sim.do(ForgetWorkflows(((wf, "default", ""),)))
    assert wf not in sim.machine.workflows and not sim.machine.settled.away(wf)
