"""Assemble the controller's gRPC server: services, health, reflection, keepalive and limits."""

from __future__ import annotations

from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from corral.controller.metrics import METRICS, RpcMetricsInterceptor
from corral.controller.rpc.admin import AdminService
from corral.controller.rpc.auth import AuthInterceptor
from corral.controller.rpc.cluster import ClusterService
from corral.controller.rpc.errors import ErrorInterceptor
from corral.controller.rpc.gateway import AgentGatewayService
from corral.controller.rpc.orchestrator import OrchestratorService
from corral.controller.rpc.request_box import boxed
from corral.controller.rpc.scheduler import SchedulerService
from corral.controller.rpc.schedules import add_schedules
from corral.controller.rpc.server_timing import ServerTimingInterceptor
from corral.controller.rpc.tls import ServerTls
from corral.controller.runtime import Runtime
from corral.controller.secretbox import SecretBox
from corral.controller.spec import Limits
from corral.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    agent_pb2,
    agent_pb2_grpc,
    orchestrator_pb2,
    orchestrator_pb2_grpc,
    scheduler_pb2,
    scheduler_pb2_grpc,
    schedules_pb2,
)

__all__ = ["SERVICE_NAMES", "Server", "build_server"]

SERVICE_NAMES = (
    orchestrator_pb2.DESCRIPTOR.services_by_name["Orchestrator"].full_name,
    scheduler_pb2.DESCRIPTOR.services_by_name["Scheduler"].full_name,
    agent_pb2.DESCRIPTOR.services_by_name["AgentGateway"].full_name,
    agent_pb2.DESCRIPTOR.services_by_name["Cluster"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["Admin"].full_name,
    schedules_pb2.DESCRIPTOR.services_by_name["Schedules"].full_name,
)

# Agents ping every 5 s (DESIGN.md §5); the server must allow that or it answers GOAWAY
# "too_many_pings". The server pings too, so a dead peer is noticed within seconds.
SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", Limits.max_message_bytes),
    ("grpc.max_send_message_length", Limits.max_message_bytes),
    ("grpc.keepalive_time_ms", 5_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 4_000),
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.http2.max_pings_without_data", 0),
]


class Server:
    """A running controller endpoint: the gRPC server plus its health service.

    ``port`` is the main port; ``mtls_port`` the mutual-TLS port (None without a client CA);
    ``health_port`` the plaintext health-only port (None when not asked for); ``tls`` the
    reloadable credentials (None: plaintext).
    """

    def __init__(
        self,
        server: grpc.aio.Server,
        health_servicer: health.aio.HealthServicer,
        port: int,
        *,
        tls: ServerTls | None = None,
        mtls_port: int | None = None,
        health_server: grpc.aio.Server | None = None,
        health_port: int | None = None,
    ) -> None:
        self.grpc = server
        self.health = health_servicer
        self.port = port
        self.tls = tls
        self.mtls_port = mtls_port
        self.health_server = health_server
        self.health_port = health_port

    @property
    def tls_enabled(self) -> bool:
        """Whether the server speaks TLS (then auth is on: nobody is trusted by address)."""
        return self.tls is not None

    async def stop(self, grace: float = 2.0) -> None:
        await self.health.enter_graceful_shutdown()
        await self.grpc.stop(grace)
        if self.health_server is not None:
            await self.health_server.stop(0)


class GenericOnly:
    """A server as the generated ``add_*_to_server`` functions see it: generic handlers only.

    Those functions also register each method as a "registered method". grpc.aio keeps one
    pending request per registered method and, at every call's arrival, waits on all of them
    again (an ``asyncio.wait`` over ~60 tasks: a done-callback added and removed on each, about
    a tenth of a millisecond of the loop per call). The generic handler they register as well
    serves the same methods through one pending request, with a dictionary lookup.
    """

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service_name: str, method_handlers: Any) -> None:
        """Left out on purpose (see the class docstring): the generic handler serves these."""


def _boxed_submissions(orchestrator: OrchestratorService) -> grpc.GenericRpcHandler:
    """SubmitWorkflow and AppendTasks with their requests in a :class:`RequestBox`, so the
    handler can free a big request's memory once admitted (see :mod:`~corral.controller.rpc.request_box`)."""
    handlers = {
        "SubmitWorkflow": grpc.unary_unary_rpc_method_handler(
            orchestrator.SubmitWorkflow,
            request_deserializer=boxed(orchestrator_pb2.SubmitWorkflowRequest),
            response_serializer=orchestrator_pb2.SubmitWorkflowResponse.SerializeToString,
        ),
        "AppendTasks": grpc.unary_unary_rpc_method_handler(
            orchestrator.AppendTasks,
            request_deserializer=boxed(orchestrator_pb2.AppendTasksRequest),
            response_serializer=orchestrator_pb2.AppendTasksResponse.SerializeToString,
        ),
    }
    service = orchestrator_pb2.DESCRIPTOR.services_by_name["Orchestrator"].full_name
    return grpc.method_handlers_generic_handler(service, handlers)


