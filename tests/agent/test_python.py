"""Python attempts in warm workers: reuse, results, errors, async functions, inputs, output."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import psutil

from corral.agent.attempt import AttemptResult
from corral.agent.executor import Executor
from corral.v1 import types_pb2

from .conftest import ExecutorFactory, RecordingSink, eventually, python_task

SUCCEEDED = types_pb2.ATTEMPT_OUTCOME_SUCCEEDED
FAILED = types_pb2.ATTEMPT_OUTCOME_FAILED


async def test_the_same_warm_worker_serves_several_tasks(make_executor: ExecutorFactory, sink: RecordingSink) -> None:
    executor = await make_executor(slots=1, workers=1)
    executor.submit([python_task("p1", "pid"), python_task("p2", "pid"), python_task("p3", "add", 2, 3)])
    first, second = await sink.result("p1"), await sink.result("p2")
    assert first.outcome == second.outcome == SUCCEEDED
    # One process ran both tasks: the child the worker (the reported pid) forked for this workflow.
    task_pid = json.loads(first.result_json)
    assert json.loads(second.result_json) == task_pid
    assert sink.pids["p1"] == sink.pids["p2"] == psutil.Process(task_pid).ppid()
    assert json.loads((await sink.result("p3")).result_json) == 5


async def _left_a_file(executor: Executor, sink: RecordingSink) -> int:
    """Run wf-A's task a1, which leaves tmp/left.txt in the worker's folder; its process id."""
    first = python_task("a1", "leave_file", "tmp/left.txt")
    first.workflow_id = "wf-A"
    executor.submit([first])
    child: int = json.loads((await sink.result("a1")).result_json)
    return child


async def _one_worker_after_wf_a(
    make_executor: ExecutorFactory, sink: RecordingSink, tmp_path: Path
) -> tuple[Executor, int, Path]:
    """An executor with one python worker that ran wf-A's a1: it, a1's process id, the worker's tmp."""
    executor = await make_executor(slots=1, workers=1)
    child_a = await _left_a_file(executor, sink)
    tmp = tmp_path / "pyworkers" / "worker-0" / "tmp"
    assert (tmp / "left.txt").exists()
    return executor, child_a, tmp


async def test_a_workflow_switch_empties_the_folder_and_reaps_the_child_it_leaves(
    make_executor: ExecutorFactory, sink: RecordingSink, tmp_path: Path
) -> None:
    executor, child_a, tmp = await _one_worker_after_wf_a(make_executor, sink, tmp_path)
    second = python_task("b1", "pid")
    second.workflow_id = "wf-B"
    executor.submit([second])
    child_b = json.loads((await sink.result("b1")).result_json)
    assert child_b != child_a
    # The next workflow found the folder emptied, tmp included (the switch no longer waits for
    # the old child's exit, so the wipe must still come first).
    assert tmp.is_dir() and not list(tmp.iterdir())

    def reaped() -> bool:
        return not psutil.pid_exists(child_a)  # a zombie still exists

    # The child that handed wf-B back is reaped while wf-B's child runs: no zombie is left.
    await eventually(reaped, what="the previous workflow's child reaped")


async def test_a_workflow_switch_goes_from_child_to_child_without_the_template(
    make_executor: ExecutorFactory, sink: RecordingSink, tmp_path: Path
) -> None:
    executor = await make_executor(slots=1, workers=1)
    child_a = await _left_a_file(executor, sink)
    template = psutil.Process(child_a).ppid()
    # The next workflow's child is forked beside wf-A's first task.
    await eventually(lambda: len(psutil.Process(template).children()) >= 2, what="the standby child")
    os.kill(template, signal.SIGSTOP)
    try:
        # The request of another workflow goes from wf-A's child to the standby, folder emptied on
        # the way: the stopped template is not on that path.
        second = python_task("b1", "pid")
        second.workflow_id = "wf-B"
        executor.submit([second])
        answer = await sink.result("b1")
        assert answer.outcome == SUCCEEDED
        assert json.loads(answer.result_json) not in (child_a, template)
        assert not list((tmp_path / "pyworkers" / "worker-0" / "tmp").iterdir())
    finally:
        os.kill(template, signal.SIGCONT)
    # Running again, the template learns of the switch and forks the next standby: the next switch works.
    third = python_task("c1", "pid")
    third.workflow_id = "wf-C"
    executor.submit([third])
    assert (await sink.result("c1")).outcome == SUCCEEDED


