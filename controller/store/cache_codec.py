"""Row codecs of issue 10: a task's cache policy (one TEXT column) and the ``cache_entries`` table."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any, Final

from corral.controller.core.cache import CacheEntry
from corral.controller.core.model import TaskCache

__all__ = [
    "CACHE_COLUMNS",
    "decode_entry",
    "decode_task_cache",
    "encode_entry",
    "encode_task_cache",
]

#: Columns of ``cache_entries``, in row order (migration 15).
CACHE_COLUMNS: Final = ("key", "namespace", "result", "source", "created_at", "expires_at", "last_used")


def encode_task_cache(cache: TaskCache) -> str:
    """``[key, ttl_s, version]`` as JSON text (a task without a policy stores "")."""
    ttl = cache.ttl_s
    if ttl is not None and not (math.isfinite(ttl) and ttl > 0):
        raise ValueError(f"cache ttl_s must be a finite number > 0, got {ttl!r}")
    return json.dumps([cache.key, ttl, cache.version], separators=(",", ":"))


def decode_task_cache(text: str) -> TaskCache:
    """Inverse of :func:`encode_task_cache`."""
    key, ttl, version = json.loads(text)
    return TaskCache(key, ttl, version)


def encode_entry(e: CacheEntry) -> tuple[Any, ...]:
    """Row of ``cache_entries``; refuses what could not come back equal."""
    if type(e.result) is not bytes:
        raise TypeError(f"a cache entry's result must be bytes, got {type(e.result).__name__}")
    for value in (e.created_at, e.last_used, e.expires_at):
        if value is not None and not math.isfinite(value):
            raise ValueError(f"cache entry {e.key}: times must be finite")
    return (e.key, e.namespace, e.result, e.source, e.created_at, e.expires_at, e.last_used)


def decode_entry(row: Sequence[Any]) -> CacheEntry:
    """Inverse of :func:`encode_entry`."""
    return CacheEntry(row[0], row[1], row[2], row[3], row[4], row[5], row[6])
