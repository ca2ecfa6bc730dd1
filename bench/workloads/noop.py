"""20,000 independent python no-op tasks in one workflow on 2 agents x 1 slot: tasks/s and peak RSS.

The controller is a fresh process, so its VmHWM after the run is the peak of this run (boot included).
The cluster follows the run's TLS setting (``bench.run --tls`` and the TLS column suffix the figures
with ``_tls``); :func:`run_tls` always runs with TLS, mutual TLS and auth (the ``noop_tls`` workload).
"""

from __future__ import annotations

import time

from bench.cluster import BenchCluster
from bench.workloads import Result, check_completed, noop_task, peak_rss_mib, tls_suffixed, workflow

__all__ = ["TASKS", "run", "run_tls"]

TASKS = 20_000


async def run(*, tls: bool | None = None) -> Result:
    spec = workflow("bench-noop", [noop_task(i) for i in range(TASKS)])
    async with BenchCluster(agents=2, slots=1, tls=tls) as cluster, cluster.client() as client:
        await client.connect()
        idle_rss = peak_rss_mib(cluster.controller_pid(), "VmRSS")
        start = time.perf_counter()
        submission = await client.submit(spec, start=True)
        submitted = time.perf_counter()
        result = await client.wait(submission.workflow_id)
        elapsed = time.perf_counter() - start
        check_completed(result, TASKS)
        rss = peak_rss_mib(cluster.controller_pid())
    return Result(
        figures={"noop_tasks_per_s": TASKS / elapsed, "controller_peak_rss_mib": rss},
        details=[
            ("noop: controller RSS before submit / peak", f"{idle_rss:.0f} / {rss:.0f} MiB"),
            ("noop: submit call", f"{submitted - start:.2f} s"),
            ("noop: submit to last result", f"{elapsed:.2f} s"),
        ],
    )


async def run_tls() -> Result:
    """The noop run with TLS + mutual TLS + auth, whatever the run's setting; figures ``*_tls``."""
    return tls_suffixed(await run(tls=True))
