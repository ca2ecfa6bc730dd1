"""Adoption: a restarted agent takes over the attempts its supervisors kept running while it was away.

The first tests drive the in-process agent with a stand-in for the scan of supervisor folders (the
seam between the agent and the supervisor part): real processes, handed over as adopted runs. The
last one is the real thing end to end: a real agent process SIGKILLed mid-task and restarted, the
task keeping its pid, against an in-process controller.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc.aio
import psutil
import pytest

from corral.agent import adopt
from corral.agent.attempt import AttemptResult, StopReason
from corral.controller.rpc.gateway import deliver
from corral.controller.runtime import Runtime
from corral.controller.server import build_server
from corral.controller.store.sqlite import SqliteStore
from corral.v1 import orchestrator_pb2 as OR
from corral.v1 import orchestrator_pb2_grpc
from corral.v1 import types_pb2 as pb

from .conftest import AgentFactory, FakeGateway, eventually, shell_task

SUCCEEDED = pb.ATTEMPT_OUTCOME_SUCCEEDED
FOUND_OK = AttemptResult(SUCCEEDED, result_json=b'"done while away"')


class StandInRun:
    """A real process the test started, handed to the agent as if its supervisor had outlived the agent."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self._proc = proc
        self._reason: StopReason | None = None

    @property
    def pid(self) -> int:
        return self._proc.pid

    def take_output(self) -> tuple[bytes, bytes, bool]:
        return b"", b"", False

    def request_stop(self, reason: StopReason, *, force: bool, grace_s: float) -> None:
        if self._reason is None:
            self._reason = reason
        with contextlib.suppress(ProcessLookupError):
            self._proc.send_signal(signal.SIGKILL if force else signal.SIGTERM)

    async def finish(self) -> AttemptResult:
        code = await self._proc.wait()
        if self._reason is not None:
            return AttemptResult.stopped(self._reason, exit_code=code)
        if code == 0:
            return AttemptResult(SUCCEEDED, result_json=b"7")
        return AttemptResult.failed(f"exit code {code}", retryable=True, exit_code=code)


@pytest.fixture
async def waiter(tmp_path: Path) -> AsyncIterator[tuple[asyncio.subprocess.Process, Path]]:
    """A process that runs until the test creates its ``go`` file (then exits 0)."""
    go = tmp_path / "go"
    proc = await asyncio.create_subprocess_exec(
        "/bin/sh", "-c", f"while [ ! -e '{go}' ]; do sleep 0.05; done", start_new_session=True
    )
    yield proc, go
    if proc.returncode is None:
        proc.kill()
        await proc.wait()


def fake_scan(monkeypatch: pytest.MonkeyPatch, found: list[adopt.Adopted]) -> list[str]:
    """Make the agent find ``found`` at start; returns the list of attempt ids it removes."""
    removed: list[str] = []
    real_remove = adopt.remove

    def remove(work_dir: Path, attempt_id: str) -> None:
        removed.append(attempt_id)
        real_remove(work_dir, attempt_id)

    monkeypatch.setattr(adopt, "scan", lambda work_dir, ctx: list(found))
    monkeypatch.setattr(adopt, "remove", remove)
    return removed


async def test_adopted_attempts_are_announced_reported_and_hold_their_slot(
    make_agent: AgentFactory,
    gateway: FakeGateway,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    waiter: tuple[asyncio.subprocess.Process, Path],
) -> None:
    proc, go = waiter
    attempts = tmp_path / "work" / "attempts"
    for name in ("r1", "f1", "d1", "stale"):
        (attempts / name).mkdir(parents=True)
    removed = fake_scan(
        monkeypatch,
        [
            adopt.Adopted("r1", run=StandInRun(proc)),
            adopt.Adopted("f1", result=FOUND_OK),
            adopt.Adopted("d1", died=True),
        ],
    )
    agent, _ = await make_agent(slots=1)
    conn = await gateway.connection()
    # The Hello holds what survived: running and finished; the one that died is left out, so
    # the controller counts it as lost with the agent.
    assert list(conn.hello.running_attempt_ids) == ["r1"]
    assert list(conn.hello.finished_attempt_ids) == ["f1"]
    assert agent.adopted == ["r1", "f1"]
    # Folders of the previous life nothing adopted are gone; adopted ones stay.
    assert sorted(p.name for p in attempts.iterdir()) == ["f1", "r1"]
    finished = await conn.wait_event("f1", "finished")
    assert finished.finished.outcome == SUCCEEDED and finished.finished.result_json == b'"done while away"'
    assert (await conn.wait_event("r1", "started")).started.pid == proc.pid
    # The adopted attempt holds the only slot: a new one waits for it.
    conn.assign(shell_task("n1", "echo 3"))
    await conn.wait_event("n1", "accepted")
    assert agent.executor is not None and agent.executor.active_ids() == ["r1", "n1"]
    conn.ack("f1")
    await eventually(lambda: removed == ["f1"], what="the acknowledged attempt's folders to go")
    go.touch()
    done = await conn.wait_event("r1", "finished")
    assert done.finished.outcome == SUCCEEDED and done.finished.result_json == b"7"
    assert (await conn.wait_event("n1", "finished")).finished.result_json == b"3"
    conn.ack("r1", "n1")
    await eventually(lambda: sorted(removed) == ["f1", "n1", "r1"], what="the acks to remove folders")
    assert not (attempts / "r1").exists()


