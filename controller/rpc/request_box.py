"""Requests their handler can let go of: a decoded message in a box that gRPC holds instead.

grpc.aio keeps the decoded request of a unary call referenced in its own frame until the handler
returns, and so do the interceptors around it. A SubmitWorkflow of 20,000 tasks is ~7 MiB of
protobuf memory once decoded, and an AppendTasks chunk of 50,000 ~17 MiB: all of it lived on
through the core's submit and the commit, the controller's highest point. With the box as the
deserializer's result, everything above the handler holds the box; the handler takes the message
out (:meth:`RequestBox.take`), and once it drops its own reference after the admission, the
message and its memory go (docs/DECISIONS.md, "Fifteenth wave").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["RequestBox", "boxed", "unbox"]

M = TypeVar("M")


class RequestBox(Generic[M]):
    """One decoded request, taken out once by its handler."""

    __slots__ = ("_message",)

    def __init__(self, message: M) -> None:
        self._message: M | None = message

    def take(self) -> M:
        """The request; the box no longer holds it (a second take is a programming error)."""
        message = self._message
        if message is None:
            raise RuntimeError("the request was already taken out of its box")
        self._message = None
        return message


def boxed(message_type: type[M]) -> Callable[[bytes], RequestBox[M]]:
    """A request deserializer for gRPC that decodes ``message_type`` into a :class:`RequestBox`."""
    parse: Callable[[bytes], M] = message_type.FromString  # type: ignore[attr-defined]

    def deserialize(data: bytes) -> RequestBox[M]:
        return RequestBox(parse(data))

    return deserialize


def unbox(request: RequestBox[M] | M) -> M:
    """The message of a boxed request, or the message itself (a direct call, as tests make)."""
    return request.take() if isinstance(request, RequestBox) else request
