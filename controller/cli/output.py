"""Rendering of command output: tables (``table`` / ``wide``) and structured data (``json`` / ``yaml``).

Structured output is the SDK types' ``to_dict()``: snake_case keys, RFC 3339 UTC times (``...Z``),
``null`` for times not reached yet, decoded JSON for results and metadata. Tables are for people:
short ids, ages, durations; ``wide`` adds columns.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import yaml
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from corral.controller.cli.common import OutputFormat, out_console
from corral.controller.cli.detail import UNPLACEABLE, display_state, queued_and_run, task_details
from corral.controller.sdk.history import exit_description
from corral.controller.sdk.types import (
    AgentInfo,
    ExecutionPlan,
    Explanation,
    TaskStatus,
    WorkflowEvent,
    WorkflowStatus,
    WorkflowSummary,
)

__all__ = [
    "STATE_STYLES",
    "age",
    "agents_view",
    "emit",
    "event_dict",
    "events_view",
    "explanation_view",
    "plan_view",
    "seconds",
    "short_id",
    "status_view",
    "tasks_table",
    "workflows_view",
]

STATE_STYLES: dict[str, str] = {
    "pending": "dim",
    "ready": "cyan",
    "assigned": "blue",
    "running": "bold blue",
    "paused": "yellow",
    "cancelling": "yellow",
    "compensating": "yellow",
    "completed": "green",
    "failed": "bold red",
    "cancelled": "magenta",
    "skipped": "dim magenta",
    "connected": "green",
    "draining": "yellow",
    "lost": "bold red",
    "disconnected": "dim",
}


def emit(data: Any, fmt: OutputFormat, view: Callable[[bool], RenderableType]) -> None:
    """Print ``data`` as json/yaml, or ``view(wide)`` as a table, on stdout."""
    if fmt is OutputFormat.json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
    elif fmt is OutputFormat.yaml:
        print(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), end="")
    else:
        out_console().print(view(fmt is OutputFormat.wide))


def short_id(value: str, wide: bool = False) -> str:
    """Ids in tables: the first 12 characters (any unique prefix is accepted back)."""
    return value if wide or len(value) <= 12 else value[:12]


def seconds(value: float | None) -> str:
    """A duration for people: ``850ms``, ``12.3s``, ``4m05s``, ``2h03m``."""
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.0f}ms"
    if value < 60:
        return f"{value:.1f}s"
    if value < 3600:
        return f"{int(value // 60)}m{int(value % 60):02d}s"
    return f"{int(value // 3600)}h{int(value % 3600 // 60):02d}m"


def age(moment: datetime | None, now: datetime | None = None) -> str:
    """How long ago ``moment`` was, kubectl-style: ``45s``, ``3m``, ``5h``, ``2d``."""
    if moment is None:
        return "-"
    delta = ((now or datetime.now(UTC)) - moment).total_seconds()
    if delta < 60:
        return f"{max(delta, 0):.0f}s"
    if delta < 3600:
        return f"{delta // 60:.0f}m"
    if delta < 86400:
        return f"{delta // 3600:.0f}h"
    return f"{delta // 86400:.0f}d"


def _stamp(moment: datetime | None) -> str:
    return "-" if moment is None else moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _state(state: str) -> Text:
    return Text(state, style=STATE_STYLES.get(state, ""))


def _table(*columns: str) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold", show_edge=False)
    for column in columns:
        table.add_column(column, no_wrap=column in ("ID", "TASK ID", "WORKFLOW ID", "NAME"))
    return table


def _counts(counts: Mapping[str, int]) -> str:
    order = list(STATE_STYLES)
    items = sorted(
        ((k, v) for k, v in counts.items() if v), key=lambda kv: order.index(kv[0]) if kv[0] in order else 99
    )
    return " ".join(f"{k}={v}" for k, v in items) or "-"


def _duration(start: datetime | None, end: datetime | None) -> float | None:
    if start is None:
        return None
    return ((end or datetime.now(UTC)) - start).total_seconds()


def memory(size: int) -> str:
    """Bytes for people, in binary units: ``850Ki``, ``52Mi``, ``1.5Gi``; ``-`` for 0 (not measured)."""
    if size <= 0:
        return "-"
    if size < 1 << 20:
        return f"{size / 1024:.0f}Ki"
    if size < 1 << 30:
        return f"{size / (1 << 20):.0f}Mi"
    return f"{size / (1 << 30):.1f}Gi"


def _usage(measured: str, expected: str) -> str:
    """The measured figure, else the one learned from earlier runs as ``~52Mi``, else ``-``."""
    if measured != "-" or expected == "-":
        return measured
    return "~" + expected


def _slack(value: float | None) -> RenderableType:
    if value is None:
        return "-"
    return Text(f"{value:.1f}s", style="red" if value < 0 else "")


def tasks_table(tasks: Sequence[TaskStatus], wide: bool, workflow_state: str = "running") -> Table:
    """One row per task: display state, attempts, queued and run time, measured usage, and DETAIL.

    STATE is ``unplaceable`` for a READY task no agent can take (a display state, not stored).
    QUEUED counts from when it last became ready to its start, RUN from its start to its end, so a
    requeued task's wait is not run time. PEAK MEM and CPU are the current (or last) attempt's, as
    its agent measured them when it ended; for a task not run yet, ``~`` marks what earlier runs of
    the same workflow and task used. SLACK (latest start minus now) appears when some task has a
    deadline. DETAIL is one line for every non-terminal task (what it waits for, where it runs) and
    the error of a failed one (:mod:`corral.controller.cli.detail`). EXIT (wide) is ``-`` for a
    task that never ran, a signal name for a killed one.
    """
    slack = any(task.slack_s is not None for task in tasks)
    columns = ["NAME", "STATE", "ATTEMPTS", "QUEUED", "RUN", "PEAK MEM", "CPU", *(["SLACK"] if slack else []), "DETAIL"]
    if wide:
        columns = ["TASK ID", *columns[:2], "AGENT TYPE", "AGENT", "PRIORITY", *columns[2:], "EXIT"]
    table = _table(*columns)
    details = task_details(tasks, workflow_state)
    for task, detail in zip(tasks, details, strict=True):
        queued, run = queued_and_run(task)
        shown = display_state(task)
        cells: list[RenderableType] = [
            task.name,
            Text(shown, style="bold yellow") if shown == UNPLACEABLE else _state(shown),
            str(task.attempts),
            seconds(queued),
            seconds(run),
            _usage(memory(task.peak_rss_bytes), memory(task.expected_peak_rss_bytes)),
            _usage(
                seconds(task.cpu_s) if task.cpu_s > 0 else "-",
                seconds(task.expected_cpu_s) if task.expected_cpu_s > 0 else "-",
            ),
            *([_slack(task.slack_s)] if slack else []),
            Text(detail.splitlines()[0] if detail else ""),
        ]
        if wide:
            cells = [
                task.task_id,
                *cells[:2],
                task.agent_type,
                task.agent_id or "-",
                str(task.priority),
                *cells[2:],
                exit_description(task.exit_code) if task.exit_code_known else "-",
            ]
        table.add_row(*cells)
    return table


def status_view(status: WorkflowStatus, wide: bool) -> RenderableType:
    """A workflow's header lines followed by its task table."""
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row("Workflow", f"{status.name} ({status.workflow_id})")
    head.add_row("State", _state(status.state) + (f"  (run {status.run})" if status.run > 1 else ""))
    head.add_row("Tasks", f"{status.task_total}  {_counts(status.task_counts)}")
    head.add_row("Created", _stamp(status.created_at))
    if status.started_at:
        head.add_row("Duration", seconds(_duration(status.started_at, status.finished_at)))
    if status.error:
        head.add_row("Error", Text(status.error, style="red"))
    if status.deadline is not None:
        head.add_row("Deadline", _deadline(status))
    if status.raw.concurrency_limit:  # max_parallel, or AIMD after OOM kills (issue 9)
        cap = status.raw.max_parallel
        head.add_row("Concurrency", f"limit {status.raw.concurrency_limit}" + (f" (max_parallel {cap})" if cap else ""))
    if status.params:  # issue 10
        head.add_row("Params", ", ".join(f"{k}={v}" for k, v in sorted(status.params.items())))
    if wide and status.labels:
        head.add_row("Labels", ", ".join(f"{k}={v}" for k, v in sorted(status.labels.items())))
    if not status.tasks:
        return head
    return Group(head, Text(""), tasks_table(status.tasks, wide, status.state))


