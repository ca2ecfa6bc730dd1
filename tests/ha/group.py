"""A group of real controller processes on one real PostgreSQL, and what the HA tests read of it.

Each controller runs ``python -m corral.controller --store postgresql://...`` in a directory of its
own (address file, log). The group reads the lease row straight from the database to know who
leads, and talks gRPC to each controller's port. Every process is stopped at the end.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from psycopg import sql

from corral.controller.rpc.wire_spec import spec_to_proto
from corral.controller.spec import parse_workflow
from corral.v1 import orchestrator_pb2, orchestrator_pb2_grpc
from tests.procs import start_controller, stop

__all__ = ["Controller", "HaGroup", "require_postgres_store", "wait_until"]


def require_postgres_store() -> None:
    """Skip (with the reason) when this checkout has no PostgreSQL store yet."""
    if importlib.util.find_spec("corral.controller.store.postgres") is None:
        pytest.skip("needs the PostgreSQL store (corral.controller.store.postgres), not in this checkout")


def wait_until(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll until ``condition()`` is truthy and return it; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


@dataclass
class Controller:
    """One controller process of the group."""

    name: str
    directory: Path
    proc: subprocess.Popen[bytes]
    address: str

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def health(self, timeout: float = 2.0) -> int | None:
        """grpc health of the whole server (SERVING on the leader), None when it does not answer."""
        with grpc.insecure_channel(self.address) as channel:
            try:
                answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
            except grpc.RpcError:
                return None
        return int(answer.status)

    def serving(self) -> bool:
        return self.health(0.5) == health_pb2.HealthCheckResponse.SERVING

    def log(self) -> str:
        return (self.directory / "controller.log").read_text(errors="replace")

    def submit(self, spec: dict[str, Any], *, start: bool = False, timeout: float = 10.0) -> str:
        """SubmitWorkflow here; returns the workflow id (raises grpc.RpcError when refused)."""
        request = orchestrator_pb2.SubmitWorkflowRequest(spec=spec_to_proto(parse_workflow(spec)), start=start)
        with grpc.insecure_channel(self.address) as channel:
            answer = orchestrator_pb2_grpc.OrchestratorStub(channel).SubmitWorkflow(request, timeout=timeout)
        return str(answer.workflow_id)


class HaGroup:
    """Controllers sharing ``dsn``; ``ttl`` is their ``--lease-ttl``."""

    def __init__(self, root: Path, dsn: str, *, ttl: float, extra: Sequence[str] = ()) -> None:
        self.root = root
        self.dsn = dsn
        self.ttl = ttl
        self.extra = list(extra)
        self.controllers: list[Controller] = []

    def start(self, count: int) -> list[Controller]:
        started = []
        for _ in range(count):
            name = f"c{len(self.controllers)}"
            directory = self.root / name
            directory.mkdir(parents=True)
            proc, address = start_controller(
                directory, extra=["--store", self.dsn, "--lease-ttl", f"{self.ttl:g}", *self.extra]
            )
            controller = Controller(name, directory, proc, address)
            self.controllers.append(controller)
            started.append(controller)
        return started

    def stop(self) -> None:
        for controller in self.controllers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(controller.proc.pid, signal.SIGCONT)  # a frozen one must hear SIGTERM
            stop(controller.proc)

    @property
    def addresses(self) -> str:
        """Every controller's address, comma-separated (what agents and clients are given)."""
        return ",".join(c.address for c in self.controllers)

    def lease(self) -> tuple[int, str, bool] | None:
        """(epoch, advertised address, live) from the lease row, None before the first election."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            row = conn.execute(
                "SELECT epoch, address, expires_at > now() FROM corral_lease WHERE name = 'leader'"
            ).fetchone()
        return None if row is None else (int(row[0]), str(row[1]), bool(row[2]))

    def leader(self, timeout: float = 30.0, *, other_than: Controller | None = None) -> Controller:
        """The controller that holds the live lease AND serves (waits for one)."""

        def find() -> Controller | None:
            lease = self.lease()
            if lease is None or not lease[2]:
                return None
            for controller in self.controllers:
                if controller.address == lease[1] and controller is not other_than and controller.serving():
                    return controller
            return None

        found: Controller = wait_until(find, timeout, "a serving leader")
        return found

    def rows_mentioning(self, marker: str) -> dict[str, int]:
        """Rows of every table of the store whose text contains ``marker`` (table -> count)."""
        found: dict[str, int] = {}
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            tables = [
                str(row[0])
                for row in conn.execute(
                    "SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
                ).fetchall()
            ]
            for table in tables:
                query = sql.SQL("SELECT count(*) FROM {} AS t WHERE t::text LIKE %s").format(sql.Identifier(table))
                count_row = conn.execute(query, (f"%{marker}%",)).fetchone()
                if count_row is not None and int(count_row[0]):
                    found[table] = int(count_row[0])
        return found


@contextlib.contextmanager
def ha_group(root: Path, dsn: str, *, ttl: float, extra: Sequence[str] = ()) -> Iterator[HaGroup]:
    """A group that is stopped (every process) when the block ends."""
    group = HaGroup(root, dsn, ttl=ttl, extra=extra)
    try:
        yield group
    finally:
        group.stop()