async def test_an_ended_workflows_child_goes_at_once_not_when_the_next_workflow_comes(
    make_executor: ExecutorFactory, sink: RecordingSink, tmp_path: Path
) -> None:
    executor, child_a, tmp = await _one_worker_after_wf_a(make_executor, sink, tmp_path)
    template = psutil.Process(child_a).ppid()
    # Told the workflow ended, the worker ends its child and empties the folder with no task of
    # another workflow in sight (before, both waited for that task's arrival).
    executor.workflows_ended({"wf-other"})  # not this worker's: nothing happens
    executor.workflows_ended({"wf-A"})
    await eventually(lambda: not psutil.pid_exists(child_a), what="wf-A's child ended and reaped")
    assert tmp.is_dir() and not list(tmp.iterdir())
    # The standby took over the pipe: the next workflow's task runs in it at once, no switch.
    fresh = [c.pid for c in psutil.Process(template).children()]
    second = python_task("b1", "pid")
    second.workflow_id = "wf-B"
    executor.submit([second])
    answer = await sink.result("b1")
    assert answer.outcome == SUCCEEDED
    assert json.loads(answer.result_json) in fresh


async def test_retiring_a_child_that_has_run_nothing_leaves_it_serving(
    make_executor: ExecutorFactory, sink: RecordingSink
) -> None:
    executor = await make_executor(slots=1, workers=1)
    child_a = await _left_a_file(executor, sink)
    template = psutil.Process(child_a).ppid()
    (worker,) = executor.registry._pool._all  # type: ignore[union-attr]
    worker.retire()
    await eventually(lambda: not psutil.pid_exists(child_a), what="wf-A's child ended")
    # The standby took over (the fresh child) and the template forked the next standby after it.
    await eventually(lambda: len(psutil.Process(template).children()) == 2, what="the next standby")
    fresh = min(psutil.Process(template).children(), key=lambda p: (p.create_time(), p.pid)).pid
    worker.retire()  # reaches the fresh child, which has no workflow to end: it goes on reading
    again = python_task("a2", "pid")
    again.workflow_id = "wf-A"  # the same workflow once more (a rerun): a fresh child runs it
    executor.submit([again])
    answer = await sink.result("a2")
    assert answer.outcome == SUCCEEDED
    # The fresh child runs it: the second retire did not end it (nor switch it to the standby).
    assert json.loads(answer.result_json) == fresh


async def test_the_next_queued_attempt_reaches_the_worker_in_the_callback_that_freed_it(
    make_executor: ExecutorFactory, sink: RecordingSink
) -> None:
    """No pass of the event loop between an attempt's end and the next one's request to the
    worker: under load that pass waits behind every stream read and write queued meanwhile."""
    executor = await make_executor(slots=1, workers=1)
    (worker,) = executor.registry._pool._all  # type: ignore[union-attr]
    sent_at_first_end: list[bool] = []
    report = sink.finished

    def finished(attempt_id: str, result: AttemptResult) -> None:
        report(attempt_id, result)
        if attempt_id == "q1":
            # Scheduled now, behind nothing the executor queued after this report: the request of
            # q2 must be on its way before it runs.
            asyncio.get_running_loop().call_soon(lambda: sent_at_first_end.append(worker.busy))

    sink.finished = finished  # type: ignore[method-assign]
    second = python_task("q2", "sleep", 0.3)
    second.workflow_id = "wf-2"  # another workflow's: not staged behind q1, started when q1 ends
    executor.submit([python_task("q1", "add", 1, 2), second])
    assert (await sink.result("q2")).outcome == SUCCEEDED
    assert sent_at_first_end == [True]


