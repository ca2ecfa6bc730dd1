"""``corral schedule``: cron schedules of workflow files; and ``--at`` for ``corral run/submit``.

corral schedule create nightly.yaml --cron "30 2 * * *" --timezone Europe/Berlin --overlap skip --catchup 3
corral schedule list
corral schedule pause|resume|delete NAME_OR_ID
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import RenderableType
from rich.table import Table

from corral.controller.cli.admin import NamespaceOption, resolve_namespace
from corral.controller.cli.common import (
    DEFAULT,
    EXIT_INVALID,
    AddressOption,
    OutputFormat,
    OutputOption,
    call,
    die,
    load_spec,
)
from corral.controller.cli.output import emit
from corral.controller.errors import InvalidArgument
from corral.controller.sdk.client import Client
from corral.controller.sdk.schedules import ScheduleInfo
from corral.controller.spec import WorkflowSpec, parse_workflow

__all__ = ["AtOption", "app", "schedule_table", "with_start_time"]

app = typer.Typer(help="Cron schedules: fire a workflow file at the times of a cron expression.")

AtOption = Annotated[
    str,
    typer.Option(
        "--at",
        metavar="WHEN",
        help="Start no task before WHEN: seconds or a duration after submit ('90', '10m') or RFC 3339 with a zone.",
    ),
]
ScheduleArgument = Annotated[str, typer.Argument(help="Schedule name, id or unique id prefix.", show_default=False)]


def with_start_time(spec: WorkflowSpec, at: str) -> WorkflowSpec:
    """``spec`` with ``scheduled_at`` = ``at`` (validated like the file's field; exit 2 when bad)."""
    if not at:
        return spec
    try:
        return parse_workflow({**spec.model_dump(mode="json", exclude_none=True), "scheduled_at": at})
    except InvalidArgument as exc:
        die(f"error: --at: {'; '.join(v.description for v in exc.violations)}", EXIT_INVALID)


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value is not None else "-"


def _as_dict(info: ScheduleInfo) -> dict[str, Any]:
    def plain(value: Any) -> Any:
        if isinstance(value, datetime):
            return _when(value)
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return {k: plain(v) for k, v in dataclasses.asdict(info).items()}


def schedule_table(rows: list[ScheduleInfo], wide: bool = False) -> RenderableType:
    """The table `corral schedule list` prints (times in UTC)."""
    table = Table(box=None, pad_edge=False, header_style="bold", show_edge=False)
    columns = ["NAME", "NAMESPACE", "CRON", "TIMEZONE", "OVERLAP", "CATCHUP", "STATE", "NEXT (UTC)", "LAST", "FIRED"]
    if wide:
        columns += ["SKIPPED", "MISSED", "LATE", "ID"]
    for column in columns:
        table.add_column(column, no_wrap=True)
    for s in rows:
        row = [
            s.name,
            s.namespace,
            s.cron,
            s.timezone,
            s.overlap,
            str(s.catchup),
            "paused" if s.paused else "active",
            _when(s.next_fire),
            s.last_workflow_id or "-",
            str(s.fired),
        ]
        if wide:
            late = sum(1 for f in s.recent_fires if f.late)
            row += [str(s.skipped), str(s.missed), str(late), s.schedule_id]
        table.add_row(*row)
    return table


@app.command("create")
def create(
    file: Annotated[Path, typer.Argument(help="Workflow file (the template of every fire).", show_default=False)],
    cron: Annotated[
        str, typer.Option("--cron", help="5 fields (minute hour day month weekday), or 6 with seconds first.")
    ],
    name: Annotated[str, typer.Option("--name", help="Unique in its namespace (default: the workflow's name).")] = "",
    timezone: Annotated[str, typer.Option("--timezone", help="IANA zone the cron is evaluated in.")] = "UTC",
    overlap: Annotated[
        str, typer.Option("--overlap", help="While the last fire still runs: skip, allow, or cancel_previous.")
    ] = "skip",
    catchup: Annotated[
        int, typer.Option("--catchup", min=0, help="Fires missed while the controller was down run on return, at most.")
    ] = 1,
    namespace: NamespaceOption = "",
    output: OutputOption = OutputFormat.table,
    address: AddressOption = DEFAULT,
) -> None:
    """Create a schedule; prints it (its next fire in UTC)."""
    spec = load_spec(file)
    target = resolve_namespace(namespace, spec.namespace)

    async def action(client: Client) -> ScheduleInfo:
        return await client.create_schedule(
            spec,
            cron=cron,
            name=name,
            timezone=timezone,
            overlap=overlap,  # type: ignore[arg-type]  # checked by the controller (INVALID_ARGUMENT)
            catchup=catchup,
            namespace=target,
        )

    info = call(address, action)
    emit(_as_dict(info), output, lambda wide: schedule_table([info], wide))


@app.command("list")
def list_(
    namespace: Annotated[str, typer.Option("--namespace", "-n", help="Only this namespace.")] = "",
    output: OutputOption = OutputFormat.table,
    address: AddressOption = DEFAULT,
) -> None:
    """List schedules; JSON adds each one's recent fires (nominal time, late, workflow, outcome)."""

    async def action(client: Client) -> list[ScheduleInfo]:
        return await client.list_schedules(namespace=namespace)

    rows = call(address, action)
    emit([_as_dict(r) for r in rows], output, lambda wide: schedule_table(rows, wide))


_DONE = {"pause": "paused", "resume": "resumed", "delete": "deleted"}


def _one(verb: str) -> Any:
    def command(schedule: ScheduleArgument, address: AddressOption = DEFAULT) -> None:
        async def action(client: Client) -> ScheduleInfo:
            method = getattr(client, f"{verb}_schedule")
            info: ScheduleInfo = await method(schedule)
            return info

        info = call(address, action)
        print(
            f"schedule {info.name} ({info.schedule_id}) {verb}d" if verb != "pause" else f"schedule {info.name} paused"
        )

    command.__doc__ = {
        "pause": "Stop firing; times that pass while paused are not caught up.",
        "resume": "Fire again from the next cron time.",
        "delete": "Delete a schedule and its fire history (workflows it fired stay).",
    }[verb]
    return command


for _verb in ("pause", "resume", "delete"):
    app.command(_verb)(_one(_verb))
