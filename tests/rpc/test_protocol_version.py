"""Issue 12, version skew: a controller accepts protocol N and N-1 and refuses older peers clearly.

Against a real controller (Runtime, SQLite, gRPC server on port 0), with raw stubs so every version
can be sent: ``corral-protocol`` call metadata for clients, ``Hello.protocol_version`` (and the same
metadata) for agents. A peer that sends nothing predates versioning and counts as protocol 11.
"""

from __future__ import annotations

import asyncio

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from corral.controller.sdk import Client
from corral.protocol import MIN_PROTOCOL, PROTOCOL_VERSION, UNVERSIONED, refusal
from corral.v1 import agent_pb2, orchestrator_pb2, types_pb2

from .conftest import Controller, shell_task, workflow_spec

OLD = MIN_PROTOCOL - 1  # N-2: refused


def _metadata(version: str | None) -> tuple[tuple[str, str], ...]:
    return () if version is None else (("corral-protocol", version),)


def test_the_constants_say_n_and_n_minus_1() -> None:
    assert (PROTOCOL_VERSION, MIN_PROTOCOL, UNVERSIONED) == (12, 11, 11)
    assert refusal(PROTOCOL_VERSION, "client") is None and refusal(PROTOCOL_VERSION + 1, "client") is None
    assert refusal(MIN_PROTOCOL, "agent") is None


@pytest.mark.parametrize("version", [None, str(MIN_PROTOCOL), str(PROTOCOL_VERSION), str(PROTOCOL_VERSION + 1)])
async def test_clients_of_n_and_n_minus_1_are_served(controller: Controller, version: str | None) -> None:
    response = await controller.orchestrator.ListWorkflows(
        orchestrator_pb2.ListWorkflowsRequest(), metadata=_metadata(version)
    )
    assert list(response.workflows) == []


@pytest.mark.parametrize("version", [str(OLD), "0", "twelve", "-3"])
async def test_older_clients_are_refused_with_both_versions(controller: Controller, version: str) -> None:
    spec = workflow_spec("old", [shell_task("a")])
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await controller.orchestrator.SubmitWorkflow(
            orchestrator_pb2.SubmitWorkflowRequest(spec=spec), metadata=_metadata(version)
        )
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    details = info.value.details() or ""
    assert f"this controller speaks protocol {PROTOCOL_VERSION} and accepts {MIN_PROTOCOL} and newer" in details
    assert (f"client speaks protocol {version}" if version.isdigit() else "unreadable protocol version") in details
    assert "upgrade the client" in details
    assert controller.stored()[0] == 0  # refused at the door: nothing stored


async def test_streams_are_refused_too_but_not_health(controller: Controller) -> None:
    call = controller.orchestrator.WatchWorkflow(
        orchestrator_pb2.WatchWorkflowRequest(workflow_id="w"), metadata=_metadata(str(OLD))
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call.read()
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    # Probes (kubelet, load balancers) send no version and must survive every upgrade.
    health = health_pb2_grpc.HealthStub(controller.channel)
    answer = await health.Check(health_pb2.HealthCheckRequest(), metadata=_metadata(str(OLD)))
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


async def test_the_sdk_sends_this_version(controller: Controller) -> None:
    async with Client(controller.address, metadata=()) as client:
        assert ("corral-protocol", str(PROTOCOL_VERSION)) in client._metadata
        await client.list_workflows()


async def _connect(
    controller: Controller, name: str, *, hello_version: int, metadata_version: str | None
) -> tuple[grpc.aio.StreamStreamCall, agent_pb2.ControllerMessage]:
    call = controller.gateway.Connect(metadata=_metadata(metadata_version))
    hello = agent_pb2.Hello(agent_id=name, name=name, agent_types=["shell"], protocol_version=hello_version)
    hello.inventory.cpu_cores = 2
    hello.inventory.memory_mb = 1024
    hello.inventory.slots = 2
    await call.write(agent_pb2.AgentMessage(hello=hello))
    async with asyncio.timeout(10):
        first = await call.read()
    return call, first


@pytest.mark.parametrize(("hello_version", "metadata_version"), [(OLD, str(PROTOCOL_VERSION)), (0, str(OLD))])
async def test_an_old_agent_is_refused_with_both_versions(
    controller: Controller, hello_version: int, metadata_version: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _connect(controller, "old", hello_version=hello_version, metadata_version=metadata_version)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    details = info.value.details() or ""
    assert f"agent speaks protocol {OLD}" in details and f"speaks protocol {PROTOCOL_VERSION}" in details
    assert "old" not in controller.runtime.machine.agents


@pytest.mark.parametrize(("hello_version", "metadata_version"), [(MIN_PROTOCOL, str(MIN_PROTOCOL)), (0, None)])
async def test_an_n_minus_1_agent_runs_work(
    controller: Controller, hello_version: int, metadata_version: str | None
) -> None:
    """An agent one protocol behind (or older than versioning: no field, no metadata) is welcomed,
    gets an assignment and has its result accepted: agents may be upgraded after the controllers."""
    call, first = await _connect(controller, "n1", hello_version=hello_version, metadata_version=metadata_version)
    assert first.WhichOneof("kind") == "welcome"
    spec = workflow_spec("skew", [shell_task("a")])
    submit = orchestrator_pb2.SubmitWorkflowRequest(spec=spec, start=True)
    submitted = await controller.orchestrator.SubmitWorkflow(submit)
    async with asyncio.timeout(10):
        while (message := await call.read()).WhichOneof("kind") != "assign":
            pass
    attempt_id = message.assign.assignments[0].attempt_id
    outcome = agent_pb2.Finished(outcome=types_pb2.ATTEMPT_OUTCOME_SUCCEEDED, result_json=b'{"ok": true}')
    finished = agent_pb2.TaskEvent(attempt_id=attempt_id, finished=outcome)
    await call.write(agent_pb2.AgentMessage(events=agent_pb2.TaskEvents(events=[finished])))
    request = orchestrator_pb2.GetWorkflowStatusRequest(workflow_id=submitted.workflow_id)
    completed = types_pb2.WORKFLOW_STATE_COMPLETED
    async with asyncio.timeout(10):
        while (await controller.orchestrator.GetWorkflowStatus(request)).status.state != completed:
            await asyncio.sleep(0.05)
    call.cancel()
