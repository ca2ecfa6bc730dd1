"""Chunked submission under auth (issue 13): uploads are per caller, namespaces are checked at the
first chunk, and one audit record marks the end of each upload (not one per chunk)."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from corral.v1 import admin_pb2, orchestrator_pb2
from corral.v1 import types_pb2 as pb

from .test_access import Metadata, Secured, md, secured

__all__ = ["secured"]  # the fixture, shared with test_access

OR = orchestrator_pb2


def chunks(upload_id: str, count: int, namespace: str = "") -> list[OR.AppendTasksRequest]:
    tasks = [pb.TaskSpec(name=f"t{i}", agent_type="ext", payload_json=b"{}") for i in range(count)]
    requests = [
        OR.AppendTasksRequest(upload_id=upload_id, index=i, chunks=count, tasks=[t]) for i, t in enumerate(tasks)
    ]
    requests[0].submit.spec.name = "chunked"
    requests[0].submit.spec.namespace = namespace
    return requests


async def refused(secured: Secured, request: OR.AppendTasksRequest, metadata: Metadata) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await secured.orchestrator.AppendTasks(request, metadata=metadata)
    return caught.value


async def test_another_caller_cannot_append_to_an_upload(secured: Secured) -> None:
    alice, _ = await secured.token("submitter")
    mallory, _ = await secured.token("submitter")
    viewer, _ = await secured.token("viewer")
    requests = chunks("up-shared-name", 3)
    await secured.orchestrator.AppendTasks(requests[0], metadata=md(alice))
    assert (await refused(secured, requests[1], md(mallory))).code() is grpc.StatusCode.NOT_FOUND
    assert (await refused(secured, requests[1], md(viewer))).code() is grpc.StatusCode.PERMISSION_DENIED
    await secured.orchestrator.AppendTasks(requests[1], metadata=md(alice))
    done = await secured.orchestrator.AppendTasks(requests[2], metadata=md(alice))
    assert done.submitted.workflow_id.startswith("wf-")


async def test_the_namespace_is_checked_at_the_first_chunk(secured: Secured) -> None:
    alice, _ = await secured.token("submitter")  # covers "default" only
    error = await refused(secured, chunks("up-ns", 2, namespace="team-a")[0], md(alice))
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED and "team-a" in (error.details() or "")


async def test_one_audit_record_per_upload(secured: Secured) -> None:
    alice, info = await secured.token("submitter")
    good = chunks("up-good", 3)
    for request in good[:2]:
        await secured.orchestrator.AppendTasks(request, metadata=md(alice))
    await secured.orchestrator.AppendTasks(good[0], metadata=md(alice))  # a retried chunk: no record either
    workflow_id = (await secured.orchestrator.AppendTasks(good[2], metadata=md(alice))).submitted.workflow_id
    bad = chunks("up-bad", 2)
    bad[1].tasks[0].name = "t0"  # a duplicate name: the upload fails at its last chunk
    await secured.orchestrator.AppendTasks(bad[0], metadata=md(alice))
    assert (await refused(secured, bad[1], md(alice))).code() is grpc.StatusCode.INVALID_ARGUMENT
    principal = f"token:{info.token_id}"
    records: list[admin_pb2.AuditRecord] = []
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and len(records) < 2:
        listed = await secured.admin.ListAudit(admin_pb2.ListAuditRequest(principal=principal), metadata=secured.root)
        records = list(listed.records)
        await asyncio.sleep(0.02)
    seen = [(r.method.rsplit("/", 1)[1], r.target, r.namespace, r.code) for r in records]
    assert seen == [
        ("AppendTasks", workflow_id, "default", "OK"),
        ("AppendTasks", "upload:up-bad", "default", "INVALID_ARGUMENT"),
    ]
