"""Server-side latency of every unary call, as the trailing-metadata entry ``corral-server-us``.

The value is integer microseconds from the moment the request reached the outermost interceptor
(this one, registered first in :func:`corral.controller.server.build_server`) to the moment the
answer leaves the handler chain: receiving and decoding the request, authentication, the handler,
the state loop and the durable commit are in it; encoding the answer and the wire are not. A client
subtracts it from the time it measured itself to see its own and the network's share (the bench's
``roundtrip_server_p50_ms`` is read this way). Errors carry it too: the status a handler aborts
with keeps its own trailers (``grpc-status-details-bin`` ...) and gains this one.

Streaming calls are left alone: their "answer" is a stream with no single departure time.

The cost is two ``perf_counter_ns`` calls, a context variable, a small context wrapper and one
metadata tuple per unary call; the timed handler is built once per method, so no closure or
handler is made per call.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc

__all__ = ["TRAILER", "ServerTimingInterceptor", "server_us"]

#: The trailing-metadata key: integer microseconds spent in the server (see the module doc).
TRAILER = "corral-server-us"

_Handler = Callable[[Any, Any], Awaitable[Any]]

# The current call's arrival (perf_counter_ns) and the inner chain's handler. The interceptors and
# the handler of one call run in one asyncio task, so the timed handler reads what
# intercept_service set: one handler per method serves every call, and no closure is made per call
# even when an inner interceptor builds a fresh handler each time.
_CALL: contextvars.ContextVar[tuple[int, _Handler]] = contextvars.ContextVar("corral_server_call")


def server_us(metadata: Sequence[tuple[str, str | bytes]] | None) -> int | None:
    """The ``corral-server-us`` value of trailing metadata (None when absent or malformed)."""
    for key, value in metadata or ():
        if key == TRAILER:
            text = value.decode() if isinstance(value, bytes) else value
            return int(text) if text.isdigit() else None
    return None


def _elapsed_entry(arrived: int) -> tuple[str, str]:
    return (TRAILER, str((time.perf_counter_ns() - arrived) // 1000))


def _delegate(name: str) -> Callable[..., Any]:
    def method(self: _TimedContext, *args: Any, **kwargs: Any) -> Any:
        return getattr(self._context, name)(*args, **kwargs)

    method.__name__ = name
    return method


class _TimedContext:
    """The call's context, except that an abort's status carries the timing trailer too.

    An abort sends the status at once, so no outer layer can add a trailer after it: the trailer
    has to ride on the abort itself. Everything else is the real context's: its public methods
    are delegated by real methods (set below), because a ``__getattr__`` fallback costs about a
    microsecond per lookup on Python 3.11 and handlers look up several per call.
    """

    __slots__ = ("_arrived", "_context")

    def __init__(self, context: grpc.aio.ServicerContext[Any, Any], arrived: int) -> None:
        self._context = context
        self._arrived = arrived

    def __getattr__(self, name: str) -> Any:  # anything not delegated below (private or new API)
        return getattr(self._context, name)

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Sequence[tuple[str, Any]] = ()
    ) -> None:
        # An abort without trailers keeps those set before it (gRPC's own rule), plus ours.
        kept = tuple(trailing_metadata) or tuple(self._context.trailing_metadata() or ())
        await self._context.abort(code, details, (*kept, _elapsed_entry(self._arrived)))

    async def abort_with_status(self, status: grpc.Status) -> None:
        await self.abort(status.code, status.details, status.trailing_metadata)


for _name in dir(grpc.aio.ServicerContext):
    if not _name.startswith("_") and _name not in vars(_TimedContext):
        setattr(_TimedContext, _name, _delegate(_name))


async def _timed(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
    arrived, inner = _CALL.get()
    response = await inner(request, _TimedContext(context, arrived))
    context.set_trailing_metadata((*(context.trailing_metadata() or ()), _elapsed_entry(arrived)))
    return response


class ServerTimingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Adds ``corral-server-us`` to the trailers of every unary-unary answer; register it first."""

    def __init__(self) -> None:
        # method -> its timed handler (same codecs as the inner one); one entry per known method
        # (unknown methods have no handler and are not kept), so it stays bounded.
        self._timed: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        arrived = time.perf_counter_ns()
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        _CALL.set((arrived, handler.unary_unary))
        timed = self._timed.get(handler_call_details.method)
        if (
            timed is None
            or timed.request_deserializer is not handler.request_deserializer
            or timed.response_serializer is not handler.response_serializer
        ):
            timed = grpc.unary_unary_rpc_method_handler(
                _timed, handler.request_deserializer, handler.response_serializer
            )
            self._timed[handler_call_details.method] = timed
        return timed
