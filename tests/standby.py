"""A stand-in for a standby controller: a real gRPC server that refuses every call as standbys do.

Every RPC (unary or stream, of any service) is answered UNAVAILABLE with the trailing metadata
``corral-leader: <leader>`` (empty when ``leader`` is ""), which is the whole contract between
a standby and its clients (issue 12). ``with_trailer=False`` answers UNAVAILABLE without it, like a
leader that lost its store in the middle of a call. Every call's method and metadata are recorded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio

from corral.protocol import LEADER_METADATA

__all__ = ["Standby", "start_standby"]


@dataclass
class Standby:
    """The running stand-in; change ``leader`` at any time to move the hint."""

    server: grpc.aio.Server
    port: int
    leader: str = ""
    with_trailer: bool = True
    calls: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def methods(self) -> list[str]:
        return [method.rsplit("/", 1)[-1] for method, _ in self.calls]

    async def stop(self) -> None:
        await self.server.stop(0)


class _Refuser(grpc.GenericRpcHandler):
    def __init__(self) -> None:
        self.standby: Standby | None = None

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        standby = self.standby
        assert standby is not None
        method = details.method
        metadata = {str(k): str(v) for k, v in details.invocation_metadata or ()}

        async def refuse(context: Any) -> None:
            standby.calls.append((method, metadata))
            trailer = ((LEADER_METADATA, standby.leader),) if standby.with_trailer else ()
            await context.abort(grpc.StatusCode.UNAVAILABLE, "this controller is a standby", trailer)

        async def unary(request: bytes, context: Any) -> bytes:
            await refuse(context)
            return b""

        async def stream(request: Any, context: Any) -> AsyncIterator[bytes]:
            await refuse(context)
            yield b""  # pragma: no cover - abort raised above

        if method.endswith("/Connect"):
            return grpc.stream_stream_rpc_method_handler(stream)
        if method.endswith("/WatchWorkflow"):
            return grpc.unary_stream_rpc_method_handler(stream)
        return grpc.unary_unary_rpc_method_handler(unary)


async def start_standby(leader: str = "", *, with_trailer: bool = True) -> Standby:
    """Start a stand-in standby on 127.0.0.1:0 naming ``leader`` in its refusals."""
    refuser = _Refuser()
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((refuser,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    standby = Standby(server, port, leader, with_trailer)
    refuser.standby = standby
    return standby
