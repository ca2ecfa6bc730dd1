"""Issue 12 over gRPC: listings merge memory with evicted workflows, ``CollectGarbage`` and
namespace retention (validated, persisted), on a real server and SQLite file with a fake clock."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest

from corral.controller.lifecycle import Lifecycle
from corral.controller.rpc.gateway import deliver
from corral.controller.runtime import Runtime
from corral.controller.server import build_server
from corral.controller.store.sqlite import SqliteStore
from corral.v1 import admin_pb2, admin_pb2_grpc, orchestrator_pb2, orchestrator_pb2_grpc, types_pb2

from .conftest import bad_request, evict_workflows, shell_task, workflow_spec

CANCELLED = types_pb2.WORKFLOW_STATE_CANCELLED


class Clock:
    """Wall-like seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class Rig:
    def __init__(self, runtime: Runtime, channel: grpc.aio.Channel, clock: Clock, db: Path) -> None:
        self.rt, self.clock, self.db = runtime, clock, db
        self.orchestrator = orchestrator_pb2_grpc.OrchestratorStub(channel)
        self.admin = admin_pb2_grpc.AdminStub(channel)

    async def submit(self, name: str, *, cancel: bool = True) -> str:
        spec = workflow_spec(name, [shell_task("a"), shell_task("b", "a")])
        answer = await self.orchestrator.SubmitWorkflow(orchestrator_pb2.SubmitWorkflowRequest(spec=spec))
        self.clock.now += 1  # distinct creation times: listings are newest first
        if cancel:
            await self.orchestrator.CancelWorkflow(
                orchestrator_pb2.CancelWorkflowRequest(workflow_id=answer.workflow_id)
            )
        return answer.workflow_id

    async def evict(self, *workflow_ids: str) -> None:
        await evict_workflows(self.rt, workflow_ids)

    async def listed(self, **fields: object) -> list[str]:
        ids: list[str] = []
        token = ""
        while True:
            request = orchestrator_pb2.ListWorkflowsRequest(limit=2, page_token=token, **fields)  # type: ignore[arg-type]
            answer = await self.orchestrator.ListWorkflows(request)
            ids.extend(w.workflow_id for w in answer.workflows)
            token = answer.next_page_token
            if not token:
                return ids


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    clock = Clock()
    db = tmp_path / "c.db"
    runtime = Runtime(SqliteStore(db), clock=clock, encode_actions=deliver)
    await runtime.start()
    runtime.lifecycle = Lifecycle(runtime, retain_s=3600.0)
    server = await build_server(runtime, "127.0.0.1:0")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield Rig(runtime, channel, clock, db)
    finally:
        await channel.close()
        await server.stop(0)
        await runtime.stop()


async def test_listing_pages_through_memory_and_evicted_workflows(rig: Rig) -> None:
    ids = [await rig.submit(f"wf-{i}", cancel=i != 5) for i in range(6)]  # wf-5 stays pending
    await rig.evict(ids[0], ids[2], ids[3])
    newest_first = list(reversed(ids))
    assert await rig.listed() == newest_first
    assert await rig.listed(states=[CANCELLED]) == [i for i in newest_first if i != ids[5]]
    assert await rig.listed(name_prefix="wf-2") == [ids[2]]
    answer = await rig.orchestrator.ListWorkflows(orchestrator_pb2.ListWorkflowsRequest())
    summaries = {w.workflow_id: w for w in answer.workflows}
    evicted, live = summaries[ids[2]], summaries[ids[1]]
    assert evicted.task_total == live.task_total == 2
    assert dict(evicted.task_counts) == dict(live.task_counts) == {"cancelled": 2}
    assert evicted.created_at.seconds > 0 and evicted.finished_at.seconds >= evicted.created_at.seconds


async def test_status_of_an_evicted_workflow_comes_back_from_the_store(rig: Rig) -> None:
    workflow_id = await rig.submit("gone")
    await rig.evict(workflow_id)
    assert workflow_id not in rig.rt.machine.workflows
    status = await rig.orchestrator.GetWorkflowStatus(
        orchestrator_pb2.GetWorkflowStatusRequest(workflow_id=workflow_id[:8], include_tasks=True)
    )
    assert status.status.workflow_id == workflow_id and status.status.state == CANCELLED
    assert [t.name for t in status.status.tasks] == ["a", "b"]
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await rig.orchestrator.GetWorkflowStatus(orchestrator_pb2.GetWorkflowStatusRequest(workflow_id="no-such"))
    assert missing.value.code() is grpc.StatusCode.NOT_FOUND


async def test_collect_garbage_lists_then_deletes_what_is_past_retention(rig: Rig) -> None:
    old = [await rig.submit(f"old-{i}") for i in range(2)]
    await rig.evict(old[0])
    pending = await rig.submit("pending", cancel=False)
    rig.clock.now += 3600 + 10
    fresh = await rig.submit("fresh")
    dry = await rig.admin.CollectGarbage(admin_pb2.CollectGarbageRequest(dry_run=True))
    assert dry.dry_run and dry.deleted == 0
    assert sorted(w.workflow_id for w in dry.workflows) == sorted(old)
    assert {w.state for w in dry.workflows} == {"cancelled"} and dry.workflows[0].task_total == 2
    assert "3600s" in dry.retention
    assert len(await rig.listed()) == 4  # a dry run deletes nothing
    done = await rig.admin.CollectGarbage(admin_pb2.CollectGarbageRequest())
    assert done.deleted == 2 and sorted(w.workflow_id for w in done.workflows) == sorted(old)
    assert await rig.listed() == [fresh, pending]
    store = SqliteStore(rig.db)
    try:
        assert store.load_workflow(old[0]) is None and store.load_workflow(old[1]) is None
        assert store.load_workflow(pending) is not None
    finally:
        store.close()
    again = await rig.admin.CollectGarbage(admin_pb2.CollectGarbageRequest())
    assert again.deleted == 0 and list(again.workflows) == []


