"""Issue 12 on the command line: ``corral gc`` and ``corral namespace retain``.

::

    corral gc --dry-run             # the finished workflows past retention
    corral gc                       # delete them now (the controller also does, every second)
    corral namespace retain team-a 7d
    corral namespace retain team-a default
"""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.console import RenderableType
from rich.table import Table

from corral.controller.cli.common import DEFAULT, EXIT_INVALID, AddressOption, OutputFormat, OutputOption, call, die
from corral.controller.cli.output import emit, short_id
from corral.controller.durations import parse_duration
from corral.controller.sdk.client import Client
from corral.controller.sdk.retention import GcResult

__all__ = ["gc", "namespace_retain"]


def _view(result: GcResult, wide: bool) -> RenderableType:
    table = Table(box=None, pad_edge=False, header_style="bold", show_edge=False)
    for column in ("WORKFLOW", "NAME", "NAMESPACE", "STATE", "TASKS", "FINISHED"):
        table.add_column(column, no_wrap=True)
    now = time.time()
    for w in result.workflows:
        age = max(0.0, now - w.finished_at)
        table.add_row(
            short_id(w.workflow_id, wide), w.name, w.namespace, w.state, str(w.task_total), f"{age / 86400:.1f}d ago"
        )
    return table


def gc(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list what would be deleted.")] = False,
    output: OutputOption = OutputFormat.table,
    address: AddressOption = DEFAULT,
) -> None:
    """Delete finished workflows past retention now, with their attempts, logs and events (admin)."""

    async def action(client: Client) -> GcResult:
        return await client.collect_garbage(dry_run=dry_run)

    result = call(address, action)
    if output is not OutputFormat.table and output is not OutputFormat.wide:
        data = {
            "dry_run": result.dry_run,
            "deleted": result.deleted,
            "retention": result.retention,
            "workflows": [
                {
                    "workflow_id": w.workflow_id,
                    "name": w.name,
                    "namespace": w.namespace,
                    "state": w.state,
                    "finished_at": w.finished_at,
                    "task_total": w.task_total,
                }
                for w in result.workflows
            ],
        }
        emit(data, output, lambda wide: _view(result, wide))
        return
    if result.workflows:
        emit(None, output, lambda wide: _view(result, wide))
    count = len(result.workflows)
    verb = "would delete" if result.dry_run else "deleted"
    print(f"{verb} {count} workflow{'s' if count != 1 else ''} ({result.retention})")


def namespace_retain(
    name: Annotated[str, typer.Argument(help="Namespace name.", show_default=False)],
    retain: Annotated[
        str,
        typer.Argument(
            help="How long its finished workflows are kept: 30d, 12h, 0 (forever) or `default`.", show_default=False
        ),
    ],
    address: AddressOption = DEFAULT,
) -> None:
    """Keep a namespace's finished workflows this long (overrides the controller's --retain)."""
    if retain == "default":
        retain_s: float | None = None
    else:
        try:
            retain_s = parse_duration(retain)
        except ValueError as exc:
            die(f"error: {exc}", EXIT_INVALID)

    async def action(client: Client) -> str:
        return await client.set_namespace_retention(name, retain_s)

    print(call(address, action))
