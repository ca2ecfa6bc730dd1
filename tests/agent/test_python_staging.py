"""Staging: the next python attempt of a workflow waits in a running attempt's worker and starts
there as soon as that one has answered, without a round trip through the agent."""

from __future__ import annotations

import json
from pathlib import Path

from corral.agent.lifecycle import State
from corral.v1 import types_pb2

from .conftest import ExecutorFactory, RecordingSink, eventually, python_task

SUCCEEDED = types_pb2.ATTEMPT_OUTCOME_SUCCEEDED
TIMED_OUT = types_pb2.ATTEMPT_OUTCOME_TIMED_OUT


async def test_a_staged_attempt_starts_in_its_leaders_process_with_only_its_own_output(
    make_executor: ExecutorFactory, sink: RecordingSink
) -> None:
    executor = await make_executor(slots=1, workers=1)
    executor.submit([python_task("a", "say", "from-a", 0.5), python_task("b", "say", "from-b")])
    # While "a" runs, "b" waits in its worker, not in the agent's queue.
    await eventually(lambda: executor.machine.state("b") is State.STAGED, what="b staged behind a")
    first, second = await sink.result("a"), await sink.result("b")
    assert first.outcome == second.outcome == SUCCEEDED
    assert json.loads(first.result_json) == json.loads(second.result_json)  # the same process
    # Each byte is the output of the task that wrote it, the boundary between them dropped.
    assert sink.stdout("a") == b"from-a\n" and sink.stderr("a") == b"from-a\n"
    assert sink.stdout("b") == b"from-b\n" and sink.stderr("b") == b"from-b\n"
    # The worker is free again: a third task runs.
    executor.submit([python_task("c", "add", 1, 2)])
    assert json.loads((await sink.result("c")).result_json) == 3


async def test_a_cancelled_staged_attempt_is_released_and_never_runs(
    make_executor: ExecutorFactory, sink: RecordingSink, tmp_path: Path
) -> None:
    executor = await make_executor(slots=1, workers=1)
    ran = tmp_path / "b-ran"
    executor.submit([python_task("a", "say", "a", 0.5), python_task("b", "say", "b", 0, str(ran))])
    await eventually(lambda: executor.machine.state("b") is State.STAGED, what="b staged behind a")
    executor.cancel(["b"], force=False, grace_s=1.0)
    assert sink.released_ids == ["b"]
    assert (await sink.result("a")).outcome == SUCCEEDED
    # The worker skipped it (its answer consumed) and serves the next task.
    executor.submit([python_task("c", "add", 2, 2)])
    assert json.loads((await sink.result("c")).result_json) == 4
    assert not ran.exists() and "b" not in sink.results


async def test_a_leader_stopped_at_its_timeout_gives_its_follower_back_to_run_elsewhere(
    make_executor: ExecutorFactory, sink: RecordingSink
) -> None:
    executor = await make_executor(slots=1, workers=1)
    executor.submit([python_task("a", "say", "a", 60, timeout_s=0.5), python_task("b", "say", "from-b")])
    await eventually(lambda: executor.machine.state("b") is State.STAGED, what="b staged behind a")
    timed_out = await sink.result("a")
    assert timed_out.outcome == TIMED_OUT
    # Withdrawn before the kill, so it was not killed with the worker: it runs in the replacement.
    second = await sink.result("b")
    assert second.outcome == SUCCEEDED and sink.stdout("b") == b"from-b\n"
    assert sink.pids["b"] != sink.pids["a"]  # another worker (the killed one was replaced)


async def test_a_task_that_runs_through_partitions_is_never_staged(
    make_executor: ExecutorFactory, sink: RecordingSink
) -> None:
    executor = await make_executor(slots=1, workers=1)
    keep = python_task("k", "say", "from-k")
    keep.on_disconnect = types_pb2.ON_DISCONNECT_KEEP
    executor.submit([python_task("a", "say", "a", 0.5), keep])
    # The leader's start is where "k" would be staged (in the same step): it waits for the slot.
    await eventually(lambda: executor.machine.state("a") is State.RUNNING, what="a running")
    assert executor.machine.state("k") is State.QUEUED
    assert (await sink.result("k")).outcome == SUCCEEDED
