"""The protocol version check at the door: callers older than N-1 get FAILED_PRECONDITION.

Called by the auth interceptor for every call but grpc health (probes send no metadata and must
keep working across upgrades). The cost of an accepted call is one scan of its few metadata pairs;
only a refused call gets a handler of its own, which fails with a message naming both versions
(the error interceptor turns it into the status). Agents also carry the version in their Hello,
checked by :func:`check_hello` when the stream opens.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc

from corral.controller.errors import FailedPrecondition
from corral.protocol import MIN_PROTOCOL, peer_version, refusal
from corral.v1 import agent_pb2

__all__ = ["check_hello", "gate"]

_HEALTH = "/grpc.health.v1.Health/"
_AGENT = "/corral.v1.AgentGateway/"


def gate(handler: grpc.RpcMethodHandler, method: str, metadata: Sequence[tuple[str, Any]] | None) -> Any:
    """``handler`` itself when the caller's protocol is accepted, else one that refuses the call."""
    version = peer_version(metadata)
    if version >= MIN_PROTOCOL or handler is None or method.startswith(_HEALTH):
        return handler
    error = FailedPrecondition(str(refusal(version, "agent" if method.startswith(_AGENT) else "client")))

    async def refuse_unary(request: Any, context: Any) -> Any:
        raise error

    async def refuse_stream(request: Any, context: Any) -> AsyncIterator[Any]:
        raise error
        yield  # pragma: no cover - makes this an async generator

    serializers = (handler.request_deserializer, handler.response_serializer)
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(refuse_unary, *serializers)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(refuse_stream, *serializers)
    if handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(refuse_stream, *serializers)
    return grpc.stream_unary_rpc_method_handler(refuse_unary, *serializers)


def check_hello(hello: agent_pb2.Hello) -> None:
    """Refuse a Hello of a protocol older than N-1 (0: sent by an agent older than the field)."""
    if hello.protocol_version:
        message = refusal(hello.protocol_version, "agent")
        if message is not None:
            raise FailedPrecondition(message)
