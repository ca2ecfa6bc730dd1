"""Seeded random layered DAGs: traces no scheduler was tuned on, to keep the ordering policy honest.

Each DAG has a few layers of varying width. A task of layer ``k`` has 1 to 5 parents (fan-in),
mostly from layer ``k - 1`` and sometimes from any earlier layer (long edges); parents are drawn
with per-task weights, so a few tasks get many children (fan-out hubs) and most get few. Durations
are log-normal (median ``MEDIAN_S`` trace-seconds, heavy right tail, clipped), times ``scale`` like
the WfCommons runtimes, so a DAG mixes short side tasks with long ones on and off the critical
path: the shape where first-come order and critical-path order disagree.

Everything comes from ``random.Random(seed)``: the same seed gives the same DAG on every machine.
"""

from __future__ import annotations

import random

from bench.traces import Trace, trace_of

__all__ = ["MAX_TASKS", "MEDIAN_S", "SEEDS", "random_layered"]

SEEDS = (1, 2, 3, 4)  # the DAGs added to the trace set of the scheduling figures
MEDIAN_S = 10.0  # trace-seconds; at scale 0.01 a median task sleeps 0.1 s
MAX_TASKS = 10_000
_FAN_IN = (1, 1, 1, 2, 2, 3, 5)
_LONG_EDGE = 0.2  # chance that a parent comes from any earlier layer rather than the previous one


def random_layered(
    seed: int, scale: float, *, layers: tuple[int, int] = (4, 8), width: tuple[int, int] = (2, 40)
) -> Trace:
    """A random layered DAG named ``random-layered-<seed>`` with durations x ``scale`` seconds."""
    if not 0 < scale <= 1e6:
        raise ValueError(f"scale must be in (0, 1e6], got {scale}")
    if not 1 <= layers[0] <= layers[1] or not 1 <= width[0] <= width[1]:
        raise ValueError(f"layers {layers} and width {width} must be (low, high) with 1 <= low <= high")
    if layers[1] * width[1] > MAX_TASKS:
        raise ValueError(f"up to {layers[1] * width[1]} tasks, over MAX_TASKS={MAX_TASKS}")
    rng = random.Random(seed)
    levels: list[list[str]] = []
    weight: dict[str, float] = {}
    runtimes: dict[str, float] = {}
    parents: dict[str, list[str]] = {}
    for level in range(rng.randint(*layers)):
        names = [f"L{level}_{i:03d}" for i in range(rng.randint(*width))]
        for name in names:
            # Pareto weights: a few hubs attract most of the next layers' edges.
            weight[name] = rng.paretovariate(1.2)
            runtimes[name] = min(12 * MEDIAN_S, max(0.05 * MEDIAN_S, rng.lognormvariate(0.0, 0.9) * MEDIAN_S)) * scale
            chosen: list[str] = []
            if levels:
                for _ in range(rng.choice(_FAN_IN)):
                    pool = levels[-1] if rng.random() >= _LONG_EDGE else [n for lv in levels for n in lv]
                    candidates = [n for n in pool if n not in chosen]
                    if candidates:
                        chosen.append(rng.choices(candidates, weights=[weight[n] for n in candidates])[0])
            parents[name] = chosen
        levels.append(names)
    return trace_of(f"random-layered-{seed}", runtimes, parents)
