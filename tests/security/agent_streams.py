"""Raw AgentGateway streams for security tests: a hand-written agent that says exactly what a test
wants (a hostile Hello, a hijack, a blackhole that never reads), plus small helpers around a real
controller process (health, agents, workflows) used through the generated stubs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from corral.v1 import agent_pb2, agent_pb2_grpc, orchestrator_pb2, orchestrator_pb2_grpc, types_pb2

__all__ = [
    "Outcome",
    "RawAgent",
    "agent_names",
    "hello",
    "serving",
    "shell_workflow",
    "wait_workflow",
]

OK = grpc.StatusCode.OK


def hello(name: str, *, slots: int = 2, types: Sequence[str] = ("shell",), **inventory: Any) -> agent_pb2.Hello:
    """A well-formed Hello; ``inventory`` overrides amounts (cpu_cores, gpu_count, ...)."""
    amounts: dict[str, Any] = {"cpu_cores": 4.0, "memory_mb": 4096, "disk_mb": 10_000, "slots": slots}
    amounts.update(inventory)
    return agent_pb2.Hello(
        agent_id=name,
        name=name,
        hostname="raw-test",
        agent_types=list(types),
        inventory=types_pb2.Inventory(**amounts),
        version="test",
    )


@dataclass
class Outcome:
    """How a stream's opening went: the Welcome, or the status it was ended with."""

    code: grpc.StatusCode
    details: str = ""
    welcome: agent_pb2.Welcome | None = None


@dataclass
class RawAgent:
    """One hand-driven Connect stream on ``channel``."""

    channel: grpc.aio.Channel
    call: Any = None
    metadata: Sequence[tuple[str, str]] = ()
    received: list[agent_pb2.ControllerMessage] = field(default_factory=list)

    async def open(self, message: agent_pb2.Hello, timeout: float = 15.0) -> Outcome:
        """Send ``message`` as the Hello and read the answer (Welcome or an error status)."""
        self.call = agent_pb2_grpc.AgentGatewayStub(self.channel).Connect(metadata=tuple(self.metadata) or None)
        with contextlib.suppress(grpc.aio.AioRpcError, grpc.aio.UsageError):
            await self.call.write(agent_pb2.AgentMessage(hello=message))
        return await self._first(timeout)

    async def _first(self, timeout: float) -> Outcome:
        try:
            async with asyncio.timeout(timeout):
                answer = await self.call.read()
        except grpc.aio.AioRpcError as exc:
            return Outcome(exc.code(), exc.details() or "")
        if answer is grpc.aio.EOF:
            return Outcome(await self.call.code(), await self.call.details() or "")
        assert answer.HasField("welcome"), answer
        return Outcome(OK, "", answer.welcome)

    async def send(self, message: agent_pb2.AgentMessage) -> None:
        await self.call.write(message)

    async def ended(self, timeout: float = 15.0) -> Outcome:
        """Read until the controller ends the stream; its final status."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    message = await self.call.read()
                    if message is grpc.aio.EOF:
                        return Outcome(await self.call.code(), await self.call.details() or "")
                    self.received.append(message)
        except grpc.aio.AioRpcError as exc:
            return Outcome(exc.code(), exc.details() or "")

    def close(self) -> None:
        if self.call is not None:
            self.call.cancel()


async def serving(channel: grpc.aio.Channel) -> bool:
    """Whether grpc health says SERVING."""
    stub = health_pb2_grpc.HealthStub(channel)
    answer = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)


async def agent_names(channel: grpc.aio.Channel) -> dict[str, types_pb2.AgentInfo]:
    """Every agent the controller lists, by name."""
    listing = await agent_pb2_grpc.ClusterStub(channel).ListAgents(agent_pb2.ListAgentsRequest(), timeout=30)
    return {a.name: a for a in listing.agents}


def shell_workflow(name: str, commands: Mapping[str, str]) -> types_pb2.WorkflowSpec:
    """A workflow of independent shell tasks, ``task name -> shell command``."""
    return types_pb2.WorkflowSpec(
        name=name,
        tasks=[
            types_pb2.TaskSpec(name=task, agent_type="shell", payload_json=json.dumps({"shell": cmd}).encode())
            for task, cmd in commands.items()
        ],
    )


async def wait_workflow(
    channel: grpc.aio.Channel, workflow_id: str, timeout: float, states: Sequence[int] = ()
) -> types_pb2.WorkflowStatus:
    """Poll until the workflow is terminal (or in one of ``states``); fail after ``timeout``."""
    stub = orchestrator_pb2_grpc.OrchestratorStub(channel)
    done = {types_pb2.WORKFLOW_STATE_COMPLETED, types_pb2.WORKFLOW_STATE_FAILED, types_pb2.WORKFLOW_STATE_CANCELLED}
    done.update(states)
    deadline = time.monotonic() + timeout
    while True:
        answer = await stub.GetWorkflowStatus(
            orchestrator_pb2.GetWorkflowStatusRequest(workflow_id=workflow_id, include_tasks=True), timeout=30
        )
        if answer.status.state in done:
            return answer.status
        assert time.monotonic() < deadline, f"workflow {workflow_id} still {answer.status.state} after {timeout}s"
        await asyncio.sleep(0.1)
