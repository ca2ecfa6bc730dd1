"""Shared fixtures of the agent tests: an event recorder, executors, and a scripted fake controller."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest

from corral.agent.attempt import AttemptResult
from corral.agent.config import AgentConfig
from corral.agent.daemon import Agent
from corral.agent.executor import Executor
from corral.agent.pypool import WorkerPool
from corral.v1 import agent_pb2, agent_pb2_grpc, types_pb2

DEADLINE_S = 20.0
#: The repository root: workers import ``tests.agent.sample_tasks`` from it (--python-path).
REPO = Path(__file__).resolve().parents[2]


async def eventually(check: Callable[[], Any], timeout: float = DEADLINE_S, what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy (or fail after ``timeout``)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = check()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def shell_task(attempt_id: str, shell: str | None = None, **kw: Any) -> types_pb2.TaskAssignment:
    """A shell assignment (``shell`` string, or ``command=[...]``; ``env``, ``cwd``, ``inputs``...)."""
    payload: dict[str, Any] = {}
    if shell is not None:
        payload["shell"] = shell
    for key in ("command", "env", "cwd"):
        if key in kw:
            payload[key] = kw.pop(key)
    return _assignment(attempt_id, "shell", payload, **kw)


def python_task(attempt_id: str, function: str, *args: Any, **kw: Any) -> types_pb2.TaskAssignment:
    """A python assignment of ``tests.agent.sample_tasks:<function>``."""
    payload: dict[str, Any] = {"function": f"tests.agent.sample_tasks:{function}", "args": list(args)}
    if "kwargs" in kw:
        payload["kwargs"] = kw.pop("kwargs")
    return _assignment(attempt_id, "python", payload, **kw)


def _assignment(
    attempt_id: str,
    agent_type: str,
    payload: dict[str, Any],
    *,
    timeout_s: float = 0,
    inputs: dict[str, Any] | None = None,
    gpu_ids: list[int] | None = None,
    raw_payload: bytes | None = None,
) -> types_pb2.TaskAssignment:
    return types_pb2.TaskAssignment(
        attempt_id=attempt_id,
        task_id=f"task-{attempt_id}",
        workflow_id="wf-1",
        task_name=f"name-{attempt_id}",
        agent_type=agent_type,
        payload_json=raw_payload if raw_payload is not None else json.dumps(payload).encode(),
        timeout_s=timeout_s,
        inputs_json={k: json.dumps(v).encode() for k, v in (inputs or {}).items()},
        gpu_ids=gpu_ids or [],
        attempt_number=1,
    )


class RecordingSink:
    """Collects what the executor reports."""

    def __init__(self) -> None:
        self.pids: dict[str, int] = {}
        self.outputs: dict[str, list[tuple[bytes, bytes, bool]]] = {}
        self.results: dict[str, AttemptResult] = {}
        self.order: list[tuple[str, str]] = []
        self.accepted_ids: list[str] = []
        self.released_ids: list[str] = []
        self.checkpoints: dict[str, list[bytes]] = {}
        self.spawns: dict[str, list[bytes]] = {}

    def accepted(self, attempt_id: str) -> None:
        self.accepted_ids.append(attempt_id)

    def released(self, attempt_id: str) -> None:
        self.released_ids.append(attempt_id)
        self.order.append(("released", attempt_id))

    def started(self, attempt_id: str, pid: int) -> None:
        self.pids[attempt_id] = pid
        self.order.append(("started", attempt_id))

    def output(self, attempt_id: str, stdout: bytes, stderr: bytes, truncated: bool) -> None:
        assert stdout or stderr, "empty Output event"
        self.outputs.setdefault(attempt_id, []).append((stdout, stderr, truncated))
        self.order.append(("output", attempt_id))

    def checkpoint(self, attempt_id: str, data: bytes) -> None:
        assert attempt_id not in self.results, "checkpoint after the Finished report"
        self.checkpoints.setdefault(attempt_id, []).append(data)
        self.order.append(("checkpoint", attempt_id))

    def spawn(self, attempt_id: str, tasks_json: bytes) -> None:
        assert attempt_id not in self.results, "spawn after the Finished report"
        self.spawns.setdefault(attempt_id, []).append(tasks_json)

    def finished(self, attempt_id: str, result: AttemptResult) -> None:
        assert attempt_id not in self.results, "reported twice"
        self.results[attempt_id] = result
        self.order.append(("finished", attempt_id))

    def stdout(self, attempt_id: str) -> bytes:
        return b"".join(o for o, _, _ in self.outputs.get(attempt_id, []))

    def stderr(self, attempt_id: str) -> bytes:
        return b"".join(e for _, e, _ in self.outputs.get(attempt_id, []))

    async def result(self, attempt_id: str, timeout: float = DEADLINE_S) -> AttemptResult:
        result: AttemptResult = await eventually(
            lambda: self.results.get(attempt_id), timeout, f"{attempt_id} to finish"
        )
        return result


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink()


ExecutorFactory = Callable[..., Awaitable[Executor]]


@pytest.fixture
async def make_executor(tmp_path: Path, sink: RecordingSink) -> AsyncIterator[ExecutorFactory]:
    """Builds executors (with a warm pool when ``workers`` > 0) and tears them down."""
    made: list[tuple[Executor, WorkerPool | None]] = []

    async def make(*, slots: int = 2, workers: int = 0, kill_grace_s: float = 0.5, **kw: Any) -> Executor:
        pool = None
        if workers:
            pool = WorkerPool(workers, tmp_path, kw.get("output_cap", 1 << 20), [REPO])
            await pool.start()
        executor = Executor(
            slots=slots,
            agent_types=kw.pop("agent_types", ("shell", "python")),
            work_dir=tmp_path,
            sink=sink,
            pool=pool,
            kill_grace_s=kill_grace_s,
            **kw,
        )
        executor.start()
        made.append((executor, pool))
        return executor

    yield make
    for executor, pool in made:
        await executor.kill_all()
        await executor.close()
        if pool is not None:
            await pool.close()


# -- the fake controller ------------------------------------------------------------------------


class FakeConnection:
    """One agent stream as the fake controller sees it; the test scripts what it sends."""

    def __init__(self, hello: agent_pb2.Hello) -> None:
        self.hello = hello
        self.received: list[agent_pb2.AgentMessage] = []
        self.outbound: asyncio.Queue[agent_pb2.ControllerMessage | None] = asyncio.Queue()
        self.agent_closed = asyncio.Event()
        self.ended = asyncio.Event()

    def send(self, message: agent_pb2.ControllerMessage) -> None:
        self.outbound.put_nowait(message)

    def assign(self, *assignments: types_pb2.TaskAssignment) -> None:
        self.send(agent_pb2.ControllerMessage(assign=agent_pb2.Assign(assignments=assignments)))

    def ack(self, *attempt_ids: str) -> None:
        self.send(agent_pb2.ControllerMessage(ack=agent_pb2.Ack(attempt_ids=attempt_ids)))

    def cancel(self, *attempt_ids: str, force: bool = False, grace_s: float = 0.0) -> None:
        cancel = agent_pb2.Cancel(attempt_ids=attempt_ids, force=force, grace_s=grace_s)
        self.send(agent_pb2.ControllerMessage(cancel=cancel))

    def drain(self, grace_s: float) -> None:
        self.send(agent_pb2.ControllerMessage(drain=agent_pb2.Drain(grace_s=grace_s)))

    def end(self) -> None:
        """Close the stream from the controller side."""
        self.outbound.put_nowait(None)

    def heartbeats(self) -> list[agent_pb2.Heartbeat]:
        return [m.heartbeat for m in self.received if m.HasField("heartbeat")]

    def batches(self) -> list[list[agent_pb2.TaskEvent]]:
        return [list(m.events.events) for m in self.received if m.HasField("events")]

    def events(self, attempt_id: str | None = None, kind: str | None = None) -> list[agent_pb2.TaskEvent]:
        return [
            e
            for batch in self.batches()
            for e in batch
            if (attempt_id is None or e.attempt_id == attempt_id) and (kind is None or e.HasField(kind))
        ]

    async def wait_event(self, attempt_id: str, kind: str, timeout: float = DEADLINE_S) -> agent_pb2.TaskEvent:
        events: list[agent_pb2.TaskEvent] = await eventually(
            lambda: self.events(attempt_id, kind), timeout, f"{kind} of {attempt_id}"
        )
        return events[0]


class FakeGateway(agent_pb2_grpc.AgentGatewayServicer):
    """A scripted AgentGateway: welcomes every agent, records what it sends, sends what tests queue."""

    def __init__(self) -> None:
        self.address = ""
        self.connections: list[FakeConnection] = []
        self.heartbeat_interval_s = 0.2
        self.kill_next: list[str] = []
        self.epoch = 0
        # 0: a controller older than fencing (it echoes no heartbeat).
        self.fence_after_s = 0.0
        self.kill_grace_s = 0.0

    async def Connect(
        self, request_iterator: AsyncIterator[agent_pb2.AgentMessage], context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        requests = request_iterator.__aiter__()
        first = await requests.__anext__()
        assert first.HasField("hello"), "the first message must be Hello"
        connection = FakeConnection(first.hello)
        self.epoch += 1
        kill, self.kill_next = self.kill_next, []
        welcome = agent_pb2.Welcome(
            agent_id=first.hello.agent_id,
            session_epoch=self.epoch,
            heartbeat_interval_s=self.heartbeat_interval_s,
            lease_s=15.0,
            kill_attempt_ids=kill,
            fence_after_s=self.fence_after_s,
            kill_grace_s=self.kill_grace_s,
        )
        await context.write(agent_pb2.ControllerMessage(welcome=welcome))
        self.connections.append(connection)

        async def pump() -> None:
            with contextlib.suppress(Exception):
                async for message in requests:
                    connection.received.append(message)
            connection.agent_closed.set()

        reader = asyncio.create_task(pump())
        try:
            while True:
                getter = asyncio.create_task(connection.outbound.get())
                done, _ = await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    break
                message = getter.result()
                if message is None:
                    break
                await context.write(message)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            connection.ended.set()

    async def connection(self, index: int = 0, timeout: float = DEADLINE_S) -> FakeConnection:
        """The ``index``-th stream opened (waits for it)."""
        await eventually(lambda: len(self.connections) > index, timeout, f"connection #{index}")
        return self.connections[index]


@pytest.fixture
async def gateway() -> AsyncIterator[FakeGateway]:
    """A real grpc.aio server on a free port serving the fake gateway."""
    server = grpc.aio.server(
        options=[
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 1000),
            ("grpc.http2.max_ping_strikes", 0),
        ]
    )
    fake = FakeGateway()
    add_servicer: Callable[[Any, grpc.aio.Server], None] = agent_pb2_grpc.add_AgentGatewayServicer_to_server
    add_servicer(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    fake.address = f"127.0.0.1:{port}"
    yield fake
    await server.stop(0)


AgentFactory = Callable[..., Awaitable[tuple[Agent, "asyncio.Task[int]"]]]


@pytest.fixture
async def make_agent(tmp_path: Path, gateway: FakeGateway) -> AsyncIterator[AgentFactory]:
    """Starts in-process agents against the fake gateway; kills what is still running at the end."""
    running: list[tuple[Agent, asyncio.Task[int]]] = []

    async def make(**overrides: Any) -> tuple[Agent, asyncio.Task[int]]:
        settings: dict[str, Any] = {
            "controller": gateway.address,
            "name": "agent-1",
            "slots": 2,
            "gpus": 0,
            "python_workers": 1,
            "work_dir": tmp_path / "work",
            "kill_grace_s": 0.5,
            "drain_grace_s": 5.0,
            "python_paths": (REPO,),
        }
        settings.update(overrides)
        agent = Agent(AgentConfig(**settings), gpu_probe=lambda: [])
        task = asyncio.create_task(agent.run())
        await asyncio.wait_for(agent.ready.wait(), DEADLINE_S)
        running.append((agent, task))
        return agent, task

    yield make
    for agent, task in running:
        if not task.done():
            agent.kill()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, DEADLINE_S)
