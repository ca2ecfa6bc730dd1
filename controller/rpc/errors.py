"""One server interceptor maps the domain error vocabulary to gRPC status codes.

INVALID_ARGUMENT carries a ``google.rpc.BadRequest`` with one field violation per problem (in the
``grpc-status-details-bin`` trailer) and a message listing them as ``path: description``. Any
other exception becomes INTERNAL with a generic message and is logged: a handler bug never takes
the server down and never leaks a traceback to the caller.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from corral.controller import errors

__all__ = ["ErrorInterceptor", "code_name", "status_of"]

log = logging.getLogger("corral.controller.rpc")

_CODES: list[tuple[type[errors.CorralError], grpc.StatusCode, int]] = [
    # StorageFull first: it is a StorageUnavailable, but the caller must see why.
    (errors.StorageFull, grpc.StatusCode.RESOURCE_EXHAUSTED, code_pb2.RESOURCE_EXHAUSTED),
    (errors.StorageUnavailable, grpc.StatusCode.UNAVAILABLE, code_pb2.UNAVAILABLE),
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT, code_pb2.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND, code_pb2.NOT_FOUND),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION, code_pb2.FAILED_PRECONDITION),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS, code_pb2.ALREADY_EXISTS),
    (errors.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED, code_pb2.RESOURCE_EXHAUSTED),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED, code_pb2.UNAUTHENTICATED),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED, code_pb2.PERMISSION_DENIED),
]


# Status message and details travel in trailers, which clients cap at 8 KiB by default: past that
# the caller would see RESOURCE_EXHAUSTED instead of its error. A 5,000-task workflow with a bad
# name in every task must still get its INVALID_ARGUMENT, so both are bounded.
_MAX_MESSAGE = 1024
_MAX_DETAILS = 3 * 1024  # encoded BadRequest bytes (base64 in the trailer: 4 KiB)
_MAX_FIELD = 256
_MAX_DESCRIPTION = 512


def _violations(exc: errors.InvalidArgument) -> error_details_pb2.BadRequest:
    """The field violations that fit in the trailer, then one saying how many were left out."""
    request = error_details_pb2.BadRequest()
    size = 0
    for i, v in enumerate(exc.violations):
        item = error_details_pb2.BadRequest.FieldViolation(
            field=errors.clip(v.field, _MAX_FIELD), description=errors.clip(v.description, _MAX_DESCRIPTION)
        )
        size += item.ByteSize() + 4
        if size > _MAX_DETAILS:
            left = len(exc.violations) - i
            request.field_violations.add(field="", description=f"... and {left} more problems")
            break
        request.field_violations.append(item)
    return request


def code_name(exc: BaseException) -> str:
    """The gRPC status code name an exception of a handler ends its call with (for the audit log)."""
    if isinstance(exc, grpc.aio.AbortError):
        return "ABORTED_BY_HANDLER"
    for kind, status, _ in _CODES:
        if isinstance(exc, kind):
            return str(status.name)
    return "INTERNAL"


def status_of(exc: errors.CorralError) -> grpc.Status:
    """The rich gRPC status for a domain error."""
    code = code_pb2.UNKNOWN
    for kind, _, number in _CODES:
        if isinstance(exc, kind):
            code = number
            break
    status = status_pb2.Status(code=code, message=errors.clip(exc.message, _MAX_MESSAGE))
    if isinstance(exc, errors.InvalidArgument):
        detail = any_pb2.Any()
        detail.Pack(_violations(exc))
        status.details.append(detail)
    return rpc_status.to_status(status)


async def _abort(context: grpc.aio.ServicerContext[Any, Any], exc: BaseException, method: str) -> None:
    if isinstance(exc, errors.CorralError):
        status = status_of(exc)
        await context.abort(status.code, status.details, status.trailing_metadata)
    if not getattr(exc, "logged", False):  # the runtime logs the errors it rejects commands for, once
        log.exception("unexpected error in %s", method, exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method}; see the controller log")


class ErrorInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Wraps every handler so domain errors become precise status codes."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        if handler.unary_unary is not None:
            inner_uu = handler.unary_unary

            async def unary_unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                try:
                    return await inner_uu(request, context)
                except (errors.CorralError, Exception) as exc:
                    if isinstance(exc, grpc.aio.AbortError):
                        raise
                    await _abort(context, exc, method)

            return grpc.unary_unary_rpc_method_handler(
                unary_unary, handler.request_deserializer, handler.response_serializer
            )
        if handler.unary_stream is not None:
            inner_us = handler.unary_stream

            async def unary_stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
                try:
                    async for item in inner_us(request, context):
                        yield item
                except (errors.CorralError, Exception) as exc:
                    if isinstance(exc, grpc.aio.AbortError):
                        raise
                    await _abort(context, exc, method)

            return grpc.unary_stream_rpc_method_handler(
                unary_stream, handler.request_deserializer, handler.response_serializer
            )
        if handler.stream_stream is not None:
            inner_ss = handler.stream_stream

            async def stream_stream(
                requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]
            ) -> AsyncIterator[Any]:
                try:
                    async for item in inner_ss(requests, context):
                        yield item
                except (errors.CorralError, Exception) as exc:
                    if isinstance(exc, grpc.aio.AbortError):
                        raise
                    await _abort(context, exc, method)

            return grpc.stream_stream_rpc_method_handler(
                stream_stream, handler.request_deserializer, handler.response_serializer
            )
        return handler