async def test_adopted_attempts_the_controller_moved_are_killed_silently(
    make_agent: AgentFactory,
    gateway: FakeGateway,
    monkeypatch: pytest.MonkeyPatch,
    waiter: tuple[asyncio.subprocess.Process, Path],
) -> None:
    proc, _ = waiter
    removed = fake_scan(
        monkeypatch, [adopt.Adopted("moved", run=StandInRun(proc)), adopt.Adopted("gone", result=FOUND_OK)]
    )
    gateway.kill_next = ["moved", "gone"]
    agent, _ = await make_agent()
    conn = await gateway.connection()
    assert list(conn.hello.running_attempt_ids) == ["moved"]
    assert list(conn.hello.finished_attempt_ids) == ["gone"]
    # Stopped (SIGTERM through its run), forgotten, nothing reported of either.
    assert await asyncio.wait_for(proc.wait(), 10) == -signal.SIGTERM
    await eventually(lambda: sorted(removed) == ["gone", "moved"], what="both to be forgotten")
    assert agent.executor is not None and agent.executor.active_ids() == []
    assert not agent.outbox.unacked_ids
    await settled(conn)
    assert not conn.events("moved") and not conn.events("gone")


async def settled(conn: Any) -> None:
    conn.assign(shell_task("sync", "true"))
    await conn.wait_event("sync", "finished")


# -- the real thing: a real agent process, SIGKILLed and restarted --------------------------------------

TASK_S = 20


@pytest.fixture
async def orchestrator(tmp_path: Path) -> AsyncIterator[tuple[str, orchestrator_pb2_grpc.OrchestratorStub]]:
    """An in-process controller (real runtime, SQLite file, gRPC on port 0): its address and Orchestrator."""
    runtime = Runtime(SqliteStore(tmp_path / "c.db"), encode_actions=deliver)
    await runtime.start()
    server = await build_server(runtime, "127.0.0.1:0")
    address = f"127.0.0.1:{server.port}"
    channel = grpc.aio.insecure_channel(address)
    try:
        yield address, orchestrator_pb2_grpc.OrchestratorStub(channel)
    finally:
        await channel.close()
        await server.stop(0)
        await runtime.stop()
    assert runtime.failure is None


async def start_agent(address: str, work_dir: Path, log: Path) -> asyncio.subprocess.Process:
    argv = [sys.executable, "-m", "corral.agent", "--controller", address, "--name", "adopter"]
    argv += ["--work-dir", str(work_dir), "--slots", "1", "--types", "shell", "--kill-grace", "1"]
    with open(log, "ab") as out:
        return await asyncio.create_subprocess_exec(*argv, stdout=out, stderr=out, stdin=asyncio.subprocess.DEVNULL)


def alive(pid: int, created: float) -> bool:
    """Whether the very process (pid and start time) is alive and not a zombie."""
    try:
        process = psutil.Process(pid)
        return process.create_time() == created and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def test_agent_kill9_and_restart_keeps_the_task_running(
    orchestrator: tuple[str, orchestrator_pb2_grpc.OrchestratorStub], tmp_path: Path
) -> None:
    address, orch = orchestrator
    pid_file = tmp_path / "task.pid"
    shell = f"echo $$ > '{pid_file}'; sleep {TASK_S}; echo 42"
    spec = pb.WorkflowSpec(
        name="adopt",
        tasks=[pb.TaskSpec(name="long", agent_type="shell", payload_json=json.dumps({"shell": shell}).encode())],
    )
    workflow_id = (await orch.SubmitWorkflow(OR.SubmitWorkflowRequest(spec=spec, start=True))).workflow_id

    async def task() -> pb.TaskStatus:
        response = await orch.GetWorkflowStatus(
            OR.GetWorkflowStatusRequest(workflow_id=workflow_id, include_tasks=True)
        )
        return response.status.tasks[0]

    work_dir, log = tmp_path / "agent", tmp_path / "agent.log"
    agent = await start_agent(address, work_dir, log)
    pid = 0
    try:
        pid = int(await eventually(lambda: pid_file.exists() and pid_file.read_text().strip(), what="the task"))
        created = psutil.Process(pid).create_time()
        # The controller knows it started (else it would rightly take back an unconfirmed assignment).
        deadline = asyncio.get_running_loop().time() + 20
        while (running := await task()).state != pb.TASK_STATE_RUNNING:
            assert asyncio.get_running_loop().time() < deadline, running
            await asyncio.sleep(0.05)
        first_attempt = running.attempt_id
        agent.kill()  # SIGKILL: no drain, no cleanup
        await agent.wait()
        assert alive(pid, created), "the task died with its agent"
        await asyncio.sleep(2.0)  # the restart delay of the scenario
        assert alive(pid, created)
        agent = await start_agent(address, work_dir, log)
        deadline = asyncio.get_running_loop().time() + TASK_S + 30
        while (status := await task()).state != pb.TASK_STATE_COMPLETED:
            assert status.state in (pb.TASK_STATE_ASSIGNED, pb.TASK_STATE_RUNNING), status
            assert asyncio.get_running_loop().time() < deadline, f"not completed: {log.read_text()[-3000:]}"
            await asyncio.sleep(0.2)
        # Never started again (the pid file is written once per run), and the result came from the
        # first process after its whole run: the task kept its pid through the agent's restart.
        assert int(pid_file.read_text()) == pid
        assert time.time() - created >= TASK_S
        assert status.attempts == 1 and status.attempt_id == first_attempt
        assert json.loads(status.result_json) == 42
        assert status.agent_losses == 0
        await eventually(lambda: not alive(pid, created), what="the task to be over")
    finally:
        if agent.returncode is None:
            agent.kill()
            await agent.wait()
        if pid and psutil.pid_exists(pid):
            # A failed run: the task's supervisor and the task must not outlive the test.
            with contextlib.suppress(psutil.NoSuchProcess):
                process = psutil.Process(pid)
                parent = process.parent()
                for victim in [*process.children(recursive=True), process, parent]:
                    if victim is not None and victim.pid != 1:
                        with contextlib.suppress(psutil.NoSuchProcess):
                            victim.kill()