async def bind_ports(
    server: grpc.aio.Server,
    health_servicer: health.aio.HealthServicer,
    listen: str,
    *,
    tls: ServerTls | None,
    mtls_listen: str | None,
    health_listen: str | None,
) -> tuple[int, int | None, grpc.aio.Server | None, int | None]:
    """Bind the controller's ports on ``server`` (a leader's or a standby's), and start the
    plaintext health-only server when asked: (port, mutual-TLS port, health server, health port)."""
    port = server.add_insecure_port(listen) if tls is None else server.add_secure_port(listen, tls.server_credentials())
    if port == 0:
        raise OSError(f"cannot listen on {listen}")
    mtls_port: int | None = None
    if tls is not None and tls.mutual and mtls_listen is not None:
        mtls_port = server.add_secure_port(mtls_listen, tls.mutual_credentials())
        if mtls_port == 0:
            raise OSError(f"cannot listen on {mtls_listen}")
    health_server: grpc.aio.Server | None = None
    health_port: int | None = None
    if health_listen is not None:
        health_server = grpc.aio.server(options=SERVER_OPTIONS)
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, health_server)
        health_port = health_server.add_insecure_port(health_listen)
        if health_port == 0:
            raise OSError(f"cannot listen on {health_listen}")
        await health_server.start()
    return port, mtls_port, health_server, health_port


async def build_server(
    runtime: Runtime,
    listen: str,
    *,
    auth: bool = False,
    secret_box: SecretBox | None = None,
    tls: ServerTls | None = None,
    mtls_listen: str | None = None,
    health_listen: str | None = None,
) -> Server:
    """Bind ``listen`` (host:port, port 0 for any), register every service and start serving.

    ``auth`` turns on authentication and authorization of every call (except grpc health); the
    daemon turns it on with ``--auth`` and whenever it serves TLS. Off, every caller is the dev
    admin (the plaintext loopback default of ``corral dev``).

    With ``tls`` the port speaks TLS; when ``tls`` has a client CA, ``mtls_listen`` is bound too,
    with client certificates required (see :mod:`corral.controller.rpc.tls` for why two ports).
    ``health_listen`` serves grpc.health.v1 alone, in plaintext: Kubernetes' gRPC probes and most
    load balancers cannot speak TLS, and the health status tells nobody anything else.
    """
    # The error interceptor is outermost, so the auth interceptor's refusals become status codes.
    interceptors = [ErrorInterceptor(), AuthInterceptor(runtime, enabled=auth), RpcMetricsInterceptor(METRICS)]
    interceptors.insert(0, ServerTimingInterceptor())  # outermost: its clock starts at the request's arrival
    server = grpc.aio.server(interceptors=interceptors, options=SERVER_OPTIONS)
    services = GenericOnly(server)
    orchestrator = OrchestratorService(runtime)
    server.add_generic_rpc_handlers((_boxed_submissions(orchestrator),))  # first: it wins for its two methods
    orchestrator_pb2_grpc.add_OrchestratorServicer_to_server(orchestrator, services)
    scheduler_pb2_grpc.add_SchedulerServicer_to_server(SchedulerService(runtime), services)
    agent_pb2_grpc.add_AgentGatewayServicer_to_server(AgentGatewayService(runtime), services)
    agent_pb2_grpc.add_ClusterServicer_to_server(ClusterService(runtime), services)
    admin_pb2_grpc.add_AdminServicer_to_server(AdminService(runtime, auth_enabled=auth, box=secret_box), services)
    add_schedules(runtime, services)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, services)
    # The real server: reflection picks its asyncio servicer by the server's type.
    reflection.enable_server_reflection((*SERVICE_NAMES, reflection.SERVICE_NAME, health.SERVICE_NAME), server)
    if tls is not None and tls.mutual and mtls_listen is None:
        raise ValueError("a client CA needs an address for the mutual-TLS port")
    port, mtls_port, health_server, health_port = await bind_ports(
        server, health_servicer, listen, tls=tls, mtls_listen=mtls_listen, health_listen=health_listen
    )
    await server.start()
    for name in ("", *SERVICE_NAMES):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return Server(
        server,
        health_servicer,
        port,
        tls=tls,
        mtls_port=mtls_port,
        health_server=health_server,
        health_port=health_port,
    )
