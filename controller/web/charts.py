"""Geometry of the workflow page's two pictures, as plain numbers for the SVG templates.

The DAG: each task sits in the column of its longest chain of dependencies (so every edge points
right), in its workflow order within the column. The Gantt chart: one row per agent, one bar per
task from its start to its finish (or now, while it runs). Both are bounded (:data:`MAX_NODES`,
:data:`MAX_BARS`): a 100k-task workflow gets its table and a note, not a picture nobody can read
that takes seconds to render.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["MAX_BARS", "MAX_NODES", "Bar", "Dag", "Edge", "Gantt", "Node", "dag_layout", "gantt_layout"]

MAX_NODES = 300
MAX_BARS = 1000
_NODE_W, _NODE_H, _COL_GAP, _ROW_GAP, _PAD = 150, 26, 50, 12, 10
_ROW_H, _LABEL_W, _PLOT_W = 24, 140, 760


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    state: str
    x: int
    y: int
    task_id: str


@dataclass(frozen=True, slots=True)
class Edge:
    x1: int
    y1: int
    x2: int
    y2: int


@dataclass(frozen=True, slots=True)
class Dag:
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    width: int
    height: int
    node_w: int = _NODE_W
    node_h: int = _NODE_H


def dag_layout(tasks: Sequence[tuple[str, str, str, Sequence[str]]]) -> Dag | None:
    """Lay out ``(task id, name, display state, dependency names)`` in workflow order; None past MAX_NODES."""
    if len(tasks) > MAX_NODES:
        return None
    deps = {name: [d for d in dependencies if d != name] for _, name, _, dependencies in tasks}
    # Longest chain of dependencies, in topological order (Kahn): no recursion on long chains.
    waiting = {name: len([d for d in ds if d in deps]) for name, ds in deps.items()}
    children: dict[str, list[str]] = {}
    for name, ds in deps.items():
        for d in ds:
            children.setdefault(d, []).append(name)
    ready = [name for name, n in waiting.items() if n == 0]
    column: dict[str, int] = {}
    while ready:
        name = ready.pop()
        column[name] = 1 + max((column[d] for d in deps[name] if d in column), default=-1)
        for child in children.get(name, ()):
            waiting[child] -= 1
            if waiting[child] == 0:
                ready.append(child)
    rows: dict[int, int] = {}
    place: dict[str, tuple[int, int]] = {}
    nodes = []
    for task_id, name, state, _ in tasks:
        col = column.get(name, 0)
        row = rows.get(col, 0)
        rows[col] = row + 1
        x, y = _PAD + col * (_NODE_W + _COL_GAP), _PAD + row * (_NODE_H + _ROW_GAP)
        place[name] = (x, y)
        nodes.append(Node(name, state, x, y, task_id))
    edges = []
    for _, name, _, dependencies in tasks:
        x2, y2 = place[name]
        for dep in dependencies:
            if dep in place and dep != name:
                x1, y1 = place[dep]
                edges.append(Edge(x1 + _NODE_W, y1 + _NODE_H // 2, x2, y2 + _NODE_H // 2))
    width = _PAD * 2 + (max(column.values(), default=0) + 1) * (_NODE_W + _COL_GAP)
    height = _PAD * 2 + max(rows.values(), default=1) * (_NODE_H + _ROW_GAP)
    return Dag(tuple(nodes), tuple(edges), width, height)


@dataclass(frozen=True, slots=True)
class Bar:
    name: str
    state: str
    x: int
    y: int
    width: int
    title: str


@dataclass(frozen=True, slots=True)
class Gantt:
    rows: tuple[tuple[str, int], ...]  # (agent name, y)
    bars: tuple[Bar, ...]
    width: int
    height: int
    label_w: int
    span_s: float
    row_h: int = _ROW_H


def gantt_layout(
    runs: Sequence[tuple[str, str, str, float, float | None]], agent_names: Mapping[str, str], now: float
) -> Gantt | None:
    """Bars for ``(task name, display state, agent id, started, finished or None)``; None when nothing ran."""
    runs = [r for r in runs if r[3] > 0][:MAX_BARS]
    if not runs:
        return None
    start = min(r[3] for r in runs)
    end = max((r[4] if r[4] else now) for r in runs)
    span = max(end - start, 1e-3)
    agents = sorted({r[2] for r in runs}, key=lambda a: agent_names.get(a, a))
    row_of = {a: i for i, a in enumerate(agents)}
    bars = []
    for name, state, agent, began, finished in runs:
        stop = finished if finished else now
        x = _LABEL_W + int((began - start) / span * _PLOT_W)
        width = max(2, int((stop - began) / span * _PLOT_W))
        title = f"{name}: {state}, {stop - began:.1f} s on {agent_names.get(agent, agent or '?')}"
        bars.append(Bar(name, state, x, row_of[agent] * _ROW_H + 4, width, title))
    rows = tuple((agent_names.get(a, a or "(none)"), i * _ROW_H) for i, a in enumerate(agents))
    return Gantt(rows, tuple(bars), _LABEL_W + _PLOT_W + 10, len(agents) * _ROW_H + 8, _LABEL_W, span)
