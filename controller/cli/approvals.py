"""``corral approve WF/TASK`` and ``corral reject WF/TASK``: answer an approval task (issue 10)."""

from __future__ import annotations

from typing import Annotated

import typer

from corral.controller.cli.common import DEFAULT, AddressOption, OutputFormat, OutputOption, call, out_console
from corral.controller.cli.output import emit
from corral.controller.sdk.client import Client
from corral.controller.sdk.errors import InvalidArgumentError
from corral.controller.sdk.history import split_target
from corral.controller.sdk.types import TaskStatus

__all__ = ["approve", "register", "reject"]

TargetArgument = Annotated[
    str, typer.Argument(help="WORKFLOW/TASK: a workflow id (or unique prefix) and the approval task's name.")
]
ReasonOption = Annotated[str, typer.Option("--reason", help="Kept with the answer (in the task's result or error).")]


def _split(target: str) -> tuple[str, str]:
    # The one WF/TASK parser (issue 11); the RPC takes the workflow and the name as they are.
    try:
        split = split_target(target)
    except InvalidArgumentError:
        split = None
    if split is None:
        raise typer.BadParameter(f"{target!r}: expected WORKFLOW/TASK, e.g. wf-3fa9/approve-deploy")
    return split


def _answer(target: str, approve: bool, reason: str, output: OutputFormat, address: str) -> None:
    workflow, task = _split(target)

    async def action(client: Client) -> TaskStatus:
        if approve:
            return await client.approve(workflow, task, reason=reason)
        return await client.reject(workflow, task, reason=reason)

    result = call(address, action)
    if output.structured:
        emit(result.to_dict(), output, lambda wide: f"{result.name} {result.state}")
    else:
        detail = f" ({result.error})" if result.error else ""
        out_console().print(f"{workflow}/{result.name} {result.state}{detail}", markup=False)


def approve(
    target: TargetArgument,
    reason: ReasonOption = "",
    output: OutputOption = OutputFormat.table,
    address: AddressOption = DEFAULT,
) -> None:
    """Approve a waiting approval task: it completes and its dependents run."""
    _answer(target, True, reason, output, address)


def reject(
    target: TargetArgument,
    reason: ReasonOption = "",
    output: OutputOption = OutputFormat.table,
    address: AddressOption = DEFAULT,
) -> None:
    """Reject a waiting approval task: it fails (reason "rejected") and its dependents are skipped."""
    _answer(target, False, reason, output, address)


def register(app: typer.Typer, panel: str) -> None:
    """Add the commands to the ``corral`` app (one line in cli/main.py)."""
    app.command("approve", rich_help_panel=panel)(approve)
    app.command("reject", rich_help_panel=panel)(reject)
