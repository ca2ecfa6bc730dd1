"""Task commands: explain (why is it not running?) and logs (its output, optionally followed).

Both take a task as ``WF/TASK`` (a workflow id or unique prefix, then the task's name) or as a task
id; the name is resolved by :meth:`Client.resolve_task`, the one place that does it.
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from rich.console import Group, RenderableType
from rich.text import Text

from corral.controller.cli.common import DEFAULT, AddressOption, OutputFormat, OutputOption, call, die
from corral.controller.cli.output import emit, explanation_view
from corral.controller.sdk.client import Client
from corral.controller.sdk.errors import NotFoundError
from corral.controller.sdk.history import TaskRef
from corral.controller.sdk.types import Explanation, LogChunk

__all__ = ["TaskArgument", "explain", "logs", "parse_since", "tail_lines"]

TaskArgument = Annotated[
    str,
    typer.Argument(
        help="WF/TASK (a workflow id or unique prefix, then the task's name), or a task id or unique prefix.",
        show_default=False,
    ),
]

#: What ``corral explain WF`` explains: the tasks that wait (the others run or have ended).
WAITING_STATES = ("pending", "ready", "assigned")

_SINCE = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d)$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def explain(
    target: Annotated[
        str,
        typer.Argument(
            help="WF/TASK, a task id, or a workflow id (or unique prefix): then every waiting task is explained.",
            show_default=False,
        ),
    ],
    output: OutputOption = OutputFormat.table,
    address: AddressOption = DEFAULT,
) -> None:
    """Explain why a task is (not) running, with every agent's verdict; for a workflow, every waiting task.

    A bare id is looked up as a workflow first, then as a task. JSON fields (a list of these for a
    workflow): task (as in `corral status`), reason (a fresh evaluation), waiting_on, agents[] (agent_id,
    agent_name, reason; an empty reason means the agent can take the task), last_plan_reason (what the
    scheduler's last pass recorded for a READY task), last_plan_age_s (-1: no pass yet), demand_class.
    """

    async def action(client: Client) -> list[Explanation] | Explanation:
        if "/" in target:
            ref = await client.resolve_task(target)
            return await client.explain_task(ref.task_id)
        try:
            status = await client.status(target, include_tasks=True)
        except NotFoundError:
            return await client.explain_task(target)
        waiting = [task for task in status.tasks if task.state in WAITING_STATES]
        return [await client.explain_task(task.task_id) for task in waiting]

    result = call(address, action)
    if isinstance(result, Explanation):
        single = result
        emit(single.to_dict(), output, lambda wide: explanation_view(single, wide))
        return
    many = result
    emit([e.to_dict() for e in many], output, lambda wide: _explanations_view(many, wide))


def _explanations_view(explanations: list[Explanation], wide: bool) -> RenderableType:
    if not explanations:
        return Text("no waiting task: every task runs or has ended (see `corral status`)", style="dim")
    parts: list[RenderableType] = []
    for index, explanation in enumerate(explanations):
        if index:
            parts.append(Text(""))
        parts.append(explanation_view(explanation, wide))
    return Group(*parts)


def parse_since(text: str) -> float:
    """``30s``, ``5m``, ``2h``, ``1d`` as seconds; typer.BadParameter otherwise."""
    match = _SINCE.match(text.strip())
    if match is None:
        raise typer.BadParameter(f"{text!r}: expected a duration such as 30s, 5m, 2h or 1d")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def tail_lines(data: bytes, count: int) -> bytes:
    """The last ``count`` lines of ``data`` (a last line without a newline counts as one)."""
    if count <= 0 or not data:
        return b"" if count == 0 else data
    lines = data.splitlines(keepends=True)
    return b"".join(lines[-count:])


def _write(chunk: LogChunk, tail: int = -1) -> None:
    if chunk.stdout:
        sys.stdout.buffer.write(tail_lines(chunk.stdout, tail) if tail >= 0 else chunk.stdout)
        sys.stdout.buffer.flush()
    if chunk.stderr:
        sys.stderr.buffer.write(tail_lines(chunk.stderr, tail) if tail >= 0 else chunk.stderr)
        sys.stderr.buffer.flush()


def logs(
    target: TaskArgument,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new output until the attempt ends.")
    ] = False,
    tail: Annotated[
        int, typer.Option("--tail", "-n", min=-1, help="Only the last N lines of each stream (-1: all).")
    ] = -1,
    since: Annotated[
        str,
        typer.Option(
            "--since",
            help="Only if the attempt ran within this long (30s, 5m, 2h, 1d); output lines carry no time.",
            show_default=False,
        ),
    ] = "",
    attempt: Annotated[str, typer.Option("--attempt", help="An attempt id (default: the latest).")] = "",
    output: OutputOption = OutputFormat.table,
    address: AddressOption = DEFAULT,
) -> None:
    """Print a task's output: its stdout on stdout, its stderr on stderr.

    With -f, --tail N first prints the last N lines, then only what comes next (not a replay).
    JSON fields (not with -f): attempt_id, stdout, stderr (text), stdout_offset, stderr_offset, finished,
    truncated.
    """
    if follow and output.structured:
        die("error: --follow prints raw output; it cannot be combined with -o json/yaml", 2)
    window = parse_since(since) if since else None

    async def action(client: Client) -> LogChunk | None:
        ref = await client.resolve_task(target)
        if window is not None and not await _ran_within(client, ref, attempt, window):
            return None
        chunk = await client.logs(ref.task_id, attempt_id=attempt)
        if not follow:
            return chunk
        _write(chunk, tail)
        truncated = chunk.truncated
        # Continue after what was just read (printed or skipped by --tail): -f never replays.
        async for more in _follow(client, ref.task_id, chunk):
            _write(more)
            truncated = truncated or more.truncated
        if truncated:
            print("(output was truncated at the capture limit)", file=sys.stderr)
        return None

    chunk = call(address, action)
    if chunk is None:
        return
    if tail >= 0:
        chunk = LogChunk(
            chunk.attempt_id,
            tail_lines(chunk.stdout, tail),
            tail_lines(chunk.stderr, tail),
            chunk.stdout_offset,
            chunk.stderr_offset,
            chunk.finished,
            chunk.truncated,
            raw=chunk.raw,
        )
    if output.structured:
        emit(chunk.to_dict(), output, lambda wide: "")
        return
    _write(chunk)
    if chunk.truncated:
        print("(output was truncated at the capture limit)", file=sys.stderr)


async def _follow(client: Client, task_id: str, first: LogChunk, poll_interval: float = 0.5) -> AsyncIterator[LogChunk]:
    """New output of ``first``'s attempt after its offsets, until the attempt ends."""
    chunk = first
    while not chunk.finished:
        await asyncio.sleep(poll_interval)
        chunk = await client.logs(
            task_id,
            attempt_id=first.attempt_id,
            stdout_offset=chunk.stdout_offset,
            stderr_offset=chunk.stderr_offset,
        )
        if chunk.stdout or chunk.stderr:
            yield chunk


async def _ran_within(client: Client, ref: TaskRef, attempt_id: str, window: float) -> bool:
    """Whether the attempt (default: the task's latest) was running within the last ``window`` seconds."""
    workflow_id, task_id = ref.workflow_id, ref.task_id
    if not workflow_id:  # a bare task id: its workflow is not known yet
        task = (await client.explain_task(task_id)).task
        workflow_id, task_id = task.workflow_id, task.task_id
    attempts = await client.attempts(workflow_id, task_id)
    chosen = next((a for a in attempts if a.attempt_id == attempt_id), None) if attempt_id else None
    if chosen is None and attempts:
        chosen = attempts[-1]
    if chosen is None or chosen.finished_at is None:
        return True  # still running (or not started): whatever it prints is recent
    cutoff = datetime.now(UTC) - timedelta(seconds=window)
    if chosen.finished_at >= cutoff:
        return True
    print(
        f"(attempt {chosen.attempt_id} ended at {chosen.finished_at.isoformat()}, before --since; nothing shown)",
        file=sys.stderr,
    )
    return False
