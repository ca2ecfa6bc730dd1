"""Roles against a real controller with auth on: every RPC of the .proto files, every role.

The list of RPCs is read from the descriptors of every ``corral.v1`` module, so an RPC added
without a rule in the permission table fails here. The expected outcome per role is written out
below independently of the implementation's table.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc

from corral.v1 import admin_pb2, admin_pb2_grpc, agent_pb2, agent_pb2_grpc, orchestrator_pb2, orchestrator_pb2_grpc
from corral.v1 import types_pb2 as pb
from tests.procs import require_server, start_controller, stop

pytestmark = pytest.mark.e2e

PROTOS = Path(__file__).resolve().parents[2] / "protos" / "corral" / "v1"

READ = {
    "Orchestrator/GetWorkflowStatus",
    "Orchestrator/ListWorkflows",
    "Orchestrator/WatchWorkflow",
    "Orchestrator/GetExecutionPlan",
    "Orchestrator/GetTaskLogs",
    "Orchestrator/GetWorkflowEvents",
    "Scheduler/AnalyzeDependencies",
    "Scheduler/ExplainTask",
    "Cluster/ListAgents",
    "Cluster/GetAgent",
    "Admin/WhoAmI",
    "Admin/ListNamespaces",
    "Admin/ListQuotas",
    "Orchestrator/ListRuns",
    "Orchestrator/ListAttempts",
    "Schedules/ListSchedules",
}
SUBMIT = {
    "Orchestrator/SubmitWorkflow",
    "Orchestrator/ExecuteWorkflow",
    "Orchestrator/CancelWorkflow",
    "Orchestrator/PauseWorkflow",
    "Orchestrator/ResumeWorkflow",
    "Scheduler/ScheduleTask",
    "Orchestrator/RetryWorkflow",
    "Orchestrator/RerunWorkflow",
    "Orchestrator/ResolveApproval",
    "Admin/ClearCache",
    "Schedules/CreateSchedule",
    "Schedules/PauseSchedule",
    "Schedules/ResumeSchedule",
    "Schedules/DeleteSchedule",
    "Orchestrator/AppendTasks",  # issue 13
}
PULL = {"Scheduler/GetNextTask", "Scheduler/CompleteTask", "Scheduler/FailTask"}
ADMIN_ONLY = {
    "Admin/CreateToken",
    "Admin/ListTokens",
    "Admin/RevokeToken",
    "Admin/CreateNamespace",
    "Admin/SetSecret",
    "Admin/DeleteSecret",
    "Admin/ListSecrets",
    "Admin/RevokeCertificate",
    "Admin/ListRevokedCertificates",
    "Admin/ListAudit",
    "Admin/SetNamespaceQuota",
    "Admin/CollectGarbage",  # issue 12
    "Admin/SetNamespaceRetention",
}
# Whoever may drain an agent may also cordon, uncordon or remove it.
DRAIN = {"Cluster/DrainAgent", "Cluster/CordonAgent", "Cluster/UncordonAgent", "Cluster/RemoveAgent"}
PUBLIC = {"AgentGateway/Join"}
CONNECT = {"AgentGateway/Connect"}

EXPECTED: dict[str, set[str]] = {
    "admin": READ | SUBMIT | PULL | ADMIN_ONLY | DRAIN | PUBLIC,
    "operator": READ | DRAIN | PUBLIC,
    "submitter": READ | SUBMIT | PUBLIC,
    "viewer": READ | PUBLIC,
    "worker": PULL | {"Admin/WhoAmI"} | PUBLIC,
    "agent": CONNECT | PUBLIC,
}
DENIED_CODES = {grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED}


def declared_rpcs() -> list[MethodDescriptor]:
    """Every RPC of every service of every corral.v1 .proto file."""
    methods = []
    for proto in sorted(PROTOS.glob("*.proto")):
        module = importlib.import_module(f"corral.v1.{proto.stem}_pb2")
        for service in module.DESCRIPTOR.services_by_name.values():
            methods.extend(service.methods)
    return methods


def short(method: MethodDescriptor) -> str:
    return f"{method.containing_service.name}/{method.name}"


def call(channel: grpc.Channel, method: MethodDescriptor, token: str | None) -> grpc.StatusCode:
    """Call with an empty (minimal) request; the status code it ends with."""
    request_class: Any = message_factory.GetMessageClass(method.input_type)
    response_class: Any = message_factory.GetMessageClass(method.output_type)
    path = f"/{method.containing_service.full_name}/{method.name}"
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    kwargs: dict[str, Any] = {
        "request_serializer": request_class.SerializeToString,
        "response_deserializer": response_class.FromString,
    }
    try:
        if method.client_streaming and method.server_streaming:
            list(channel.stream_stream(path, **kwargs)(iter(()), metadata=metadata, timeout=10))
        elif method.server_streaming:
            list(channel.unary_stream(path, **kwargs)(request_class(), metadata=metadata, timeout=10))
        else:
            channel.unary_unary(path, **kwargs)(request_class(), metadata=metadata, timeout=10)
    except grpc.RpcError as exc:
        code: grpc.StatusCode = exc.code()
        return code
    return grpc.StatusCode.OK


class Auth:
    def __init__(self, address: str, admin_token: str) -> None:
        self.address = address
        self.admin_token = admin_token
        self.channel = grpc.insecure_channel(address)
        self.admin = admin_pb2_grpc.AdminStub(self.channel)

    def md(self, token: str) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {token}"),)

    def token(self, role: str, *namespaces: str, **extra: Any) -> str:
        request = admin_pb2.CreateTokenRequest(role=role, namespaces=list(namespaces), **extra)
        response = self.admin.CreateToken(request, metadata=self.md(self.admin_token), timeout=10)
        return str(response.token)


@pytest.fixture(scope="module")
def auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Auth]:
    require_server()
    directory = tmp_path_factory.mktemp("roles")
    proc, address = start_controller(directory, extra=["--auth"])
    try:
        token_file = directory / "admin.token"
        assert token_file.stat().st_mode & 0o777 == 0o600
        yield Auth(address, token_file.read_text().strip())
    finally:
        stop(proc)


def test_every_declared_rpc_is_checked_and_the_list_is_complete() -> None:
    declared = {short(m) for m in declared_rpcs()}
    covered = set().union(*EXPECTED.values())
    assert declared == covered | {"Cluster/DrainAgent"}, declared ^ covered


def test_each_role_gets_exactly_what_the_table_says(auth: Auth) -> None:
    join = auth.token("agent", name_pattern="role-agent")
    gateway = agent_pb2_grpc.AgentGatewayStub(auth.channel)
    joined = gateway.Join(agent_pb2.JoinRequest(join_token=join, name="role-agent"), timeout=10)
    tokens = {role: auth.token(role) for role in ("admin", "operator", "submitter", "viewer", "worker")}
    tokens["agent"] = joined.credential
    wrong: list[str] = []
    for role, token in tokens.items():
        for method in declared_rpcs():
            code = call(auth.channel, method, token)
            assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.UNIMPLEMENTED), (
                role,
                short(method),
                code,
            )
            allowed = code not in DENIED_CODES
            if allowed != (short(method) in EXPECTED[role]):
                wrong.append(f"{role} {short(method)}: {code.name}")
    assert not wrong, "\n".join(wrong)


def test_no_token_is_unauthenticated_everywhere_but_join_and_health(auth: Auth) -> None:
    for method in declared_rpcs():
        code = call(auth.channel, method, None)
        if short(method) in PUBLIC:
            assert code is grpc.StatusCode.INVALID_ARGUMENT, short(method)  # past auth, then the empty request
        else:
            assert code is grpc.StatusCode.UNAUTHENTICATED, short(method)
    health = health_pb2_grpc.HealthStub(auth.channel)
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == health_pb2.HealthCheckResponse.SERVING
    bogus = call(auth.channel, declared_rpcs()[0], "corral_not-a-real-token")
    assert bogus is grpc.StatusCode.UNAUTHENTICATED


def test_denials_say_what_was_missing(auth: Auth) -> None:
    viewer = auth.token("viewer")
    orchestrator = orchestrator_pb2_grpc.OrchestratorStub(auth.channel)
    with pytest.raises(grpc.RpcError) as denied:
        orchestrator.SubmitWorkflow(orchestrator_pb2.SubmitWorkflowRequest(), metadata=auth.md(viewer), timeout=10)
    assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "needs role admin or submitter for Orchestrator/SubmitWorkflow" in denied.value.details()
    assert "is viewer" in denied.value.details()
    with pytest.raises(grpc.RpcError) as anonymous:
        orchestrator.ListWorkflows(orchestrator_pb2.ListWorkflowsRequest(), timeout=10)
    assert anonymous.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "no credentials" in anonymous.value.details()


def test_a_revoked_token_stops_working_within_a_second(auth: Auth) -> None:
    viewer = auth.token("viewer")
    orchestrator = orchestrator_pb2_grpc.OrchestratorStub(auth.channel)
    orchestrator.ListWorkflows(orchestrator_pb2.ListWorkflowsRequest(), metadata=auth.md(viewer), timeout=10)
    info = auth.admin.WhoAmI(admin_pb2.WhoAmIRequest(), metadata=auth.md(viewer), timeout=10)
    token_id = info.principal.removeprefix("token:")
    auth.admin.RevokeToken(
        admin_pb2.RevokeTokenRequest(token_id=token_id), metadata=auth.md(auth.admin_token), timeout=10
    )
    revoked_at = time.monotonic()
    refused_after = None
    while time.monotonic() - revoked_at < 3.0:  # 3x slack over the promised second
        try:
            orchestrator.ListWorkflows(orchestrator_pb2.ListWorkflowsRequest(), metadata=auth.md(viewer), timeout=10)
        except grpc.RpcError as exc:
            assert exc.code() is grpc.StatusCode.UNAUTHENTICATED
            refused_after = time.monotonic() - revoked_at
            break
        time.sleep(0.02)
    assert refused_after is not None and refused_after <= 1.0, refused_after


def _spec(name: str, namespace: str) -> pb.WorkflowSpec:
    task = pb.TaskSpec(name="t", agent_type="shell", payload_json=b'{"command":["true"]}')
    return pb.WorkflowSpec(name=name, tasks=[task], namespace=namespace)


def test_one_namespace_cannot_see_or_touch_another(auth: Auth) -> None:
    admin_md = auth.md(auth.admin_token)
    for name in ("team-a", "team-b"):
        auth.admin.CreateNamespace(admin_pb2.CreateNamespaceRequest(name=name), metadata=admin_md, timeout=10)
    team_a, team_b = auth.token("submitter", "team-a"), auth.token("submitter", "team-b")
    orchestrator = orchestrator_pb2_grpc.OrchestratorStub(auth.channel)
    submitted = orchestrator.SubmitWorkflow(
        orchestrator_pb2.SubmitWorkflowRequest(spec=_spec("wf-a", "team-a"), idempotency_key="same-key"),
        metadata=auth.md(team_a),
        timeout=10,
    )
    workflow_id = submitted.workflow_id

    def refused(rpc: Any, request: Any) -> grpc.RpcError:
        with pytest.raises(grpc.RpcError) as caught:
            result = rpc(request, metadata=auth.md(team_b), timeout=10)
            list(result) if hasattr(result, "__iter__") and not hasattr(result, "DESCRIPTOR") else None
        return caught.value

    for rpc, request in (
        (orchestrator.GetWorkflowStatus, orchestrator_pb2.GetWorkflowStatusRequest(workflow_id=workflow_id)),
        (orchestrator.CancelWorkflow, orchestrator_pb2.CancelWorkflowRequest(workflow_id=workflow_id)),
        (orchestrator.PauseWorkflow, orchestrator_pb2.PauseWorkflowRequest(workflow_id=workflow_id)),
        (orchestrator.ResumeWorkflow, orchestrator_pb2.ResumeWorkflowRequest(workflow_id=workflow_id)),
        (orchestrator.ExecuteWorkflow, orchestrator_pb2.ExecuteWorkflowRequest(workflow_id=workflow_id)),
        (orchestrator.WatchWorkflow, orchestrator_pb2.WatchWorkflowRequest(workflow_id=workflow_id)),
        (orchestrator.GetExecutionPlan, orchestrator_pb2.GetExecutionPlanRequest(workflow_id=workflow_id)),
        (orchestrator.SubmitWorkflow, orchestrator_pb2.SubmitWorkflowRequest(spec=_spec("sneak", "team-a"))),
    ):
        error = refused(rpc, request)
        assert error.code() is grpc.StatusCode.PERMISSION_DENIED, (rpc, error)
        assert "team-a" in error.details() and "team-b" in error.details()
    # A prefix never matches across namespaces: it is simply not found.
    error = refused(
        orchestrator.GetWorkflowStatus, orchestrator_pb2.GetWorkflowStatusRequest(workflow_id=workflow_id[:8])
    )
    assert error.code() is grpc.StatusCode.NOT_FOUND
    listed = orchestrator.ListWorkflows(orchestrator_pb2.ListWorkflowsRequest(), metadata=auth.md(team_b), timeout=10)
    assert workflow_id not in [w.workflow_id for w in listed.workflows]
    mine = orchestrator.ListWorkflows(orchestrator_pb2.ListWorkflowsRequest(), metadata=auth.md(team_a), timeout=10)
    assert [(w.workflow_id, w.namespace) for w in mine.workflows] == [(workflow_id, "team-a")]
    # Nothing changed: still pending, and team-a still sees and can cancel it.
    status = orchestrator.GetWorkflowStatus(
        orchestrator_pb2.GetWorkflowStatusRequest(workflow_id=workflow_id), metadata=auth.md(team_a), timeout=10
    ).status
    assert status.state == pb.WORKFLOW_STATE_PENDING and status.namespace == "team-a"
    # Idempotency keys are per namespace: the same key in team-b is a new workflow.
    other = orchestrator.SubmitWorkflow(
        orchestrator_pb2.SubmitWorkflowRequest(spec=_spec("wf-b", "team-b"), idempotency_key="same-key"),
        metadata=auth.md(team_b),
        timeout=10,
    )
    assert other.workflow_id != workflow_id and not other.deduplicated
    cancelled = orchestrator.CancelWorkflow(
        orchestrator_pb2.CancelWorkflowRequest(workflow_id=workflow_id), metadata=auth.md(team_a), timeout=10
    )
    assert cancelled.status.state == pb.WORKFLOW_STATE_CANCELLED


def test_submitting_to_a_missing_namespace_names_the_command(auth: Auth) -> None:
    orchestrator = orchestrator_pb2_grpc.OrchestratorStub(auth.channel)
    with pytest.raises(grpc.RpcError) as caught:
        orchestrator.SubmitWorkflow(
            orchestrator_pb2.SubmitWorkflowRequest(spec=_spec("x", "nowhere")),
            metadata=auth.md(auth.admin_token),
            timeout=10,
        )
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND
    assert "corral namespace create nowhere" in caught.value.details()


def test_agents_may_only_connect(auth: Auth) -> None:
    join = auth.token("agent", labels={"zone": "z1"}, uses=1)
    gateway = agent_pb2_grpc.AgentGatewayStub(auth.channel)
    joined = gateway.Join(agent_pb2.JoinRequest(join_token=join, name="only-connect"), timeout=10)
    assert dict(joined.labels) == {"zone": "z1"} and joined.agent_id == "only-connect"
    cluster = agent_pb2_grpc.ClusterStub(auth.channel)
    with pytest.raises(grpc.RpcError) as caught:
        cluster.ListAgents(agent_pb2.ListAgentsRequest(), metadata=auth.md(joined.credential), timeout=10)
    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "agents may only call AgentGateway/Connect" in caught.value.details()


def test_reflection_needs_any_valid_credential(auth: Auth) -> None:
    from grpc_reflection.v1alpha import reflection_pb2

    reflect = auth.channel.stream_stream(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    with pytest.raises(grpc.RpcError) as anonymous:
        list(reflect(iter([request]), timeout=10))
    assert anonymous.value.code() is grpc.StatusCode.UNAUTHENTICATED
    (answer,) = list(reflect(iter([request]), metadata=auth.md(auth.token("worker")), timeout=10))
    names = {s.name for s in answer.list_services_response.service}
    assert "corral.v1.Admin" in names and "corral.v1.Orchestrator" in names


def test_only_an_admin_of_every_namespace_sets_quotas(auth: Auth) -> None:
    admin_md = auth.md(auth.admin_token)
    auth.admin.CreateNamespace(admin_pb2.CreateNamespaceRequest(name="team-q"), metadata=admin_md, timeout=10)
    request = admin_pb2.SetNamespaceQuotaRequest(name="team-q", quota=admin_pb2.NamespaceQuota(weight=5))
    scoped = auth.md(auth.token("admin", "team-q"))
    with pytest.raises(grpc.RpcError) as denied:
        auth.admin.SetNamespaceQuota(request, metadata=scoped, timeout=10)
    assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED
    auth.admin.SetNamespaceQuota(request, metadata=admin_md, timeout=10)
    rows = auth.admin.ListQuotas(admin_pb2.ListQuotasRequest(), metadata=scoped, timeout=10).namespaces
    assert [(r.namespace, r.quota.weight) for r in rows] == [("team-q", 5.0)]  # only what it covers