def _deadline(status: WorkflowStatus) -> str:
    """``<when> (verdict at submit), slack <s>``: the slack is the least over unfinished tasks."""
    text = _stamp(status.deadline)
    if status.deadline_verdict:
        text += f" ({status.deadline_verdict} at submit)"
    if status.slack_s is not None:
        text += f", slack {status.slack_s:.1f}s" + (" (behind)" if status.slack_s < 0 else "")
    return text


def workflows_view(workflows: Sequence[WorkflowSummary], wide: bool) -> RenderableType:
    """ListWorkflows as a table, newest first."""
    columns = ["ID", "NAME", "STATE", "TASKS", "AGE"]
    if wide:
        columns += ["COUNTS", "CREATED", "DURATION"]
    table = _table(*columns)
    for wf in workflows:
        done = wf.task_counts.get("completed", 0)
        cells: list[RenderableType] = [
            short_id(wf.workflow_id, wide),
            wf.name,
            _state(wf.state),
            f"{done}/{wf.task_total}",
            age(wf.created_at),
        ]
        if wide:
            cells += [_counts(wf.task_counts), _stamp(wf.created_at), seconds(_duration(wf.started_at, wf.finished_at))]
        table.add_row(*cells)
    if not workflows:
        return Text("no workflows", style="dim")
    return table


