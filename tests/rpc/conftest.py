"""An in-process controller for RPC tests: a real Runtime on a SQLite file, a real gRPC server on port 0."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from corral.controller.core.lifecycle import drop_workflows
from corral.controller.core.machine import Machine
from corral.controller.rpc.gateway import deliver
from corral.controller.runtime import Runtime
from corral.controller.server import Server, build_server
from corral.controller.store.sqlite import SqliteStore
from corral.v1 import agent_pb2_grpc, orchestrator_pb2_grpc, scheduler_pb2_grpc
from corral.v1 import types_pb2 as pb

__all__ = ["Controller", "bad_request", "shell_task", "workflow_spec"]


@dataclass
class Controller:
    runtime: Runtime
    server: Server
    channel: grpc.aio.Channel
    db: Path
    orchestrator: orchestrator_pb2_grpc.OrchestratorStub
    scheduler: scheduler_pb2_grpc.SchedulerStub
    cluster: agent_pb2_grpc.ClusterStub
    gateway: agent_pb2_grpc.AgentGatewayStub

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def stored(self) -> tuple[int, int]:
        """(workflows, tasks) in the SQLite file, read through a fresh store."""
        store = SqliteStore(self.db)
        try:
            snapshot = store.load()
        finally:
            store.close()
        return len(snapshot.workflows), len(snapshot.tasks)


@pytest.fixture
async def controller(tmp_path: Path) -> AsyncIterator[Controller]:
    db = tmp_path / "c.db"
    runtime = Runtime(SqliteStore(db), encode_actions=deliver)
    await runtime.start()
    server = await build_server(runtime, "127.0.0.1:0")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield Controller(
            runtime,
            server,
            channel,
            db,
            orchestrator_pb2_grpc.OrchestratorStub(channel),
            scheduler_pb2_grpc.SchedulerStub(channel),
            agent_pb2_grpc.ClusterStub(channel),
            agent_pb2_grpc.AgentGatewayStub(channel),
        )
    finally:
        await channel.close()
        await server.stop(0)
        await runtime.stop()
    assert runtime.failure is None


async def evict_workflows(rt: Runtime, workflow_ids: Sequence[str]) -> None:
    """Take finished workflows out of the controller's memory, as its eviction does."""

    def command(m: Machine, now: float) -> None:
        drop_workflows(m, workflow_ids)
        m.lifecycle.evicted += len(workflow_ids)

    await rt.call(command, read=True)


def shell_task(name: str, *deps: str, **fields: Any) -> pb.TaskSpec:
    payload = fields.pop("payload", {"shell": f"echo {name}"})
    return pb.TaskSpec(
        name=name,
        agent_type=fields.pop("agent_type", "shell"),
        payload_json=payload if isinstance(payload, bytes) else json.dumps(payload).encode(),
        dependencies=list(deps),
        **fields,
    )


def workflow_spec(name: str, tasks: Sequence[pb.TaskSpec], **fields: Any) -> pb.WorkflowSpec:
    return pb.WorkflowSpec(name=name, tasks=list(tasks), **fields)


def bad_request(error: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    """The ``(field, description)`` pairs of the google.rpc.BadRequest in an error's trailers."""
    raw = [value for key, value in error.trailing_metadata() or () if key == "grpc-status-details-bin"]
    assert raw, "no grpc-status-details-bin trailer"
    status = status_pb2.Status.FromString(raw[0])
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    violations = []
    for detail in status.details:
        request = error_details_pb2.BadRequest()
        assert detail.Unpack(request)
        violations.extend((v.field, v.description) for v in request.field_violations)
    return violations
