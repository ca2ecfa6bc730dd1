"""The command line: --help, and a real agent process that drains on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from corral.agent.cli import build_parser, config_from_args
from corral.v1 import types_pb2

from .conftest import DEADLINE_S, FakeGateway, eventually, shell_task


def test_help() -> None:
    done = subprocess.run([sys.executable, "-m", "corral.agent", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    for flag in ("--controller", "--slots", "--gpus", "--label", "--types", "--drain-grace", "--kill-grace"):
        assert flag in done.stdout


def test_arguments_become_a_config(tmp_path: Path) -> None:
    argv = ["--name", "n1", "--slots", "4", "--gpus", "1", "--label", "a=b", "--label", "c=d", "--types", "shell"]
    argv += ["--work-dir", str(tmp_path), "--python-workers", "2", "--drain-grace", "3", "--kill-grace", "1"]
    args = build_parser().parse_args(argv)
    config = config_from_args(args)
    assert (config.name, config.slots, config.gpus) == ("n1", 4, 1)
    assert config.labels == {"a": "b", "c": "d"}
    assert config.agent_types == ("shell",)
    assert config.worker_count == 0  # no python type offered
    assert config.resolved_work_dir == tmp_path
    assert (config.drain_grace_s, config.kill_grace_s) == (3.0, 1.0)


def test_names_the_controller_would_refuse_are_rejected_at_start() -> None:
    for label in ("bad key=v", "zone=eu\x00"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["--label", label])
    # (main() turns this ValueError into exit code 2; not called here: it configures logging globally)
    with pytest.raises(ValueError, match="not a valid name"):
        config_from_args(build_parser().parse_args(["--name", "bad\nname"]))


def test_bad_label_is_rejected() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--label", "novalue"])


async def _start(gateway: FakeGateway, tmp_path: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "corral.agent",
        "--controller",
        gateway.address,
        "--name",
        "proc-agent",
        "--slots",
        "1",
        "--python-workers",
        "1",
        "--work-dir",
        str(tmp_path / "work"),
        "--kill-grace",
        "0.5",
        stderr=asyncio.subprocess.PIPE,
    )


async def test_sigterm_drains_and_exits_zero(gateway: FakeGateway, tmp_path: Path) -> None:
    proc = await _start(gateway, tmp_path)
    try:
        conn = await gateway.connection()
        assert conn.hello.name == "proc-agent"
        conn.assign(shell_task("t1", "sleep 0.5; echo 11"))
        await conn.wait_event("t1", "started")
        proc.send_signal(signal.SIGTERM)
        await eventually(lambda: any(h.draining for h in conn.heartbeats()), what="a draining heartbeat")
        finished = (await conn.wait_event("t1", "finished")).finished
        assert finished.outcome == types_pb2.ATTEMPT_OUTCOME_SUCCEEDED, finished
        assert finished.result_json == b"11"
        conn.ack("t1")
        assert await asyncio.wait_for(proc.wait(), 20) == 0
        assert proc.stderr is not None
        stderr = (await proc.stderr.read()).decode()
        assert "agent connected" in stderr and gateway.address in stderr
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_second_signal_kills_everything(gateway: FakeGateway, tmp_path: Path) -> None:
    proc = await _start(gateway, tmp_path)
    try:
        conn = await gateway.connection()
        conn.assign(shell_task("t2", "trap '' TERM; sleep 1000"))
        task_pid = (await conn.wait_event("t2", "started")).started.pid
        proc.send_signal(signal.SIGTERM)
        await eventually(lambda: any(h.draining for h in conn.heartbeats()), what="a draining heartbeat")
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 20) == 1
        await eventually(lambda: not psutil.pid_exists(task_pid), what="the task to be killed")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_sigusr2_writes_the_asyncio_tasks_and_the_agent_goes_on(gateway: FakeGateway, tmp_path: Path) -> None:
    proc = await _start(gateway, tmp_path)
    try:
        conn = await gateway.connection()
        assert proc.stderr is not None
        # The gateway counts a stream once it has written Welcome; the agent's reader starts
        # after reading it, beside the writer whose first heartbeat proves both are running.
        await eventually(conn.heartbeats, DEADLINE_S, "the first heartbeat")
        proc.send_signal(signal.SIGUSR2)
        # The dump names the session's loops: the stream reader waits there for the controller.
        dump: list[str] = []
        while "_read_loop" not in "".join(dump):
            try:
                line = await asyncio.wait_for(proc.stderr.readline(), DEADLINE_S)
            except TimeoutError:
                raise AssertionError("no _read_loop in the dump:\n" + "".join(dump)) from None
            assert line, "the agent's stderr ended before its task dump"
            dump.append(line.decode())
        text = "".join(dump)
        assert "SIGUSR2: writing the asyncio tasks" in text and "asyncio task(s)" in text
        # Still serving: a task runs and reports after the dump.
        conn.assign(shell_task("after", "echo 7"))
        finished = (await conn.wait_event("after", "finished")).finished
        assert finished.outcome == types_pb2.ATTEMPT_OUTCOME_SUCCEEDED and finished.result_json == b"7"
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
