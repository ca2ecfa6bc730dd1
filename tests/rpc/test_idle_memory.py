"""Issue 12, memory after idle: an eviction that freed a big share of the tasks in memory is followed
by a full garbage collection (CPython's free lists pin pymalloc arenas until one runs) and a heap
trim; small evictions only trim. Real runtime, server and SQLite file; eviction as the core does it."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import pytest

from corral.controller.heaptrim import HeapTrim
from corral.controller.lifecycle import Lifecycle
from corral.controller.rpc.gateway import deliver
from corral.controller.runtime import Runtime
from corral.controller.server import build_server
from corral.controller.store.sqlite import SqliteStore
from corral.v1 import orchestrator_pb2, orchestrator_pb2_grpc

from .conftest import evict_workflows, shell_task, workflow_spec


class Rig:
    def __init__(self, runtime: Runtime, lifecycle: Lifecycle, channel: grpc.aio.Channel) -> None:
        self.rt, self.lifecycle = runtime, lifecycle
        self.orchestrator = orchestrator_pb2_grpc.OrchestratorStub(channel)
        self.collections: list[int] = []
        self.trims: list[int] = []
        lifecycle.gc_collect = lambda: self.collections.append(len(runtime.machine.tasks))
        lifecycle.heap = HeapTrim(lambda: self.trims.append(1), min_gap_s=0.0)
        lifecycle.collect_min_tasks = 5

    async def submit(self, tasks: int, *, cancel: bool = True) -> str:
        spec = workflow_spec(f"wf-{tasks}", [shell_task(f"t{i}") for i in range(tasks)])
        answer = await self.orchestrator.SubmitWorkflow(orchestrator_pb2.SubmitWorkflowRequest(spec=spec))
        if cancel:
            await self.orchestrator.CancelWorkflow(
                orchestrator_pb2.CancelWorkflowRequest(workflow_id=answer.workflow_id)
            )
        await self.lifecycle.after_evictions()  # a pass of the timer sees it in memory
        return answer.workflow_id

    async def evict(self, *workflow_ids: str) -> None:
        await evict_workflows(self.rt, workflow_ids)
        await self.lifecycle.after_evictions()


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    runtime = Runtime(SqliteStore(tmp_path / "c.db"), encode_actions=deliver)
    await runtime.start()
    runtime.lifecycle = lifecycle = Lifecycle(runtime)
    server = await build_server(runtime, "127.0.0.1:0")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield Rig(runtime, lifecycle, channel)
    finally:
        await channel.close()
        await server.stop(0)
        await runtime.stop()


def test_the_daemon_collects_with_the_interpreters_full_collection(tmp_path: Path) -> None:
    lifecycle = Lifecycle(Runtime(SqliteStore(tmp_path / "c.db")))
    assert lifecycle.gc_collect is gc.collect


async def test_a_big_eviction_collects_once_then_trims(rig: Rig) -> None:
    big = await rig.submit(8)
    await rig.evict(big)
    assert rig.collections == [0]  # after the workflow's tasks left memory
    assert rig.trims == [1] and rig.lifecycle.collections == 1
    await rig.lifecycle.after_evictions()  # nothing new evicted: nothing more to give back
    assert rig.collections == [0] and rig.trims == [1]


async def test_a_small_eviction_only_trims(rig: Rig) -> None:
    small = await rig.submit(2)
    await rig.evict(small)
    assert rig.collections == [] and rig.trims == [1]


async def test_no_collection_while_more_tasks_stay_in_memory_than_left(rig: Rig) -> None:
    await rig.submit(12, cancel=False)  # still pending: stays in memory
    gone = await rig.submit(6)
    await rig.evict(gone)
    assert rig.collections == []  # 6 left, 12 stay: a full collection would cost more than it gives
    assert rig.trims == [1]
