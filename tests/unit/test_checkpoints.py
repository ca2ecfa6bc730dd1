"""Checkpoints in the state machine: owner only, rate limited, durable, handed to the next attempt."""

from __future__ import annotations

import random

import pytest

from corral.controller.core import checkpoints
from corral.controller.core import events as ev
from corral.controller.core.checkpoints import MAX_CHECKPOINT_BYTES, MIN_INTERVAL_S, checkpoint_note
from corral.controller.core.machine import Machine
from corral.controller.core.model import AttemptState
from corral.controller.core.requests import Caller
from corral.controller.core.runs import RetryRequest

from .conftest import Sim, task_spec


def _checkpoint(sim: Sim, reporter: str, attempt_id: str, data: bytes) -> ev.AgentReports:
    epoch = sim.machine.agents[reporter].session_epoch
    return ev.AgentReports(reporter, epoch, (ev.AttemptCheckpoint(reporter, attempt_id, data),))


def _started(sim: Sim, **fields: object) -> tuple[str, str]:
    sim.hello("a1")
    wf, _ = sim.submit([task_spec("count", **fields)])
    attempt = sim.attempt_of(wf, "count")
    sim.started("a1", attempt)
    return wf, attempt


def test_a_failed_attempt_hands_its_checkpoint_to_the_retry(sim: Sim) -> None:
    wf, first = _started(sim, retries=2, retry_backoff=0)
    step = sim.do(_checkpoint(sim, "a1", first, b'{"n": 50}'))
    assert step.changes.checkpoints[sim.task(wf, "count").id].data == b'{"n": 50}'  # in the tick's commit
    assert [e.kind for e in step.changes.events] == ["checkpointed"]
    sim.now += 1.0
    step = sim.finished("a1", first, AttemptState.FAILED, error="killed")
    (assignment,) = step.assignments() or sim.tick(after=1.0).assignments()
    assert assignment.attempt_id != first and assignment.checkpoint == b'{"n": 50}'


def test_only_the_owner_and_at_most_once_a_second(sim: Sim) -> None:
    wf, attempt = _started(sim)
    sim.hello("a2")
    assert sim.do(_checkpoint(sim, "a2", attempt, b"1")).changes.checkpoints == {}  # not its attempt
    sim.do(_checkpoint(sim, "a1", attempt, b"1"))
    sim.now += MIN_INTERVAL_S / 2
    assert sim.do(_checkpoint(sim, "a1", attempt, b"2")).changes.checkpoints == {}  # too soon
    sim.now += MIN_INTERVAL_S
    assert sim.do(_checkpoint(sim, "a1", attempt, b"3")).changes.checkpoints
    assert sim.machine.checkpoints.get(sim.task(wf, "count").id) == b"3"
    too_big = b'"' + b"x" * MAX_CHECKPOINT_BYTES + b'"'
    sim.now += 2.0
    assert sim.do(_checkpoint(sim, "a1", attempt, too_big)).changes.checkpoints == {}


def test_a_stale_attempt_cannot_overwrite_the_new_ones_checkpoint(sim: Sim) -> None:
    wf, first = _started(sim, retries=1, retry_backoff=0)
    sim.finished("a1", first, AttemptState.FAILED, error="boom")
    sim.tick(after=1.0)
    second = sim.attempt_of(wf, "count")
    assert second != first
    sim.started("a1", second)
    assert sim.do(_checkpoint(sim, "a1", first, b"0")).changes.checkpoints == {}
    assert sim.do(_checkpoint(sim, "a1", second, b"7")).changes.checkpoints


def test_completion_drops_it_and_a_restart_restores_it(sim: Sim) -> None:
    wf, attempt = _started(sim, retries=1)
    task_id = sim.task(wf, "count").id
    sim.do(_checkpoint(sim, "a1", attempt, b'{"n": 60}'))
    # A controller restart: a new machine from the store still hands it out.
    restored = Machine(sim.config, new_id=sim.new_id, rng=random.Random(1), boot_time=sim.now)
    restored.restore(sim.store.load(), sim.now)
    assert restored.checkpoints.get(task_id) == b'{"n": 60}'
    sim.now += 1.0
    step = sim.finished("a1", attempt)
    assert step.changes.checkpoints == {task_id: None}
    assert not sim.machine.checkpoints and sim.store.load().checkpoints == []


