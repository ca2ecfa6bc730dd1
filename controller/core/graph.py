"""Structural checks of a workflow's dependency graph, with field paths for every problem."""

from __future__ import annotations

from collections.abc import Sequence

import networkx as nx

from corral.controller.errors import FieldViolation

__all__ = ["graph_problems"]


def graph_problems(names: Sequence[str], dependencies: Sequence[Sequence[str]]) -> list[FieldViolation]:
    """Every structural problem of a workflow graph given task names and their dependency names.

    Reports duplicate task names, self-dependencies, duplicate and unknown dependencies, and a cycle
    (named task by task). Paths look like ``tasks[3].dependencies[1]``.
    """
    problems: list[FieldViolation] = []
    index: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in index:
            problems.append(FieldViolation(f"tasks[{i}].name", f"duplicate task name {name!r}"))
        else:
            index[name] = i
    graph: nx.DiGraph[str] = nx.DiGraph()
    graph.add_nodes_from(index)
    for i, deps in enumerate(dependencies):
        seen: set[str] = set()
        for j, dep in enumerate(deps):
            path = f"tasks[{i}].dependencies[{j}]"
            if dep == names[i]:
                problems.append(FieldViolation(path, f"task {dep!r} depends on itself"))
            elif dep in seen:
                problems.append(FieldViolation(path, f"duplicate dependency {dep!r}"))
            elif dep not in index:
                problems.append(FieldViolation(path, f"unknown task {dep!r}"))
            else:
                graph.add_edge(dep, names[i])
            seen.add(dep)
    if not problems:
        try:
            cycle = nx.find_cycle(graph)
        except nx.NetworkXNoCycle:
            cycle = []
        if cycle:
            loop = [edge[0] for edge in cycle] + [cycle[0][0]]
            first = index[loop[1]]
            problems.append(FieldViolation(f"tasks[{first}].dependencies", "dependency cycle: " + " -> ".join(loop)))
    return problems
