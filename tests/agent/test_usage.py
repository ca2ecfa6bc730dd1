"""Measured usage per attempt (peak RSS, CPU seconds): shell attempts under their supervisor (cgroup
and subreaper alone), python tasks in warm workers, and the status.json of an adopted attempt."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from corral.agent import cgroup, usage
from corral.agent.runner import ShellContext, SupervisedRun, result_from_status, start_shell
from corral.v1 import types_pb2

from .conftest import ExecutorFactory, RecordingSink, python_task, shell_task
from .usage_tasks import BURN

SUCCEEDED = types_pb2.ATTEMPT_OUTCOME_SUCCEEDED
FAILED = types_pb2.ATTEMPT_OUTCOME_FAILED
MB = 1 << 20

HAS_CGROUP = os.geteuid() == 0 and cgroup.detect() is not None
needs_cgroup = pytest.mark.skipif(not HAS_CGROUP, reason="needs root and a writable cgroup v1/v2 hierarchy")
MODES = [pytest.param(True, marks=needs_cgroup, id="cgroup"), pytest.param(False, id="subreaper")]


def _id(name: str) -> str:
    # Unique per run: cgroups are host-wide, other test runs share them.
    return f"{name}-{uuid.uuid4().hex[:10]}"


async def _run_shell(tmp_path: Path, assignment: types_pb2.TaskAssignment, use_cgroup: bool) -> Any:
    ctx = ShellContext(work_dir=tmp_path, output_cap=1 << 20, kill_grace_s=0.5, cgroups=use_cgroup)
    run = await start_shell(assignment, ctx)
    assert isinstance(run, SupervisedRun), run
    return await asyncio.wait_for(run.finish(), 30.0)


def _python_payload(function: str, *args: Any) -> bytes:
    return json.dumps({"function": f"tests.agent.usage_tasks:{function}", "args": list(args)}).encode()


# -- shell attempts -------------------------------------------------------------------------------------


@pytest.mark.parametrize("use_cgroup", MODES)
async def test_a_shell_task_reports_its_peak_memory(tmp_path: Path, use_cgroup: bool) -> None:
    script = "x = b'x' * (50 << 20); print(len(x) >> 20)"
    result = await _run_shell(tmp_path, shell_task(_id("mem"), command=[sys.executable, "-c", script]), use_cgroup)
    assert result.outcome == SUCCEEDED and result.result_json == b"50", result
    assert result.peak_rss_bytes >= 40 * MB, result
    assert result.peak_rss_bytes < 4096 * MB, result


@pytest.mark.parametrize("use_cgroup", MODES)
async def test_a_shell_task_reports_the_cpu_of_its_whole_tree(tmp_path: Path, use_cgroup: bool) -> None:
    # The burner is a grandchild (sh -> python): its CPU counts once it is reaped.
    burn = f"{sys.executable} -c '{BURN}' 0.5; echo done"
    result = await _run_shell(tmp_path, shell_task(_id("cpu"), burn), use_cgroup)
    assert result.outcome == SUCCEEDED, result
    assert 0.3 < result.cpu_s < 30.0, result


async def test_a_failed_shell_task_reports_its_usage_too(tmp_path: Path) -> None:
    script = f"{sys.executable} -c '{BURN}' 0.4; exit 3"
    result = await _run_shell(tmp_path, shell_task(_id("fail"), script), use_cgroup=False)
    assert result.outcome == FAILED and result.exit_code == 3, result
    assert result.cpu_s > 0.3 and result.peak_rss_bytes > 0, result


def test_usage_survives_in_status_json_for_an_adopting_agent(tmp_path: Path) -> None:
    # What a restarted agent reads back from a supervisor that outlived the old one.
    status = {"outcome": "succeeded", "exit_code": 0, "peak_rss_bytes": 52 * MB, "cpu_s": 1.25, "stdout_line": "7"}
    result = result_from_status(status, tmp_path, tmp_path)
    assert result.outcome == SUCCEEDED and result.result_json == b"7"
    assert (result.peak_rss_bytes, result.cpu_s) == (52 * MB, 1.25)
    failed = result_from_status({**status, "outcome": "failed", "exit_code": 2}, tmp_path, tmp_path)
    assert failed.outcome == FAILED and (failed.peak_rss_bytes, failed.cpu_s) == (52 * MB, 1.25)
    # A status file from before usage was measured: 0, not an error.
    old = result_from_status({"outcome": "succeeded", "stdout_line": "1"}, tmp_path, tmp_path)
    assert (old.peak_rss_bytes, old.cpu_s) == (0, 0.0)


@pytest.mark.parametrize(
    ("rss", "cpu", "expected"),
    [
        (-5, float("nan"), (0, 0.0)),
        ("junk", None, (0, 0.0)),
        (1 << 70, float("inf"), (usage.MAX_RSS_BYTES, 0.0)),
        (123, -1.0, (123, 0.0)),
        (7.9, 1e30, (7, usage.MAX_CPU_S)),
        (2048, 0.5, (2048, 0.5)),
    ],
)
def test_clean_bounds_what_is_reported(rss: Any, cpu: Any, expected: tuple[int, float]) -> None:
    assert usage.clean(rss, cpu) == expected


# -- python tasks -------------------------------------------------------------------------------------


async def test_a_python_task_reports_its_peak_memory_and_a_later_small_one_its_own(
    make_executor: ExecutorFactory, sink: RecordingSink
) -> None:
    executor = await make_executor(slots=1, workers=1)
    executor.submit(
        [
            python_task("big", "x", raw_payload=_python_payload("allocate", 100)),
            python_task("small", "x", raw_payload=_python_payload("small")),
        ]
    )
    big, small = await sink.result("big"), await sink.result("small")
    assert big.outcome == small.outcome == SUCCEEDED, (big, small)
    # The worker's own memory plus the task's 100 MiB.
    assert big.peak_rss_bytes >= 100 * MB, big
    # The high-water mark was reset after the big task: the small one does not inherit it.
    assert 0 < small.peak_rss_bytes < big.peak_rss_bytes - 50 * MB, (big, small)


async def test_a_python_task_reports_its_cpu_and_its_children_cpu(
    make_executor: ExecutorFactory, sink: RecordingSink
) -> None:
    executor = await make_executor(slots=1, workers=1)
    executor.submit(
        [
            python_task("burn", "x", raw_payload=_python_payload("burn", 0.5)),
            python_task("child", "x", raw_payload=_python_payload("burn_in_child", 0.5)),
            python_task("idle", "x", raw_payload=_python_payload("small")),
        ]
    )
    burn, child, idle = await sink.result("burn"), await sink.result("child"), await sink.result("idle")
    assert burn.outcome == child.outcome == idle.outcome == SUCCEEDED
    assert 0.3 < burn.cpu_s < 30.0, burn
    assert 0.3 < child.cpu_s < 30.0, child
    # CPU is per task, not the worker's running total.
    assert idle.cpu_s < 0.2, idle


async def test_a_failing_python_task_reports_its_usage(make_executor: ExecutorFactory, sink: RecordingSink) -> None:
    executor = await make_executor(slots=1, workers=1)
    executor.submit([python_task("boom", "boom", "kaput")])
    result = await sink.result("boom")
    assert result.outcome == FAILED and result.error == "ValueError: kaput"
    assert result.peak_rss_bytes > 1 * MB and result.cpu_s >= 0.0, result
