"""Rows of the learned-duration table (issue 9), shared by both stores.

One row per group of entries: a workflow's tasks (``("task", namespace, workflow)``) or a
namespace's fingerprints (``("fingerprint", namespace, "")``), the columns of migration 6:
``(kind, namespace, workflow, data, updated_at)`` where ``data`` is a JSON list of
``[name, seconds, samples, updated_at]``. Grouping makes learning a 20k-task workflow one row
write instead of 20k. Values a well-behaved book never produces (a non-finite or negative
duration, a count below 1, an unknown kind) are refused on both stores alike, so a bad record
fails the commit instead of poisoning the next boot's ranks.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any, Final

from corral.controller.core.durations import FINGERPRINT, TASK, GroupKey, LearnedDuration

__all__ = ["DURATION_COLUMNS", "decode_all", "decode_group", "encode_group", "encode_group_key"]

DURATION_COLUMNS: Final = ("kind", "namespace", "workflow", "data", "updated_at")
_KINDS: Final = frozenset({TASK, FINGERPRINT})

Row = tuple[Any, ...]


def encode_group_key(group: GroupKey) -> tuple[str, str, str]:
    """The primary key columns of a group; ValueError when it is not a valid key."""
    kind, namespace, workflow = group
    if kind not in _KINDS:
        raise ValueError(f"learned duration kind must be one of {sorted(_KINDS)}, got {kind!r}")
    if not (isinstance(namespace, str) and isinstance(workflow, str)):
        raise TypeError("learned duration group keys are strings")
    return (kind, namespace, workflow)


def encode_group(group: GroupKey, entries: Sequence[LearnedDuration]) -> Row:
    """One row holding every entry of ``group``; ValueError for a bad entry or key.

    Whole-list checks rather than per-entry branches: a group can hold tens of thousands.
    """
    key = encode_group_key(group)
    # Tuples encode as JSON lists.
    data: list[tuple[str, float, int, float, float, float]] = [
        (entry.name, entry.seconds, entry.samples, entry.updated_at, entry.peak_rss_bytes, entry.cpu_s)
        for entry in entries
    ]
    if not data:
        raise ValueError(f"learned duration group {group!r} is empty (delete it instead)")
    try:
        text = json.dumps(data, separators=(",", ":"), allow_nan=False)
    except ValueError:
        raise ValueError(f"learned durations of {group!r} must be finite numbers") from None
    if min(row[1] for row in data) < 0 or min(row[2] for row in data) < 1:
        raise ValueError(f"learned durations of {group!r} must be >= 0 s, from at least 1 sample")
    if min(min(row[4], row[5]) for row in data) < 0:
        raise ValueError(f"learned usage of {group!r} must be >= 0")
    if not all(isinstance(row[0], str) and type(row[2]) is int for row in data):
        raise TypeError(f"learned durations of {group!r}: names are str, sample counts int")
    return (*key, text, float(max(row[3] for row in data)))


def decode_group(row: Sequence[Any]) -> list[tuple[GroupKey, LearnedDuration]]:
    """The entries of one row, each with its group."""
    kind, namespace, workflow, data, _ = row
    group = (kind, namespace, workflow)
    # Rows written before usage was learned hold 4 fields per entry: their usage is 0 (unknown).
    return [
        (group, LearnedDuration(name, float(seconds), int(samples), float(updated_at), *map(float, usage[:2])))
        for name, seconds, samples, updated_at, *usage in json.loads(data)
    ]


def decode_all(rows: Iterable[Sequence[Any]]) -> list[tuple[GroupKey, LearnedDuration]]:
    """Every entry of ``rows`` with its group, least recently updated first (as the book restores them)."""
    return sorted((pair for row in rows for pair in decode_group(row)), key=lambda pair: pair[1].updated_at)
