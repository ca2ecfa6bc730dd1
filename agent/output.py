"""Size-capped capture of a task's stdout/stderr, streamed to the controller in increments.

Two sources: bytes read from a pipe (shell attempts: :class:`PipeCapture`, which also keeps a copy in
a file of the attempt folder) and a file written directly by a process (the warm python workers:
:class:`FileCapture`, which reads only what was appended since the last look).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

__all__ = ["FileCapture", "PipeCapture", "last_line"]

_TAIL = 8192


def last_line(data: bytes | bytearray) -> str:
    """The last non-empty line of ``data``, decoded leniently and stripped ("" when there is none)."""
    for line in reversed(bytes(data).splitlines()):
        text = line.decode(errors="replace").strip()
        if text:
            return text
    return ""


class PipeCapture:
    """Collects bytes fed from a pipe: keeps at most ``cap`` of them, and the unsent ones.

    The tail of the stream is kept even past the cap, so the last line (a shell task's result, or
    its error message) is never lost to truncation.
    """

    __slots__ = ("_file", "_pending", "_tail", "cap", "kept", "truncated")

    def __init__(self, cap: int, path: Path | None = None) -> None:
        self.cap = cap
        self.kept = 0
        self.truncated = False
        self._pending = bytearray()
        self._tail = bytearray()
        self._file: BinaryIO | None = path.open("wb") if path is not None else None

    def feed(self, data: bytes) -> None:
        """Add a chunk read from the stream."""
        room = self.cap - self.kept
        kept = data if len(data) <= room else data[: max(room, 0)]
        if len(kept) < len(data):
            self.truncated = True
        if kept:
            self.kept += len(kept)
            self._pending += kept
            if self._file is not None:
                self._file.write(kept)
        self._tail += data
        if len(self._tail) > 2 * _TAIL:
            del self._tail[:-_TAIL]

    def take(self) -> bytes:
        """The bytes captured since the previous call (possibly empty)."""
        if not self._pending:
            return b""
        data = bytes(self._pending)
        self._pending.clear()
        return data

    def last_line(self) -> str:
        """The last non-empty line seen on the stream."""
        return last_line(self._tail)

    def tail(self) -> bytes:
        """The last few KiB of the stream."""
        return bytes(self._tail[-_TAIL:])

    def close(self) -> None:
        """Close the copy on disk."""
        if self._file is not None:
            self._file.close()
            self._file = None


class FileCapture:
    """Reads what a process appended to a capture file it writes directly (fd-level capture).

    The file is reused across tasks: :meth:`reset` starts a new task at offset 0 (the writer
    truncates the file; it is opened with O_APPEND so writes then land at the start again).
    """

    __slots__ = ("cap", "fd", "offset", "truncated")

    def __init__(self, fd: int, cap: int) -> None:
        self.fd = fd
        self.cap = cap
        self.offset = 0
        self.truncated = False

    def reset(self) -> None:
        """Forget the previous task's output."""
        self.offset = 0
        self.truncated = False

    def read_new(self, size: int | None = None) -> bytes:
        """The bytes appended since the last read, within the cap; ``size`` skips an fstat."""
        if size is None:
            try:
                size = os.fstat(self.fd).st_size
            except OSError:
                return b""
        if size <= self.offset:
            return b""
        end = min(size, self.cap)
        if size > self.cap:
            self.truncated = True
        if end <= self.offset:
            self.offset = size
            return b""
        data = os.pread(self.fd, end - self.offset, self.offset)
        self.offset = size if size > self.cap else self.offset + len(data)
        return data

    def read_tail(self, size: int, limit: int = _TAIL) -> bytes:
        """The last ``limit`` bytes of the first ``size`` bytes of the file (for error lines)."""
        start = max(0, size - limit)
        try:
            return os.pread(self.fd, size - start, start)
        except OSError:
            return b""
