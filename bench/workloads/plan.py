"""Submit (start=False) a 100,000-task layered DAG and ask for its execution plan; no agents.

100 layers of 1,000 python tasks; every task past the first layer depends on 2 tasks of the layer
before, drawn with ``random.Random(SEED)``. Timed from the start of submit to the plan answer.
"""

from __future__ import annotations

import random
import time

from bench.cluster import BenchCluster
from bench.workloads import Result, python_task, workflow

__all__ = ["LAYERS", "SEED", "WIDTH", "run"]

LAYERS = 100
WIDTH = 1_000
SEED = 4242


def _name(layer: int, i: int) -> str:
    return f"l{layer:03d}-{i:04d}"


async def run() -> Result:
    rng = random.Random(SEED)
    tasks = []
    for layer in range(LAYERS):
        for i in range(WIDTH):
            deps = [_name(layer - 1, j) for j in rng.sample(range(WIDTH), 2)] if layer else []
            tasks.append(python_task(_name(layer, i), "bench_tasks:noop", [layer * WIDTH + i], deps))
    spec = workflow("bench-plan", tasks)
    async with BenchCluster(agents=0) as cluster, cluster.client(timeout=120.0) as client:
        await client.connect()
        start = time.perf_counter()
        submission = await client.submit(spec, start=False)
        submitted = time.perf_counter()
        plan = await client.plan(submission.workflow_id)
        end = time.perf_counter()
    elapsed = end - start
    if plan.task_count != LAYERS * WIDTH or len(plan.stages) != LAYERS:
        raise RuntimeError(f"unexpected plan: {plan.task_count} tasks in {len(plan.stages)} stages")
    return Result(
        figures={"plan_100k_s": elapsed},
        details=[
            ("plan: submit call", f"{submitted - start:.2f} s"),
            ("plan: GetExecutionPlan call", f"{end - submitted:.2f} s"),
        ],
    )
