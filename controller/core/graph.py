"""Structural checks of a workflow's dependency graph, with field paths for every problem."""

from __future__ import annotations

from collections.abc import Sequence

from corral.controller.errors import FieldViolation

__all__ = ["find_cycle", "graph_problems"]


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
    children: dict[str, list[str]] = {name: [] for name in index}
    for i, deps in enumerate(dependencies):
        if not deps:
            continue
        me = names[i]
        if len(deps) == 1:  # the common case, without a set: one check, one edge
            kids = children.get(deps[0])
            if kids is not None and deps[0] != me:
                kids.append(me)
                continue
        seen: set[str] = set()
        for j, dep in enumerate(deps):
            if dep == me:
                problems.append(FieldViolation(f"tasks[{i}].dependencies[{j}]", f"task {dep!r} depends on itself"))
            elif dep in seen:
                problems.append(FieldViolation(f"tasks[{i}].dependencies[{j}]", f"duplicate dependency {dep!r}"))
            elif dep not in index:
                problems.append(FieldViolation(f"tasks[{i}].dependencies[{j}]", f"unknown task {dep!r}"))
            else:
                children[dep].append(me)
            seen.add(dep)
    if not problems:
        loop = find_cycle(children)
        if loop:
            first = index[loop[1]]
            problems.append(FieldViolation(f"tasks[{first}].dependencies", "dependency cycle: " + " -> ".join(loop)))
    return problems


def find_cycle(children: dict[str, list[str]]) -> list[str]:
    """One cycle as ``[a, b, ..., a]`` (edges parent -> child), or ``[]`` for a DAG. O(V + E).

    Kahn's algorithm peels off everything that is not on or behind a cycle; a walk through what
    remains must then run into itself.
    """
    indegree = dict.fromkeys(children, 0)
    for kids in children.values():
        for kid in kids:
            indegree[kid] += 1
    ready = [node for node, degree in indegree.items() if degree == 0]
    while ready:
        node = ready.pop()
        for kid in children[node]:
            indegree[kid] -= 1
            if indegree[kid] == 0:
                ready.append(kid)
    left = {node for node, degree in indegree.items() if degree > 0}
    if not left:
        return []
    # Every remaining node has a remaining parent, so walking parents never dead-ends.
    parents: dict[str, str] = {}
    for node in left:
        for kid in children[node]:
            if kid in left:
                parents.setdefault(kid, node)
    node = min(left)
    order: dict[str, int] = {}
    walk: list[str] = []
    while node not in order:
        order[node] = len(walk)
        walk.append(node)
        node = parents[node]
    cycle = walk[order[node] :]
    cycle.reverse()  # parents were walked: reverse to read in dependency direction
    return [*cycle, cycle[0]]
