"""Give the C heap's free memory back to the OS after big frees (glibc's ``malloc_trim``), off the loop.

glibc keeps freed memory in the process: after a big workflow's submission (its chunks' encodings
and their decoded messages, freed chunk by chunk) or the eviction of finished workflows, tens of
MiB stay resident although nothing uses them, and the objects Python allocates next go to its own
arenas, not there (issue 12, docs/DECISIONS.md "Memory per task"). ``malloc_trim(0)`` returns the
free pages. It runs in a thread (it walks the heap: milliseconds for a few hundred MiB) and at most
once every :data:`MIN_GAP_S`, so a burst of big submissions costs one trim. Elsewhere than glibc
(musl, macOS) there is no such call and :class:`HeapTrim` does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import math
import os
import time
from collections.abc import Callable
from typing import Any

__all__ = ["FIXED_THRESHOLD", "HEAP", "MIN_GAP_S", "HeapTrim", "fix_thresholds", "malloc_trim"]

MIN_GAP_S = 5.0
#: glibc's thresholds the controller fixes at start (bytes): see :func:`fix_thresholds`.
FIXED_THRESHOLD = 128 * 1024
_M_TRIM_THRESHOLD = -1  # mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD = -3
_ENV = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")
_TUNABLES = ("glibc.malloc.trim_threshold", "glibc.malloc.mmap_threshold")


def _libc(function: str) -> Any:
    """A function of the C library by name (a ctypes function), or None where there is none."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return getattr(ctypes.CDLL(name), function)
    except (OSError, AttributeError):
        return None


def fix_thresholds(threshold: int = FIXED_THRESHOLD) -> bool:
    """Fix glibc's trim and mmap thresholds at ``threshold`` (call at start); whether it did.

    glibc raises both thresholds on its own each time a big mmapped block is freed (up to 32 and
    64 MiB): a big workflow's submission does that, after which its big blocks come from the heaps
    and a thread's heap keeps up to 64 MiB of free top resident, which ``malloc_trim`` does not
    release (it trims only the main heap's top). Fixed thresholds keep big blocks mmapped (each
    goes back when freed) and let every heap give its free top back. Nothing happens where the
    C library is not glibc, or when the operator set either threshold in the environment.
    """
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if any(name in os.environ for name in _ENV) or any(name in tunables for name in _TUNABLES):
        return False  # the operator's choice
    mallopt = _libc("mallopt")
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, threshold))


def malloc_trim() -> Callable[[], None] | None:
    """glibc's malloc_trim(0), or None elsewhere."""
    trim = _libc("malloc_trim")
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]

    def call() -> None:
        trim(0)

    return call


class HeapTrim:
    """Rate-limited trims of the C heap (see the module docstring); ``trims`` counts the ones done."""

    def __init__(
        self,
        trim: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        min_gap_s: float = MIN_GAP_S,
    ) -> None:
        self._trim = trim
        self._clock = clock
        self.min_gap_s = min_gap_s
        self._last = -math.inf
        self._running = False
        self.trims = 0

    @classmethod
    def of_libc(cls) -> HeapTrim:
        """The process's trimmer: glibc's call when there is one."""
        return cls(malloc_trim())

    async def trim(self) -> bool:
        """Trim now unless one ran (or runs) within ``min_gap_s``; whether it trimmed."""
        if self._trim is None or self._running or self._clock() - self._last < self.min_gap_s:
            return False
        self._running = True
        try:
            await asyncio.to_thread(self._trim)
            self.trims += 1
        finally:
            self._running = False
            self._last = self._clock()
        return True


#: The process's one trimmer, shared by the submission path and lifecycle's eviction pass.
HEAP = HeapTrim.of_libc()
