"""Failover time: controllers in active/standby on a throwaway PostgreSQL; kill -9 the leader 3 times.

``failover_s`` is the median, over 3 kills, of the seconds from the leader's SIGKILL until another
controller answers gRPC health SERVING, with the default ``--lease-ttl`` (5 s): the lease must
expire on the database's clock (at most a ttl after the last renewal), then the standby loads the
state and serves. Each kill comes at a different point of the leader's renewal cycle (renewals
every ttl/3), as a crash would. Four controllers start, so the third kill still leaves one. Where no PostgreSQL
is installed (see tests/pgserver.py) the figure is left out, with the reason in the table.
"""

from __future__ import annotations

import contextlib
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import psycopg
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.workloads import Result
from corral.controller.address_file import wait_for_address

__all__ = ["KILLS", "run"]

KILLS = 3
_CONTROLLERS = KILLS + 1
_TIMEOUT_S = 60.0
_TTL_S = 5.0  # the controller's default --lease-ttl (the bench passes none)


async def run() -> Result:
    try:
        from tests.pgserver import running_server
    except ImportError:
        return Result(figures={}, details=[("failover: skipped", "tests.pgserver is not importable")])
    try:
        with running_server() as server, tempfile.TemporaryDirectory(prefix="corral-failover-") as tmp:
            times = _measure(server.create_database(), Path(tmp))
    except LookupError as exc:  # no PostgreSQL installed
        return Result(figures={}, details=[("failover: skipped", str(exc))])
    median = statistics.median(times)
    return Result(
        figures={"failover_s": median},
        details=[("failover: kill -9 -> a standby serves (lease ttl 5 s)", ", ".join(f"{t:.2f} s" for t in times))],
    )


def _measure(dsn: str, root: Path) -> list[float]:
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for index in range(_CONTROLLERS):
            directory = root / f"c{index}"
            directory.mkdir()
            log = (directory / "controller.log").open("wb")
            argv = [sys.executable, "-m", "corral.controller", "--store", dsn, "--listen", "127.0.0.1:0"]
            argv += ["--address-file", str(directory / "addr")]
            proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            log.close()
            procs[wait_for_address(directory / "addr", exited=proc.poll)] = proc
        times = []
        phases = random.Random(12)  # seeded: the same kill phases on every run
        for _ in range(KILLS):
            leader = _wait(lambda: _leader(dsn, procs), "a leader")
            # A new leader's lease is fresh: killing it at once would always measure the worst
            # case (a full ttl to wait). Kill at a spread of points in its renewal cycle instead.
            time.sleep(2.0 + phases.uniform(0.0, _TTL_S / 3))
            procs[leader].send_signal(signal.SIGKILL)
            procs[leader].wait(10)
            killed = time.perf_counter()
            del procs[leader]
            _wait(lambda: any(_serving(address) for address in procs), "a standby to serve")
            times.append(time.perf_counter() - killed)
        return times
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(15)
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)


def _leader(dsn: str, procs: dict[str, subprocess.Popen[bytes]]) -> str | None:
    with psycopg.connect(dsn, autocommit=True) as conn, contextlib.suppress(psycopg.Error):
        row = conn.execute("SELECT address FROM corral_lease WHERE name = 'leader' AND expires_at > now()").fetchone()
        if row is not None and str(row[0]) in procs and _serving(str(row[0])):
            return str(row[0])
    return None


def _serving(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=0.5)
        except grpc.RpcError:
            return False
    return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)


def _wait(check: Callable[[], object], what: str) -> str:
    deadline = time.perf_counter() + _TIMEOUT_S
    while True:
        value = check()
        if value:
            return str(value) if not isinstance(value, bool) else ""
        if time.perf_counter() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.02)
