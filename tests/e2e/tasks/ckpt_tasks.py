"""Python tasks of the checkpoint and dynamic-task e2e tests (issue 10), imported as ``ckpt_tasks:NAME``.

Each appends what it does to a ledger file (one ``O_APPEND`` write per line), so the test sees what
really ran: ``<attempt id> <number> <worker pid>`` per number counted.
"""

from __future__ import annotations

import os
import time
from typing import Any

import corral.task
from corral.task import TaskContext

__all__ = ["count", "count_current"]


def count(to: int, ledger: str, delay: float, ctx: TaskContext, every: int = 10) -> int:
    """Count from the last checkpoint (or 0) to ``to``, saving ``{"n": next}`` every ``every`` numbers."""
    state: Any = ctx.checkpoint_state
    start = int(state["n"]) if isinstance(state, dict) else 0
    worker = os.getppid()  # the warm worker (this process is its per-workflow child)
    for n in range(start, to):
        with open(ledger, "a", encoding="utf-8") as out:
            out.write(f"{ctx.attempt_id} {n} {worker}\n")
        time.sleep(delay)
        if (n + 1) % every == 0:
            ctx.checkpoint({"n": n + 1})
    return to


def count_current(to: int, ledger: str, delay: float) -> int:
    """:func:`count` through ``corral.task.current()`` instead of a ``ctx`` parameter."""
    return count(to, ledger, delay, corral.task.current())