def test_unused_costs_nothing_in_the_batch(sim: Sim) -> None:
    sim.hello("a1")
    _, step = sim.submit([task_spec("plain")])
    assert step.assignments()[0].checkpoint is None
    assert not step.changes.checkpoints and not sim.machine.checkpoints


def test_a_timed_out_attempt_hands_it_on(sim: Sim) -> None:
    _, first = _started(sim, retries=1, retry_backoff=0, timeout=30)
    sim.do(_checkpoint(sim, "a1", first, b"[1, 2]"))
    step = sim.finished("a1", first, AttemptState.TIMED_OUT, error="timed out after 30s")
    (again,) = step.assignments() or sim.tick(after=1.0).assignments()
    assert again.checkpoint == b"[1, 2]"


def test_an_attempt_fenced_with_its_lost_agent_hands_it_on(sim: Sim) -> None:
    _, first = _started(sim)
    sim.do(_checkpoint(sim, "a1", first, b'"state"'))
    sim.hello("a2", slots=1)
    step = sim.run_for(sim.machine.config.fence_total_s + 1.0, silent=("a1",))
    (again,) = step.assignments("a2")
    assert again.checkpoint == b'"state"' and sim.machine.attempts[first].state is AttemptState.LOST


def test_a_preempted_victim_resumes_from_it(sim: Sim) -> None:
    sim.hello("a1", cpu=1, slots=4)
    low, _ = sim.submit([task_spec("low", resources={"cpu_cores": 1}, priority=10, preemptible=True)], name="low")
    victim = sim.attempt_of(low, "low")
    sim.started("a1", victim)
    sim.now += 1.0
    sim.do(_checkpoint(sim, "a1", victim, b'{"n": 70}'))
    _, step = sim.submit([task_spec("high", resources={"cpu_cores": 1}, priority=100)], name="high")
    (cancel,) = step.of(ev.CancelAttempts)
    assert cancel.attempt_ids == [victim]
    (placed,) = sim.finished("a1", victim, AttemptState.CANCELLED).assignments("a1")
    sim.started("a1", placed.attempt_id)
    (resumed,) = sim.finished("a1", placed.attempt_id).assignments("a1")  # the preemptor is done
    assert resumed.task.name == "low" and resumed.checkpoint == b'{"n": 70}'


def test_explain_says_what_the_next_attempt_resumes_from(sim: Sim) -> None:
    wf, attempt = _started(sim, retries=1)
    task_id = sim.task(wf, "count").id
    assert checkpoint_note(sim.machine, task_id) == ""
    sim.do(_checkpoint(sim, "a1", attempt, b'{"n": 5}'))
    assert checkpoint_note(sim.machine, task_id).startswith("resumes from the checkpoint attempt 1 saved at ")


def test_the_checkpoints_held_are_bounded_in_total(sim: Sim, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checkpoints, "MAX_TOTAL_BYTES", 10)
    wf, attempt = _started(sim)
    task_id = sim.task(wf, "count").id
    sim.do(_checkpoint(sim, "a1", attempt, b'"12345678"'))  # 10 bytes: fits
    sim.now += 1.0
    assert not sim.do(_checkpoint(sim, "a1", attempt, b'"123456789"')).changes.checkpoints  # 11: refused
    assert sim.machine.checkpoints.get(task_id) == b'"12345678"' and sim.machine.checkpoints.total_bytes == 10
    sim.now += 1.0
    assert sim.do(_checkpoint(sim, "a1", attempt, b"[1]")).changes.checkpoints  # replacing frees the old one
    assert sim.machine.checkpoints.total_bytes == 3


@pytest.mark.parametrize(("fresh", "kept"), [(False, True), (True, False)])
def test_retry_keeps_the_checkpoint_and_retry_fresh_drops_it(sim: Sim, fresh: bool, kept: bool) -> None:
    wf, first = _started(sim)
    sim.do(_checkpoint(sim, "a1", first, b'{"n": 50}'))
    sim.now += 1.0
    sim.finished("a1", first, AttemptState.FAILED, error="killed", retryable=False)
    assert sim.machine.workflows[wf].state == "failed"
    step = sim.do(RetryRequest(wf, Caller(), fresh=fresh))
    (assignment,) = step.assignments()
    assert assignment.checkpoint == (b'{"n": 50}' if kept else None)
    task_id = sim.task(wf, "count").id
    assert (task_id in sim.machine.checkpoints.records) is kept
    if not kept:
        assert step.changes.checkpoints == {task_id: None}  # deleted from the store too
