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

__all__ = ["child", "count", "count_current", "double", "fan_in", "items", "spawner", "total"]


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


def _log(ledger: str, line: str) -> None:
    with open(ledger, "a", encoding="utf-8") as out:
        out.write(line + "\n")


def spawner(n: int, ledger: str, fail_once: str, delay: float, ctx: TaskContext) -> int:
    """Spawn ``n`` children that depend on this task; the first attempt then fails (when
    ``fail_once`` does not exist yet), so the retry spawns the same children again."""
    _log(ledger, f"spawner {ctx.attempt_id}")
    children = [
        {
            "name": f"c{i}",
            "agent_type": "python",
            "payload": {"function": "ckpt_tasks:child", "kwargs": {"i": i, "ledger": ledger, "delay": delay}},
            "dependencies": [ctx.task_name],
        }
        for i in range(n)
    ]
    ctx.spawn_many(children)
    if fail_once and not os.path.exists(fail_once):
        open(fail_once, "w").close()
        raise RuntimeError("the first attempt fails after spawning")
    return n


def child(i: int, ledger: str, delay: float, inputs: dict[str, Any]) -> int:
    """A spawned child: its index (it also sees its spawner's result)."""
    time.sleep(delay)
    _log(ledger, f"child {i} {corral.task.current().attempt_id} {inputs.get('spawn')}")
    return i


def fan_in(ledger: str, inputs: dict[str, Any]) -> dict[str, int]:
    """Count and sum the results of the spawner's children (``spawn/*`` inputs)."""
    values = [v for k, v in inputs.items() if "/" in k]
    _log(ledger, f"fan_in {len(values)}")
    return {"count": len(values), "sum": sum(values)}


def items(n: int) -> list[int]:
    """The list a map fans out over."""
    return list(range(n))


def double(ledger: str, delay: float, inputs: dict[str, Any]) -> int:
    """A map child: twice its item."""
    time.sleep(delay)
    item = int(inputs["item"])
    _log(ledger, f"item {item} {corral.task.current().attempt_id}")
    return 2 * item


def total(inputs: dict[str, Any]) -> int:
    """The sum of the map's results (a list)."""
    return int(sum(inputs["each"]))
