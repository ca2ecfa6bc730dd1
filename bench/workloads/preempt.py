"""Preemption latency: a priority-100 task submitted to a cluster full of preemptible priority-10
tasks (2 agents x 2 slots, kill grace 1 s); seconds from its submission to its start.

The victims are shell ``sleep`` tasks, so they end on the SIGTERM; the figure is then the
controller's reaction (a pass, the Cancel, the victims' reports) plus the preemptor's dispatch, and
stays under the kill grace + a fraction of a second even if a victim ignored the SIGTERM.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from bench.cluster import BenchCluster
from bench.workloads import Result
from corral.controller.sdk.client import Client
from corral.controller.spec import TaskSpec, WorkflowSpec

__all__ = ["AGENTS", "KILL_GRACE_S", "SLOTS", "run"]

AGENTS = 2
SLOTS = 2
KILL_GRACE_S = 1.0
_POLL_S = 0.02
_TIMEOUT_S = 60.0


def _shell(name: str, command: str, priority: int, preemptible: bool) -> TaskSpec:
    return TaskSpec(
        name=name, agent_type="shell", payload={"shell": command}, priority=priority, preemptible=preemptible
    )


async def run() -> Result:
    low = WorkflowSpec(
        name="bench-preempt-low", tasks=[_shell(f"low{i}", "sleep 120", 10, True) for i in range(AGENTS * SLOTS)]
    )
    high = WorkflowSpec(name="bench-preempt-high", tasks=[_shell("urgent", "true", 100, False)])
    flags = ["--kill-grace", str(KILL_GRACE_S)]
    async with (
        BenchCluster(agents=AGENTS, slots=SLOTS, controller_flags=flags) as cluster,
        cluster.client() as client,
    ):
        await client.connect()
        low_id = (await client.submit(low, start=True)).workflow_id
        await _until(lambda: _all_running(client, low_id), "the low-priority tasks to run")
        start = time.perf_counter()
        high_id = (await client.submit(high, start=True)).workflow_id
        await _until(lambda: _started(client, high_id), "the preemptor to start")
        elapsed = time.perf_counter() - start
        status = await client.status(low_id)
        preempted = sum(1 for t in status.tasks if t.preemptions)
        await client.cancel(low_id, force=True)
    return Result(
        figures={"preempt_start_s": elapsed},
        details=[("preempt: submit -> start (kill grace 1 s); victims", f"{elapsed:.3f} s; {preempted}")],
    )


async def _all_running(client: Client, workflow_id: str) -> bool:
    status = await client.status(workflow_id)
    return bool(status.tasks) and all(t.state == "running" for t in status.tasks)


async def _started(client: Client, workflow_id: str) -> bool:
    status = await client.status(workflow_id)
    return any(t.state in ("running", "completed") for t in status.tasks)


async def _until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.perf_counter() + _TIMEOUT_S
    while not await check():
        if time.perf_counter() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(_POLL_S)
