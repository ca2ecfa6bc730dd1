"""Server-side latency of every unary call, as the trailing-metadata entry ``corral-server-us``.

The value is integer microseconds from the moment the request reached the outermost interceptor
(this one, registered first in :func:`corral.controller.server.build_server`) to the moment the
answer leaves the handler chain: receiving and decoding the request, authentication, the handler,
the state loop and the durable commit are in it; encoding the answer and the wire are not. A client
subtracts it from the time it measured itself to see its own and the network's share (the bench's
``roundtrip_server_p50_ms`` is read this way). Errors carry it too: the status a handler aborts
with keeps its own trailers (``grpc-status-details-bin`` ...) and gains this one.

Streaming calls are left alone: their "answer" is a stream with no single departure time.

The cost is two ``perf_counter_ns`` calls, a context variable and one metadata tuple per unary
call; the wrapped handler is built once per method (as long as the inner chain returns the same
handler object) so no closure is made per call.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NamedTuple

import grpc

__all__ = ["TRAILER", "ServerTimingInterceptor", "server_us"]

#: The trailing-metadata key: integer microseconds spent in the server (see the module doc).
TRAILER = "corral-server-us"

# When the current call reached this interceptor (perf_counter_ns). The interceptors and the
# handler of one call run in one asyncio task, so the handler reads what intercept_service set
# without a closure per call.
_ARRIVED: contextvars.ContextVar[int] = contextvars.ContextVar("corral_server_arrived", default=0)

_Handler = Callable[[Any, Any], Awaitable[Any]]


def server_us(metadata: Sequence[tuple[str, str | bytes]] | None) -> int | None:
    """The ``corral-server-us`` value of trailing metadata (None when absent or malformed)."""
    for key, value in metadata or ():
        if key == TRAILER:
            text = value.decode() if isinstance(value, bytes) else value
            return int(text) if text.isdigit() else None
    return None


def _elapsed_entry() -> tuple[str, str]:
    now = time.perf_counter_ns()
    arrived = _ARRIVED.get() or now
    return (TRAILER, str((now - arrived) // 1000))


class _TimedContext:
    """The call's context, except that an abort's status carries the timing trailer too.

    An abort sends the status at once, so no outer layer can add a trailer after it: the trailer
    has to ride on the abort itself. Everything else is the real context's.
    """

    __slots__ = ("_context",)

    def __init__(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        self._context = context

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Sequence[tuple[str, Any]] = ()
    ) -> None:
        # An abort without trailers keeps those set before it (gRPC's own rule), plus ours.
        kept = tuple(trailing_metadata) or tuple(self._context.trailing_metadata() or ())
        await self._context.abort(code, details, (*kept, _elapsed_entry()))

    async def abort_with_status(self, status: grpc.Status) -> None:
        await self.abort(status.code, status.details, status.trailing_metadata)


def _timed(inner: _Handler) -> _Handler:
    async def unary_unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        response = await inner(request, _TimedContext(context))
        context.set_trailing_metadata((*(context.trailing_metadata() or ()), _elapsed_entry()))
        return response

    return unary_unary


class _Wrapped(NamedTuple):
    inner: grpc.RpcMethodHandler
    timed: grpc.RpcMethodHandler


class ServerTimingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Adds ``corral-server-us`` to the trailers of every unary-unary answer; register it first."""

    def __init__(self) -> None:
        # method -> the last inner handler and its timed wrapper; one entry per known method
        # (unknown methods have no handler and are not kept), so it stays bounded.
        self._wrapped: dict[str, _Wrapped] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        _ARRIVED.set(time.perf_counter_ns())
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = handler_call_details.method
        known = self._wrapped.get(method)
        if known is not None and known.inner is handler:
            return known.timed
        timed = grpc.unary_unary_rpc_method_handler(
            _timed(handler.unary_unary), handler.request_deserializer, handler.response_serializer
        )
        self._wrapped[method] = _Wrapped(handler, timed)
        return timed
