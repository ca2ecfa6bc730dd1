"""A simulation's result as text (summary, per-agent table, compact Gantt) or as a JSON-ready dict."""

from __future__ import annotations

import math
import string
from typing import Any

from corral.controller.sim.engine import SimResult, Span

__all__ = ["MAX_LANES", "WIDTH", "agent_rows", "gantt", "summary_lines", "to_dict"]

WIDTH = 64  # columns of the Gantt chart
MAX_LANES = 32  # slot rows drawn; more are summarised (the JSON has every span)
_SYMBOLS = string.ascii_uppercase + string.ascii_lowercase + string.digits


def _seconds(value: float) -> str:
    if value >= 3600:
        return f"{value / 3600:.2f} h"
    if value >= 60:
        return f"{value / 60:.2f} min"
    return f"{value:.3f} s" if value < 10 else f"{value:.2f} s"


def summary_lines(result: SimResult, source: str) -> list[str]:
    """The headline: outcome, makespan, bound and its parts, and how durations were chosen."""
    fleet = result.fleet
    per_slot = result.total_work / fleet.total_slots
    lines = [
        f"simulated {source} ({result.tasks} task{'s' if result.tasks != 1 else ''}) on {fleet.describe()}: "
        f"{result.state}",
        f"  {'stopped' if result.stuck else 'makespan'}  {_seconds(result.makespan)}",
        f"  bound     {_seconds(result.bound)}  = max(critical path {_seconds(result.critical_path)}, "
        f"work {_seconds(result.total_work)} / {fleet.total_slots} slots = {_seconds(per_slot)})",
    ]
    if not math.isnan(result.ratio):
        lines.append(f"  ratio     {result.ratio:.3f} x bound")
    if result.defaulted:
        lines.append(
            f"  note      {result.defaulted} task{'s' if result.defaulted != 1 else ''} had no estimated_duration "
            "and ran the default duration (--default-duration)"
        )
    for task, reason in result.stuck:
        lines.append(f"  stuck     {task}: {reason}" if task else f"  stuck     {reason}")
    return lines


def agent_rows(result: SimResult) -> list[tuple[str, int, float, float]]:
    """Per agent: (name, attempts run, busy slot-seconds, utilisation of its slots over the makespan)."""
    rows = []
    for name, spans in result.agent_spans().items():
        busy = sum(s.end - s.start for s in spans)
        capacity = result.fleet.slots * result.makespan
        rows.append((name, len(spans), busy, busy / capacity if capacity > 0 else 0.0))
    return rows


def gantt(result: SimResult, width: int = WIDTH) -> list[str]:
    """One row per agent slot: which task runs in each column (a letter), or ``.`` when idle.

    With up to 62 tasks each has its own letter and a legend follows; with more, a busy column is
    ``#``. Each column is makespan / ``width`` seconds; a column shows the task running at its middle.
    """
    if result.makespan <= 0 or not result.spans:
        return []
    step = result.makespan / width
    tasks = list(dict.fromkeys(span.task for span in result.spans))
    symbols = dict(zip(tasks, _SYMBOLS, strict=False)) if len(tasks) <= len(_SYMBOLS) else {}
    by_lane: dict[tuple[str, int], list[Span]] = {}
    for span in result.spans:
        by_lane.setdefault((span.agent, span.slot), []).append(span)
    fleet = result.fleet
    lanes = [(name, slot) for name in fleet.names[:MAX_LANES] for slot in range(fleet.slots)][:MAX_LANES]
    label_width = max(len(f"{name}/{slot}") for name, slot in lanes)
    lines = [f"timeline: one column = {_seconds(step)}; {'letters are tasks' if symbols else '# = busy'}, . = idle"]
    for name, slot in lanes:
        spans = by_lane.get((name, slot), [])
        cells = ["."] * width
        for span in spans:
            first = math.ceil(span.start / step - 0.5)
            last = math.ceil(span.end / step - 0.5)
            for column in range(max(0, first), min(width, last)):
                cells[column] = symbols.get(span.task, "#")
        lines.append(f"  {f'{name}/{slot}':<{label_width}} |{''.join(cells)}|")
    if fleet.total_slots > len(lanes):
        lines.append(f"  ... {fleet.total_slots - len(lanes)} more slots (every span: --json)")
    if symbols:
        legend = "  ".join(f"{symbol}={task}" for task, symbol in symbols.items())
        lines.append(f"legend: {legend}")
    return lines


def to_dict(result: SimResult, source: str) -> dict[str, Any]:
    """Everything the text shows, and every span, for ``--json``."""
    return {
        "workflow": result.workflow,
        "source": source,
        "state": result.state,
        "agents": result.fleet.agents,
        "slots_per_agent": result.fleet.slots,
        "tasks": result.tasks,
        "makespan_s": round(result.makespan, 6),
        "bound_s": round(result.bound, 6),
        "critical_path_s": round(result.critical_path, 6),
        "total_work_s": round(result.total_work, 6),
        "ratio": None if math.isnan(result.ratio) else round(result.ratio, 6),
        "default_duration_tasks": result.defaulted,
        "stuck": [{"task": task, "reason": reason} for task, reason in result.stuck],
        "per_agent": [
            {"agent": name, "attempts": count, "busy_s": round(busy, 6), "utilisation": round(share, 6)}
            for name, count, busy, share in agent_rows(result)
        ],
        "spans": [span.to_dict() for span in result.spans],
    }
