"""200 independent 50 ms sleeps on 2 agents x 4 slots: ideal time (200 * 0.05 / 8) over actual."""

from __future__ import annotations

import time

from bench.cluster import BenchCluster
from bench.workloads import Result, check_completed, python_task, workflow

__all__ = ["AGENTS", "SECONDS", "SLOTS", "TASKS", "run"]

TASKS = 200
SECONDS = 0.05
AGENTS = 2
SLOTS = 4


async def run() -> Result:
    spec = workflow("bench-sleep", [python_task(f"s{i:04d}", "bench_tasks:sleep", [SECONDS]) for i in range(TASKS)])
    async with BenchCluster(agents=AGENTS, slots=SLOTS) as cluster, cluster.client() as client:
        await client.connect()
        start = time.perf_counter()
        submission = await client.submit(spec, start=True)
        result = await client.wait(submission.workflow_id)
        elapsed = time.perf_counter() - start
        check_completed(result, TASKS)
    ideal = TASKS * SECONDS / (AGENTS * SLOTS)
    return Result(
        figures={"sleep_efficiency": ideal / elapsed},
        details=[
            ("sleep: actual / ideal", f"{elapsed:.3f} s / {ideal:.3f} s"),
        ],
    )
