"""What each of the agent's asyncio tasks is waiting on, written when an operator sends SIGUSR2.

An agent that stops talking to its controller while its process lives (it logs nothing, answers
signals) is stuck in some await. ``kill -USR2 <agent pid>`` writes every task of its event loop
with its chain of awaits (the coroutine the task runs, the one that awaits, down to the innermost)
to its standard error, where its log lines go, without stopping anything: what ``py-spy dump``
shows of threads, for coroutines. ``Task.print_stack`` is not enough: it shows only the task's
outermost coroutine, not what that coroutine is awaiting.
"""

from __future__ import annotations

import asyncio
import io
import linecache
import sys
from typing import Any, TextIO

__all__ = ["await_chain", "describe_tasks", "write_tasks"]

_DEPTH = 32  # awaits followed per task: far more than the agent nests


def await_chain(task: asyncio.Task[Any]) -> list[str]:
    """The task's awaits, outermost first: ``file:line in function: source`` per suspended coroutine."""
    lines: list[str] = []
    awaited: Any = task.get_coro()
    for _ in range(_DEPTH):
        frame = (
            getattr(awaited, "cr_frame", None)
            or getattr(awaited, "gi_frame", None)
            or getattr(awaited, "ag_frame", None)
        )
        if frame is None:
            if awaited is not None:
                lines.append(f"awaiting {type(awaited).__qualname__}")
            break
        code, line = frame.f_code, frame.f_lineno  # f_lineno is None in some states (not started)
        source = linecache.getline(code.co_filename, line).strip() if line is not None else ""
        lines.append(f'File "{code.co_filename}", line {line}, in {code.co_name}: {source}')
        awaited = (
            getattr(awaited, "cr_await", None)
            or getattr(awaited, "gi_yieldfrom", None)
            or getattr(awaited, "ag_await", None)
        )
    return lines


def describe_tasks(loop: asyncio.AbstractEventLoop) -> str:
    """Every unfinished task of ``loop`` by name, each with its chain of awaits."""
    out = io.StringIO()
    tasks = sorted(asyncio.all_tasks(loop), key=lambda task: task.get_name())
    out.write(f"{len(tasks)} asyncio task(s)\n")
    for task in tasks:
        out.write(f"task {task.get_name()!r}:\n")
        for line in await_chain(task):
            out.write(f"  {line}\n")
    return out.getvalue()


def write_tasks(loop: asyncio.AbstractEventLoop, into: TextIO | None = None) -> None:
    """Write :func:`describe_tasks` to ``into`` (standard error by default) and flush it."""
    stream = sys.stderr if into is None else into
    stream.write(describe_tasks(loop))
    stream.flush()
