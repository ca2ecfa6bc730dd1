"""The domain error vocabulary of the controller.

Every error a caller can cause is one of these; the rpc layer maps each to one gRPC status code in
a single interceptor, so handlers never pick status codes themselves.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "AlreadyExists",
    "CorralError",
    "FailedPrecondition",
    "FieldViolation",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "StorageFull",
    "StorageUnavailable",
    "Unauthenticated",
    "clip",
]

MAX_ECHO = 128  # characters of a caller's value repeated in an error message


def clip(value: str, limit: int = MAX_ECHO) -> str:
    """``value`` cut to ``limit`` characters for an error message (a 1 MB id must not come back)."""
    return value if len(value) <= limit else value[:limit] + "..."


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One invalid field: ``field`` is a path such as ``tasks[2].resources.cpu_cores``."""

    field: str
    description: str

    def __str__(self) -> str:
        return f"{self.field}: {self.description}" if self.field else self.description


class CorralError(Exception):
    """Base of all domain errors; ``message`` is safe to show to the caller."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(CorralError):
    """The request is malformed; nothing was changed. Carries every field violation found."""

    def __init__(self, violations: Iterable[FieldViolation] | str) -> None:
        if isinstance(violations, str):
            violations = [FieldViolation("", violations)]
        self.violations: tuple[FieldViolation, ...] = tuple(violations)
        super().__init__("; ".join(str(v) for v in self.violations) or "invalid argument")

    @classmethod
    def field(cls, path: str, description: str) -> InvalidArgument:
        return cls([FieldViolation(path, description)])


class NotFound(CorralError):
    """An id (or prefix) that names nothing."""


class FailedPrecondition(CorralError):
    """The request is well-formed but the target's state does not allow it (e.g. a finished workflow)."""


class AlreadyExists(CorralError):
    """Something with that identity exists already."""


class ResourceExhausted(CorralError):
    """A size or rate limit was exceeded."""


class Unauthenticated(CorralError):
    """No credentials, or credentials that are unknown, expired or revoked."""


class PermissionDenied(CorralError):
    """The caller is known but may not do this: its role or namespaces, or another agent's or worker's attempt."""


class StorageUnavailable(CorralError):
    """The store cannot record changes right now (an I/O error): nothing of the request was applied.

    The controller keeps serving reads and retries the store by itself; the caller may retry later.
    """


class StorageFull(StorageUnavailable):
    """The store's disk is full: nothing of the request was applied; writes resume once space returns."""
