"""Task functions of the benchmarks, imported by the agents' python workers (``bench_tasks:NAME``).

This folder is put on the agents' ``PYTHONPATH`` by :mod:`bench.cluster`; it is not a package.
"""

from __future__ import annotations

import time

__all__ = ["noop", "sleep"]


def noop(i: int = 0) -> int:
    """Return the argument: the cheapest task that still carries a distinct payload and result."""
    return i


def sleep(seconds: float) -> float:
    """Sleep ``seconds`` and return it."""
    time.sleep(seconds)
    return seconds
