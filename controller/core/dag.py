"""A workflow's dependency graph by position, in flat integer arrays (no per-task objects).

The ranks of a starting workflow and the critical path of a finished one walk every task of it
once. Built from dicts and lists of lists keyed by task id, those walks held ~700 bytes of
transients per task (a 200k-task workflow: ~130 MiB at the very moment its records already fill
memory). Here the only per-task Python object is one entry of a position dict; children are in
CSR form (``starts``/``children`` arrays of machine ints), Kahn's order is an array too.

Children of a task are listed in submission order of the children, and Kahn's order starts
from the roots in submission order and appends children as they become free: the same orders
the dict-based walks used, so every float computed over them comes out bit-identical.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Sequence

__all__ = ["Dag", "DagCycleError"]


class DagCycleError(ValueError):
    """The dependencies have a cycle; ``left`` tasks are on or behind it."""

    def __init__(self, left: int) -> None:
        super().__init__(f"dependency cycle among {left} tasks")
        self.left = left


class Dag:
    """Tasks ``0..size-1``; ``children[starts[i]:starts[i + 1]]`` are the children of task ``i``.

    ``parents[i]`` counts the parents of ``i`` inside the graph; ``order`` is a topological order.
    """

    __slots__ = ("children", "order", "parents", "size", "starts")

    def __init__(
        self,
        ids: Sequence[str],
        dependencies: Sequence[Sequence[str]],
        *,
        strict: bool = False,
        position: Callable[[str], int | None] | None = None,
    ) -> None:
        """``dependencies[i]``: the ids task ``ids[i]`` depends on; ids outside ``ids`` are ignored,
        or with ``strict`` refused (``ValueError``, as are ids named twice).

        ``position`` maps an id to its index in ``ids`` (None: not among them) when the caller
        knows it already; else a dict is built here (~60 bytes per task for the walk's length).
        Raises :class:`DagCycleError` when the graph has a cycle.
        """
        size = len(ids)
        if position is None or strict:
            positions = {task_id: i for i, task_id in enumerate(ids)}
            if strict and len(positions) != size:
                raise ValueError("task names are not unique")
            position = positions.get
        parents = array("i", bytes(4 * size))
        starts = array("i", bytes(4 * (size + 1)))
        edges = array("i")  # parent positions, grouped by child in order
        for i in range(size):
            count = 0
            for dep in dependencies[i]:
                p = position(dep)
                if p is not None:
                    edges.append(p)
                    starts[p + 1] += 1
                    count += 1
                elif strict:
                    raise ValueError(f"task {ids[i]!r} depends on unknown task {dep!r}")
            parents[i] = count
        del position
        for i in range(size):
            starts[i + 1] += starts[i]
        fill = array("i", starts)
        children = array("i", bytes(4 * len(edges)))
        at = 0
        for i in range(size):
            for _ in range(parents[i]):
                p = edges[at]
                at += 1
                children[fill[p]] = i
                fill[p] += 1
        del edges, fill
        waiting = array("i", parents)
        order = array("i", [i for i in range(size) if not parents[i]])
        k = 0
        while k < len(order):
            node = order[k]
            for j in range(starts[node], starts[node + 1]):
                child = children[j]
                waiting[child] -= 1
                if not waiting[child]:
                    order.append(child)
            k += 1
        if len(order) != size:
            raise DagCycleError(size - len(order))
        self.size = size
        self.parents = parents
        self.starts = starts
        self.children = children
        self.order = order

    def generations(self) -> array[int]:
        """Each position's depth: 0 for a root, else one past its deepest dependency's."""
        starts, children = self.starts, self.children
        depth = array("i", bytes(4 * self.size))
        for node in self.order:
            below = depth[node] + 1
            for j in range(starts[node], starts[node + 1]):
                child = children[j]
                if below > depth[child]:
                    depth[child] = below
        return depth

    def longest_path(self, weights: Sequence[float]) -> list[int]:
        """The heaviest path (positions, first to last), each task weighing ``weights[i]``.

        Ties go to the earliest-submitted predecessor and then to the earliest end, as
        :func:`~corral.controller.core.analysis.analyze` decides them.
        """
        size = self.size
        if not size:
            return []
        starts, children = self.starts, self.children
        longest = array("d", bytes(8 * size))  # heaviest path ending at a parent, per task
        best = array("i", [-1]) * size
        dist = array("d", bytes(8 * size))
        for node in self.order:
            d = longest[node] + weights[node]
            dist[node] = d
            for j in range(starts[node], starts[node + 1]):
                child = children[j]
                pick = best[child]
                if pick == -1 or d > longest[child] or (d == longest[child] and node < pick):
                    longest[child] = d
                    best[child] = node
        end = 0
        for i in range(1, size):
            if dist[i] > dist[end]:
                end = i
        path: list[int] = []
        node = end
        while node != -1:
            path.append(node)
            node = best[node]
        path.reverse()
        return path