async def test_a_namespace_keeps_its_own_retention(rig: Rig) -> None:
    workflow_id = await rig.submit("kept")
    answer = await rig.admin.SetNamespaceRetention(admin_pb2.SetNamespaceRetentionRequest(name="default"))
    assert "default=forever" in answer.retention
    rig.clock.now += 10 * 86400
    dry = await rig.admin.CollectGarbage(admin_pb2.CollectGarbageRequest(dry_run=True))
    assert list(dry.workflows) == []
    back = await rig.admin.SetNamespaceRetention(admin_pb2.SetNamespaceRetentionRequest(name="default", inherit=True))
    assert "default=" not in back.retention
    dry = await rig.admin.CollectGarbage(admin_pb2.CollectGarbageRequest(dry_run=True))
    assert [w.workflow_id for w in dry.workflows] == [workflow_id]
    await rig.admin.SetNamespaceRetention(admin_pb2.SetNamespaceRetentionRequest(name="default", retain_s=86400 * 30))
    store = SqliteStore(rig.db)
    try:
        (namespace,) = [n for n in store.load().access.namespaces if n.name == "default"]
        assert namespace.retain_s == 86400 * 30  # persisted
    finally:
        store.close()


async def test_bad_retention_is_refused_with_its_field(rig: Rig) -> None:
    for request, field in (
        (admin_pb2.SetNamespaceRetentionRequest(name="default", retain_s=-1), "retain_s"),
        (admin_pb2.SetNamespaceRetentionRequest(name="default", retain_s=float("nan")), "retain_s"),
        (admin_pb2.SetNamespaceRetentionRequest(name="default", retain_s=5, inherit=True), "inherit"),
        (admin_pb2.SetNamespaceRetentionRequest(name="", retain_s=5), "name"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await rig.admin.SetNamespaceRetention(request)
        assert [f for f, _ in bad_request(caught.value)] == [field]
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await rig.admin.SetNamespaceRetention(admin_pb2.SetNamespaceRetentionRequest(name="nope", retain_s=5))
    assert missing.value.code() is grpc.StatusCode.NOT_FOUND
    assert all(n.retain_s is None for n in rig.rt.machine.access.namespaces.values())


async def test_a_restart_with_eviction_on_reads_no_finished_workflow(tmp_path: Path) -> None:
    """A boot reads finished workflows only by their keys: memory does not grow with the history."""
    from corral.controller.core.machine import MachineConfig

    db = tmp_path / "c.db"
    clock = Clock()

    async def serve(evict_after_s: float) -> tuple[Runtime, Any, grpc.aio.Channel]:
        runtime = Runtime(
            SqliteStore(db), MachineConfig(evict_after_s=evict_after_s), clock=clock, encode_actions=deliver
        )
        await runtime.start()
        runtime.lifecycle = Lifecycle(runtime, retain_s=0.0)
        server = await build_server(runtime, "127.0.0.1:0")
        return runtime, server, grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")

    runtime, server, channel = await serve(30.0)
    rig = Rig(runtime, channel, clock, db)
    spec = workflow_spec("keyed", [shell_task("a")])
    first = await rig.orchestrator.SubmitWorkflow(
        orchestrator_pb2.SubmitWorkflowRequest(spec=spec, idempotency_key="k1")
    )
    await rig.orchestrator.CancelWorkflow(orchestrator_pb2.CancelWorkflowRequest(workflow_id=first.workflow_id))
    pending = await rig.submit("pending", cancel=False)
    await channel.close()
    await server.stop(0)
    await runtime.stop()

    for evict_after_s, finished_in_memory in ((0.0, True), (30.0, False)):  # eviction off: the full history
        runtime, server, channel = await serve(evict_after_s)
        try:
            assert pending in runtime.machine.workflows
            assert (first.workflow_id in runtime.machine.workflows) is finished_in_memory
            assert runtime.machine.idempotency[("default", "k1")] == first.workflow_id
            rig = Rig(runtime, channel, clock, db)
            status = await rig.orchestrator.GetWorkflowStatus(
                orchestrator_pb2.GetWorkflowStatusRequest(workflow_id=first.workflow_id, include_tasks=True)
            )
            assert status.status.state == CANCELLED and [t.name for t in status.status.tasks] == ["a"]
            again = await rig.orchestrator.SubmitWorkflow(
                orchestrator_pb2.SubmitWorkflowRequest(spec=spec, idempotency_key="k1")
            )
            assert again.workflow_id == first.workflow_id  # the key still finds it
        finally:
            await channel.close()
            await server.stop(0)
            await runtime.stop()
