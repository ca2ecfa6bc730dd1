"""The scheduling figures from the simulator: the real core, simulated agents, a virtual clock.

Same workflows and references as ``best_list`` (the six traces at scale 0.01 and the random
layered DAGs, 2 agents x 4 slots), but no processes, no gRPC and no sleeping: what is left is the
policy alone, with zero overhead, in a second or so. Per workflow, on a fresh simulated controller:

- ``sim_vs_best_list``: tasks carry ``estimated_duration`` = their runtime;
- ``sim_vs_best_list_cold``: no estimates, first run (nothing learned);
- ``sim_vs_best_list_learned``: no estimates, the second run of the same workflow on the same
  simulated controller (what it learned from the first).

Each figure is the geometric mean over the set of makespan / the better of the two list schedules.
"""

from __future__ import annotations

import time

from bench.traceset import SCALE, geomean, reference, scheduling_set
from bench.workloads import Result
from corral.controller.core.model import Task
from corral.controller.sim import Fleet, Simulator

__all__ = ["AGENTS", "SLOTS", "run", "run_sync"]

AGENTS = 2
SLOTS = 4


def run_sync() -> Result:
    """The three figures, synchronously (the simulator does no I/O)."""
    fleet = Fleet(AGENTS, SLOTS, agent_types=("python",))
    ratios: dict[str, list[float]] = {
        "sim_vs_best_list": [],
        "sim_vs_best_list_cold": [],
        "sim_vs_best_list_learned": [],
    }
    details: list[tuple[str, str]] = []
    began = time.perf_counter()
    for trace in scheduling_set(SCALE):
        ref = reference(trace, AGENTS * SLOTS)
        truth = trace.durations_by_name()

        def actual(task: Task, truth: dict[str, float] = truth) -> float:
            return truth[task.name]

        estimated = Simulator(fleet).run(trace.with_estimates(), actual)
        learning = Simulator(fleet)
        cold = learning.run(trace.spec, actual)
        learned = learning.run(trace.spec, actual)
        for key, result in (
            ("sim_vs_best_list", estimated),
            ("sim_vs_best_list_cold", cold),
            ("sim_vs_best_list_learned", learned),
        ):
            if result.state != "completed":
                raise RuntimeError(f"simulated {trace.name} ended {result.state}: {result.stuck}")
            ratios[key].append(result.makespan / ref.best)
        details.append(
            (
                f"sim: {trace.name} ({len(trace.spec.tasks)} tasks)",
                f"estimates {estimated.makespan / ref.best:.3f}, cold {cold.makespan / ref.best:.3f}, "
                f"learned {learned.makespan / ref.best:.3f} x best list ({ref.best_name} {ref.best:.3f} s; "
                f"/bound fifo {ref.fifo / ref.bound:.3f}, cp {ref.cp / ref.bound:.3f}, "
                f"sim {estimated.makespan / ref.bound:.3f})",
            )
        )
    details.append(("sim: wall time of every simulation", f"{time.perf_counter() - began:.2f} s"))
    return Result(figures={key: geomean(values) for key, values in ratios.items()}, details=details)


async def run() -> Result:
    return run_sync()
