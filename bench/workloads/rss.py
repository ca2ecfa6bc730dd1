"""Memory of the controller around one 200,000-task workflow: its peak, and its RSS once idle.

A fresh controller and 2 agents x 1 slot run one workflow of the plan workload's shape, 200 layers
of 1,000 python no-ops, each task past the first layer after 2 random tasks of the layer before
(``random.Random(SEED)``). ``rss_200k_peak_mib`` is the controller's ``VmHWM`` (boot included)
when ``wait`` returns; ``rss_after_idle_mib`` its ``VmRSS`` ``IDLE_S`` seconds later, with nothing
else submitted (finished workflows leave memory after ``--evict-after``, 30 s by default, when the
controller evicts them). The RSS is also sampled while the workflow runs, so the details say in
which phase the peak falls (the submit call, or running).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time

from bench.cluster import BenchCluster
from bench.workloads import Result, check_completed, noop_task, peak_rss_mib, workflow

__all__ = ["IDLE_S", "LAYERS", "SEED", "WIDTH", "run", "spec"]

LAYERS = 200
WIDTH = 1_000
SEED = 4242
IDLE_S = 60.0
SAMPLE_S = 0.25


def spec(layers: int = LAYERS, width: int = WIDTH, seed: int = SEED) -> object:
    """The workflow spec (built before any measurement)."""
    rng = random.Random(seed)
    tasks = []
    for layer in range(layers):
        for i in range(width):
            index = layer * width + i
            deps = [(layer - 1) * width + j for j in rng.sample(range(width), 2)] if layer else []
            tasks.append(noop_task(index, [f"t{d:06d}" for d in deps]))
    return workflow("bench-rss", tasks)


async def _sample(pid: int, into: list[tuple[float, float]], stop: asyncio.Event) -> None:
    """Record (seconds, VmRSS MiB) every SAMPLE_S until ``stop`` is set."""
    began = time.perf_counter()
    while not stop.is_set():
        into.append((time.perf_counter() - began, peak_rss_mib(pid, "VmRSS")))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SAMPLE_S)


async def run() -> Result:
    workflow_spec = spec()
    tasks = LAYERS * WIDTH
    async with BenchCluster(agents=2, slots=1) as cluster, cluster.client(timeout=300.0) as client:
        await client.connect()
        pid = cluster.controller_pid()
        idle_before = peak_rss_mib(pid, "VmRSS")
        samples: list[tuple[float, float]] = []
        stop = asyncio.Event()
        sampler = asyncio.create_task(_sample(pid, samples, stop))
        start = time.perf_counter()
        submission = await client.submit(workflow_spec, start=True)  # type: ignore[arg-type]
        submitted = time.perf_counter()
        after_submit = peak_rss_mib(pid)
        result = await client.wait(submission.workflow_id)
        finished = time.perf_counter()
        stop.set()
        await sampler
        check_completed(result, tasks)
        del result
        peak = peak_rss_mib(pid)
        # Wait without touching the controller: any call would be work (and memory) of its own.
        await asyncio.sleep(IDLE_S)
        idle_after = peak_rss_mib(cluster.controller_pid(), "VmRSS")
    running = [rss for at, rss in samples if at >= submitted - start]
    return Result(
        figures={"rss_200k_peak_mib": peak, "rss_after_idle_mib": idle_after},
        details=[
            ("rss: controller RSS before submit", f"{idle_before:.0f} MiB"),
            ("rss: peak by the end of the submit call", f"{after_submit:.0f} MiB ({submitted - start:.1f} s)"),
            ("rss: highest sample while running", f"{max(running, default=0.0):.0f} MiB"),
            ("rss: peak (VmHWM) when wait returned", f"{peak:.0f} MiB ({tasks / (finished - start):,.0f} tasks/s)"),
            (f"rss: RSS {IDLE_S:.0f} s after it finished", f"{idle_after:.0f} MiB"),
        ],
    )
