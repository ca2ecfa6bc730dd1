"""Zero-overhead list schedules: the references the scheduling figures are measured against.

A list schedule runs a DAG on ``slots`` identical slots with no overhead at all: whenever a slot is
free and a task is ready, the ready task first in the list's order starts at once, and a task ends
exactly its duration later. Two orders are simulated here (computed in the bench, never by
the controller, so the controller cannot grade itself):

- **FIFO**: ready tasks in submission (file) order: a free slot takes the ready task that comes
  first in the file. This is the issue's reference (it reproduces its table exactly). Ordering by
  the instant a task became ready instead (ties in file order; ``list_schedule(dag, slots)``)
  differs on three traces: epigenomics 1.345 instead of 1.256 x bound, cycles 1.286 instead of
  1.272, montage 1.022 instead of 1.038.
- **critical-path-first** (CP): the ready task with the largest upward rank first (its duration
  plus the longest chain of durations below it, HEFT's rank on identical slots); ties in file order.

The figures divide corral's makespan by the better of the two (:func:`best_list_makespan`).
"""

from __future__ import annotations

import dataclasses
import graphlib
import heapq
from collections.abc import Mapping, Sequence

__all__ = ["MAX_SLOTS", "Dag", "Schedule", "best_list_makespan", "critical_path_first", "fifo", "list_schedule"]

MAX_SLOTS = 100_000  # a reference for more slots than that is not a bench anyone runs


@dataclasses.dataclass(frozen=True)
class Dag:
    """A DAG of tasks with durations, in file order (index ``i`` is the ``i``-th task of the file)."""

    names: tuple[str, ...]
    durations: tuple[float, ...]
    parents: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        count = len(self.names)
        if len(self.durations) != count or len(self.parents) != count:
            raise ValueError(
                f"names ({count}), durations ({len(self.durations)}) and parents ({len(self.parents)}) differ in length"
            )
        if len(set(self.names)) != count:
            raise ValueError("task names must be unique")
        for name, duration in zip(self.names, self.durations, strict=True):
            if not duration >= 0.0 or duration == float("inf"):
                raise ValueError(f"task {name}: duration must be finite and >= 0, got {duration!r}")
        for name, parents in zip(self.names, self.parents, strict=True):
            for parent in parents:
                if not 0 <= parent < count:
                    raise ValueError(f"task {name}: parent index {parent} out of range")
        # Raises graphlib.CycleError naming the cycle.
        graphlib.TopologicalSorter({i: ps for i, ps in enumerate(self.parents)}).prepare()

    @classmethod
    def from_mapping(cls, durations: Mapping[str, float], parents: Mapping[str, Sequence[str]]) -> Dag:
        """Build from ``{name: duration}`` and ``{name: [parent names]}``; file order is ``parents``' order."""
        names = tuple(parents)
        index = {name: i for i, name in enumerate(names)}
        missing = [name for name in names if name not in durations]
        if missing:
            raise ValueError(f"no duration for {missing[:3]}")
        unknown = sorted({p for ps in parents.values() for p in ps if p not in index})
        if unknown:
            raise ValueError(f"unknown parents {unknown[:3]}")
        return cls(
            names=names,
            durations=tuple(float(durations[name]) for name in names),
            parents=tuple(tuple(index[p] for p in parents[name]) for name in names),
        )

    def children(self) -> list[list[int]]:
        """Children of every task, each list in file order."""
        result: list[list[int]] = [[] for _ in self.names]
        for child, parents in enumerate(self.parents):
            for parent in dict.fromkeys(parents):  # a parent listed twice is still one edge
                result[parent].append(child)
        return result

    def topological_order(self) -> list[int]:
        return list(graphlib.TopologicalSorter({i: ps for i, ps in enumerate(self.parents)}).static_order())

    def upward_ranks(self) -> list[float]:
        """Each task's duration plus the longest duration-weighted chain of its descendants."""
        children = self.children()
        rank = [0.0] * len(self.names)
        for task in reversed(self.topological_order()):
            rank[task] = self.durations[task] + max((rank[c] for c in children[task]), default=0.0)
        return rank

    @property
    def total_work(self) -> float:
        return sum(self.durations)

    def critical_path(self) -> float:
        """The longest duration-weighted path (0 for an empty DAG)."""
        return max(self.upward_ranks(), default=0.0)

    def lower_bound(self, slots: int) -> float:
        """max(critical path, total work / slots): no schedule on ``slots`` slots can beat it."""
        _check_slots(slots)
        return max(self.critical_path(), self.total_work / slots)


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A list schedule's outcome: the makespan and each task's start time (by index)."""

    makespan: float
    starts: tuple[float, ...]


def _check_slots(slots: int) -> None:
    if not 1 <= slots <= MAX_SLOTS:
        raise ValueError(f"slots must be between 1 and {MAX_SLOTS}, got {slots}")


def list_schedule(dag: Dag, slots: int, keys: Sequence[float] | None = None) -> Schedule:
    """Simulate a list schedule: a free slot takes the ready task with the smallest key.

    ``keys`` (one per task, smaller first) with ties in file order; None means FIFO: the key is the
    instant a task became ready. Completions at the same instant are all applied before any start,
    so the tasks they release compete with each other as the order says.
    """
    _check_slots(slots)
    count = len(dag.names)
    if keys is not None and len(keys) != count:
        raise ValueError(f"{len(keys)} keys for {count} tasks")
    children = dag.children()
    waiting = [len(set(ps)) for ps in dag.parents]
    starts = [0.0] * count
    ready: list[tuple[float, int]] = []

    def release(task: int, at: float) -> None:
        heapq.heappush(ready, (at if keys is None else keys[task], task))

    for task in range(count):
        if waiting[task] == 0:
            release(task, 0.0)
    running: list[tuple[float, int]] = []  # (end, task)
    now = 0.0
    makespan = 0.0
    done = 0
    while done < count:
        while ready and len(running) < slots:
            _, task = heapq.heappop(ready)
            starts[task] = now
            end = now + dag.durations[task]
            makespan = max(makespan, end)
            heapq.heappush(running, (end, task))
        if not running:
            raise AssertionError("no task runs and none is ready: the DAG was checked acyclic")
        now = running[0][0]
        # Every completion at this instant first, in file order, then the starts above.
        finished: list[int] = []
        while running and running[0][0] <= now:
            finished.append(heapq.heappop(running)[1])
        for task in sorted(finished):
            done += 1
            for child in children[task]:
                waiting[child] -= 1
                if waiting[child] == 0:
                    release(child, now)
    return Schedule(makespan=makespan, starts=tuple(starts))


def fifo(dag: Dag, slots: int) -> Schedule:
    """First submitted, first served: the ready task that comes first in the file."""
    return list_schedule(dag, slots, [float(i) for i in range(len(dag.names))])


def critical_path_first(dag: Dag, slots: int) -> Schedule:
    """Largest upward rank first; ties in file order."""
    return list_schedule(dag, slots, [-rank for rank in dag.upward_ranks()])


def best_list_makespan(dag: Dag, slots: int) -> tuple[float, str]:
    """The better makespan of FIFO and critical-path-first, and which one it was ("fifo" or "cp")."""
    by_fifo = fifo(dag, slots).makespan
    by_cp = critical_path_first(dag, slots).makespan
    return (by_fifo, "fifo") if by_fifo <= by_cp else (by_cp, "cp")
