"""Latency of one-task workflows: submit-then-wait (``client.execute``, one round trip), sequentially, 2 x 1 slot."""

from __future__ import annotations

import statistics
import time

from bench.cluster import BenchCluster
from bench.workloads import Result, check_completed, noop_task, workflow

__all__ = ["ROUNDS", "WARMUPS", "run"]

WARMUPS = 50
ROUNDS = 1_000


def percentile(sorted_values: list[float], q: float) -> float:
    """The nearest-rank percentile ``q`` (0-100) of sorted values."""
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


async def run() -> Result:
    spec = workflow("bench-roundtrip", [noop_task(0)])
    latencies: list[float] = []
    async with BenchCluster(agents=2, slots=1) as cluster, cluster.client() as client:
        await client.connect()
        for i in range(WARMUPS + ROUNDS):
            start = time.perf_counter()
            result = await client.execute(spec)
            elapsed = time.perf_counter() - start
            check_completed(result, 1)
            if i >= WARMUPS:
                latencies.append(elapsed * 1000)
    latencies.sort()
    return Result(
        figures={"roundtrip_p50_ms": percentile(latencies, 50), "roundtrip_p99_ms": percentile(latencies, 99)},
        details=[
            ("roundtrip: mean / max", f"{statistics.fmean(latencies):.2f} / {latencies[-1]:.2f} ms"),
            ("roundtrip: p90", f"{percentile(latencies, 90):.2f} ms"),
        ],
    )
