"""Workflow commands: submit, plan, status, list, cancel, pause, resume, and the file schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from corral.controller.cli.admin import NamespaceOption, resolve_namespace
from corral.controller.cli.cache import NoCacheOption, ParamOption, parse_params
from corral.controller.cli.choices import workflow_states
from corral.controller.cli.common import (
    DEFAULT,
    AddressOption,
    OutputFormat,
    OutputOption,
    call,
    err_console,
    load_spec,
    out_console,
)
from corral.controller.cli.detail import display_state, task_details
from corral.controller.cli.output import emit, plan_view, status_view, workflows_view
from corral.controller.cli.schedules import AtOption, with_start_time
from corral.controller.sdk.client import Client
from corral.controller.sdk.types import ExecutionPlan, Submission, WorkflowStatus, WorkflowSummary
from corral.controller.spec import WorkflowSpec

__all__ = ["cancel", "list_", "pause", "plan", "resume", "schema", "status", "submit"]

FileArgument = Annotated[
    Path, typer.Argument(help="Workflow file (.yaml, .yml or .json); see `corral schema`.", show_default=False)
]
IdArgument = Annotated[str, typer.Argument(help="Workflow id or a unique prefix of one.", show_default=False)]


def submit(
    file: FileArgument,
    start: Annotated[bool, typer.Option("--start/--no-start", help="Start the workflow at once.")] = True,
    idempotency_key: Annotated[
        str, typer.Option("--idempotency-key", help="Resubmitting with the same key returns the first workflow.")
    ] = "",
    namespace: NamespaceOption = "",
    address: AddressOption = DEFAULT,
    param: ParamOption = None,
    no_cache: NoCacheOption = False,
    at: AtOption = "",
) -> None:
    """Submit a workflow file and print its id (use `corral run` to follow it)."""
    spec = with_start_time(load_spec(file), at)
    target = resolve_namespace(namespace, spec.namespace)
    params = parse_params(param)

    async def action(client: Client) -> Submission:
        return await client.submit(
            spec, start=start, idempotency_key=idempotency_key, namespace=target, params=params, no_cache=no_cache
        )

    submission = call(address, action)
    if submission.deadline_line():
        err_console().print(submission.deadline_line(), markup=False)
    print(submission.workflow_id)


def plan(
    file: FileArgument,
    output: OutputOption = OutputFormat.table,
    address: AddressOption = DEFAULT,
) -> None:
    """Show the execution plan of a workflow file without submitting it.

    JSON fields: stages[] (index, task_names, estimated_duration_s), critical_path, estimated_duration_s,
    parallelism_factor, task_count, total_work_s.
    """
    spec = load_spec(file)

    async def action(client: Client) -> ExecutionPlan:
        return await client.plan(spec)

    result = call(address, action)
    emit(result.to_dict(), output, lambda wide: plan_view(result, wide))


def status(
    workflow_id: IdArgument,
    output: OutputOption = OutputFormat.table,
    address: AddressOption = DEFAULT,
) -> None:
    """Show a workflow and its tasks.

    JSON fields: workflow_id, name, state, task_total, task_counts (state -> count), tasks[] (task_id,
    name, workflow_id, state, agent_type, priority, attempts, retries_used, attempt_id, agent_id, result,
    error, exit_code, waiting_reason, plan_reason, unschedulable, dependencies, created_at, started_at,
    finished_at, deadline, latest_start, slack_s, ready_at, exit_code_known, display_state (`unplaceable`: ready
    but no agent can take it), detail),
    error, metadata, labels, created_at, started_at, finished_at, namespace, deadline, deadline_verdict, slack_s.
    """

    async def action(client: Client) -> WorkflowStatus:
        return await client.status(workflow_id, include_tasks=True)

    result = call(address, action)
    data = result.to_dict()
    if output.structured:  # issue 11: the display state (unplaceable) and DETAIL line of each task
        for row, task, detail in zip(
            data["tasks"], result.tasks, task_details(result.tasks, result.state), strict=True
        ):
            row["display_state"] = display_state(task)
            row["detail"] = detail
    emit(data, output, lambda wide: status_view(result, wide))


def list_(
    state: Annotated[
        list[str] | None,
        typer.Option(
            "--state",
            "-s",
            help="Only workflows in this state (repeatable): pending, running, ...",
            callback=workflow_states,
        ),
    ] = None,
    name: Annotated[str, typer.Option("--name", help="Only workflows whose name starts with this.")] = "",
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=1000, help="At most this many.")] = 50,
    namespace: Annotated[
        str, typer.Option("--namespace", help="Only this namespace (default: `corral namespace set`, else all yours).")
    ] = "",
    output: OutputOption = OutputFormat.table,
    address: AddressOption = DEFAULT,
) -> None:
    """List workflows, newest first.

    JSON: a list of {workflow_id, name, state, task_total, task_counts, created_at, started_at, finished_at,
    namespace}.
    """

    async def action(client: Client) -> tuple[WorkflowSummary, ...]:
        page = await client.list_workflows(
            states=state, name_prefix=name, limit=limit, namespace=resolve_namespace(namespace)
        )
        return page.workflows

    rows = call(address, action)
    emit([row.to_dict() for row in rows], output, lambda wide: workflows_view(rows, wide))


def _print_state(result: WorkflowStatus, output: OutputFormat) -> None:
    if output.structured:
        emit(result.to_dict(), output, lambda wide: status_view(result, wide))
    else:
        out_console().print(f"{result.workflow_id} {result.state}", markup=False)


def cancel(
    workflow_id: IdArgument,
    force: Annotated[bool, typer.Option("--force", help="Kill running attempts at once (no grace period).")] = False,
    reason: Annotated[str, typer.Option("--reason", help="Recorded with the cancellation.")] = "",
    output: OutputOption = OutputFormat.table,
    address: AddressOption = DEFAULT,
) -> None:
    """Cancel a workflow: running attempts get SIGTERM and a grace period (SIGKILL with --force)."""

    async def action(client: Client) -> WorkflowStatus:
        return await client.cancel(workflow_id, force=force, reason=reason)

    _print_state(call(address, action), output)


def pause(
    workflow_id: IdArgument,
    output: OutputOption = OutputFormat.table,
    address: AddressOption = DEFAULT,
) -> None:
    """Pause a workflow: no new tasks start; running ones finish."""

    async def action(client: Client) -> WorkflowStatus:
        return await client.pause(workflow_id)

    _print_state(call(address, action), output)


def resume(
    workflow_id: IdArgument,
    output: OutputOption = OutputFormat.table,
    address: AddressOption = DEFAULT,
) -> None:
    """Resume a paused workflow."""

    async def action(client: Client) -> WorkflowStatus:
        return await client.resume(workflow_id)

    _print_state(call(address, action), output)


def schema() -> None:
    """Print the JSON Schema of workflow files (for editors and validators)."""
    print(json.dumps(WorkflowSpec.model_json_schema(), indent=2))
