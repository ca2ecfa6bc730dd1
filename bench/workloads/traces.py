"""The six WfCommons traces replayed on 2 agents x 4 slots: makespan over its lower bound.

Each task sleeps its recorded runtime x ``SCALE``. Per trace: makespan (submit to last result) /
max(critical path, total work / 8 slots), both computed here from the scaled runtimes. The figure
is the geometric mean of the six ratios. One controller and one pair of agents replay the six
traces one after the other.
"""

from __future__ import annotations

import math
import time

from bench.cluster import BenchCluster
from bench.traces import TRACES, load_trace, traces_dir
from bench.workloads import Result, check_completed

__all__ = ["AGENTS", "SCALE", "SLOTS", "run"]

SCALE = 0.002
AGENTS = 2
SLOTS = 4


async def run() -> Result:
    folder = traces_dir()
    traces = [load_trace(folder / name, SCALE) for name in TRACES]
    ratios: list[float] = []
    details: list[tuple[str, str]] = []
    async with BenchCluster(agents=AGENTS, slots=SLOTS) as cluster, cluster.client() as client:
        await client.connect()
        for trace in traces:
            start = time.perf_counter()
            submission = await client.submit(trace.spec, start=True)
            result = await client.wait(submission.workflow_id)
            makespan = time.perf_counter() - start
            check_completed(result, len(trace.spec.tasks))
            bound = trace.lower_bound_s(AGENTS * SLOTS)
            ratio = makespan / bound
            ratios.append(ratio)
            details.append(
                (
                    f"trace: {trace.name} ({len(trace.spec.tasks)} tasks)",
                    f"ratio {ratio:.2f}  makespan {makespan:.3f} s  bound {bound:.3f} s "
                    f"(cp {trace.critical_path_s():.3f}, work/8 {trace.total_work_s / (AGENTS * SLOTS):.3f})",
                )
            )
    geomean = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
    return Result(figures={"trace_makespan_ratio": geomean}, details=details)
