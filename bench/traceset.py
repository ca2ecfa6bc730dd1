"""The workflows of the scheduling figures: the six WfCommons traces plus seeded random layered DAGs,
with the zero-overhead list-schedule references of each, computed here."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from bench.listsched import critical_path_first, fifo
from bench.randdag import SEEDS, random_layered
from bench.traces import TRACES, Trace, load_trace, traces_dir

__all__ = ["SCALE", "SLOTS", "Reference", "geomean", "reference", "scheduling_set"]

SCALE = 0.01  # the scale for the *_vs_best_list figures
SLOTS = 8  # 2 agents x 4 slots


def scheduling_set(scale: float = SCALE) -> list[Trace]:
    """The six traces, then one random layered DAG per seed of :data:`bench.randdag.SEEDS`."""
    folder = traces_dir()
    return [load_trace(folder / name, scale) for name in TRACES] + [random_layered(s, scale) for s in SEEDS]


@dataclasses.dataclass(frozen=True)
class Reference:
    """A workflow's bound and its two list schedules on ``SLOTS`` slots."""

    bound: float
    fifo: float
    cp: float

    @property
    def best(self) -> float:
        return min(self.fifo, self.cp)

    @property
    def best_name(self) -> str:
        return "fifo" if self.fifo <= self.cp else "cp"

    def describe(self, makespan: float) -> str:
        return (
            f"vs best list {makespan / self.best:.3f} ({self.best_name})  makespan {makespan:.3f} s  "
            f"bound {self.bound:.3f} s  (/bound: corral {makespan / self.bound:.3f}, "
            f"fifo {self.fifo / self.bound:.3f}, cp {self.cp / self.bound:.3f})"
        )


def reference(trace: Trace, slots: int = SLOTS) -> Reference:
    dag = trace.dag()
    return Reference(dag.lower_bound(slots), fifo(dag, slots).makespan, critical_path_first(dag, slots).makespan)


def geomean(values: Sequence[float]) -> float:
    if not values or any(v <= 0 for v in values):
        raise ValueError(f"a geometric mean needs positive values, got {list(values)[:5]}")
    return math.exp(sum(math.log(v) for v in values) / len(values))
