"""A 10,000-task random DAG of python no-ops on 2 agents x 1 slot: tasks/s from submit to last result.

Task 0 has no dependency, task 1 depends on task 0, task i >= 2 on the two tasks
``random.Random(12345).sample(range(i), 2)`` (one generator, drawn in order i = 2, 3, ...).
"""

from __future__ import annotations

import random
import time

from bench.cluster import BenchCluster
from bench.workloads import Result, check_completed, noop_task, workflow

__all__ = ["SEED", "TASKS", "dependencies", "run"]

TASKS = 10_000
SEED = 12345


def dependencies(tasks: int = TASKS, seed: int = SEED) -> list[list[int]]:
    """The dependency indices of every task."""
    rng = random.Random(seed)
    deps: list[list[int]] = [[], [0]]
    for i in range(2, tasks):
        deps.append(rng.sample(range(i), 2))
    return deps[:tasks]


async def run() -> Result:
    deps = dependencies()
    spec = workflow("bench-dag", [noop_task(i, [f"t{d:06d}" for d in deps[i]]) for i in range(TASKS)])
    async with BenchCluster(agents=2, slots=1) as cluster, cluster.client() as client:
        await client.connect()
        start = time.perf_counter()
        submission = await client.submit(spec, start=True)
        submitted = time.perf_counter()
        result = await client.wait(submission.workflow_id)
        elapsed = time.perf_counter() - start
        check_completed(result, TASKS)
    return Result(
        figures={"dag_tasks_per_s": TASKS / elapsed},
        details=[
            ("dag: submit call", f"{submitted - start:.2f} s"),
            ("dag: submit to last result", f"{elapsed:.2f} s"),
        ],
    )
