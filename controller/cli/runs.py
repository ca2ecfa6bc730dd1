"""Run commands (issue 10): ``corral retry``, ``corral rerun``, ``corral runs`` (alias ``history``)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from corral.controller.cli.common import DEFAULT, AddressOption, OutputFormat, OutputOption, call, out_console
from corral.controller.cli.output import STATE_STYLES, emit, seconds, status_view
from corral.controller.sdk.client import Client
from corral.controller.sdk.runs import RunInfo
from corral.controller.sdk.types import WorkflowStatus

__all__ = ["register", "rerun", "retry", "runs"]

IdArgument = Annotated[str, typer.Argument(help="Workflow id or a unique prefix of one.", show_default=False)]


def register(app: typer.Typer, panel: str) -> None:
    """Add the run commands to the ``corral`` app."""
    app.command("retry", rich_help_panel=panel)(retry)
    app.command("rerun", rich_help_panel=panel)(rerun)
    app.command("runs", rich_help_panel=panel)(runs)
    app.command("history", rich_help_panel=panel, help="Alias of `corral runs`.")(runs)


def _print(status: WorkflowStatus, output: OutputFormat) -> None:
    if output.structured:
        emit(status.to_dict(), output, lambda wide: status_view(status, wide))
    else:
        out_console().print(f"{status.workflow_id} {status.state} run {status.run}", markup=False)


def retry(
    workflow_id: IdArgument,
    from_task: Annotated[
        str, typer.Option("--from", help="Run this task (name or id) and its descendants again, whatever their state.")
    ] = "",
    fresh: Annotated[bool, typer.Option("--fresh", help="Discard the retried tasks' checkpoints.")] = False,
    output: OutputOption = OutputFormat.table,
    address: AddressOption = DEFAULT,
) -> None:
    """Start a new run of a failed or cancelled workflow (or one paused on a failure).

    Its failed, skipped and cancelled tasks run again (or --from TASK and its descendants); completed
    tasks keep their results and do not run.
    """

    async def action(client: Client) -> WorkflowStatus:
        return await client.retry(workflow_id, from_task=from_task, fresh=fresh)

    _print(call(address, action), output)


def rerun(
    workflow_id: IdArgument,
    output: OutputOption = OutputFormat.table,
    address: AddressOption = DEFAULT,
) -> None:
    """Start a new run of an ended workflow in which every task runs again, with the same inputs."""

    async def action(client: Client) -> WorkflowStatus:
        return await client.rerun(workflow_id)

    _print(call(address, action), output)


def runs(
    workflow_id: IdArgument,
    output: OutputOption = OutputFormat.table,
    address: AddressOption = DEFAULT,
) -> None:
    """List the numbered runs of a workflow, oldest first.

    JSON: a list of {number, kind, from_task, fresh, started_at, finished_at, state, error, attempts,
    failed_attempts, tasks_run}.
    """

    async def action(client: Client) -> list[RunInfo]:
        return await client.runs(workflow_id)

    rows = call(address, action)
    emit([row.to_dict() for row in rows], output, lambda wide: _view(rows, wide))


def _view(rows: list[RunInfo], wide: bool) -> RenderableType:
    table = Table(box=None, pad_edge=False, header_style="bold", show_edge=False)
    for column in ("RUN", "KIND", "STATE", "STARTED", "DURATION", "ATTEMPTS", "FAILED", "ERROR"):
        table.add_column(column)
    if wide:
        table.add_column("TASKS RUN")
    for row in rows:
        kind = row.kind + (f" --from {row.from_task}" if row.from_task else "") + (" --fresh" if row.fresh else "")
        started = "-" if row.started_at is None else row.started_at.astimezone().strftime("%Y-%m-%d %H:%M:%S")
        duration = (row.finished_at - row.started_at).total_seconds() if row.started_at and row.finished_at else None
        cells: list[str | Text] = [
            str(row.number),
            kind,
            Text(row.state, style=STATE_STYLES.get(row.state, "")),
            started,
            seconds(duration),
            str(row.attempts),
            str(row.failed_attempts),
            row.error if wide else row.error[:60],
        ]
        if wide:
            cells.append(", ".join(row.tasks_run))
        table.add_row(*cells)
    return table
