"""``corral analyze FILE``: a workflow file's plan and shape, its redundant dependencies and dominators."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from corral.controller.cli.common import DEFAULT, AddressOption, OutputFormat, OutputOption, call, load_spec
from corral.controller.cli.output import emit, plan_view
from corral.controller.cli.workflows import FileArgument
from corral.controller.core.analysis import MAX_INSIGHT_EDGES, MAX_INSIGHT_TASKS
from corral.controller.sdk.client import Client
from corral.controller.sdk.types import DependencyAnalysis

__all__ = ["analysis_view", "analyze"]

#: Rows of each list shown without --output wide.
_ROWS = 20


def analyze(file: FileArgument, output: OutputOption = OutputFormat.table, address: AddressOption = DEFAULT) -> None:
    """Analyse a workflow file's dependencies without submitting it.

    Prints the plan (stages, critical path), the graph's shape, the redundant dependencies (already
    implied through another path: the transitive reduction drops them) and each task's immediate
    dominator (the nearest task every path to it goes through: when it fails, the task is skipped).

    JSON fields: plan, roots, leaves, max_width, depth, redundant_edges ([dependency, dependent]
    pairs), immediate_dominators (task -> dominator).
    """
    spec = load_spec(file)
    order = [task.name for task in spec.tasks]
    too_big = len(order) > MAX_INSIGHT_TASKS or sum(len(t.dependencies) for t in spec.tasks) > MAX_INSIGHT_EDGES

    async def action(client: Client) -> DependencyAnalysis:
        return await client.analyze_dependencies(spec)

    result = call(address, action)
    emit(result.to_dict(), output, lambda wide: analysis_view(result, order, wide, computed=not too_big))


def _cut(rows: list[tuple[str, str]], wide: bool) -> tuple[list[tuple[str, str]], int]:
    if wide or len(rows) <= _ROWS:
        return rows, 0
    return rows[:_ROWS], len(rows) - _ROWS


def analysis_view(
    analysis: DependencyAnalysis, order: list[str], wide: bool, *, computed: bool = True
) -> RenderableType:
    """The plan, then the shape, the redundant dependencies and the dominators (tasks in file order)."""
    shape = Table.grid(padding=(0, 2))
    shape.add_column(style="bold")
    shape.add_column()
    shape.add_row("Roots", ", ".join(analysis.roots) or "-")
    shape.add_row("Leaves", ", ".join(analysis.leaves) or "-")
    shape.add_row("Widest stage", str(analysis.max_width))
    shape.add_row("Depth", str(analysis.depth))
    parts: list[RenderableType] = [plan_view(analysis.plan, wide), Text(""), shape, Text("")]
    if not computed:
        parts.append(
            Text(
                f"Redundant dependencies and dominators: not computed (over {MAX_INSIGHT_TASKS:,} tasks "
                f"or {MAX_INSIGHT_EDGES:,} dependencies).",
                style="dim",
            )
        )
        return Group(*parts)
    redundant = [(to, dependency) for dependency, to in analysis.redundant_edges]
    parts += _pairs(
        "REDUNDANT DEPENDENCY (implied through another path)", redundant, wide, "No redundant dependencies."
    )
    parts.append(Text(""))
    dominated = [(name, analysis.immediate_dominators[name]) for name in order if name in analysis.immediate_dominators]
    none = "No task is dominated by another (every task is a root or joins several)."
    parts += _pairs("IMMEDIATE DOMINATOR (on every path to it)", dominated, wide, none)
    return Group(*parts)


def _pairs(heading: str, pairs: list[tuple[str, str]], wide: bool, empty: str) -> list[Table | Text]:
    """A TASK / ``heading`` table of ``pairs`` (cut unless ``wide``), or ``empty`` when there are none."""
    if not pairs:
        return [Text(empty, style="dim")]
    table = Table(box=None, pad_edge=False, header_style="bold", show_edge=False)
    table.add_column("TASK")
    table.add_column(heading)
    rows, more = _cut(pairs, wide)
    for row in rows:
        table.add_row(*row)
    if more:
        return [table, Text(f"... and {more} more (--output wide shows all)", style="dim")]
    return [table]
