"""Standby and leader in one process: real gRPC servers, the real lease on PostgreSQL.

Two nodes share one SQLite file as their store (only the leader opens it for a term): this checks
the lifecycle (standby redirects, health, take-over, step-down, rebuild) without the PostgreSQL
store; the fence inside the database is covered by tests/ha/test_fencing.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from corral.controller.core.machine import MachineConfig
from corral.controller.daemon import parse_args
from corral.controller.ha.lease import LeaseTimings, connector
from corral.controller.ha.node import HaNode, NodeOptions
from corral.controller.ha.standby import LEADER_METADATA
from corral.controller.store.sqlite import SqliteStore
from corral.v1 import orchestrator_pb2, orchestrator_pb2_grpc

TTL = 1.5


async def until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


class Nodes:
    """Start nodes in this event loop; every one is stopped at the end."""

    def __init__(self, tmp_path: Path, dsn: str) -> None:
        self.db = tmp_path / "c.db"
        self.dsn = dsn
        self.tmp_path = tmp_path
        self.running: list[tuple[HaNode, asyncio.Task[int]]] = []

    async def start(self, name: str) -> HaNode:
        args = parse_args(["--listen", "127.0.0.1:0", "--db", str(self.db), "--audit-retain", "1d"])
        timings = LeaseTimings(TTL)
        options = NodeOptions(
            open_store=lambda: SqliteStore(self.db),
            connect=connector(self.dsn, timings),
            timings=timings,
            config=MachineConfig(adopt_grace_s=1.0),
            holder=name,
        )
        node = HaNode(args, None, options)
        task = asyncio.create_task(node.run())
        self.running.append((node, task))
        await until(lambda: node.keeper is not None and node.address != "", 10, f"{name} to bind")
        return node

    async def stop(self, node: HaNode) -> None:
        for index, (each, task) in enumerate(self.running):
            if each is node:
                node.request_stop()
                assert await asyncio.wait_for(task, 15) == 0
                del self.running[index]
                return


@pytest.fixture
async def nodes(tmp_path: Path, pg_dsn: str) -> AsyncIterator[Nodes]:
    group = Nodes(tmp_path, pg_dsn)
    yield group
    for node, _ in list(group.running):
        await group.stop(node)


async def health(address: str) -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        answer = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        return int(answer.status)


async def list_call(address: str) -> tuple[grpc.StatusCode, str]:
    """ListWorkflows: OK on the leader; on a standby UNAVAILABLE and the corral-leader value."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = orchestrator_pb2_grpc.OrchestratorStub(channel)
        call = stub.ListWorkflows(orchestrator_pb2.ListWorkflowsRequest(), timeout=5)
        try:
            await call
        except grpc.aio.AioRpcError as exc:
            leader = dict(exc.trailing_metadata() or ()).get(LEADER_METADATA)
            return exc.code(), str(leader)
        return grpc.StatusCode.OK, ""


async def test_a_standby_redirects_and_takes_over_when_the_leader_stops(nodes: Nodes) -> None:
    first = await nodes.start("a")
    await until(lambda: first.runtime is not None and first.standby is None, 10, "a to lead")
    second = await nodes.start("b")
    assert await health(first.address) == health_pb2.HealthCheckResponse.SERVING
    assert await health(second.address) == health_pb2.HealthCheckResponse.NOT_SERVING
    assert await list_call(first.address) == (grpc.StatusCode.OK, "")
    await until(lambda: second.keeper is not None and second.keeper.view.leader_address() != "", 5, "b to read")
    assert await list_call(second.address) == (grpc.StatusCode.UNAVAILABLE, first.address)
    # The agent stream too: a standby holds no sessions.
    async with grpc.aio.insecure_channel(second.address) as channel:
        stream = channel.stream_stream("/corral.v1.AgentGateway/Connect")(iter([b""]))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stream.read()
        assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
        assert dict(refused.value.trailing_metadata() or ()).get(LEADER_METADATA) == first.address

    epoch = first.epoch
    assert epoch is not None
    await nodes.stop(first)  # releases the lease on the way out: b need not wait for the expiry
    took = await until(lambda: second.runtime is not None and second.standby is None, 3 * TTL, "b to lead")
    assert second.epoch == epoch + 1
    assert await health(second.address) == health_pb2.HealthCheckResponse.SERVING
    assert await list_call(second.address) == (grpc.StatusCode.OK, "")
    assert took < 3 * TTL


async def test_a_leader_whose_lease_is_taken_steps_down_and_rebuilds(nodes: Nodes) -> None:
    node = await nodes.start("a")
    await until(lambda: node.runtime is not None, 10, "a to lead")
    epoch = node.epoch
    assert epoch is not None
    with psycopg.connect(nodes.dsn, autocommit=True) as conn:  # another controller's term (a freeze)
        conn.execute(
            "UPDATE corral_lease SET epoch = epoch + 1, holder = 'z', address = 'z:9', "
            "expires_at = now() + interval '2 seconds'"
        )
    await until(lambda: node.standby is not None, 2 * TTL, "a to step down")
    assert node.step_downs == ["lease lost"]
    assert await health(node.address) == health_pb2.HealthCheckResponse.NOT_SERVING
    assert await list_call(node.address) == (grpc.StatusCode.UNAVAILABLE, "z:9")
    # z never renews: once its term expires, a leads again, rebuilt from the store, epoch + 2.
    await until(lambda: node.runtime is not None and node.standby is None, 2 + 3 * TTL, "a to lead again")
    assert node.epoch == epoch + 2 and node.terms == 2
    assert await list_call(node.address) == (grpc.StatusCode.OK, "")
