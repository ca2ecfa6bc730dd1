"""The standby's gRPC server: health NOT_SERVING, every other call UNAVAILABLE naming the leader.

A standby holds no state, so it answers every RPC of every service (the agent stream included)
with UNAVAILABLE and the trailing metadata ``corral-leader: host:port``: the leader's advertised
address from the lease row, or an empty value while no live leader is known (an election is under
way; retry). gRPC health says NOT_SERVING, so a Kubernetes readiness probe or a load balancer sends
nobody here. It binds the same port the leader's server will, so clients keep one address list.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from corral.controller.rpc.tls import ServerTls
from corral.controller.server import SERVER_OPTIONS, SERVICE_NAMES, Server, bind_ports
from corral.protocol import LEADER_METADATA  # the trailer clients and agents follow (one place)

__all__ = ["LEADER_METADATA", "build_standby_server"]


class _Redirect(grpc.GenericRpcHandler):  # type: ignore[misc]
    """Every method: UNAVAILABLE with the leader's address (health is registered before, so it wins)."""

    def __init__(self, leader: Callable[[], str]) -> None:
        self._leader = leader

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        # stream-stream fits every call shape: nothing is read, the call ends at once.
        return grpc.stream_stream_rpc_method_handler(self._refuse)

    async def _refuse(self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]) -> None:
        leader = self._leader()
        where = f"the leader is {leader}" if leader else "no leader is known yet (an election is under way)"
        await context.abort(
            grpc.StatusCode.UNAVAILABLE, f"this controller is a standby: {where}", ((LEADER_METADATA, leader),)
        )


async def build_standby_server(
    listen: str,
    leader: Callable[[], str],
    *,
    tls: ServerTls | None = None,
    mtls_listen: str | None = None,
    health_listen: str | None = None,
) -> Server:
    """Bind the controller's ports as a standby; ``leader()`` gives the address to redirect to."""
    server = grpc.aio.server(options=SERVER_OPTIONS)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    server.add_generic_rpc_handlers((_Redirect(leader),))
    port, mtls_port, health_server, health_port = await bind_ports(
        server, health_servicer, listen, tls=tls, mtls_listen=mtls_listen, health_listen=health_listen
    )
    for name in ("", *SERVICE_NAMES):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    await server.start()
    return Server(
        server, health_servicer, port, mtls_port=mtls_port, health_server=health_server, health_port=health_port
    )
