"""Size-capped capture of a task's stdout/stderr, streamed to the controller in increments.

Every byte comes through a pipe read by the agent or a shell attempt's supervisor, so what a task
prints never reaches the disk except the first ``cap`` bytes kept in a log file (which the agent
tails, from a saved offset, to stream it): a task printing 1 GiB costs CPU time, not 1 GiB of disk. Secret values are
redacted before anything is kept, streamed or used as an error line, across chunk boundaries too.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

# typing costs ~5 ms to import and is only needed by the type checker (mypy treats any name
# TYPE_CHECKING as true): this module is on the start path of every shell task.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import BinaryIO

__all__ = ["LastLine", "PipeCapture", "Redactor", "last_line"]

_TAIL = 8192


def last_line(data: bytes | bytearray) -> str:
    """The last non-empty line of ``data``, decoded leniently and stripped ("" when there is none)."""
    for line in reversed(bytes(data).splitlines()):
        text = line.decode(errors="replace").strip()
        if text:
            return text
    return ""


class Redactor:
    """Replaces verbatim secret values in a byte stream with ``[secret NAME]``.

    The last ``longest - 1`` bytes of each chunk are held back until more arrive (or :meth:`flush`),
    so a value split across two reads is still found.
    """

    __slots__ = ("_held", "_keep", "_names", "_pattern")

    def __init__(self, secrets: Mapping[str, str]) -> None:
        values = {value.encode(): name for name, value in secrets.items() if value}
        self._names = values
        self._keep = max((len(v) for v in values), default=1) - 1
        # Longest first: a secret that contains another is replaced whole.
        alternatives = sorted(values, key=len, reverse=True)
        self._pattern = re.compile(b"|".join(re.escape(v) for v in alternatives)) if alternatives else None
        self._held = b""

    @property
    def active(self) -> bool:
        """Whether there is anything to redact."""
        return self._pattern is not None

    def feed(self, data: bytes) -> bytes:
        """Redact ``data`` (following what was fed before); returns the bytes safe to pass on."""
        if self._pattern is None:
            return data
        buffer = self._held + data
        safe_end = len(buffer) - self._keep
        out = bytearray()
        position = 0
        for match in self._pattern.finditer(buffer):
            if match.start() >= safe_end:
                break
            out += buffer[position : match.start()]
            out += b"[secret " + self._names[match.group()].encode() + b"]"
            position = match.end()
        cut = max(safe_end, position)
        out += buffer[position:cut]
        self._held = buffer[cut:]
        return bytes(out)

    def flush(self) -> bytes:
        """The held-back bytes, redacted (the stream has ended)."""
        if self._pattern is None or not self._held:
            return b""
        held, self._held = self._held, b""
        return self._pattern.sub(lambda m: b"[secret " + self._names[m.group()].encode() + b"]", held)

    def text(self, value: str) -> str:
        """Redact a whole string (an error message)."""
        if self._pattern is None:
            return value
        return self._pattern.sub(lambda m: b"[secret " + self._names[m.group()].encode() + b"]", value.encode()).decode(
            errors="replace"
        )


_NO_SECRETS = Redactor({})


class LastLine:
    """The last non-empty line of a stream, its first ``keep`` bytes and its true length.

    Only the end of each chunk is looked at, so a stream of many short lines costs no per-line work.
    """

    __slots__ = ("_current", "_current_len", "_keep", "_last", "_last_len")

    def __init__(self, keep: int) -> None:
        self._keep = keep
        self._current = bytearray()
        self._current_len = 0
        self._last = b""
        self._last_len = 0

    def _append(self, part: bytes) -> None:
        room = self._keep - len(self._current)
        if room > 0:
            self._current += part[:room]
        self._current_len += len(part)

    def feed(self, data: bytes) -> None:
        """Add a chunk of the stream."""
        newline = data.rfind(b"\n")
        if newline < 0:
            self._append(data)
            return
        completed = data[:newline].rstrip()
        inner = completed.rfind(b"\n")
        if inner >= 0:
            # A whole line inside this chunk ends last: the partial line before it is irrelevant.
            # rstrip() left a non-blank last line.
            line = completed[inner + 1 :]
            self._last, self._last_len = line[: self._keep], len(line)
        else:
            self._append(completed)
            if bytes(self._current).strip():
                self._last, self._last_len = bytes(self._current), self._current_len
        self._current = bytearray()
        self._current_len = 0
        self._append(data[newline + 1 :])

    def line(self) -> tuple[bytes, int]:
        """The last non-empty line (at most ``keep`` bytes, stripped) and its full length in bytes."""
        if bytes(self._current).strip():
            return bytes(self._current).strip(), self._current_len
        return self._last.strip(), self._last_len


class PipeCapture:
    """Collects bytes fed from a pipe: keeps at most ``cap`` of them, and the unsent ones.

    The last line of the stream is kept even past the cap (up to ``line_keep`` bytes), so a shell
    task's result line, or its error message, is never lost to truncation.
    """

    __slots__ = ("_file", "_line", "_pending", "_redactor", "_stream", "cap", "kept", "truncated")

    def __init__(
        self,
        cap: int,
        path: Path | None = None,
        *,
        secrets: Mapping[str, str] | None = None,
        line_keep: int = _TAIL,
        stream: bool = True,
    ) -> None:
        # stream=False: nobody calls take() (the supervisor's file is the stream); keep nothing pending.
        self._stream = stream
        self.cap = cap
        self.kept = 0
        self.truncated = False
        self._pending = bytearray()
        self._line = LastLine(line_keep)
        # Most tasks have no secret: no redactor at all on their hot path.
        self._redactor = Redactor(secrets) if secrets else _NO_SECRETS
        self._file: BinaryIO | None = None
        if path is not None:
            # O_NOFOLLOW: a symlink planted in the attempt folder must not make the agent write through it.
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
            # Not streamed: the file is what a reader tails, so it sees every byte as soon as it is captured.
            self._file = os.fdopen(os.open(path, flags, 0o600), "wb", buffering=-1 if stream else 0)

    @property
    def redactor(self) -> Redactor:
        """The redactor of this stream (also used on error messages)."""
        return self._redactor

    def feed(self, data: bytes) -> None:
        """Add a chunk read from the stream."""
        if self._redactor.active:
            data = self._redactor.feed(data)
        self._keep(data)

    def _keep(self, data: bytes) -> None:
        if not data:
            return
        room = self.cap - self.kept
        kept = data if len(data) <= room else data[: max(room, 0)]
        if len(kept) < len(data):
            self.truncated = True
        if kept:
            self.kept += len(kept)
            if self._stream:
                self._pending += kept
            if self._file is not None:
                self._file.write(kept)
        self._line.feed(data)

    def take(self) -> bytes:
        """The bytes captured since the previous call (possibly empty)."""
        if not self._pending:
            return b""
        data = bytes(self._pending)
        self._pending.clear()
        return data

    def last_line(self) -> str:
        """The last non-empty line seen on the stream."""
        return self._line.line()[0].decode(errors="replace")

    def last_line_bytes(self) -> tuple[bytes, int]:
        """The last non-empty line (up to ``line_keep`` bytes) and its full length."""
        return self._line.line()

    def end(self) -> None:
        """The stream is over: release what the redactor held back."""
        self._keep(self._redactor.flush())

    def close(self) -> None:
        """End the stream and close the copy on disk."""
        self.end()
        if self._file is not None:
            self._file.close()
            self._file = None
