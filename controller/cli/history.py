"""History commands (issue 11): ``corral events WF [-f]`` and ``corral attempts WF/TASK``."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from corral.controller.cli.common import DEFAULT, AddressOption, OutputFormat, OutputOption, call, die, out_console
from corral.controller.cli.output import STATE_STYLES, emit, event_dict, events_view, seconds, short_id
from corral.controller.cli.tasks import TaskArgument
from corral.controller.sdk.client import Client
from corral.controller.sdk.history import AttemptInfo, TaskRef, split_target
from corral.controller.sdk.types import WorkflowEvent

__all__ = ["attempts", "events", "register"]

IdArgument = Annotated[str, typer.Argument(help="Workflow id or a unique prefix of one.", show_default=False)]

_ATTEMPT_STYLES = {**STATE_STYLES, "succeeded": "green", "timed_out": "bold red", "lost": "bold red"}


def register(app: typer.Typer, panel_work: str, panel_tasks: str) -> None:
    """Add the commands to the ``corral`` app (one line in cli/main.py); ``events`` replaces the old one."""
    app.command("events", rich_help_panel=panel_work)(events)
    app.command("attempts", rich_help_panel=panel_tasks)(attempts)


def events(
    workflow_id: IdArgument,
    task: Annotated[str, typer.Option("--task", "-t", help="Only this task's events (its name or id).")] = "",
    after: Annotated[int, typer.Option("--after", min=0, help="Only events after this sequence number.")] = 0,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new events until the workflow ends.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (same as -o json).")] = False,
    output: OutputOption = OutputFormat.table,
    address: AddressOption = DEFAULT,
) -> None:
    """Show a workflow's event log, oldest first: submitted, placed (where and why), started, finished
    (exit code, signal), retried, requeued, preempted, cancelled ...

    With -f, new events print as they are recorded (one line each; with -o json one JSON object per
    line) until the workflow ends. JSON: a list of {seq, at, workflow_id, workflow_state, task_id,
    task_name, task_state, attempt_id, agent_id, message, kind, reason}.
    """
    fmt = OutputFormat.json if as_json else output
    if follow:
        if fmt is OutputFormat.yaml:
            die("error: --follow prints one event per line: use -o table, wide or json", 2)
        call(address, lambda client: _follow(client, workflow_id, task, after, fmt))
        return

    async def action(client: Client) -> list[WorkflowEvent]:
        return await client.events(workflow_id, task or None, after)

    rows = call(address, action)
    emit([event_dict(row) for row in rows], fmt, lambda wide: events_view(rows, wide))


async def _follow(client: Client, workflow_id: str, task: str, after: int, fmt: OutputFormat) -> None:
    import json

    console = out_console()
    async for event in client.follow_events(workflow_id, task or None, after):
        if fmt is OutputFormat.json:
            print(json.dumps(event_dict(event), ensure_ascii=False), flush=True)
        else:
            console.print(event_line(event, fmt is OutputFormat.wide), markup=False, highlight=False)


def event_line(event: WorkflowEvent, wide: bool) -> str:
    """One event on one line, for ``events -f``: time, kind, task, attempt, agent, reason."""
    kind = event.kind or (event.task_state or event.workflow_state or "")
    stamp = "-" if event.at is None else event.at.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    parts = [stamp, kind, event.task_name or "-"]
    if event.attempt_id:
        parts.append(short_id(event.attempt_id, wide))
    if event.agent_id:
        parts.append(event.agent_id)
    reason = event.reason or event.message
    if reason:
        parts.append(reason)
    if wide:
        parts.insert(0, str(event.seq))
    return "  ".join(parts)


def attempts(
    target: TaskArgument,
    output: OutputOption = OutputFormat.table,
    address: AddressOption = DEFAULT,
) -> None:
    """List every attempt of a task, oldest first: where it ran, queued and run time, exit code and error.

    QUEUED is from its assignment to its start, RUN from its start to its end; EXIT is `-` for an
    attempt that never reported one (never started, lost), and a signal name for a killed one
    (`SIGTERM (-15)`). JSON: a list of {attempt_id, number, run, state, agent_id, agent_name,
    assigned_at, started_at, finished_at, exit_code (null: none), exit, error, peak_rss_bytes, cpu_s}.
    """

    async def action(client: Client) -> list[AttemptInfo]:
        split = split_target(target)
        if split is not None:
            return await client.attempts(*split)
        ref: TaskRef = await client.resolve_task(target)
        task = (await client.explain_task(ref.task_id)).task  # a bare task id: find its workflow
        return await client.attempts(task.workflow_id, task.task_id)

    rows = call(address, action)
    emit([row.to_dict() for row in rows], output, lambda wide: attempts_view(rows, wide))


def attempts_view(rows: list[AttemptInfo], wide: bool) -> RenderableType:
    """The attempts as a table."""
    if not rows:
        return Text("no attempts: the task never ran", style="dim")
    table = Table(box=None, pad_edge=False, header_style="bold", show_edge=False)
    columns = ["#", "ATTEMPT", "STATE", "AGENT", "QUEUED", "RUN", "EXIT", "ERROR"]
    if wide:
        columns[6:6] = ["WF RUN", "PEAK MEM", "CPU"]
    for column in columns:
        table.add_column(column, no_wrap=column == "ATTEMPT")
    for row in rows:
        error = row.error.splitlines()[0] if row.error else ""
        cells: list[RenderableType] = [
            str(row.number),
            short_id(row.attempt_id, wide),
            Text(row.state, style=_ATTEMPT_STYLES.get(row.state, "")),
            row.agent_name or row.agent_id or "-",
            seconds(row.queued_s),
            seconds(row.run_s),
            row.exit,
            error if wide else error[:80],
        ]
        if wide:
            mem = f"{row.peak_rss_bytes / 1048576:.0f}Mi" if row.peak_rss_bytes else "-"
            cells[6:6] = [str(row.run), mem, seconds(row.cpu_s) if row.cpu_s else "-"]
        table.add_row(*cells)
    return table
