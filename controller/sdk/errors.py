"""Typed errors of the client SDK, mapped one-to-one from gRPC status codes.

Every failed call raises a :class:`CorralError` subclass, never a raw ``grpc.RpcError``: callers
catch :class:`NotFoundError` or :class:`InvalidArgumentError` instead of comparing status codes.
``INVALID_ARGUMENT`` errors carry the server's field violations (``google.rpc.BadRequest`` in the
rich status details), so a bad workflow reports every problem with its field path.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

import grpc

__all__ = [
    "AlreadyExistsError",
    "CancelledError",
    "CorralError",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "InvalidArgumentError",
    "NotFoundError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "UnauthenticatedError",
    "UnavailableError",
    "Violation",
    "error_from_rpc",
    "unreachable",
]


class Violation(NamedTuple):
    """One invalid field: ``field`` is a path such as ``tasks[2].resources.cpu_cores``."""

    field: str
    description: str

    def __str__(self) -> str:
        return f"{self.field}: {self.description}" if self.field else self.description


class CorralError(Exception):
    """Base of every error the SDK raises. ``message`` is the server's (or the SDK's) explanation."""

    #: the gRPC status code this error class stands for (``None`` for the base class)
    code: grpc.StatusCode | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgumentError(CorralError):
    """The request (usually a workflow) is invalid; nothing was changed.

    ``violations`` lists every problem as ``(field, description)`` pairs.
    """

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, message: str = "", violations: Iterable[tuple[str, str]] = ()) -> None:
        self.violations: list[Violation] = [Violation(str(f), str(d)) for f, d in violations]
        if not message:
            message = "; ".join(str(v) for v in self.violations) or "invalid argument"
        super().__init__(message)


class NotFoundError(CorralError):
    """No workflow, task or agent has that id (or the prefix matches none)."""

    code = grpc.StatusCode.NOT_FOUND


class FailedPreconditionError(CorralError):
    """The target's state does not allow the request, e.g. pausing a finished workflow."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class AlreadyExistsError(CorralError):
    """Something with that identity exists already."""

    code = grpc.StatusCode.ALREADY_EXISTS


class ResourceExhaustedError(CorralError):
    """A size, rate or quota limit was hit."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class UnavailableError(CorralError):
    """The controller could not be reached (not running, wrong address, or restarting)."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceededError(CorralError):
    """The call did not finish within its deadline."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class PermissionDeniedError(CorralError):
    """The caller's token does not carry the role this call needs."""

    code = grpc.StatusCode.PERMISSION_DENIED


class UnauthenticatedError(CorralError):
    """The call carried no valid credentials."""

    code = grpc.StatusCode.UNAUTHENTICATED


class CancelledError(CorralError):
    """The call was cancelled before it finished."""

    code = grpc.StatusCode.CANCELLED


_BY_CODE: dict[grpc.StatusCode, type[CorralError]] = {
    cls.code: cls
    for cls in (
        InvalidArgumentError,
        NotFoundError,
        FailedPreconditionError,
        AlreadyExistsError,
        ResourceExhaustedError,
        UnavailableError,
        DeadlineExceededError,
        PermissionDeniedError,
        UnauthenticatedError,
        CancelledError,
    )
    if cls.code is not None
}


def unreachable(address: str, *, tls: bool = False) -> UnavailableError:
    """The one error (and the one line of text) for a controller that does not answer.

    Over TLS (``tls``) a failed handshake looks to gRPC exactly like a port that does not answer,
    so the line names that cause too.
    """
    if tls:
        return UnavailableError(
            f"cannot reach the controller at {address} — is it running, and is the TLS handshake right "
            "(--ca the controller's CA; a client certificate where the port requires one)?"
        )
    return UnavailableError(f"cannot reach the controller at {address} — is it running?")


def _violations_from(error: Any) -> list[Violation]:
    """Read ``google.rpc.BadRequest`` field violations from the call's rich status, if any."""
    # Imported here: the status protos are only needed on this error path.
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    try:
        status = rpc_status.from_call(error)
    except (ValueError, TypeError):
        # from_call insists the rich status agrees with the call's code and message; a proxy that
        # rewrote the message should not hide the violations, so fall back to the raw trailer.
        status = _raw_status(error)
    if status is None:
        return []
    violations: list[Violation] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            violations.extend(Violation(v.field, v.description) for v in bad_request.field_violations)
    return violations


def _raw_status(error: Any) -> Any:
    from google.rpc import status_pb2

    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            return status_pb2.Status.FromString(value)
    return None


def _violations_from_message(message: str) -> list[Violation]:
    # The server's message is "path: description; path: description"; used only when the call
    # carried no rich status (an older server, or one behind a proxy that strips trailers).
    result = []
    for part in message.split("; "):
        field, sep, description = part.partition(": ")
        if sep and field and " " not in field:
            result.append(Violation(field, description))
        elif part:
            result.append(Violation("", part))
    return result


def error_from_rpc(error: grpc.RpcError, address: str) -> CorralError:
    """Translate a failed gRPC call (sync or asyncio) into the matching :class:`CorralError`."""
    code_fn = getattr(error, "code", None)
    details_fn = getattr(error, "details", None)
    code = code_fn() if callable(code_fn) else grpc.StatusCode.UNKNOWN
    message = (details_fn() if callable(details_fn) else None) or str(error)
    if code == grpc.StatusCode.UNAVAILABLE:
        return unreachable(address)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        violations = _violations_from(error) or _violations_from_message(message)
        return InvalidArgumentError(message, violations)
    cls = _BY_CODE.get(code)
    if cls is None:
        return CorralError(f"{code.name if code else 'UNKNOWN'}: {message}")
    return cls(message)
