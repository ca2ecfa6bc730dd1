"""Shell attempts through the executor: results, environment, inputs, failures, output capture."""

from __future__ import annotations

import json
from pathlib import Path

from corral.agent import adopt
from corral.v1 import types_pb2

from .conftest import ExecutorFactory, RecordingSink, eventually, shell_task

SUCCEEDED = types_pb2.ATTEMPT_OUTCOME_SUCCEEDED
FAILED = types_pb2.ATTEMPT_OUTCOME_FAILED


async def test_result_from_the_last_stdout_line(make_executor: ExecutorFactory, sink: RecordingSink) -> None:
    executor = await make_executor()
    executor.submit([shell_task("a1", "echo hello; echo '{\"answer\": 42}'")])
    result = await sink.result("a1")
    assert result.outcome == SUCCEEDED
    assert json.loads(result.result_json) == {"answer": 42}
    assert sink.pids["a1"] > 0
    assert b"hello" in sink.stdout("a1")
    assert sink.order[0] == ("started", "a1") and sink.order[-1] == ("finished", "a1")


async def test_result_file_wins_and_non_json_stdout_is_null(
    make_executor: ExecutorFactory, sink: RecordingSink
) -> None:
    executor = await make_executor()
    executor.submit(
        [
            shell_task("file", 'echo "[1, 2]" > "$CORRAL_RESULT_FILE"; echo 7'),
            shell_task("text", "echo not json"),
        ]
    )
    assert json.loads((await sink.result("file")).result_json) == [1, 2]
    assert (await sink.result("text")).result_json == b"null"


async def test_environment_and_inputs(make_executor: ExecutorFactory, sink: RecordingSink, tmp_path: Path) -> None:
    executor = await make_executor()
    script = (
        "import json, os, sys;"
        "names = ['CORRAL_TASK_ID', 'CORRAL_TASK_NAME', 'CORRAL_WORKFLOW_ID', 'CORRAL_ATTEMPT_ID', 'MY_VAR'];"
        "env = {n: os.environ.get(n) for n in names};"
        "env['inputs'] = json.loads(os.environ['CORRAL_INPUTS']);"
        "env['inputs_file'] = json.load(open(os.environ['CORRAL_INPUTS_FILE']));"
        "env['cwd'] = os.getcwd();"
        "env['cuda'] = os.environ.get('CUDA_VISIBLE_DEVICES');"
        "print(json.dumps(env))"
    )
    executor.submit(
        [
            shell_task(
                "env1",
                command=["python3", "-c", script],
                env={"MY_VAR": "mine"},
                inputs={"up": {"x": 1}, "other": 5},
                gpu_ids=[1, 3],
            )
        ]
    )
    result = await sink.result("env1")
    assert result.outcome == SUCCEEDED, result
    seen = json.loads(result.result_json)
    assert seen["CORRAL_TASK_ID"] == "task-env1"
    assert seen["CORRAL_TASK_NAME"] == "name-env1"
    assert seen["CORRAL_WORKFLOW_ID"] == "wf-1"
    assert seen["CORRAL_ATTEMPT_ID"] == "env1"
    assert seen["MY_VAR"] == "mine"
    assert seen["inputs"] == seen["inputs_file"] == {"up": {"x": 1}, "other": 5}
    # Policy: a task starts in its own attempt folder, not in the agent's work dir.
    assert seen["cwd"] == str(tmp_path / "attempts" / "env1")
    assert seen["cuda"] == "1,3"


async def test_cwd_relative_to_the_attempt_folder(
    make_executor: ExecutorFactory, sink: RecordingSink, tmp_path: Path
) -> None:
    executor = await make_executor()
    executor.submit([shell_task("cwd", "pwd", cwd="sub/deeper")])
    assert (await sink.result("cwd")).outcome == SUCCEEDED
    # Created inside the attempt's own folder (policy: cwd is confined there).
    assert sink.stdout("cwd").strip() == str(tmp_path / "attempts" / "cwd" / "sub" / "deeper").encode()


async def test_failing_command(make_executor: ExecutorFactory, sink: RecordingSink) -> None:
    executor = await make_executor()
    executor.submit([shell_task("f1", "echo first >&2; echo 'disk on fire' >&2; exit 3")])
    result = await sink.result("f1")
    assert result.outcome == FAILED
    assert result.exit_code == 3
    assert result.error == "exit code 3: disk on fire"
    assert result.retryable


async def test_command_not_found_is_permanent(make_executor: ExecutorFactory, sink: RecordingSink) -> None:
    executor = await make_executor()
    executor.submit(
        [
            shell_task("argv", command=["/nonexistent/tool", "x"]),
            shell_task("sh", "no-such-command-anywhere"),
            shell_task("bad", raw_payload=b'{"neither": 1}'),
        ]
    )
    for attempt_id in ("argv", "sh", "bad"):
        result = await sink.result(attempt_id)
        assert result.outcome == FAILED, attempt_id
        assert not result.retryable, attempt_id
    assert "command not found" in sink.results["argv"].error


async def test_output_is_capped(make_executor: ExecutorFactory, sink: RecordingSink) -> None:
    executor = await make_executor(output_cap=1000)
    executor.submit([shell_task("big", "head -c 50000 /dev/zero | tr '\\0' x; echo; echo 99")])
    result = await sink.result("big")
    assert result.outcome == SUCCEEDED
    assert len(sink.stdout("big")) == 1000
    assert sink.outputs["big"][-1][2] is True  # truncated
    # The tail of the stream survives the cap: the result is still the last line.
    assert result.result_json == b"99"


async def test_slots_limit_and_fifo(make_executor: ExecutorFactory, sink: RecordingSink) -> None:
    executor = await make_executor(slots=1)
    executor.submit([shell_task(f"q{i}", "sleep 0.05") for i in range(3)])
    executor.submit([shell_task("q0", "exit 1")])  # a duplicate attempt id is ignored
    for i in range(3):
        assert (await sink.result(f"q{i}")).outcome == SUCCEEDED
    starts = [a for kind, a in sink.order if kind == "started"]
    assert starts == ["q0", "q1", "q2"]
    # One slot: each attempt finished before the next started.
    assert [k for k, _ in sink.order if k != "output"] == ["started", "finished"] * 3


async def test_ack_deletes_the_attempt_folder(
    make_executor: ExecutorFactory, sink: RecordingSink, tmp_path: Path
) -> None:
    executor = await make_executor()
    executor.submit([shell_task("gc", "echo hi")])
    await sink.result("gc")
    folder = tmp_path / "attempts" / "gc"
    control = tmp_path / "supervise" / "gc"
    # The output is kept by the supervisor in the control folder, where the task cannot touch it.
    assert (control / "stdout.log").read_bytes() == b"hi\n"
    assert folder.is_dir()
    executor.forget(["gc"])
    assert not folder.exists()
    adopt.remove(tmp_path, "gc")
    assert not control.exists()


async def test_output_streams_while_running(make_executor: ExecutorFactory, sink: RecordingSink) -> None:
    executor = await make_executor()
    executor.submit([shell_task("stream", "echo early; sleep 1.5; echo late")])
    # The first line arrives (through the once-a-second flush) while the attempt is still running.
    await eventually(lambda: sink.stdout("stream") == b"early\n", what="streamed output")
    assert "stream" not in sink.results
    await sink.result("stream")
    assert sink.stdout("stream") == b"early\nlate\n"
    assert len(sink.outputs["stream"]) == 2
