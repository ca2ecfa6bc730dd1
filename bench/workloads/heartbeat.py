"""Controller CPU while 1,000 simulated agents stay connected and heartbeat, over a 30 s window.

The agents are one separate process (:mod:`bench.loadagents`, 10 channels x 100 streams). Once
Cluster.ListAgents shows all 1,000 CONNECTED, the controller's user+system CPU seconds are read
(psutil) at the start and end of the window; the figure is CPU seconds / wall seconds (one core = 1).
"""

from __future__ import annotations

import asyncio
import sys
import time

import psutil

from bench.cluster import BenchCluster
from bench.workloads import Result

__all__ = ["AGENTS", "CHANNELS", "WINDOW_S", "run"]

AGENTS = 1_000
CHANNELS = 10
WINDOW_S = 30.0
CONNECT_TIMEOUT_S = 60.0


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


async def _connected(cluster: BenchCluster) -> int:
    async with cluster.client() as client:
        return len(await client.list_agents(states=["connected"]))


async def run() -> Result:
    async with BenchCluster(agents=0) as cluster:
        argv = [
            sys.executable,
            "-m",
            "bench.loadagents",
            "--controller",
            cluster.address,
            "--agents",
            str(AGENTS),
            "--channels",
            str(CHANNELS),
        ]
        load = cluster.spawn("loadagents", argv)
        began = time.perf_counter()
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        connected = 0
        while connected < AGENTS:
            if not load.alive():
                raise RuntimeError(f"the load process exited:\n{load.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {connected} of {AGENTS} agents connected:\n{load.tail()}")
            await asyncio.sleep(0.2)
            connected = await _connected(cluster)
        connect_s = time.perf_counter() - began
        controller = psutil.Process(cluster.controller_pid())
        cpu0, wall0 = _cpu_seconds(controller), time.perf_counter()
        await asyncio.sleep(WINDOW_S)
        cpu1, wall1 = _cpu_seconds(controller), time.perf_counter()
        still = await _connected(cluster)
        if still != AGENTS:
            raise RuntimeError(f"{AGENTS - still} simulated agents dropped during the window")
        share = (cpu1 - cpu0) / (wall1 - wall0)
    return Result(
        figures={"agents_1000_heartbeat_cpu": share},
        details=[
            ("heartbeat: all connected after", f"{connect_s:.1f} s"),
            ("heartbeat: controller CPU in window", f"{cpu1 - cpu0:.2f} s over {wall1 - wall0:.1f} s"),
        ],
    )
