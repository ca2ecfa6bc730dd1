"""Checkpoint and spawn files of running attempts, reported to the controller (issue 10).

A task saves its state to ``$CORRAL_CHECKPOINT_FILE`` (python: ``ctx.checkpoint(state)``, which
writes a temporary file and renames it; shell: the script does the same). The executor polls the
files of its running attempts with its output flush (every second) and reports a changed one,
at most once a second per attempt: the controller refuses faster ones. When an attempt ends, the
file is read once more, so the state saved just before a crash is not lost; that last report
waits out the rest of the second if it must, and goes before the Finished report.

A file that is not valid JSON (a shell task that wrote it in place and was caught halfway) or over
1 MiB is skipped; the next change is read again. Nothing is polled while no attempt runs.

Spawns (``ctx.spawn``) are lines appended to ``$CORRAL_SPAWN_FILE``, each a JSON list of tasks; every
complete new line is reported as it is found (no rate limit: the controller bounds the children),
and the last ones before the checkpoint and the Finished report.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

__all__ = ["MAX_CHECKPOINT_BYTES", "MAX_SPAWN_BYTES", "MIN_INTERVAL_S", "CheckpointWatch", "write_checkpoint_in"]

log = structlog.get_logger("corral.agent.checkpoints")

MAX_CHECKPOINT_BYTES = 1 << 20
MIN_INTERVAL_S = 1.0  # per attempt, by this agent's monotonic clock
MAX_SPAWN_BYTES = 4 << 20  # one spawn line (the controller's limit of a Spawn report)
# Sent instead of a line over the limit: the controller then fails the spawner (not a list of tasks).
_OVERSIZED = b'"a spawn over the 4 MiB limit"'


@dataclass(slots=True)
class _Watched:
    path: str | Path
    remove: bool  # the agent removes the file (and the in-file) when the attempt ends
    extra: str | None = None
    seen: tuple[int, int, int] | None = None  # (mtime ns, size, inode) of the last read
    sent_at: float = -MIN_INTERVAL_S
    spawn_path: str | Path | None = None
    spawn_offset: int = 0


class CheckpointWatch:
    """The checkpoint files of this agent's running attempts."""

    def __init__(
        self,
        send: Callable[[str, bytes], None],
        clock: Callable[[], float] = time.monotonic,
        spawn: Callable[[str, bytes], None] | None = None,
    ) -> None:
        self._send = send
        self._spawn = spawn
        self._clock = clock
        self._watched: dict[str, _Watched] = {}

    def watch(
        self,
        attempt_id: str,
        path: str | Path,
        *,
        remove: bool = False,
        extra: str | None = None,
        spawn_path: str | Path | None = None,
    ) -> None:
        """Report ``path`` for this attempt when it changes, and new lines of ``spawn_path``;
        ``remove``: delete the files (and ``extra``) at the end."""
        self._watched[attempt_id] = _Watched(path, remove, extra, spawn_path=spawn_path)

    def poll(self) -> None:
        """Report every changed file whose attempt did not report in the last second."""
        now = self._clock()
        for attempt_id, watched in self._watched.items():
            if watched.spawn_path is not None:
                self._send_spawns(attempt_id, watched)
            if now - watched.sent_at >= MIN_INTERVAL_S:
                data = _read_changed(watched)
                if data is not None:
                    watched.sent_at = now
                    self._send(attempt_id, data)

    def take_final(self, attempt_id: str) -> tuple[_Watched, bytes | None] | None:
        """Stop watching; the file's last unreported state, read now (synchronously: a python
        worker's folder may be wiped as soon as the caller next awaits)."""
        watched = self._watched.pop(attempt_id, None)
        if watched is None:
            return None
        if watched.spawn_path is not None:
            self._send_spawns(attempt_id, watched)  # spawns go at once, before any later report
        data = _read_changed(watched)
        if watched.remove:
            for path in (watched.path, watched.extra, watched.spawn_path):
                if path is not None:
                    with contextlib.suppress(OSError):
                        os.unlink(path)
        return watched, data

    async def send_final(self, attempt_id: str, final: tuple[_Watched, bytes | None] | None) -> None:
        """Report the last state (after waiting out the rest of the second, if need be)."""
        if final is None:
            return
        watched, data = final
        if data is None:
            return
        wait = watched.sent_at + MIN_INTERVAL_S - self._clock()
        if wait > 0:
            await asyncio.sleep(wait)
        self._send(attempt_id, data)

    def watching(self, attempt_id: str) -> bool:
        return attempt_id in self._watched

    def forget(self, attempt_id: str) -> None:
        self._watched.pop(attempt_id, None)

    def _send_spawns(self, attempt_id: str, watched: _Watched) -> None:
        """Report every complete line appended to the spawn file since the last look."""
        assert watched.spawn_path is not None
        if self._spawn is None:
            return
        try:
            with open(watched.spawn_path, "rb") as file:
                file.seek(watched.spawn_offset)
                data = file.read()
        except OSError:
            return
        end = data.rfind(b"\n")
        if end < 0:
            return  # nothing new, or a line still being written
        watched.spawn_offset += end + 1
        for line in data[:end].split(b"\n"):
            if line.strip():
                self._spawn(attempt_id, line if len(line) <= MAX_SPAWN_BYTES else _OVERSIZED)


def _read_changed(watched: _Watched) -> bytes | None:
    """The file's content if it changed since the last read and is a JSON value within the limit."""
    try:
        info = os.stat(watched.path)
    except OSError:
        return None
    seen = (info.st_mtime_ns, info.st_size, info.st_ino)
    if seen == watched.seen:
        return None
    watched.seen = seen
    if info.st_size > MAX_CHECKPOINT_BYTES or info.st_size == 0:
        if info.st_size:
            log.warning("checkpoint over the limit skipped", path=str(watched.path), size=info.st_size)
        return None
    try:
        with open(watched.path, "rb") as file:
            data = file.read(MAX_CHECKPOINT_BYTES + 1)
        json.loads(data)
    except (OSError, ValueError):
        return None  # half written (not renamed into place): the finished write changes it again
    return data if len(data) <= MAX_CHECKPOINT_BYTES else None


def write_checkpoint_in(path: str | Path, data: bytes, uid_gid: tuple[int, int] | None = None) -> str:
    """Write the checkpoint handed to a new attempt; the value of ``$CORRAL_CHECKPOINT_IN``."""
    with open(path, "wb") as file:
        file.write(data)
    if uid_gid is not None:
        os.chown(path, *uid_gid)
    return str(path)
