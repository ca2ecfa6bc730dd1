"""Task commands: explain (why is it not running?) and logs (its output, optionally followed)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from corral.controller.cli.common import DEFAULT, AddressOption, OutputFormat, OutputOption, call, die
from corral.controller.cli.output import emit, explanation_view
from corral.controller.sdk.client import Client
from corral.controller.sdk.types import Explanation, LogChunk

__all__ = ["explain", "logs"]

TaskArgument = Annotated[str, typer.Argument(help="Task id or a unique prefix of one.", show_default=False)]


def explain(
    task_id: TaskArgument,
    output: OutputOption = OutputFormat.table,
    address: AddressOption = DEFAULT,
) -> None:
    """Explain why a task is (not) running, with every agent's verdict.

    JSON fields: task (as in `corral status`), reason (a fresh evaluation), waiting_on, agents[] (agent_id,
    agent_name, reason; an empty reason means the agent can take the task), last_plan_reason (what the
    scheduler's last pass recorded for a READY task), last_plan_age_s (-1: no pass yet), demand_class.
    """

    async def action(client: Client) -> Explanation:
        return await client.explain_task(task_id)

    result = call(address, action)
    emit(result.to_dict(), output, lambda wide: explanation_view(result, wide))


def _write(chunk: LogChunk) -> None:
    if chunk.stdout:
        sys.stdout.buffer.write(chunk.stdout)
        sys.stdout.buffer.flush()
    if chunk.stderr:
        sys.stderr.buffer.write(chunk.stderr)
        sys.stderr.buffer.flush()


def logs(
    task_id: TaskArgument,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing output until the attempt ends.")
    ] = False,
    attempt: Annotated[str, typer.Option("--attempt", help="An attempt id (default: the latest).")] = "",
    output: OutputOption = OutputFormat.table,
    address: AddressOption = DEFAULT,
) -> None:
    """Print a task's output: its stdout on stdout, its stderr on stderr.

    JSON fields (not with -f): attempt_id, stdout, stderr (text), stdout_offset, stderr_offset, finished,
    truncated.
    """
    if follow and output.structured:
        die("error: --follow prints raw output; it cannot be combined with -o json/yaml", 2)

    async def action(client: Client) -> LogChunk | None:
        if not follow:
            return await client.logs(task_id, attempt_id=attempt)
        truncated = False
        async for chunk in client.follow_logs(task_id, attempt_id=attempt):
            _write(chunk)
            truncated = truncated or chunk.truncated
        if truncated:
            print("(output was truncated at the capture limit)", file=sys.stderr)
        return None

    chunk = call(address, action)
    if chunk is None:
        return
    if output.structured:
        emit(chunk.to_dict(), output, lambda wide: "")
        return
    _write(chunk)
    if chunk.truncated:
        print("(output was truncated at the capture limit)", file=sys.stderr)
