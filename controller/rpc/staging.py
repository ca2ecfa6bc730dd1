"""Chunked submissions staged until their last chunk (issue 13): pure bookkeeping, time injected.

A workflow too big for one message comes as numbered chunks (``AppendTasks``). Each chunk's tasks
are kept as their encoding (a few dozen bytes a task, no decoded objects), so that the last chunk
can decode the whole workflow once and hand it to the one admission path: validation stays atomic
(nothing exists before the last chunk) and the whole upload costs O(tasks), not O(chunks²).

This module knows no gRPC, no clock and no store: :class:`Staging` is given ``now`` on each call,
and the rpc glue (:mod:`corral.controller.rpc.chunks`) decodes, admits and answers. Uploads live
in memory only: a controller restart (or a failover) drops them, and the next chunk is answered
NOT_FOUND, which tells the client to send the whole upload again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from corral.controller.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted, clip
from corral.controller.spec_common import Limits

__all__ = ["Staging", "StagingLimits", "Upload"]

# Aborted and sealed uploads are remembered (without their tasks) until they expire, so a client's
# retried chunk learns what became of its upload instead of "unknown"; at most this many uploads
# are remembered in all (ended ones are forgotten first).
_MAX_REMEMBERED = 4096
_UNKNOWN = "upload expired or unknown; resubmit the whole workflow"


@dataclass(frozen=True, slots=True)
class StagingLimits:
    """The named limits of chunked submissions (defaults: :class:`Limits`, read when made)."""

    max_chunks: int = field(default_factory=lambda: Limits.max_upload_chunks)
    max_open: int = field(default_factory=lambda: Limits.max_open_uploads)
    max_bytes: int = field(default_factory=lambda: Limits.max_staged_bytes)
    max_tasks: int = field(default_factory=lambda: Limits.max_tasks)
    idle_s: float = field(default_factory=lambda: Limits.upload_idle_s)


@dataclass(slots=True)
class Upload:
    """One caller's upload: the header (chunk 0's encoded SubmitWorkflowRequest) and the chunks in."""

    owner: str
    upload_id: str
    chunks: int
    header: bytes
    parts: list[bytes] = field(default_factory=list)  # encoded tasks of chunk i at index i
    tasks: int = 0
    size: int = 0
    touched: float = 0.0
    aborted: str = ""  # why the upload failed (it then holds no parts)
    sealing: bool = False  # the last chunk is being admitted
    workflow_id: str = ""  # set once sealed
    wait_timeout_s: float | None = None  # set once sealed when the submission waits for the end

    @property
    def received(self) -> int:
        """Chunks in so far."""
        return len(self.parts)


class Staging:
    """Open uploads by (owner, upload id), with their limits and idle expiry."""

    def __init__(self, limits: StagingLimits | None = None) -> None:
        self.limits = limits or StagingLimits()
        self.uploads: dict[tuple[str, str], Upload] = {}
        self.staged_bytes = 0  # encoded tasks and headers held by uploads not yet sealed

    def append(
        self, owner: str, upload_id: str, index: int, chunks: int, part: bytes, tasks: int, header: bytes, now: float
    ) -> Upload:
        """Stage chunk ``index`` (its encoded tasks ``part``, of ``tasks`` tasks); chunk 0 opens the upload.

        A chunk sent again with the same content is accepted once (the upload is returned as is).
        Raises NotFound (no such upload of this owner, or it expired), FailedPrecondition (out of
        order, aborted, sealed), InvalidArgument (bad numbering, over max_tasks: the upload is
        then aborted) or ResourceExhausted (too many open uploads, too many bytes staged).
        """
        self.expire(now)
        if not 0 < chunks <= self.limits.max_chunks:
            raise InvalidArgument.field("chunks", f"must be between 1 and max_upload_chunks={self.limits.max_chunks}")
        if not 0 <= index < chunks:
            raise InvalidArgument.field("index", f"chunk {index} of an upload of {chunks} chunks (0 .. {chunks - 1})")
        key = (owner, upload_id)
        upload = self.uploads.get(key)
        if upload is None:
            if index != 0:
                raise NotFound(f"upload {clip(upload_id)!r}: {_UNKNOWN}")
            return self._open(key, chunks, part, tasks, header, now)
        upload.touched = now
        if upload.aborted:
            raise FailedPrecondition(f"upload {clip(upload_id)!r} aborted: {upload.aborted}")
        if chunks != upload.chunks:
            raise InvalidArgument.field("chunks", f"{chunks}, but the upload was opened with {upload.chunks}")
        if upload.workflow_id:
            return upload  # a chunk of a sealed upload, retried: the caller answers with its workflow
        if upload.sealing:
            raise FailedPrecondition(f"upload {clip(upload_id)!r} is being sealed by its last chunk")
        if index < upload.received:
            if upload.parts[index] != part or (index == 0 and header != upload.header):
                raise FailedPrecondition(f"chunk {index} was received already, with other content")
            return upload  # a retried chunk: accepted once
        if index > upload.received:
            raise FailedPrecondition(f"chunk {index} out of order: chunk {upload.received} is next")
        if upload.tasks + tasks > self.limits.max_tasks:
            total = upload.tasks + tasks
            self.abort(upload, f"{total} tasks, over max_tasks={self.limits.max_tasks}")
            raise InvalidArgument.field("tasks", f"{total} tasks in the upload, over max_tasks={self.limits.max_tasks}")
        self._reserve(len(part))
        upload.parts.append(part)
        upload.tasks += tasks
        upload.size += len(part)
        return upload

    def _open(self, key: tuple[str, str], chunks: int, part: bytes, tasks: int, header: bytes, now: float) -> Upload:
        owner, upload_id = key
        if len(self.uploads) >= _MAX_REMEMBERED:
            self._forget_ended()
        open_ = sum(1 for u in self.uploads.values() if u.owner == owner and not (u.aborted or u.workflow_id))
        if open_ >= self.limits.max_open:
            raise ResourceExhausted(f"{open_} uploads open, the max_open_uploads={self.limits.max_open} limit")
        if tasks > self.limits.max_tasks:
            raise InvalidArgument.field("tasks", f"{tasks} tasks, over max_tasks={self.limits.max_tasks}")
        self._reserve(len(part) + len(header))
        upload = Upload(owner, upload_id, chunks, header, [part], tasks, len(part) + len(header), now)
        self.uploads[key] = upload
        return upload

    def _reserve(self, size: int) -> None:
        total, limit = self.staged_bytes + size, self.limits.max_bytes
        if total > limit:
            raise ResourceExhausted(f"{total} bytes staged by open uploads, over max_staged_bytes={limit}")
        self.staged_bytes += size

    def complete(self, upload: Upload) -> bool:
        """Whether every chunk is in (the caller then seals it with :meth:`take`)."""
        return upload.received == upload.chunks and not upload.sealing and not upload.workflow_id

    def take(self, upload: Upload) -> tuple[bytes, list[bytes]]:
        """The header and every chunk's encoded tasks, in order; the upload lets go of them.

        The chunks stay apart (not joined): the seal decodes them one at a time, so the whole
        workflow is never decoded at once (issue 12: the submission's peak)."""
        upload.sealing = True
        header, tasks = upload.header, upload.parts
        upload.parts = [b""] * upload.chunks  # keeps `received`; the content is not needed any more
        upload.header = b""
        self.staged_bytes -= upload.size
        upload.size = 0
        return header, tasks

    def sealed(self, upload: Upload, workflow_id: str, now: float, wait_timeout_s: float | None = None) -> None:
        """The upload became workflow ``workflow_id``: a retried chunk answers with it until expiry
        (waiting for its end, at most ``wait_timeout_s``, when the submission asked to wait)."""
        upload.sealing = False
        upload.workflow_id = workflow_id
        upload.wait_timeout_s = wait_timeout_s
        upload.touched = now

    def abort(self, upload: Upload, reason: str) -> None:
        """Fail the upload for good: its tasks are released, later chunks get FailedPrecondition."""
        upload.aborted = reason or "aborted"
        upload.sealing = False
        self.staged_bytes -= upload.size
        upload.size = 0
        upload.parts = []
        upload.header = b""

    def _forget_ended(self) -> None:
        ended = sorted((u.touched, k) for k, u in self.uploads.items() if u.aborted or u.workflow_id)
        for _, key in ended[: len(ended) // 2 + 1]:
            del self.uploads[key]
        if len(self.uploads) >= _MAX_REMEMBERED:
            raise ResourceExhausted(f"{len(self.uploads)} uploads open on this controller; retry later")

    def expire(self, now: float) -> int:
        """Drop uploads idle for ``idle_s`` (being sealed: kept); returns how many went."""
        cutoff = now - self.limits.idle_s
        stale = [k for k, u in self.uploads.items() if u.touched <= cutoff and not u.sealing]
        for key in stale:
            upload = self.uploads.pop(key)
            self.staged_bytes -= upload.size
        return len(stale)