async def test_exception(make_executor: ExecutorFactory, sink: RecordingSink) -> None:
    executor = await make_executor(slots=1, workers=1)
    executor.submit([python_task("e1", "boom", "kaput"), python_task("after", "add", 1, 1)])
    result = await sink.result("e1")
    assert result.outcome == FAILED
    assert result.error == "ValueError: kaput"
    assert result.retryable
    stderr = sink.stderr("e1")
    assert b"Traceback (most recent call last)" in stderr and b"kaput" in stderr
    # The worker survives a failing task, and the next task's output starts clean.
    assert (await sink.result("after")).outcome == SUCCEEDED
    assert "after" not in sink.outputs


async def test_unresolvable_function_is_permanent(make_executor: ExecutorFactory, sink: RecordingSink) -> None:
    executor = await make_executor(slots=1, workers=1)
    executor.submit(
        [
            python_task("attr", "no_such_function"),
            python_task("mod", "x", raw_payload=b'{"function": "no_such_module_xyz:f"}'),
            python_task("shape", "x", raw_payload=b'{"function": "not-a-spec"}'),
        ]
    )
    for attempt_id in ("attr", "mod", "shape"):
        result = await sink.result(attempt_id)
        assert result.outcome == FAILED and not result.retryable, (attempt_id, result)
    assert "no_such_function" in sink.results["attr"].error


async def test_async_function(make_executor: ExecutorFactory, sink: RecordingSink) -> None:
    executor = await make_executor(slots=1, workers=1)
    executor.submit([python_task("as1", "async_double", 21), python_task("as2", "async_double", 4)])
    assert json.loads((await sink.result("as1")).result_json) == 42
    assert json.loads((await sink.result("as2")).result_json) == 8


async def test_inputs_parameter_and_kwargs(make_executor: ExecutorFactory, sink: RecordingSink) -> None:
    executor = await make_executor(slots=1, workers=1)
    executor.submit(
        [
            python_task("in1", "sum_inputs", inputs={"a": 2, "b": 3}, kwargs={"extra": 10}),
            python_task("in2", "with_kwargs", kwargs={"k": 1}, inputs={"up": "v"}),
            python_task("in3", "add", 1, 2, inputs={"ignored": 1}),
        ]
    )
    assert json.loads((await sink.result("in1")).result_json) == 15
    assert json.loads((await sink.result("in2")).result_json) == {"k": 1, "inputs": {"up": "v"}}
    assert json.loads((await sink.result("in3")).result_json) == 3


async def test_task_identity_in_the_environment(make_executor: ExecutorFactory, sink: RecordingSink) -> None:
    executor = await make_executor(slots=1, workers=1)
    executor.submit([python_task("id1", "echo_env", "CORRAL_TASK_ID", "CORRAL_ATTEMPT_ID", gpu_ids=[2])])
    seen = json.loads((await sink.result("id1")).result_json)
    assert seen == {"CORRAL_TASK_ID": "task-id1", "CORRAL_ATTEMPT_ID": "id1"}


async def test_output_captured_at_fd_level(make_executor: ExecutorFactory, sink: RecordingSink) -> None:
    executor = await make_executor(slots=1, workers=1)
    executor.submit([python_task("out", "print_lines", 3, True), python_task("quiet", "noop")])
    assert (await sink.result("out")).outcome == SUCCEEDED
    assert sink.stdout("out") == b"line 0\nline 1\nline 2\nfrom child\n"
    assert sink.stderr("out") == b"to stderr\n"
    await sink.result("quiet")
    assert "quiet" not in sink.outputs  # never an empty Output event


async def test_python_output_is_capped(make_executor: ExecutorFactory, sink: RecordingSink) -> None:
    executor = await make_executor(slots=1, workers=1, output_cap=100)
    executor.submit([python_task("cap", "print_lines", 200)])
    await sink.result("cap")
    assert len(sink.stdout("cap")) == 100
    assert sink.outputs["cap"][-1][2] is True


async def test_a_dying_worker_is_replaced(make_executor: ExecutorFactory, sink: RecordingSink) -> None:
    executor = await make_executor(slots=1, workers=1)
    executor.submit([python_task("die", "die", 7), python_task("next", "pid")])
    died = await sink.result("die")
    assert died.outcome == FAILED and died.retryable and "exit code 7" in died.error
    result = await sink.result("next")
    assert result.outcome == SUCCEEDED
    assert json.loads(result.result_json) != sink.pids["die"]
    assert not psutil.pid_exists(sink.pids["die"])
