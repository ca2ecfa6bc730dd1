"""Controller CPU while simulated agents stay connected and heartbeat, over a 30 s window.

The agents are one separate process (:mod:`bench.loadagents`, 100 streams per channel: 10 channels
for 1,000 agents, 50 for 5,000). Once Cluster.ListAgents shows all of them CONNECTED, the
controller's user+system CPU seconds are read (psutil) at the start and end of the window; the
figure is CPU seconds / wall seconds (one core = 1). :func:`run` is ``agents_1000_heartbeat_cpu``,
:func:`run_5000` (the ``heartbeat_5000`` workload) ``agents_5000_heartbeat_cpu``.
"""

from __future__ import annotations

import asyncio
import resource
import sys
import time

import psutil

from bench.cluster import BenchCluster
from bench.workloads import Result

__all__ = ["AGENTS", "CHANNELS", "STREAMS_PER_CHANNEL", "WINDOW_S", "measure", "run", "run_5000"]

AGENTS = 1_000
STREAMS_PER_CHANNEL = 100
CHANNELS = AGENTS // STREAMS_PER_CHANNEL
WINDOW_S = 30.0
# Connecting is paced by the controller's Hello handling: allow more time for more agents.
CONNECT_TIMEOUT_S = 60.0
CONNECT_S_PER_1000 = 60.0
RAMP_5000_PER_S = 500.0


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


async def _connected(cluster: BenchCluster) -> int:
    async with cluster.client() as client:
        return len(await client.list_agents(states=["connected"]))


def _raise_fd_limit(needed: int) -> None:
    """Lift the soft open-files limit to the hard one when ``needed`` descriptors might not fit.

    The controller and the load process inherit it. One channel is one TCP connection, so a few
    hundred descriptors suffice today; this only guards a machine with a low default (ulimit -n 256).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = hard if hard == resource.RLIM_INFINITY else max(soft, min(hard, needed))
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


async def measure(agents: int, figure: str, rate: float = 0.0) -> Result:
    """Connect ``agents`` simulated agents (``rate`` a second; 0: all at once), then measure the
    controller's CPU share over the window."""
    channels = max(1, -(-agents // STREAMS_PER_CHANNEL))
    _raise_fd_limit(4 * channels + 1024)
    async with BenchCluster(agents=0) as cluster:
        argv = [
            sys.executable,
            "-m",
            "bench.loadagents",
            "--controller",
            cluster.address,
            "--agents",
            str(agents),
            "--channels",
            str(channels),
            "--rate",
            str(rate),
        ]
        load = cluster.spawn("loadagents", argv)
        began = time.perf_counter()
        deadline = time.monotonic() + CONNECT_TIMEOUT_S + CONNECT_S_PER_1000 * agents / 1000
        connected = 0
        while connected < agents:
            if not load.alive():
                raise RuntimeError(f"the load process exited:\n{load.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {connected} of {agents} agents connected:\n{load.tail()}")
            await asyncio.sleep(0.2)
            connected = await _connected(cluster)
        connect_s = time.perf_counter() - began
        ready = next((line for line in load.tail(200).splitlines() if line.startswith("ready ")), "ready ?")
        controller = psutil.Process(cluster.controller_pid())
        generator = psutil.Process(load.pid)
        cpu0, load0, wall0 = _cpu_seconds(controller), _cpu_seconds(generator), time.perf_counter()
        await asyncio.sleep(WINDOW_S)
        cpu1, load1, wall1 = _cpu_seconds(controller), _cpu_seconds(generator), time.perf_counter()
        still = await _connected(cluster)
        if still != agents:
            raise RuntimeError(f"{agents - still} simulated agents dropped during the window")
        share = (cpu1 - cpu0) / (wall1 - wall0)
    tag = f"heartbeat {agents}"
    pace = f"{rate:g}/s" if rate else "at once"
    return Result(
        figures={figure: share},
        details=[
            (
                f"{tag}: all connected after",
                f"{connect_s:.1f} s ({channels} channels, {pace}; load process: {ready})",
            ),
            (f"{tag}: controller CPU in window", f"{cpu1 - cpu0:.2f} s over {wall1 - wall0:.1f} s"),
            # The load generator shares the cores: if it is starved, heartbeats arrive late and
            # the controller's figure looks better than it is.
            (f"{tag}: load generator CPU in window", f"{(load1 - load0) / (wall1 - wall0):.3f} cores"),
        ],
    )


async def run() -> Result:
    return await measure(AGENTS, "agents_1000_heartbeat_cpu")


async def run_5000() -> Result:
    # Started 500 a second: the figure is the steady state, and 5,000 Hellos at one instant is a
    # reconnect storm (a question of its own) that a loaded 2-core machine does not absorb.
    return await measure(5_000, "agents_5000_heartbeat_cpu", rate=RAMP_5000_PER_S)
