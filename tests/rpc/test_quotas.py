"""Namespace weights and quotas over gRPC: validated with field paths, persisted, enforced and listed."""

from __future__ import annotations

import asyncio

import grpc
import grpc.aio
import pytest

from corral.controller.store.sqlite import SqliteStore
from corral.v1 import admin_pb2, admin_pb2_grpc, agent_pb2, orchestrator_pb2, scheduler_pb2, types_pb2

from .conftest import Controller, bad_request, shell_task, workflow_spec


def _admin(controller: Controller) -> admin_pb2_grpc.AdminStub:
    return admin_pb2_grpc.AdminStub(controller.channel)


async def test_bad_quotas_are_refused_with_their_field_and_change_nothing(controller: Controller) -> None:
    admin = _admin(controller)
    await admin.CreateNamespace(admin_pb2.CreateNamespaceRequest(name="team"))
    for quota, field in (
        (admin_pb2.NamespaceQuota(weight=0), "quota.weight"),
        (admin_pb2.NamespaceQuota(weight=float("nan")), "quota.weight"),
        (admin_pb2.NamespaceQuota(weight=1, max_cpu=-1), "quota.max_cpu"),
        (admin_pb2.NamespaceQuota(weight=1, max_running=-3), "quota.max_running"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await admin.SetNamespaceQuota(admin_pb2.SetNamespaceQuotaRequest(name="team", quota=quota))
        assert [f for f, _ in bad_request(caught.value)] == [field]
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await admin.SetNamespaceQuota(
            admin_pb2.SetNamespaceQuotaRequest(name="nope", quota=admin_pb2.NamespaceQuota(weight=1))
        )
    assert missing.value.code() is grpc.StatusCode.NOT_FOUND
    rows = {r.namespace: r for r in (await admin.ListQuotas(admin_pb2.ListQuotasRequest())).namespaces}
    assert rows["team"].quota.weight == 1.0 and rows["team"].quota.max_cpu == 0


async def test_a_quota_is_stored_enforced_and_explained(controller: Controller) -> None:
    admin = _admin(controller)
    await admin.CreateNamespace(admin_pb2.CreateNamespaceRequest(name="team"))
    quota = admin_pb2.NamespaceQuota(weight=2.5, max_running=1)
    await admin.SetNamespaceQuota(admin_pb2.SetNamespaceQuotaRequest(name="team", quota=quota))
    call = controller.gateway.Connect()
    inventory = types_pb2.Inventory(cpu_cores=4, memory_mb=4096, slots=4)
    hello = agent_pb2.Hello(agent_id="a1", name="a1", agent_types=["shell"], inventory=inventory)
    await call.write(agent_pb2.AgentMessage(hello=hello))
    submitted = await controller.orchestrator.SubmitWorkflow(
        orchestrator_pb2.SubmitWorkflowRequest(
            spec=workflow_spec("w", [shell_task("t1"), shell_task("t2")], namespace="team"), start=True
        )
    )
    async with asyncio.timeout(10):
        while (message := await call.read()).WhichOneof("kind") != "assign":
            pass
    assert len(message.assign.assignments) == 1  # the agent has room for more; the quota says 1
    status = await controller.orchestrator.GetWorkflowStatus(
        orchestrator_pb2.GetWorkflowStatusRequest(workflow_id=submitted.workflow_id, include_tasks=True)
    )
    (waiting,) = [t for t in status.status.tasks if t.task_id != message.assign.assignments[0].task_id]
    explained = await controller.scheduler.ExplainTask(scheduler_pb2.ExplainTaskRequest(task_id=waiting.task_id))
    assert explained.last_plan_reason.startswith("namespace 'team' at quota: running tasks 1 in use of 1")
    assert explained.reason.startswith("namespace 'team' at quota: running tasks 1 in use of 1")
    rows = {r.namespace: r for r in (await admin.ListQuotas(admin_pb2.ListQuotasRequest())).namespaces}
    assert rows["team"].running == 1 and rows["team"].quota.weight == 2.5
    assert rows["team"].weighted_share == pytest.approx(rows["team"].dominant_share / 2.5)
    assert rows["default"].running == 0
    call.cancel()
    store = SqliteStore(controller.db)
    try:
        (team,) = [n for n in store.load().access.namespaces if n.name == "team"]
    finally:
        store.close()
    assert (team.weight, team.max_running) == (2.5, 1)
