"""``fair_jain``: weighted DRF across three namespaces, from the simulator (real core, virtual clock).

Three namespaces with weights 1:2:3 submit saturating loads of 1 s tasks at one instant to 2 agents
x 4 slots (4 cpu, 8 GiB each: 8 cpu, 16 GiB, 8 slots in all):

- ``cpu`` (weight 1): tasks need 2 cpu (a quarter of the cluster's cpu: dominant share 1/4 each);
- ``memory`` (weight 2): tasks need 4 GiB (a quarter of the memory: 1/4 each);
- ``slots`` (weight 3): tasks need nothing but a slot (1/8 each).

Each namespace's allocation is time-averaged over the first ``WINDOW_S`` seconds (every namespace
still has ready work then): the sum over its attempts of (seconds run in the window x the task's
dominant share) / ``WINDOW_S``. The figure is Jain's index of those averages divided by the
weights: 1 is perfectly weighted-fair, 1/3 is one namespace taking everything.

The run is on the simulator rather than real processes: the fairness is the policy's alone, the
result is deterministic, and 60 virtual seconds take well under a second on the shared machine.
"""

from __future__ import annotations

import time

from bench.workloads import Result
from corral.controller.core.fairshare import jain_index
from corral.controller.sim import Fleet, Simulator
from corral.controller.spec import ResourceSpec, TaskSpec, WorkflowSpec

__all__ = ["run", "run_sync"]

AGENTS = 2
SLOTS = 4
CPU_PER_AGENT = 4.0
MEMORY_PER_AGENT = 8192
WINDOW_S = 60.0
TASK_S = 1.0
# Enough 1 s tasks that every namespace still has ready work at the end of the window.
TASKS = 8 * int(WINDOW_S / TASK_S) + 16

#: namespace -> (weight, what each of its tasks needs)
LOADS: dict[str, tuple[float, ResourceSpec]] = {
    "cpu": (1.0, ResourceSpec(cpu_cores=2.0)),
    "memory": (2.0, ResourceSpec(memory_mb=4096)),
    "slots": (3.0, ResourceSpec()),
}


def _dominant(need: ResourceSpec) -> float:
    """One task's dominant share of the simulated cluster (a task always takes a slot)."""
    return max(
        need.cpu_cores / (AGENTS * CPU_PER_AGENT),
        need.memory_mb / (AGENTS * MEMORY_PER_AGENT),
        1 / (AGENTS * SLOTS),
    )


def run_sync() -> Result:
    """The figure, synchronously (the simulator does no I/O)."""
    fleet = Fleet(AGENTS, SLOTS, agent_types=("shell",), cpu_cores=CPU_PER_AGENT, memory_mb=MEMORY_PER_AGENT)
    sim = Simulator(fleet, default_duration_s=TASK_S)
    for name, (weight, _) in LOADS.items():
        sim.machine.access.create_namespace(name, "", 0.0)
        sim.machine.access.set_quota(name, weight, 0.0, 0, 0, 0)
    specs = [
        WorkflowSpec(
            name=name,
            namespace=name,
            tasks=[
                TaskSpec(name=f"t{i}", agent_type="shell", payload={"shell": "true"}, resources=need)
                for i in range(TASKS)
            ],
        )
        for name, (_, need) in LOADS.items()
    ]
    began = time.perf_counter()
    results = sim.run_all(specs)
    wall = time.perf_counter() - began
    weighted: list[float] = []
    details: list[tuple[str, str]] = []
    for result in results:
        weight, need = LOADS[result.workflow]
        busy = sum(max(0.0, min(s.end, WINDOW_S) - max(s.start, 0.0)) for s in result.spans)
        share = busy * _dominant(need) / WINDOW_S
        weighted.append(share / weight)
        details.append(
            (
                f"fair: {result.workflow} (weight {weight:g})",
                f"dominant share {share:.3f}, / weight {share / weight:.3f}",
            )
        )
    details.append(("fair: wall time of the simulation", f"{wall:.2f} s"))
    return Result(figures={"fair_jain": jain_index(weighted)}, details=details)


async def run() -> Result:
    return run_sync()
