"""Latency of one-task workflows: submit-then-wait (``client.execute``, one round trip), sequentially, 2 x 1 slot.

Each round is timed twice: end to end around the public client's ``execute`` call (the
``roundtrip_*`` figures), and by the controller itself, which puts the microseconds from the
request's arrival to the answer's departure in the ``corral-server-us`` trailer of that same call
(the ``roundtrip_server_*`` figures). The difference is the client's gRPC and decoding cost plus
the loopback.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import grpc

from bench.cluster import BenchCluster
from bench.workloads import Result, check_completed, noop_task, workflow
from corral.controller.rpc.server_timing import server_us
from corral.controller.sdk.client import Client

__all__ = ["ROUNDS", "WARMUPS", "SubmitTap", "percentile", "run"]

WARMUPS = 50
ROUNDS = 1_000


def percentile(sorted_values: list[float], q: float) -> float:
    """The nearest-rank percentile ``q`` (0-100) of sorted values."""
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


class SubmitTap:
    """The client's Orchestrator stub, keeping the last ``SubmitWorkflow`` call to read its trailers.

    The SDK returns only the decoded answer; the call object (with the trailers) stays inside it.
    This stands in for the stub the client caches, so ``client.execute`` runs exactly as always
    (one attribute lookup and one assignment more per call) and the bench reads the trailers after.
    """

    def __init__(self, stub: Any) -> None:
        self._stub = stub
        self.last: grpc.aio.UnaryUnaryCall[Any, Any] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stub, name)

    def SubmitWorkflow(self, *args: Any, **kwargs: Any) -> Any:  # the stub's method name
        self.last = call = self._stub.SubmitWorkflow(*args, **kwargs)
        return call

    @classmethod
    async def install(cls, client: Client) -> SubmitTap:
        """Put a tap in place of ``client``'s Orchestrator stub (the client must stay on one controller)."""
        tap = cls(await client._stub("orchestrator"))
        client._stubs["orchestrator"] = tap
        return tap

    async def server_ms(self) -> float:
        """The server time of the last SubmitWorkflow call, in ms (raises when the trailer is missing)."""
        assert self.last is not None, "no call yet"
        us = server_us(await self.last.trailing_metadata())
        if us is None:
            raise RuntimeError("the controller sent no corral-server-us trailer")
        return us / 1000


async def run() -> Result:
    spec = workflow("bench-roundtrip", [noop_task(0)])
    latencies: list[float] = []
    server: list[float] = []
    async with BenchCluster(agents=2, slots=1) as cluster, cluster.client() as client:
        await client.connect()
        tap = await SubmitTap.install(client)
        for i in range(WARMUPS + ROUNDS):
            start = time.perf_counter()
            result = await client.execute(spec)
            elapsed = time.perf_counter() - start
            check_completed(result, 1)
            if i >= WARMUPS:
                latencies.append(elapsed * 1000)
                server.append(await tap.server_ms())
    latencies.sort()
    server.sort()
    client_side = statistics.median(latencies) - statistics.median(server)
    return Result(
        figures={
            "roundtrip_p50_ms": percentile(latencies, 50),
            "roundtrip_p99_ms": percentile(latencies, 99),
            "roundtrip_server_p50_ms": percentile(server, 50),
            "roundtrip_server_p99_ms": percentile(server, 99),
        },
        details=[
            ("roundtrip: mean / max", f"{statistics.fmean(latencies):.2f} / {latencies[-1]:.2f} ms"),
            ("roundtrip: p90", f"{percentile(latencies, 90):.2f} ms"),
            ("roundtrip: server mean / max", f"{statistics.fmean(server):.2f} / {server[-1]:.2f} ms"),
            ("roundtrip: client + wire (p50 end to end - p50 server)", f"{client_side:.2f} ms"),
        ],
    )
