"""Deadline hit rate: the same seeded mix of 40 workflows with deadlines, with and without deadline scheduling.

The workflows (seeded, so every run measures the same load) are small DAGs (a chain, a fork-join
or a single task; 1 to 6 tasks of 5 to 40 s with ``estimated_duration`` set) submitted at one
instant to the simulator (the real core, 2 simulated agents x 4 slots, a virtual clock: the policy
alone, no process or network noise). About a third have a **tight** deadline (1.3 to 2.5 times
their own critical path), the rest a **loose** one (0.6 to 1.2 times the whole load's ideal
makespan). Priorities are all the default (50), so only the deadline terms can tell them apart.

- ``deadline_hit_rate``: the share of workflows that finished by their deadline, with deadline
  scheduling on (admission with ``warn``, least slack first within a band, at-risk boost);
- ``deadline_hit_rate_fifo``: the same workflows, same deadlines, on a core started with deadline
  scheduling off (``--no-deadline-scheduling``): the queue's usual order (band, graph score, FIFO);
- ``deadline_hit_rate_gain``: the difference (target >= 0.15).

A workflow rejected at admission would count as a miss (the mix uses ``warn``, so none is).
"""

from __future__ import annotations

import random
import time

from bench.workloads import Result
from corral.controller.core.machine import MachineConfig
from corral.controller.sim import Fleet, Simulator
from corral.controller.spec import WorkflowSpec, parse_workflow

__all__ = ["AGENTS", "SEED", "SLOTS", "WORKFLOWS", "hit_rates", "mix", "run", "run_sync"]

AGENTS = 2
SLOTS = 4
WORKFLOWS = 40
SEED = 9


def _shape(rng: random.Random, name: str) -> tuple[list[dict[str, object]], float]:
    """The tasks of one workflow and its critical path (seconds)."""
    kind = rng.choice(("single", "chain", "fork"))
    dur = [float(rng.randint(5, 40)) for _ in range(6)]
    if kind == "single":
        return [{"name": "t0", "estimated_duration": dur[0], "payload": {"shell": "true"}}], dur[0]
    if kind == "chain":
        n = rng.randint(2, 4)
        tasks = [
            {"name": f"t{i}", "estimated_duration": dur[i], "dependencies": [f"t{i - 1}"] if i else []}
            for i in range(n)
        ]
        return [{**t, "payload": {"shell": "true"}} for t in tasks], sum(dur[:n])
    width = rng.randint(2, 4)
    tasks = [{"name": "head", "estimated_duration": dur[0], "dependencies": []}]
    tasks += [{"name": f"w{i}", "estimated_duration": dur[1 + i], "dependencies": ["head"]} for i in range(width)]
    tasks.append({"name": "tail", "estimated_duration": dur[5], "dependencies": [f"w{i}" for i in range(width)]})
    return [{**t, "payload": {"shell": "true"}} for t in tasks], dur[0] + max(dur[1 : 1 + width]) + dur[5]


def mix(seed: int = SEED, count: int = WORKFLOWS, slots: int = AGENTS * SLOTS) -> list[tuple[WorkflowSpec, float]]:
    """``count`` workflows with their relative deadlines (seconds after the common submit)."""
    rng = random.Random(seed)
    shapes = [_shape(rng, f"wf{i:02d}") for i in range(count)]
    total = sum(float(t["estimated_duration"]) for tasks, _ in shapes for t in tasks)  # type: ignore[arg-type]
    ideal = total / slots
    out: list[tuple[WorkflowSpec, float]] = []
    for i, (tasks, path) in enumerate(shapes):
        tight = rng.random() < 0.35
        deadline = path * rng.uniform(1.3, 2.5) if tight else ideal * rng.uniform(0.6, 1.2)
        deadline = max(deadline, path * 1.1)  # never infeasible on an empty fleet
        spec = parse_workflow({"name": f"wf{i:02d}", "tasks": tasks, "deadline": f"{deadline:.1f}"})
        out.append((spec, round(deadline, 1)))
    return out


def hit_rates(seed: int = SEED, count: int = WORKFLOWS) -> tuple[float, float]:
    """``(with deadline scheduling, without)``: the share of workflows that met their deadline."""
    workflows = mix(seed, count)
    rates = []
    for scheduling in (True, False):
        fleet = Fleet(AGENTS, SLOTS, agent_types=("shell",))
        simulator = Simulator(fleet, config=MachineConfig(deadline_scheduling=scheduling))
        results = simulator.run_all([spec for spec, _ in workflows])
        hits = sum(
            1
            for result, (_, deadline) in zip(results, workflows, strict=True)
            if result.state == "completed" and result.makespan <= deadline + 1e-6
        )
        rates.append(hits / len(workflows))
    return rates[0], rates[1]


def run_sync() -> Result:
    """The three figures, synchronously (the simulator does no I/O)."""
    began = time.perf_counter()
    edf, fifo = hit_rates()
    return Result(
        figures={"deadline_hit_rate": edf, "deadline_hit_rate_fifo": fifo, "deadline_hit_rate_gain": edf - fifo},
        details=[
            (
                f"deadline: {WORKFLOWS} workflows, seed {SEED}, {AGENTS}x{SLOTS} simulated slots",
                f"hit rate {edf:.3f} (fifo {fifo:.3f})",
            ),
            ("deadline: wall time of both simulations", f"{time.perf_counter() - began:.2f} s"),
        ],
    )


async def run() -> Result:
    return run_sync()
