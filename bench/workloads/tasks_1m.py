"""A 1,000,000-task workflow of no-ops, submitted through the public client and run to the end.

The plan workload's shape at scale: 1,000 layers of 1,000 python no-ops, every task past the first
layer after 2 random tasks of the layer before (``random.Random(4242)``, the same generator as the
``rss`` workload). A fresh controller, 2 agents x 4 slots (enough that the controller is the
limit). ``client.submit`` sends it (the SDK chunks a spec this large on its own), and
``client.wait(summary=True)`` waits for its end. Figures:
``tasks_1m_s``, seconds from the submit call to the end, and
``tasks_1m_peak_rss_mib``, the controller's ``VmHWM`` then (boot included; the issue's bound is
1.5 GiB).

``CORRAL_BENCH_1M_TASKS=N`` runs N tasks instead (layers of min(N, 1,000); the figure keys stay
the same and the details say the scale): a quick check of the workload, or a scale the controller
accepts before chunked submission exists.
"""

from __future__ import annotations

import os
import time

from bench.cluster import BenchCluster
from bench.workloads import Result, peak_rss_mib
from bench.workloads.rss import spec
from corral.controller.sdk.client import Client

__all__ = ["AGENTS", "SLOTS", "TASKS", "WIDTH", "run", "scale"]

TASKS = 1_000_000
WIDTH = 1_000
AGENTS = 2
SLOTS = 4
# Generous deadlines for one call carrying a million tasks on a loaded 2-core machine.
CALL_TIMEOUT_S = 1_800.0


def scale(environ: dict[str, str] | None = None) -> tuple[int, int]:
    """(layers, width) from ``CORRAL_BENCH_1M_TASKS`` (default 1,000,000 tasks: 1,000 x 1,000)."""
    text = (os.environ if environ is None else environ).get("CORRAL_BENCH_1M_TASKS", "").replace("_", "")
    tasks = int(text) if text else TASKS
    if tasks < 1:
        raise ValueError(f"CORRAL_BENCH_1M_TASKS must be a positive number of tasks, not {text!r}")
    width = min(WIDTH, tasks)
    return tasks // width, width


async def _wait_done(client: Client, workflow_id: str, tasks: int) -> None:
    """Wait for the end (``wait(summary=True)``: a million tasks' statuses would come in pages, and
    the figure is about running them, not reading them); fail unless every task completed."""
    await client.wait(workflow_id, summary=True)
    status = await client.status(workflow_id, include_tasks=False)
    completed = status.task_counts.get("completed", 0)
    if status.state != "completed" or completed != tasks:
        raise RuntimeError(f"workflow {workflow_id} ended {status.state} with {completed} of {tasks} tasks completed")


async def run() -> Result:
    layers, width = scale()
    tasks = layers * width
    built = time.perf_counter()
    workflow_spec = spec(layers, width)
    built = time.perf_counter() - built
    async with (
        BenchCluster(agents=AGENTS, slots=SLOTS) as cluster,
        cluster.client(timeout=CALL_TIMEOUT_S) as client,
    ):
        await client.connect()
        pid = cluster.controller_pid()
        idle = peak_rss_mib(pid, "VmRSS")
        start = time.perf_counter()
        submission = await client.submit(workflow_spec, start=True)  # type: ignore[arg-type]
        submitted = time.perf_counter()
        after_submit = peak_rss_mib(pid)
        await _wait_done(client, submission.workflow_id, tasks)
        elapsed = time.perf_counter() - start
        peak = peak_rss_mib(cluster.controller_pid())
    return Result(
        figures={"tasks_1m_s": elapsed, "tasks_1m_peak_rss_mib": peak},
        details=[
            ("tasks_1m: scale", f"{layers:,} layers x {width:,} = {tasks:,} tasks (spec built in {built:.1f} s)"),
            ("tasks_1m: submit call", f"{submitted - start:.1f} s"),
            (
                "tasks_1m: submit to completed",
                f"{elapsed:.1f} s ({tasks / elapsed:,.0f} tasks/s)",
            ),
            (
                "tasks_1m: controller RSS idle / peak after submit / peak",
                f"{idle:.0f} / {after_submit:.0f} / {peak:.0f} MiB",
            ),
        ],
    )
