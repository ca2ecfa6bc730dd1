"""Task output as the stores keep it: a batch's chunks merged per attempt, each stream capped."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from corral.controller.store.base import LogChunk
from corral.controller.store.codec import _blob

__all__ = ["MAX_LOG_BYTES_PER_STREAM", "fit_log", "merge_log_chunks"]

#: Bytes of stdout (and, separately, of stderr) kept per attempt; the rest is dropped and the
#: attempt's output is marked truncated. Large outputs belong in files, not in the state database.
MAX_LOG_BYTES_PER_STREAM: Final = 1024 * 1024


def merge_log_chunks(chunks: Sequence[LogChunk]) -> dict[str, tuple[bytes, bytes, bool]]:
    """Concatenate the chunks of one batch per attempt, in order: ``{attempt_id: (out, err, cut)}``.

    Done before a store touches its state, so a chunk holding something other than bytes fails the
    commit while nothing has been written yet.
    """
    merged: dict[str, tuple[bytearray, bytearray, list[bool]]] = {}
    for chunk in chunks:
        entry = merged.get(chunk.attempt_id)
        if entry is None:
            entry = merged[chunk.attempt_id] = (bytearray(), bytearray(), [False])
        entry[0].extend(_blob(chunk.stdout))
        entry[1].extend(_blob(chunk.stderr))
        if chunk.truncated:
            entry[2][0] = True
    return {key: (bytes(out), bytes(err), cut[0]) for key, (out, err, cut) in merged.items()}


def fit_log(data: bytes, stored: int) -> tuple[bytes, bool]:
    """The part of ``data`` that fits after ``stored`` bytes of a stream, and whether some was cut."""
    room = max(0, MAX_LOG_BYTES_PER_STREAM - stored)
    if len(data) <= room:
        return data, False
    return data[:room], True
