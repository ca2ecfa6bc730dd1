"""Timeouts and cancels: process trees are killed, nothing survives, the right outcome is reported."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import psutil
import pytest

from corral.agent import executor as executor_module
from corral.agent.attempt import AttemptResult, StopReason
from corral.agent.registry import Launch
from corral.v1 import types_pb2

from .conftest import ExecutorFactory, RecordingSink, eventually, python_task, shell_task

CANCELLED = types_pb2.ATTEMPT_OUTCOME_CANCELLED
TIMED_OUT = types_pb2.ATTEMPT_OUTCOME_TIMED_OUT
SUCCEEDED = types_pb2.ATTEMPT_OUTCOME_SUCCEEDED

# Children and grandchildren that ignore SIGTERM, one of them in its own session (out of the group).
TREE = (
    "trap '' TERM; "
    "sleep 1000 & echo $! >> pids; "
    "(trap '' TERM; sleep 1000 & echo $! >> pids; wait) & "
    "setsid sleep 1000 & echo $! >> pids; "
    "wait"
)


def _pids(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def _all_gone(pids: list[int]) -> bool:
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            continue
    return True


async def test_timeout_kills_the_whole_tree(
    make_executor: ExecutorFactory, sink: RecordingSink, tmp_path: Path
) -> None:
    executor = await make_executor(kill_grace_s=0.3)
    executor.submit([shell_task("t1", TREE, timeout_s=0.5)])
    pids_file = tmp_path / "attempts" / "t1" / "pids"  # the task's cwd is its attempt folder
    await eventually(lambda: len(_pids(pids_file)) == 3, what="the tree to start")
    result = await sink.result("t1")
    assert result.outcome == TIMED_OUT
    assert result.retryable
    assert "timed out" in result.error
    assert _all_gone([*_pids(pids_file), sink.pids["t1"]])


async def test_cancel_running_and_queued(make_executor: ExecutorFactory, sink: RecordingSink, tmp_path: Path) -> None:
    executor = await make_executor(slots=1, kill_grace_s=5.0)
    executor.submit([shell_task("run", TREE), shell_task("queued", "echo never")])
    pids_file = tmp_path / "attempts" / "run" / "pids"
    await eventually(lambda: len(_pids(pids_file)) == 3, what="the tree to start")
    executor.cancel(["queued"], force=False, grace_s=5.0)
    # Never started: given back at once (Released), with no Finished report.
    assert sink.released_ids == ["queued"]
    assert "queued" not in sink.pids and "queued" not in sink.results
    # force: SIGKILL at once, no grace (the tree ignores SIGTERM; a 5 s grace would be visible).
    executor.cancel(["run"], force=True, grace_s=5.0)
    result = await sink.result("run", timeout=3.0)
    assert result.outcome == CANCELLED
    assert _all_gone([*_pids(pids_file), sink.pids["run"]])
    assert executor.running_count == 0


async def test_graceful_cancel_lets_sigterm_work(make_executor: ExecutorFactory, sink: RecordingSink) -> None:
    executor = await make_executor(slots=1)
    executor.submit([shell_task("g", "trap 'echo bye; exit 0' TERM; sleep 1000 & wait")])
    await eventually(lambda: "g" in sink.pids)
    executor.cancel(["g"], force=False, grace_s=5.0)
    result = await sink.result("g")
    assert result.outcome == CANCELLED


async def test_python_timeout_replaces_the_worker(
    make_executor: ExecutorFactory, sink: RecordingSink, tmp_path: Path
) -> None:
    executor = await make_executor(slots=1, workers=1, kill_grace_s=0.3)
    pid_file = tmp_path / "grandchild"
    executor.submit([python_task("slow", "spawn_and_sleep", str(pid_file), timeout_s=0.5), python_task("next", "pid")])
    result = await sink.result("slow")
    assert result.outcome == TIMED_OUT
    worker_pid = sink.pids["slow"]
    assert _all_gone([worker_pid, *_pids(pid_file)])
    after = await sink.result("next")
    assert after.outcome == SUCCEEDED
    assert json.loads(after.result_json) != worker_pid


async def test_cancel_a_python_attempt(make_executor: ExecutorFactory, sink: RecordingSink) -> None:
    executor = await make_executor(slots=1, workers=1)
    executor.submit([python_task("zz", "sleep", 1000)])
    await eventually(lambda: "zz" in sink.pids)
    executor.cancel(["zz"], force=False, grace_s=1.0)
    assert (await sink.result("zz")).outcome == CANCELLED
    assert _all_gone([sink.pids["zz"]])


async def test_kill_silently_reports_nothing(make_executor: ExecutorFactory, sink: RecordingSink) -> None:
    executor = await make_executor(slots=1)
    executor.submit([shell_task("k1", "sleep 1000"), shell_task("k2", "sleep 1000")])
    await eventually(lambda: "k1" in sink.pids)
    pid = sink.pids["k1"]
    executor.kill_silently(["k1", "k2"])
    await executor.wait_idle()
    await eventually(lambda: _all_gone([pid]), what="the killed attempt to go")
    assert "k1" not in sink.results and "k2" not in sink.results
    assert executor.active_ids() == []


class _DeafRun:
    """A real process whose runner ignores graceful stops: only a forced one (SIGKILL) ends it."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.stops: list[tuple[StopReason, bool]] = []

    @property
    def pid(self) -> int:
        return self.proc.pid

    def take_output(self) -> tuple[bytes, bytes, bool]:
        return b"", b"", False

    def request_stop(self, reason: StopReason, *, force: bool, grace_s: float) -> None:
        self.stops.append((reason, force))
        if force:
            self.proc.kill()

    async def finish(self) -> AttemptResult:
        await self.proc.wait()
        return AttemptResult.stopped(self.stops[0][0]) if self.stops else AttemptResult(SUCCEEDED)


async def test_the_backstop_ends_what_a_self_timed_runner_did_not(
    make_executor: ExecutorFactory, sink: RecordingSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(executor_module, "BACKSTOP_SLACK_S", 0.4)
    executor = await make_executor(kill_grace_s=0.3)
    runs: list[_DeafRun] = []

    async def deaf(assignment: types_pb2.TaskAssignment, launch: Launch) -> _DeafRun:
        runs.append(_DeafRun(await asyncio.create_subprocess_exec("sleep", "1000")))
        return runs[-1]

    # A runner that times its attempts itself (like the supervisor) but, broken, does not.
    executor.registry.register("shell", deaf, folders=False, self_timed=True)
    loop = asyncio.get_running_loop()
    started = loop.time()
    executor.submit([shell_task("deaf", "unused", timeout_s=0.5)])
    result = await sink.result("deaf")
    elapsed = loop.time() - started
    assert result.outcome == TIMED_OUT and result.error == "timed out after 0.5 s"
    # Only the forced backstop, at timeout + grace + slack: nothing graceful at the timeout itself.
    assert runs[0].stops == [(StopReason.TIMED_OUT, True)]
    assert 0.5 + 0.3 + 0.4 <= elapsed < 0.5 + 0.3 + 0.4 + 3.0