def event_dict(event: WorkflowEvent) -> dict[str, Any]:
    """An event for JSON/YAML output, with its kind and reason."""
    data = event.to_dict()
    data["kind"] = event.raw.kind
    data["reason"] = event.raw.reason
    return data


def events_view(events: Sequence[WorkflowEvent], wide: bool) -> RenderableType:
    """A workflow's event log, oldest first: time, kind, task, attempt, agent, reason."""
    columns = ["TIME", "KIND", "TASK", "ATTEMPT", "AGENT", "REASON"]
    if wide:
        columns.insert(0, "SEQ")
    table = _table(*columns)
    for event in events:
        kind = event.raw.kind or (event.task_state or event.workflow_state or "")
        reason = event.raw.reason or event.message
        cells: list[RenderableType] = [
            _stamp(event.at),
            kind,
            event.task_name or "-",
            short_id(event.attempt_id, wide) if event.attempt_id else "-",
            event.agent_id or "-",
            reason or "-",
        ]
        if wide:
            cells.insert(0, str(event.seq))
        table.add_row(*cells)
    if not events:
        return Text("no events", style="dim")
    return table


def _gib(mb: int) -> str:
    return f"{mb / 1024:.1f}Gi" if mb else "-"


def agents_view(agents: Sequence[AgentInfo], wide: bool) -> RenderableType:
    """ListAgents as a table."""
    columns = ["NAME", "STATE", "TYPES", "RUNNING", "CPU", "MEMORY", "GPUS", "HEARTBEAT"]
    if wide:
        columns = ["ID", *columns, "HOST", "LABELS", "ALLOCATED CPU", "LOAD", "VERSION"]
    table = _table(*columns)
    for agent in agents:
        inv = agent.inventory
        cells: list[RenderableType] = [
            agent.name,
            _state(agent.state) if not agent.cordoned else Text(f"{agent.state}, cordoned", style="yellow"),
            ",".join(agent.agent_types),
            f"{agent.running_attempts}/{inv.slots}" if inv.slots else str(agent.running_attempts),
            f"{inv.cpu_cores:g}",
            _gib(inv.memory_mb),
            str(inv.gpu_count),
            age(agent.last_heartbeat),
        ]
        if wide:
            cells = [
                agent.agent_id,
                *cells,
                agent.hostname,
                ",".join(f"{k}={v}" for k, v in sorted(agent.labels.items())) or "-",
                f"{agent.allocated.cpu_cores:g}",
                f"{agent.usage.load_1m:.2f}",
                agent.version or "-",
            ]
        table.add_row(*cells)
    if not agents:
        return Text("no agents", style="dim")
    cordoned = [f"{a.name}: {a.cordon_reason}" for a in agents if a.cordoned]
    if cordoned:
        return Group(table, Text("\n".join(cordoned), style="yellow"))
    return table


