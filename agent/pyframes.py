"""The python worker's pipe framing: length-prefixed frames (a little-endian u32, then the body).

Shared by the worker (:mod:`corral.agent.pyworker`), its supervision (:mod:`corral.agent.pywatch`)
and the agent's side (:mod:`corral.agent.pyconn`). Standard library only: the worker imports it.
"""

from __future__ import annotations

import contextlib
import os
import select
import struct
from typing import BinaryIO

__all__ = ["HEADER", "read_exact", "read_frame", "write_all", "write_all_fd"]

HEADER = struct.Struct("<I")


def read_exact(stream: BinaryIO, size: int) -> bytes | None:
    """Exactly ``size`` bytes, or None at EOF. ``stream`` is unbuffered: the worker and its children
    read the same pipe in turn, so nothing may sit in a buffer one of them copied at a fork."""
    first = stream.read(size)
    if first is not None and len(first) == size:
        return first  # the common case: one read
    data = bytearray(first or b"")
    if not first:
        return None
    while len(data) < size:
        chunk = stream.read(size - len(data))
        if not chunk:
            return None
        data += chunk
    return bytes(data)


def read_frame(stream: BinaryIO) -> bytes | None:
    """One length-prefixed frame (header included), or None at EOF."""
    header = read_exact(stream, HEADER.size)
    if header is None:
        return None
    body = read_exact(stream, HEADER.unpack(header)[0])
    return None if body is None else header + body


def write_all(stream: BinaryIO, data: bytes) -> None:
    """Write all of ``data`` to an unbuffered stream."""
    view = memoryview(data)
    while view:
        written = stream.write(view)
        view = view[written or 0 :]


def write_all_fd(fd: int, data: bytes) -> None:
    """Write all of ``data`` to a file descriptor."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def take_stage_token(fd: int, boundary: bytes) -> bool:
    """In the worker: whether a staged request may start. Its token must be taken here (not back
    by the agent: whoever reads the byte has it) and the agent still be there (the token pipe's
    write end, the agent's alone, closes when it dies: nothing staged starts without it). Then
    the request's output boundary goes to both output pipes, ahead of anything the task writes."""
    if fd < 0 or not boundary:
        return False
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    if any(events & select.POLLHUP for _, events in poller.poll(0)):
        return False
    try:
        if os.read(fd, 1) != b"t":
            return False
    except OSError:  # BlockingIOError: the agent took it back
        return False
    for out in (1, 2):
        with contextlib.suppress(OSError):
            write_all_fd(out, boundary)
    return True
