"""Heartbeats at the gateway (issue 13): gathered into one event, each applied and echoed once,
a bad one ending only its own stream, and the fleet-paced interval told in Welcome and echoes."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import pytest

from corral.controller.core import events as ev
from corral.controller.core.config import MachineConfig
from corral.controller.rpc import gateway
from corral.controller.rpc.gateway import deliver
from corral.controller.runtime import Runtime
from corral.controller.server import build_server
from corral.controller.store.sqlite import SqliteStore
from corral.v1 import agent_pb2, agent_pb2_grpc, types_pb2

Call = grpc.aio.StreamStreamCall


@pytest.fixture
async def fleet(tmp_path: Any) -> AsyncIterator[tuple[Runtime, agent_pb2_grpc.AgentGatewayStub]]:
    """A real controller paced at 1 heartbeat a second, so a few agents already stretch it."""
    runtime = Runtime(SqliteStore(tmp_path / "c.db"), MachineConfig(max_heartbeats_per_s=1.0), encode_actions=deliver)
    await runtime.start()
    server = await build_server(runtime, "127.0.0.1:0")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield runtime, agent_pb2_grpc.AgentGatewayStub(channel)
    finally:
        await channel.close()
        await server.stop(0)
        await runtime.stop()
    assert runtime.failure is None


async def _connect(stub: agent_pb2_grpc.AgentGatewayStub, name: str) -> tuple[Call, agent_pb2.Welcome]:
    call = stub.Connect()
    await call.write(agent_pb2.AgentMessage(hello=agent_pb2.Hello(agent_id=name, name=name, agent_types=["shell"])))
    async with asyncio.timeout(10):
        first = await call.read()
    assert first.WhichOneof("kind") == "welcome"
    return call, first.welcome


async def _echo(call: Call) -> agent_pb2.HeartbeatAck:
    async with asyncio.timeout(10):
        while (message := await call.read()).WhichOneof("kind") != "heartbeat_ack":
            pass
    return message.heartbeat_ack


def _beat(seq: int, **usage: Any) -> agent_pb2.AgentMessage:
    return agent_pb2.AgentMessage(heartbeat=agent_pb2.Heartbeat(seq=seq, usage=types_pb2.Usage(**usage)))


async def test_the_welcome_and_echoes_tell_the_fleet_paced_interval(
    fleet: tuple[Runtime, agent_pb2_grpc.AgentGatewayStub],
) -> None:
    _, stub = fleet
    calls = []
    intervals = []
    for i in range(4):
        call, welcome = await _connect(stub, f"a{i}")
        calls.append(call)
        intervals.append(welcome.heartbeat_interval_s)
    # 1 heartbeat a second: up to 2 agents the configured 2 s, then one more second per agent.
    assert intervals == [2.0, 2.0, 3.0, 4.0]
    # The first agent learns the longer interval from its next echo.
    await calls[0].write(_beat(1))
    assert (await _echo(calls[0])).heartbeat_interval_s == 4.0
    calls[3].cancel()
    await calls[1].write(_beat(1))
    echo = await _echo(calls[1])
    assert echo.seq == 1 and echo.heartbeat_interval_s in (3.0, 4.0)  # 3.0 once a3's end is applied
    for call in calls:
        call.cancel()


async def test_heartbeats_of_one_gathering_are_one_event_each_applied_and_echoed(
    fleet: tuple[Runtime, agent_pb2_grpc.AgentGatewayStub], monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime, stub = fleet
    agents = [await _connect(stub, f"b{i}") for i in range(5)]
    seen_before = {f"b{i}": runtime.machine.agents[f"b{i}"].last_seen for i in range(5)}
    posted: list[Any] = []
    post_event = runtime.post_event

    def recording(event: Any, then: Any = None) -> asyncio.Future[Any]:
        posted.append(event)
        return post_event(event, then)

    monkeypatch.setattr(runtime, "post_event", recording)
    monkeypatch.setattr(gateway, "HEARTBEAT_GATHER_S", 1.0)  # all five surely land in one gathering
    for i, (call, _) in enumerate(agents):
        await call.write(_beat(100 + i, cpu_percent=5.0))
    echoes = [await _echo(call) for call, _ in agents]
    assert [e.seq for e in echoes] == [100, 101, 102, 103, 104]  # each its own seq, on its own stream
    batches = [e for e in posted if isinstance(e, ev.AgentHeartbeats)]
    assert len(batches) == 1 and sorted(b.seq for b in batches[0].beats) == [100, 101, 102, 103, 104]
    for name, before in seen_before.items():
        assert runtime.machine.agents[name].last_seen >= before
        assert runtime.usage[name].cpu_percent == 5.0
    for call, _ in agents:
        call.cancel()


async def test_a_bad_heartbeat_in_a_gathering_ends_only_its_stream(
    fleet: tuple[Runtime, agent_pb2_grpc.AgentGatewayStub], monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime, stub = fleet
    monkeypatch.setattr(gateway, "HEARTBEAT_GATHER_S", 1.0)
    (good, _), (bad, _), (negative, _) = [await _connect(stub, name) for name in ("good", "nan", "negative")]
    await good.write(_beat(1))
    await bad.write(_beat(1, cpu_percent=math.nan))
    await negative.write(_beat(1, memory_used_mb=-5))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        async with asyncio.timeout(10):
            while await bad.read() is not grpc.aio.EOF:
                pass
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "heartbeat.usage.cpu_percent" in (refused.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as second:
        async with asyncio.timeout(10):
            while await negative.read() is not grpc.aio.EOF:
                pass
    assert "heartbeat.usage.memory_used_mb" in (second.value.details() or "")
    # The good heartbeat of the same gathering is applied and echoed; its agent stays.
    assert (await _echo(good)).seq == 1
    assert set(runtime.sessions) == {"good"}
    assert runtime.machine.agents["good"].state.name == "CONNECTED"
    good.cancel()
