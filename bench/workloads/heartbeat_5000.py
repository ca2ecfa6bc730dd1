"""``agents_5000_heartbeat_cpu``: the heartbeat workload with 5,000 simulated agents (50 channels)."""

from __future__ import annotations

from bench.workloads.heartbeat import run_5000 as run

__all__ = ["run"]
