"""``corral run``: submit a workflow, follow it live, print a summary, exit with its outcome.

Progress comes from WatchWorkflow events; a once-a-second status poll backs the stream up (it also
ends the run if the stream breaks) and detects a workflow that cannot make progress: a task the
controller marked ``unschedulable`` (no connected agent could ever take it) while nothing runs,
for longer than ``--unschedulable-after`` seconds, ends the run with exit code 3.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from corral.controller.cli.admin import NamespaceOption, resolve_namespace
from corral.controller.cli.cache import NoCacheOption, ParamOption, parse_params
from corral.controller.cli.common import (
    DEFAULT,
    EXIT_ERROR,
    EXIT_OK,
    EXIT_UNSCHEDULABLE,
    AddressOption,
    OutputFormat,
    OutputOption,
    call,
    err_console,
    load_spec,
)
from corral.controller.cli.output import STATE_STYLES, emit, status_view
from corral.controller.cli.schedules import AtOption, with_start_time
from corral.controller.sdk.client import Client
from corral.controller.sdk.errors import CorralError, UnavailableError
from corral.controller.sdk.types import TERMINAL_TASK_STATES, TaskStatus, WorkflowEvent, WorkflowStatus

__all__ = ["Outcome", "follow", "run"]

_POLL_S = 1.0


@dataclass
class Outcome:
    """How a followed run ended: the final status, and the stuck tasks if it could not be scheduled."""

    status: WorkflowStatus
    unschedulable: list[TaskStatus] = field(default_factory=list)


class _Board:
    """Task states as last seen, rendered as a progress view."""

    def __init__(self, name: str, workflow_id: str) -> None:
        self.name = name
        self.workflow_id = workflow_id
        self.workflow_state = "pending"
        self.tasks: dict[str, str] = {}
        self.total = 0
        self.started = time.monotonic()

    def apply_status(self, status: WorkflowStatus) -> None:
        self.workflow_state = status.state
        self.total = status.task_total or len(status.tasks) or self.total
        for task in status.tasks:
            self.tasks[task.name] = task.state

    def apply_event(self, event: WorkflowEvent) -> None:
        if event.task_name and event.task_state:
            self.tasks[event.task_name] = event.task_state
        elif event.workflow_state:
            self.workflow_state = event.workflow_state

    def render(self) -> RenderableType:
        counts: dict[str, int] = {}
        for state in self.tasks.values():
            counts[state] = counts.get(state, 0) + 1
        total = max(self.total, len(self.tasks), 1)
        finished = sum(n for s, n in counts.items() if s in TERMINAL_TASK_STATES)
        head = Text.assemble(
            (f"{self.name} ", "bold"),
            (f"{self.workflow_id}  ", "dim"),
            (self.workflow_state, STATE_STYLES.get(self.workflow_state, "")),
            f"  {finished}/{total} tasks  {time.monotonic() - self.started:.0f}s",
        )
        line = Text()
        for state in STATE_STYLES:
            if counts.get(state):
                line.append(f"{state} {counts[state]}  ", style=STATE_STYLES[state])
        running = [name for name, state in self.tasks.items() if state in ("assigned", "running")]
        table = Table.grid(padding=(0, 1))
        for name in running[:10]:
            table.add_row(Text("•", style="blue"), name)
        if len(running) > 10:
            table.add_row("", Text(f"... and {len(running) - 10} more", style="dim"))
        bar = Table.grid(padding=(0, 2))
        bar.add_row(ProgressBar(total=total, completed=finished, width=40), line)
        return Group(head, bar, table)


async def follow(
    client: Client,
    workflow_id: str,
    *,
    console: Console | None,
    unschedulable_after: float,
) -> Outcome:
    """Follow a started workflow until it finishes or is stuck unschedulable; render to ``console`` if given."""
    first = await client.status(workflow_id, include_tasks=True)
    board = _Board(first.name, first.workflow_id)
    board.apply_status(first)
    done = asyncio.Event()
    stuck: list[TaskStatus] = []

    async def consume() -> None:
        try:
            async for event in client.watch(first.workflow_id):
                board.apply_event(event)
                if event.is_final:
                    done.set()
                    return
        except UnavailableError:
            raise
        except CorralError:
            # The stream is an accelerator; the poll below still sees the workflow to its end.
            return

    async def poll() -> None:
        stuck_since: float | None = None
        while not done.is_set():
            status = await client.status(first.workflow_id, include_tasks=False)
            board.workflow_state = status.state
            if status.done:
                done.set()
                return
            counts = status.task_counts
            idle = not counts.get("running") and not counts.get("assigned")
            blocked: list[TaskStatus] = []
            if idle and counts.get("ready"):
                # Only now fetch the tasks: the per-task unschedulable flag is what we need.
                detailed = await client.status(first.workflow_id, include_tasks=True)
                board.apply_status(detailed)
                blocked = [t for t in detailed.tasks if t.unschedulable]
            if blocked:
                stuck_since = stuck_since if stuck_since is not None else time.monotonic()
                if time.monotonic() - stuck_since >= unschedulable_after:
                    stuck.extend(blocked)
                    done.set()
                    return
            else:
                stuck_since = None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), _POLL_S)

    live = Live(board.render(), console=console, refresh_per_second=4, transient=True) if console else None
    with live if live is not None else contextlib.nullcontext():
        watcher = asyncio.create_task(consume())
        poller = asyncio.create_task(poll())
        try:
            while not done.is_set():
                waiter = asyncio.create_task(done.wait())
                finished, _ = await asyncio.wait({waiter, watcher, poller}, timeout=0.25, return_when="FIRST_COMPLETED")
                waiter.cancel()
                for task in finished & {watcher, poller}:
                    task.result()  # re-raise an error of either worker
                if live is not None:
                    live.update(board.render())
        finally:
            for task in (watcher, poller):
                task.cancel()
            await asyncio.gather(watcher, poller, return_exceptions=True)
    final = await client.status(first.workflow_id, include_tasks=True)
    return Outcome(final, stuck)


def run(
    file: Annotated[Path, typer.Argument(help="Workflow file (.yaml, .yml or .json).", show_default=False)],
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Print the workflow id and return at once.")] = False,
    unschedulable_after: Annotated[
        float,
        typer.Option(
            "--unschedulable-after",
            min=0,
            metavar="SECONDS",
            help="Exit 3 when a task has been unschedulable this long while nothing runs.",
        ),
    ] = 10.0,
    idempotency_key: Annotated[str, typer.Option("--idempotency-key", help="Make the submission safe to retry.")] = "",
    namespace: NamespaceOption = "",
    output: OutputOption = OutputFormat.table,
    address: AddressOption = DEFAULT,
    param: ParamOption = None,
    no_cache: NoCacheOption = False,
    at: AtOption = "",
) -> None:
    """Submit a workflow, show its progress live, then print a summary.

    Exit code: 0 completed, 1 failed or cancelled, 3 unschedulable. The summary in JSON is the
    workflow's status (fields as in `corral status`).
    """
    spec = with_start_time(load_spec(file), at)
    params = parse_params(param)
    stderr = err_console()
    show_progress = not output.structured and sys.stdout.isatty() and stderr.is_terminal

    async def action(client: Client) -> Outcome | str:
        target = resolve_namespace(namespace, spec.namespace)
        submission = await client.submit(
            spec, start=True, idempotency_key=idempotency_key, namespace=target, params=params, no_cache=no_cache
        )
        if submission.deadline_line():
            stderr.print(submission.deadline_line(), markup=False)
        if detach:
            return submission.workflow_id
        if not output.structured:
            stderr.print(f"workflow {spec.name} submitted: {submission.workflow_id}", markup=False)
        try:
            return await follow(
                client,
                submission.workflow_id,
                console=stderr if show_progress else None,
                unschedulable_after=unschedulable_after,
            )
        except asyncio.CancelledError:
            stderr.print(
                f"stopped following; workflow {submission.workflow_id} goes on "
                f"(corral status {submission.workflow_id})",
                markup=False,
            )
            raise

    outcome = call(address, action)
    if isinstance(outcome, str):
        print(outcome)
        return
    status = outcome.status
    emit(status.to_dict(), output, lambda wide: status_view(status, wide))
    if outcome.unschedulable:
        for task in outcome.unschedulable:
            stderr.print(f"task {task.name} cannot be scheduled: {task.waiting_reason}", markup=False)
        stderr.print(
            f"workflow {status.workflow_id} stays {status.state}; add a matching agent, or `corral cancel "
            f"{status.workflow_id}`",
            markup=False,
        )
        raise typer.Exit(EXIT_UNSCHEDULABLE)
    raise typer.Exit(EXIT_OK if status.state == "completed" else EXIT_ERROR)
