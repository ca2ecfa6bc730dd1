"""Measured usage per attempt in the core: stored on the attempt, said in the event log."""

from __future__ import annotations

from corral.controller.core import events as ev
from corral.controller.core.model import AttemptState, TaskState
from corral.controller.rpc import wire
from tests.unit.conftest import Sim, task_spec

MB = 1 << 20


def _finish(sim: Sim, attempt_id: str, outcome: AttemptState, rss: int, cpu: float, **kw: object) -> None:
    sim.started("a1", attempt_id)
    sim.do(
        ev.AttemptFinished(
            "a1",
            attempt_id,
            outcome,
            0 if outcome is AttemptState.SUCCEEDED else 1,
            b"null" if outcome is AttemptState.SUCCEEDED else None,
            str(kw.get("error", "")),
            bool(kw.get("retryable", True)),
            peak_rss_bytes=rss,
            cpu_s=cpu,
        )
    )


def test_a_success_stores_the_usage_on_its_attempt_and_logs_it(sim: Sim) -> None:
    sim.hello("a1")
    wf, _ = sim.submit([task_spec("a")])
    task = sim.task(wf, "a")
    attempt_id = sim.attempt_of(wf, "a")
    sim.started("a1", attempt_id)
    step = sim.do(
        ev.AttemptFinished("a1", attempt_id, AttemptState.SUCCEEDED, 0, b"1", peak_rss_bytes=52 * MB, cpu_s=1.25)
    )
    # The attempt left memory with the tick that committed it; its usage stays for status.
    assert attempt_id not in sim.machine.attempts
    assert sim.machine.settled.usage(task) == (52 * MB, 1.25)
    shown = wire.task_status(sim.machine, task)
    assert (shown.peak_rss_bytes, shown.cpu_s) == (52 * MB, 1.25)
    # Committed with the tick that ended the attempt.
    assert step.changes.attempts[attempt_id].peak_rss_bytes == 52 * MB
    (stored,) = [a for a in sim.store.load().attempts if a.id == attempt_id]
    assert (stored.peak_rss_bytes, stored.cpu_s) == (52 * MB, 1.25)
    completed = sim.store.workflow_events(wf, task_id=task.id)[-1]
    assert completed.kind == "completed"
    assert completed.message == "peak RSS 52.0 MiB, CPU 1.25 s"


def test_a_final_failure_logs_its_error_and_usage(sim: Sim) -> None:
    sim.hello("a1")
    wf, _ = sim.submit([task_spec("a", retries=0)])
    task = sim.task(wf, "a")
    _finish(sim, sim.attempt_of(wf, "a"), AttemptState.FAILED, 3 * MB, 0.5, error="exit code 3")
    assert task.state is TaskState.FAILED
    failed = sim.store.workflow_events(wf, task_id=task.id)[-1]
    assert failed.kind == "failed"
    assert failed.reason == "exit code 3"
    assert failed.message == "exit code 3 (peak RSS 3.0 MiB, CPU 0.50 s)"


def test_an_unmeasured_attempt_says_nothing_of_usage(sim: Sim) -> None:
    sim.hello("a1")
    wf, _ = sim.submit([task_spec("a")])
    task = sim.task(wf, "a")
    attempt_id = sim.attempt_of(wf, "a")
    sim.started("a1", attempt_id)
    sim.finished("a1", attempt_id)
    assert task.state is TaskState.COMPLETED
    (stored,) = sim.store.task_attempts(task.id)
    assert (stored.id, stored.peak_rss_bytes, stored.cpu_s) == (attempt_id, 0, 0.0)
    assert sim.machine.settled.usage(task) == (0, 0.0)
    assert sim.store.workflow_events(wf, task_id=task.id)[-1].message == ""


def test_a_retry_keeps_the_usage_of_the_failed_attempt_on_it(sim: Sim) -> None:
    sim.hello("a1")
    wf, _ = sim.submit([task_spec("a", retries=1)])
    first = sim.attempt_of(wf, "a")
    _finish(sim, first, AttemptState.FAILED, 7 * MB, 0.25, error="boom")
    assert sim.machine.attempts[first].peak_rss_bytes == 7 * MB
    assert sim.machine.attempts[first].cpu_s == 0.25
