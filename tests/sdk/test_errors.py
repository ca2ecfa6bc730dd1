"""Typed errors: an unreachable controller, and the decoding of rich INVALID_ARGUMENT details.

The decoding tests use a real gRPC server (not a mock) that answers the way the controller's error
interceptor does: a status code, a message, and ``google.rpc.BadRequest`` in the status details.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import grpc
import grpc.aio
import pytest
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from corral.controller.sdk import (
    Client,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    SyncClient,
    UnavailableError,
)
from corral.v1 import orchestrator_pb2_grpc


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_unreachable_controller_is_one_clear_error() -> None:
    address = f"127.0.0.1:{free_port()}"
    async with Client(address) as client:
        with pytest.raises(UnavailableError) as info:
            await client.list_workflows()
    assert str(info.value) == f"cannot reach the controller at {address} — is it running?"


def test_unreachable_controller_sync() -> None:
    address = f"127.0.0.1:{free_port()}"
    with SyncClient(address) as client, pytest.raises(UnavailableError, match="is it running"):
        client.status("abc")


class _Refusing(orchestrator_pb2_grpc.OrchestratorServicer):
    """Answers like the controller's error interceptor does."""

    async def SubmitWorkflow(self, request: object, context: grpc.aio.ServicerContext[object, object]) -> None:
        detail = any_pb2.Any()
        detail.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field="tasks[0].name", description="bad name"),
                    error_details_pb2.BadRequest.FieldViolation(field="tasks[1].timeout", description="too long"),
                ]
            )
        )
        status = status_pb2.Status(
            code=code_pb2.INVALID_ARGUMENT,
            message="tasks[0].name: bad name; tasks[1].timeout: too long",
            details=[detail],
        )
        await context.abort_with_status(rpc_status.to_status(status))

    async def GetWorkflowStatus(self, request: object, context: grpc.aio.ServicerContext[object, object]) -> None:
        await context.abort(grpc.StatusCode.NOT_FOUND, "no workflow matches 'zzz'")

    async def PauseWorkflow(self, request: object, context: grpc.aio.ServicerContext[object, object]) -> None:
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "workflow w is completed")

    async def ResumeWorkflow(self, request: object, context: grpc.aio.ServicerContext[object, object]) -> None:
        # an INVALID_ARGUMENT without rich details: violations come from the message
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "workflow_id: must not be empty")


@pytest.fixture
async def refusing() -> AsyncIterator[str]:
    server = grpc.aio.server()
    orchestrator_pb2_grpc.add_OrchestratorServicer_to_server(_Refusing(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


async def test_invalid_argument_carries_the_field_violations(refusing: str) -> None:
    async with Client(refusing) as client:
        with pytest.raises(InvalidArgumentError) as info:
            await client.submit({"name": "w", "tasks": [{"name": "a", "payload": {"shell": "x"}}]})
    assert info.value.violations == [("tasks[0].name", "bad name"), ("tasks[1].timeout", "too long")]
    assert info.value.message == "tasks[0].name: bad name; tasks[1].timeout: too long"


async def test_status_codes_map_to_types(refusing: str) -> None:
    async with Client(refusing) as client:
        with pytest.raises(NotFoundError, match="no workflow matches"):
            await client.status("zzz")
        with pytest.raises(FailedPreconditionError, match="completed"):
            await client.pause("w")
        with pytest.raises(InvalidArgumentError) as info:
            await client.resume("")
    assert info.value.violations == [("workflow_id", "must not be empty")]


async def test_client_side_validation_needs_no_server() -> None:
    async with Client(f"127.0.0.1:{free_port()}") as client:
        with pytest.raises(InvalidArgumentError) as info:
            await client.submit({"name": "w", "tasks": [{"name": "a"}]})
        assert info.value.violations[0].field == "tasks[0]"
        with pytest.raises(InvalidArgumentError, match="unknown state"):
            await client.list_workflows(states=["sleeping"])
