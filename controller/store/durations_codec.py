"""Rows of the learned-duration table (issue 9), shared by both stores.

A row is ``(kind, namespace, workflow, name, seconds, samples, updated_at)``, the columns of
migration 6; ``decode_duration(encode_duration(d)) == d``. Values a well-behaved book never
produces (a non-finite or negative duration, an unknown kind) are refused on both stores alike,
so a bad record fails the commit instead of poisoning the next boot's ranks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Final

from corral.controller.core.durations import FINGERPRINT, TASK, DurationKey, LearnedDuration

__all__ = ["DURATION_COLUMNS", "decode_duration", "encode_duration", "encode_duration_key"]

DURATION_COLUMNS: Final = ("kind", "namespace", "workflow", "name", "seconds", "samples", "updated_at")
_KINDS: Final = frozenset({TASK, FINGERPRINT})

Row = tuple[Any, ...]


def encode_duration_key(key: DurationKey) -> tuple[str, str, str, str]:
    """The primary key columns of ``key``; ValueError when it is not a valid key."""
    kind, namespace, workflow, name = key
    if kind not in _KINDS:
        raise ValueError(f"learned duration kind must be one of {sorted(_KINDS)}, got {kind!r}")
    for part in (namespace, workflow, name):
        if not isinstance(part, str):
            raise TypeError(f"learned duration key parts must be str, got {type(part).__name__}")
    return (kind, namespace, workflow, name)


def encode_duration(entry: LearnedDuration) -> Row:
    """One row; ValueError for a negative or non-finite duration, a count below 1 or a bad key."""
    if not (math.isfinite(entry.seconds) and entry.seconds >= 0):
        raise ValueError(f"learned duration must be a finite number >= 0, got {entry.seconds!r}")
    if not isinstance(entry.samples, int) or entry.samples < 1:
        raise ValueError(f"learned duration samples must be an int >= 1, got {entry.samples!r}")
    if not math.isfinite(entry.updated_at):
        raise ValueError(f"learned duration updated_at must be finite, got {entry.updated_at!r}")
    return (*encode_duration_key(entry.key), float(entry.seconds), entry.samples, float(entry.updated_at))


def decode_duration(row: Sequence[Any]) -> LearnedDuration:
    """The entry of one row."""
    kind, namespace, workflow, name, seconds, samples, updated_at = row
    return LearnedDuration((kind, namespace, workflow, name), float(seconds), int(samples), float(updated_at))
