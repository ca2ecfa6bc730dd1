"""Issue 13: the agent beats at the interval of the controller's latest echo (it paces a big fleet)."""

from __future__ import annotations

from corral.agent.session import MAX_HEARTBEAT_S
from corral.v1 import agent_pb2

from .conftest import AgentFactory, FakeGateway, eventually


def _echo(seq: int, interval: float) -> agent_pb2.ControllerMessage:
    return agent_pb2.ControllerMessage(heartbeat_ack=agent_pb2.HeartbeatAck(seq=seq, heartbeat_interval_s=interval))


async def test_an_echo_sets_the_heartbeat_interval(make_agent: AgentFactory, gateway: FakeGateway) -> None:
    # The Welcome's: 6 heartbeats would take 15 s. The echo's applies from the next beat (3 s).
    gateway.heartbeat_interval_s = 3.0
    gateway.fence_after_s = 30.0
    agent, _ = await make_agent()
    conn = await gateway.connection()
    first = await eventually(conn.heartbeats, what="the first heartbeat")  # sent at once
    assert agent.session is not None and agent.session.heartbeat_interval_s == 3.0
    conn.send(_echo(first[0].seq, 0.05))
    await eventually(lambda: len(conn.heartbeats()) >= 6, timeout=10.0, what="heartbeats at the echo's interval")
    assert agent.session.heartbeat_interval_s == 0.05
    # An echo without an interval (an older controller), or an absurd one, changes nothing.
    beats = conn.heartbeats()
    conn.send(_echo(beats[-1].seq, 0.0))
    conn.send(_echo(beats[-1].seq, MAX_HEARTBEAT_S + 1))
    await eventually(lambda: len(conn.heartbeats()) >= len(beats) + 3, what="more heartbeats")
    assert agent.session.heartbeat_interval_s == 0.05
