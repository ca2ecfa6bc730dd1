"""Tokens, join tokens, secrets and the audit log on an in-process controller (real gRPC, real SQLite)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from corral.controller.access_boot import bootstrap_admin_token, use_secret_box
from corral.controller.rpc import permissions
from corral.controller.rpc.gateway import deliver
from corral.controller.runtime import Runtime
from corral.controller.secretbox import SecretBox, hash_token
from corral.controller.server import Server, build_server
from corral.controller.store.sqlite import SqliteStore
from corral.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    agent_pb2,
    agent_pb2_grpc,
    orchestrator_pb2,
    orchestrator_pb2_grpc,
    scheduler_pb2,
    scheduler_pb2_grpc,
)
from corral.v1 import types_pb2 as pb
from tests.rpc.conftest import bad_request

from .test_roles import declared_rpcs, short

Metadata = tuple[tuple[str, str], ...]


@dataclass
class Secured:
    runtime: Runtime
    server: Server
    channel: grpc.aio.Channel
    db: Path
    admin_token: str
    admin: admin_pb2_grpc.AdminStub
    orchestrator: orchestrator_pb2_grpc.OrchestratorStub
    scheduler: scheduler_pb2_grpc.SchedulerStub
    gateway: agent_pb2_grpc.AgentGatewayStub

    @property
    def root(self) -> Metadata:
        return md(self.admin_token)

    async def token(self, role: str, *namespaces: str, **extra: Any) -> tuple[str, admin_pb2.TokenInfo]:
        request = admin_pb2.CreateTokenRequest(role=role, namespaces=list(namespaces), **extra)
        response = await self.admin.CreateToken(request, metadata=self.root)
        return response.token, response.info

    def stored_bytes(self) -> bytes:
        """Every byte of the database files (the WAL holds recent commits)."""
        return b"".join(p.read_bytes() for p in self.db.parent.glob(self.db.name + "*"))


def md(token: str) -> Metadata:
    return (("authorization", f"Bearer {token}"),)


@pytest.fixture
async def secured(tmp_path: Path) -> AsyncIterator[Secured]:
    db = tmp_path / "c.db"
    runtime = Runtime(SqliteStore(db), encode_actions=deliver)
    box = SecretBox.from_key_file(tmp_path / "secret.key")
    await runtime.start()
    use_secret_box(runtime, box)
    token_file = tmp_path / "admin.token"
    assert await bootstrap_admin_token(runtime, token_file)
    assert not await bootstrap_admin_token(runtime, tmp_path / "second.token")  # one is enough
    server = await build_server(runtime, "127.0.0.1:0", auth=True, secret_box=box)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield Secured(
            runtime,
            server,
            channel,
            db,
            token_file.read_text().strip(),
            admin_pb2_grpc.AdminStub(channel),
            orchestrator_pb2_grpc.OrchestratorStub(channel),
            scheduler_pb2_grpc.SchedulerStub(channel),
            agent_pb2_grpc.AgentGatewayStub(channel),
        )
    finally:
        await channel.close()
        await server.stop(0)
        await runtime.stop()
    assert runtime.failure is None


def test_the_table_names_every_declared_rpc() -> None:
    paths = {short(m): f"/{m.containing_service.full_name}/{m.name}" for m in declared_rpcs()}
    missing = [name for name, path in paths.items() if path not in permissions.METHODS]
    assert not missing


async def test_a_method_missing_from_the_table_is_denied(secured: Secured, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(permissions.METHODS, "/corral.v1.Orchestrator/ListWorkflows")  # type: ignore[arg-type]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await secured.orchestrator.ListWorkflows(orchestrator_pb2.ListWorkflowsRequest(), metadata=secured.root)
    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "no entry in the permission table" in (caught.value.details() or "")


async def test_tokens_are_stored_only_as_hashes(secured: Secured) -> None:
    token, info = await secured.token("viewer", description="ci dashboards")
    assert info.role == "viewer" and list(info.namespaces) == ["default"] and info.created_by.startswith("token:")
    stored = secured.stored_bytes()
    assert token.encode() not in stored and secured.admin_token.encode() not in stored
    assert hash_token(token).encode() in stored
    listed = await secured.admin.ListTokens(admin_pb2.ListTokensRequest(), metadata=secured.root)
    assert info.token_id in [t.token_id for t in listed.tokens]
    assert token not in str(listed)


async def test_an_expired_token_is_refused(secured: Secured) -> None:
    token, _ = await secured.token("viewer", ttl_s=60)
    await secured.orchestrator.ListWorkflows(orchestrator_pb2.ListWorkflowsRequest(), metadata=md(token))
    # Expiry by the controller's clock (the seam), moved past the TTL instead of waiting it out.
    real_clock = secured.runtime.clock
    secured.runtime.clock = lambda: real_clock() + 61
    try:
        with pytest.raises(grpc.aio.AioRpcError) as expired:
            await secured.orchestrator.ListWorkflows(orchestrator_pb2.ListWorkflowsRequest(), metadata=md(token))
    finally:
        secured.runtime.clock = real_clock
    assert expired.value.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_bad_token_requests_change_nothing(secured: Secured) -> None:
    before = await secured.admin.ListTokens(admin_pb2.ListTokensRequest(include_revoked=True), metadata=secured.root)
    for request, field in (
        (admin_pb2.CreateTokenRequest(role="king"), "role"),
        (admin_pb2.CreateTokenRequest(role="viewer", ttl_s=float("nan")), "ttl_s"),
        (admin_pb2.CreateTokenRequest(role="viewer", ttl_s=-1), "ttl_s"),
        (admin_pb2.CreateTokenRequest(role="viewer", uses=3), "role"),
        (admin_pb2.CreateTokenRequest(role="agent", uses=-1), "uses"),
        (admin_pb2.CreateTokenRequest(role="viewer", namespaces=["bad name"]), "namespaces[0]"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await secured.admin.CreateToken(request, metadata=secured.root)
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT, request
        assert bad_request(caught.value)[0][0] == field
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await secured.admin.CreateToken(
            admin_pb2.CreateTokenRequest(role="viewer", namespaces=["ghost"]), metadata=secured.root
        )
    assert missing.value.code() is grpc.StatusCode.NOT_FOUND
    after = await secured.admin.ListTokens(admin_pb2.ListTokensRequest(include_revoked=True), metadata=secured.root)
    assert after == before


async def test_join_tokens_check_pattern_uses_and_ttl(secured: Secured) -> None:
    join, info = await secured.token(
        "agent", name_pattern="gpu-*", uses=1, labels={"gpu": "a100"}, agent_types=["python"], ttl_s=60
    )
    assert info.uses == 1 and info.used == 0
    with pytest.raises(grpc.aio.AioRpcError) as pattern:
        await secured.gateway.Join(agent_pb2.JoinRequest(join_token=join, name="cpu-1"))
    assert pattern.value.code() is grpc.StatusCode.PERMISSION_DENIED and "gpu-*" in (pattern.value.details() or "")
    joined = await secured.gateway.Join(agent_pb2.JoinRequest(join_token=join, name="gpu-1"))
    assert dict(joined.labels) == {"gpu": "a100"} and list(joined.agent_types) == ["python"]
    assert joined.credential.encode() not in secured.stored_bytes()
    with pytest.raises(grpc.aio.AioRpcError) as used_up:
        await secured.gateway.Join(agent_pb2.JoinRequest(join_token=join, name="gpu-2"))
    assert used_up.value.code() is grpc.StatusCode.PERMISSION_DENIED and "no uses left" in (
        used_up.value.details() or ""
    )
    # A join token is no credential for anything else.
    with pytest.raises(grpc.aio.AioRpcError) as not_a_client:
        await secured.orchestrator.ListWorkflows(orchestrator_pb2.ListWorkflowsRequest(), metadata=md(join))
    assert not_a_client.value.code() is grpc.StatusCode.PERMISSION_DENIED
    short_lived, _ = await secured.token("agent", ttl_s=60)
    # Expiry by the controller's clock (the seam), moved past the TTL instead of waiting it out.
    real_clock = secured.runtime.clock
    secured.runtime.clock = lambda: real_clock() + 61
    try:
        with pytest.raises(grpc.aio.AioRpcError) as expired:
            await secured.gateway.Join(agent_pb2.JoinRequest(join_token=short_lived, name="late"))
    finally:
        secured.runtime.clock = real_clock
    assert expired.value.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_revoking_a_join_token_revokes_its_agents(secured: Secured) -> None:
    join, info = await secured.token("agent")
    joined = await secured.gateway.Join(agent_pb2.JoinRequest(join_token=join, name="a1"))
    access = secured.runtime.machine.access
    assert access.authenticate(hash_token(joined.credential), time.time()) is not None
    await secured.admin.RevokeToken(admin_pb2.RevokeTokenRequest(token_id=info.token_id), metadata=secured.root)
    assert access.authenticate(hash_token(joined.credential), time.time()) is None


async def _start(secured: Secured, metadata: Metadata, env: dict[str, Any], **fields: Any) -> str:
    task = pb.TaskSpec(name="t", agent_type="shell", payload_json=json.dumps({"shell": "env", "env": env}).encode())
    response = await secured.orchestrator.SubmitWorkflow(
        orchestrator_pb2.SubmitWorkflowRequest(spec=pb.WorkflowSpec(name="w", tasks=[task], **fields), start=True),
        metadata=metadata,
    )
    return str(response.workflow_id)


async def test_secrets_are_encrypted_at_rest_and_delivered_only_with_the_assignment(secured: Secured) -> None:
    value = "hunter2-very-secret-value"
    set_ = await secured.admin.SetSecret(
        admin_pb2.SetSecretRequest(namespace="default", name="db-pass", value=value.encode()), metadata=secured.root
    )
    assert set_.created
    assert value.encode() not in secured.stored_bytes()
    listed = await secured.admin.ListSecrets(admin_pb2.ListSecretsRequest(namespace="default"), metadata=secured.root)
    assert [(s.namespace, s.name) for s in listed.secrets] == [("default", "db-pass")]
    assert value not in str(listed)
    # A reference to a missing secret is refused with the path of the env entry; nothing stored.
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await _start(secured, secured.root, {"DB": {"secret": "nope"}})
    assert missing.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request(missing.value)[0][0] == "spec.tasks[0].payload_json.env.DB"
    workflow_id = await _start(secured, secured.root, {"DB_PASSWORD": {"secret": "db-pass"}, "PLAIN": "x"})
    pulled = await secured.scheduler.GetNextTask(
        scheduler_pb2.GetNextTaskRequest(worker_id="w1", agent_types=["shell"], wait_s=5), metadata=secured.root
    )
    assert pulled.found and dict(pulled.assignment.secrets) == {"db-pass": value}
    assert pulled.assignment.namespace == "default"
    status = await secured.orchestrator.GetWorkflowStatus(
        orchestrator_pb2.GetWorkflowStatusRequest(workflow_id=workflow_id, include_tasks=True), metadata=secured.root
    )
    assert value.encode() not in status.SerializeToString()
    assert value.encode() not in secured.stored_bytes()


async def test_a_secret_deleted_before_dispatch_fails_the_task(secured: Secured) -> None:
    await secured.admin.SetSecret(
        admin_pb2.SetSecretRequest(namespace="default", name="gone", value=b"v"), metadata=secured.root
    )
    workflow_id = await _start(secured, secured.root, {"X": {"secret": "gone"}})
    await secured.admin.DeleteSecret(
        admin_pb2.DeleteSecretRequest(namespace="default", name="gone"), metadata=secured.root
    )
    pulled = await secured.scheduler.GetNextTask(
        scheduler_pb2.GetNextTaskRequest(worker_id="w1", agent_types=["shell"], wait_s=0.2), metadata=secured.root
    )
    assert not pulled.found
    status = (
        await secured.orchestrator.GetWorkflowStatus(
            orchestrator_pb2.GetWorkflowStatusRequest(workflow_id=workflow_id, include_tasks=True),
            metadata=secured.root,
        )
    ).status
    assert status.state == pb.WORKFLOW_STATE_FAILED
    assert "secret 'gone' does not exist" in status.tasks[0].error


async def test_workers_pull_only_work_of_their_namespaces(secured: Secured) -> None:
    await secured.admin.CreateNamespace(admin_pb2.CreateNamespaceRequest(name="team-a"), metadata=secured.root)
    await _start(secured, secured.root, {}, namespace="team-a")
    worker, _ = await secured.token("worker", "default")
    request = scheduler_pb2.GetNextTaskRequest(worker_id="w1", agent_types=["shell"], wait_s=0.2)
    assert not (await secured.scheduler.GetNextTask(request, metadata=md(worker))).found
    team_worker, _ = await secured.token("worker", "team-a")
    assert (await secured.scheduler.GetNextTask(request, metadata=md(team_worker))).found


async def test_mutations_are_audited_with_who_what_and_outcome(secured: Secured) -> None:
    submitter, info = await secured.token("submitter")
    viewer, viewer_info = await secured.token("viewer")
    workflow_id = await _start(secured, md(submitter), {})
    await secured.orchestrator.CancelWorkflow(
        orchestrator_pb2.CancelWorkflowRequest(workflow_id=workflow_id), metadata=md(submitter)
    )
    with pytest.raises(grpc.aio.AioRpcError):
        await secured.orchestrator.CancelWorkflow(
            orchestrator_pb2.CancelWorkflowRequest(workflow_id=workflow_id), metadata=md(viewer)
        )
    records: list[admin_pb2.AuditRecord] = []
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline and len(records) < 3:
        records = list((await secured.admin.ListAudit(admin_pb2.ListAuditRequest(), metadata=secured.root)).records)
        records = [r for r in records if r.principal in (f"token:{info.token_id}", f"token:{viewer_info.token_id}")]
        await asyncio.sleep(0.02)
    seen = [(r.principal, r.method.rsplit("/", 1)[1], r.target, r.code) for r in records]
    assert seen == [
        (f"token:{info.token_id}", "SubmitWorkflow", workflow_id, "OK"),
        (f"token:{info.token_id}", "CancelWorkflow", workflow_id, "OK"),
        (f"token:{viewer_info.token_id}", "CancelWorkflow", workflow_id, "PERMISSION_DENIED"),
    ]
    assert [r.namespace for r in records] == ["default"] * 3 and records[0].role == "submitter"
    only = await secured.admin.ListAudit(
        admin_pb2.ListAuditRequest(principal=f"token:{viewer_info.token_id}"), metadata=secured.root
    )
    assert [r.code for r in only.records] == ["PERMISSION_DENIED"]
    # Retention: everything older than "now" goes.
    await secured.runtime.call(lambda m, now: m.access.prune_audit(now + 1))
    left = await secured.admin.ListAudit(admin_pb2.ListAuditRequest(), metadata=secured.root)
    assert all(r.method.endswith("ListAudit") for r in left.records)  # nothing but later reads
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await secured.admin.ListAudit(admin_pb2.ListAuditRequest(limit=5000), metadata=secured.root)
    assert bad.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_whoami_and_the_persisted_records_survive_a_restart(secured: Secured, tmp_path: Path) -> None:
    who = await secured.admin.WhoAmI(admin_pb2.WhoAmIRequest(), metadata=secured.root)
    assert who.role == "admin" and who.auth_enabled and who.principal.startswith("token:")
    await secured.admin.CreateNamespace(admin_pb2.CreateNamespaceRequest(name="kept"), metadata=secured.root)
    await secured.admin.RevokeCertificate(
        admin_pb2.RevokeCertificateRequest(name="agent-7", reason="stolen laptop"), metadata=secured.root
    )
    store = SqliteStore(secured.db)
    try:
        access = store.load().access
    finally:
        store.close()
    assert "kept" in [n.name for n in access.namespaces]
    assert [(c.name, c.reason) for c in access.revoked_certs] == [("agent-7", "stolen laptop")]
    assert any(t.role == "admin" for t in access.tokens)


class _EchoGateway(agent_pb2_grpc.AgentGatewayServicer):  # type: ignore[misc]
    """Answers each stream with who it runs as, in the handler and in a task the handler starts."""

    async def Connect(self, requests: Any, context: Any) -> AsyncIterator[agent_pb2.ControllerMessage]:
        from corral.controller.rpc.identity import current_principal

        async def in_a_task() -> str:
            return current_principal().name

        yield agent_pb2.ControllerMessage(welcome=agent_pb2.Welcome(agent_id=current_principal().name))
        yield agent_pb2.ControllerMessage(welcome=agent_pb2.Welcome(agent_id=await asyncio.create_task(in_a_task())))


async def test_streams_run_as_their_principal(secured: Secured) -> None:
    from corral.controller.rpc.auth import AuthInterceptor
    from corral.controller.rpc.errors import ErrorInterceptor

    join, _ = await secured.token("agent")
    joined = await secured.gateway.Join(agent_pb2.JoinRequest(join_token=join, name="echo-agent"))
    server = grpc.aio.server(interceptors=[ErrorInterceptor(), AuthInterceptor(secured.runtime, enabled=True)])
    agent_pb2_grpc.add_AgentGatewayServicer_to_server(_EchoGateway(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stream = agent_pb2_grpc.AgentGatewayStub(channel).Connect(metadata=md(joined.credential))
            names = [message.welcome.agent_id async for message in stream]
            assert names == ["echo-agent", "echo-agent"]
            refused = agent_pb2_grpc.AgentGatewayStub(channel).Connect(metadata=secured.root)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                _ = [m async for m in refused]
            assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED  # an admin is no agent
    finally:
        await server.stop(0)


async def test_a_namespaced_admin_hands_out_nothing_wider_than_itself(secured: Secured) -> None:
    await secured.admin.CreateNamespace(admin_pb2.CreateNamespaceRequest(name="team-a"), metadata=secured.root)
    team_admin, _ = await secured.token("admin", "team-a")
    ok = await secured.admin.CreateToken(
        admin_pb2.CreateTokenRequest(role="submitter", namespaces=["team-a"]), metadata=md(team_admin)
    )
    assert list(ok.info.namespaces) == ["team-a"]
    for namespaces in (["default"], ["*"], ["team-a", "default"]):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await secured.admin.CreateToken(
                admin_pb2.CreateTokenRequest(role="viewer", namespaces=namespaces), metadata=md(team_admin)
            )
        assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED, namespaces


async def test_revoking_closes_live_agent_streams_at_once(secured: Secured) -> None:
    join, info = await secured.token("agent")
    joined = await secured.gateway.Join(agent_pb2.JoinRequest(join_token=join, name="live-1"))
    outgoing: asyncio.Queue[agent_pb2.AgentMessage] = asyncio.Queue()
    await outgoing.put(agent_pb2.AgentMessage(hello=agent_pb2.Hello(agent_id="live-1", name="live-1")))

    async def requests() -> AsyncIterator[agent_pb2.AgentMessage]:
        while True:
            yield await outgoing.get()

    stream = secured.gateway.Connect(requests(), metadata=md(joined.credential))
    first = await stream.read()
    assert first.WhichOneof("kind") == "welcome"
    await secured.admin.RevokeToken(admin_pb2.RevokeTokenRequest(token_id=info.token_id), metadata=secured.root)
    async with asyncio.timeout(3.0):  # the stream ends at once, not at the next lease check
        while (await stream.read()) is not grpc.aio.EOF:
            pass
    again = secured.gateway.Connect(requests(), metadata=md(joined.credential))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await again.read()
    assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_a_malformed_namespace_is_invalid_not_missing(secured: Secured) -> None:
    for namespace in ("bad name", "x" * 10_000, "-lead"):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _start(secured, secured.root, {}, namespace=namespace)
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert [field for field, _ in bad_request(caught.value)] == ["spec.namespace"]
        assert len(caught.value.details() or "") < 1000


async def test_with_auth_off_everyone_is_the_dev_admin_and_still_audited(tmp_path: Path) -> None:
    runtime = Runtime(SqliteStore(tmp_path / "c.db"), encode_actions=deliver)
    await runtime.start()
    server = await build_server(runtime, "127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            admin = admin_pb2_grpc.AdminStub(channel)
            who = await admin.WhoAmI(admin_pb2.WhoAmIRequest())
            assert (who.principal, who.role, who.auth_enabled) == ("dev", "admin", False)
            await admin.CreateNamespace(admin_pb2.CreateNamespaceRequest(name="dev-ns"))
            with pytest.raises(grpc.aio.AioRpcError) as no_key:
                await admin.SetSecret(admin_pb2.SetSecretRequest(namespace="dev-ns", name="s", value=b"v"))
            assert no_key.value.code() is grpc.StatusCode.FAILED_PRECONDITION
            assert "--secret-key-file" in (no_key.value.details() or "")
            records: list[admin_pb2.AuditRecord] = []
            deadline = time.monotonic() + 3.0
            while time.monotonic() < deadline and len(records) < 2:
                records = list((await admin.ListAudit(admin_pb2.ListAuditRequest())).records)
                await asyncio.sleep(0.02)
            assert [(r.principal, r.method.rsplit("/", 1)[1], r.code) for r in records] == [
                ("dev", "CreateNamespace", "OK"),
                ("dev", "SetSecret", "FAILED_PRECONDITION"),
            ]
    finally:
        await server.stop(0)
        await runtime.stop()


async def test_a_worker_cannot_report_on_another_namespaces_attempt(secured: Secured) -> None:
    await secured.admin.CreateNamespace(admin_pb2.CreateNamespaceRequest(name="team-a"), metadata=secured.root)
    await _start(secured, secured.root, {}, namespace="team-a")
    team_worker, _ = await secured.token("worker", "team-a")
    request = scheduler_pb2.GetNextTaskRequest(worker_id="w-a", agent_types=["shell"], wait_s=1)
    pulled = await secured.scheduler.GetNextTask(request, metadata=md(team_worker))
    assert pulled.found
    outsider, _ = await secured.token("worker", "default")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await secured.scheduler.CompleteTask(
            scheduler_pb2.CompleteTaskRequest(attempt_id=pulled.assignment.attempt_id, worker_id="w-a"),
            metadata=md(outsider),
        )
    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
    done = await secured.scheduler.CompleteTask(
        scheduler_pb2.CompleteTaskRequest(attempt_id=pulled.assignment.attempt_id, worker_id="w-a"),
        metadata=md(team_worker),
    )
    assert done.accepted