def plan_view(plan: ExecutionPlan, wide: bool) -> RenderableType:
    """Stages (topological generations), then the critical path, duration and parallelism."""
    table = _table("STAGE", "TASKS", "EST. DURATION", "NAMES")
    for stage in plan.stages:
        names = list(stage.task_names)
        shown = ", ".join(names if wide or len(names) <= 8 else [*names[:8], f"... (+{len(names) - 8})"])
        table.add_row(str(stage.index), str(len(names)), seconds(stage.estimated_duration_s), shown)
    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold")
    summary.add_column()
    summary.add_row("Tasks", str(plan.task_count))
    summary.add_row("Stages", str(len(plan.stages)))
    summary.add_row("Critical path", " -> ".join(plan.critical_path) or "-")
    summary.add_row("Estimated duration", seconds(plan.estimated_duration_s))
    summary.add_row("Total work", seconds(plan.total_work_s))
    summary.add_row("Parallelism", f"{plan.parallelism_factor:.2f}x")
    return Group(table, Text(""), summary)


def explanation_view(explanation: Explanation, wide: bool) -> RenderableType:
    """Why a task is (not) running, then each agent's verdict."""
    task = explanation.task
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row("Task", f"{task.name} ({task.task_id})")
    head.add_row("Workflow", task.workflow_id)
    head.add_row("State", _state(task.state))
    head.add_row("Reason", explanation.reason or "-")
    if explanation.last_plan_reason:
        # What the scheduler decided (its last pass), next to the fresh evaluation above.
        age = explanation.last_plan_age_s
        when = f" ({age:.1f}s ago)" if age >= 0 else ""
        head.add_row("Last pass", explanation.last_plan_reason + when)
    if explanation.demand_class:
        head.add_row("Demand class", explanation.demand_class)
    if explanation.deadline_note:
        head.add_row("Deadline", explanation.deadline_note)
    if explanation.waiting_on:
        head.add_row("Waiting on", ", ".join(explanation.waiting_on))
    if task.expected_peak_rss_bytes or task.expected_cpu_s:
        learned = f"peak {memory(task.expected_peak_rss_bytes)}, CPU {seconds(task.expected_cpu_s)}"
        head.add_row("Earlier runs used", learned + " (set resources.memory_mb to reserve it)")
    if explanation.checkpoint:
        head.add_row("Checkpoint", explanation.checkpoint)
    if task.unschedulable:
        head.add_row("Unschedulable", Text("yes: no connected agent can ever take this task", style="red"))
    if not explanation.agents:
        return head
    table = _table("AGENT", "VERDICT", *(["ID"] if wide else []))
    for verdict in explanation.agents:
        row: list[RenderableType] = [
            verdict.agent_name,
            Text("can run it", style="green") if not verdict.reason else Text(verdict.reason),
        ]
        if wide:
            row.append(verdict.agent_id)
        table.add_row(*row)
    return Group(head, Text(""), table)
