"""Scheduling quality on a real controller: makespan over the better zero-overhead list schedule.

The workflows are the six WfCommons traces at scale 0.01 (each task sleeps its runtime x 0.01)
and the seeded random layered DAGs of :mod:`bench.randdag`, replayed by a real controller and
2 agents x 4 slots. The references are computed in the bench (:mod:`bench.listsched`): FIFO and
critical-path-first list schedules on 8 slots with the same durations and no overhead. Per
workflow, on a fresh controller and agents (so nothing learned from another workflow — tasks of
every trace share one function, ``bench_tasks:sleep``, i.e. one payload fingerprint):

1. ``trace_vs_best_list_cold``: no ``estimated_duration``, first run: structure only;
2. ``trace_vs_best_list_learned``: the same workflow (same name) again: durations learned from 1;
3. ``trace_vs_best_list``: ``estimated_duration`` set to each task's scaled runtime.

Each figure is the geometric mean over the workflows of makespan (submit call to ``wait``
returning) / the better list schedule's makespan. A warm-up workflow of ``bench_tasks:noop`` tasks
(another fingerprint) first starts the agents' python workers, so the cold run does not pay for it.
"""

from __future__ import annotations

import time

from bench.cluster import BenchCluster
from bench.traceset import SCALE, geomean, reference, scheduling_set
from bench.workloads import Result, check_completed, noop_task, workflow
from corral.controller.sdk.client import Client
from corral.controller.spec import WorkflowSpec

__all__ = ["AGENTS", "SLOTS", "run"]

AGENTS = 2
SLOTS = 4
_KEYS = ("trace_vs_best_list", "trace_vs_best_list_learned", "trace_vs_best_list_cold")


async def _makespan(client: Client, spec: WorkflowSpec) -> float:
    start = time.perf_counter()
    submission = await client.submit(spec, start=True)
    result = await client.wait(submission.workflow_id)
    makespan = time.perf_counter() - start
    check_completed(result, len(spec.tasks))
    return makespan


async def run() -> Result:
    traces = scheduling_set(SCALE)
    warmup = workflow("warmup", [noop_task(i, prefix="w") for i in range(2 * AGENTS * SLOTS)])
    ratios: dict[str, list[float]] = {key: [] for key in _KEYS}
    six: dict[str, list[float]] = {key: [] for key in _KEYS}
    details: list[tuple[str, str]] = []
    for index, trace in enumerate(traces):
        ref = reference(trace, AGENTS * SLOTS)
        estimated_spec = trace.with_estimates()
        async with BenchCluster(agents=AGENTS, slots=SLOTS) as cluster, cluster.client() as client:
            await client.connect()
            await _makespan(client, warmup)
            cold = await _makespan(client, trace.spec)
            learned = await _makespan(client, trace.spec)
            estimated = await _makespan(client, estimated_spec)
        for key, makespan in zip(_KEYS, (estimated, learned, cold), strict=True):
            ratios[key].append(makespan / ref.best)
            if index < 6:
                six[key].append(makespan / ref.best)
        details.append(
            (
                f"best_list: {trace.name} ({len(trace.spec.tasks)} tasks)",
                f"estimates {ref.describe(estimated)}; learned {learned / ref.best:.3f}; cold {cold / ref.best:.3f}",
            )
        )
    details.append(
        (
            "best_list: the six traces alone (geomean)",
            ", ".join(f"{key} {geomean(values):.3f}" for key, values in six.items()),
        )
    )
    return Result(figures={key: geomean(values) for key, values in ratios.items()}, details=details)
