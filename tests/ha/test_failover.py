"""Failover under load: 3 controllers on a real PostgreSQL, 2 agents, a 300-task DAG, 2 kill -9 of the leader.

Every task body appends to an execution ledger (the chaos suite's), so what really ran is known
whatever the controllers believe. After each kill a standby must serve within 5 s (asserted with
3x slack, the measured time printed), the agents must re-attach to it (they were given all three
addresses and follow ``corral-leader``), and at the end: every task COMPLETED (0 lost), no
completed body ran twice, no two copies of a task ran at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from corral.v1 import agent_pb2, agent_pb2_grpc, orchestrator_pb2, orchestrator_pb2_grpc, types_pb2
from tests.chaos.ledger import analyse, read_ledger
from tests.chaos.observe import ProcScanner
from tests.chaos.workloads import dag
from tests.ha.group import Controller, HaGroup, ha_group, require_postgres_store, wait_until
from tests.procs import start_agent, stop

TTL = 3.0
SERVE_WITHIN_S = 5.0  # the acceptance bound; asserted with 3x slack (the machine is shared)
TIMINGS = ["--lease", "6", "--fence-after", "12", "--kill-grace", "3", "--adopt-grace", "12"]


def workflow_status(leader: Controller, workflow_id: str) -> types_pb2.WorkflowStatus:
    with grpc.insecure_channel(leader.address) as channel:
        request = orchestrator_pb2.GetWorkflowStatusRequest(workflow_id=workflow_id, include_tasks=True)
        status: types_pb2.WorkflowStatus = (
            orchestrator_pb2_grpc.OrchestratorStub(channel).GetWorkflowStatus(request, timeout=10).status
        )
    return status


def connected_agents(leader: Controller) -> set[str]:
    """Agents connected to ``leader`` (none when it does not answer: it may have just lost its term)."""
    with grpc.insecure_channel(leader.address) as channel:
        try:
            agents = agent_pb2_grpc.ClusterStub(channel).ListAgents(agent_pb2.ListAgentsRequest(), timeout=10).agents
        except grpc.RpcError:
            return set()
    return {a.name for a in agents if a.state == types_pb2.AGENT_STATE_CONNECTED}


def ended(ledger: Path) -> int:
    return sum(1 for run in read_ledger(ledger).values() if run.end is not None)


def kill_leader(group: HaGroup) -> float:
    """kill -9 the serving leader; returns the seconds until another controller serves."""
    leader = group.leader()
    leader.proc.send_signal(signal.SIGKILL)
    leader.proc.wait(10)
    killed = time.monotonic()
    wait_until(
        lambda: any(c.alive and c.serving() for c in group.controllers), 3 * SERVE_WITHIN_S, "a standby to serve"
    )
    return time.monotonic() - killed


@contextlib.contextmanager
def agents(root: Path, addresses: str, run_id: str) -> Iterator[None]:
    procs = [start_agent(root, addresses, name, slots=4) for name in ("a1", "a2")]
    scanner_left = ProcScanner(run_id)
    try:
        yield
    finally:
        for proc in procs:
            stop(proc)
        for pids in scanner_left.alive().values():  # supervisors the agents left: never leak them
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


@pytest.mark.chaos
@pytest.mark.timeout(600)
def test_two_leader_kills_lose_nothing_and_run_nothing_twice(tmp_path: Path, pg_dsn: str) -> None:
    require_postgres_store()
    run_id = uuid.uuid4().hex[:12]
    ledger = tmp_path / "ledger"
    with ha_group(tmp_path / "controllers", pg_dsn, ttl=TTL, extra=TIMINGS) as group:
        group.start(3)
        leader = group.leader()
        scanner = ProcScanner(run_id).start()
        with agents(tmp_path, group.addresses, run_id):
            wait_until(lambda: connected_agents(leader) == {"a1", "a2"}, 60, "both agents")
            spec = {"name": "failover", "tasks": dag(ledger, run_id, count=300, width=20, seconds=[0.5])}
            workflow_id = leader.submit(spec, start=True, timeout=30)

            failovers = []
            for done_before_kill in (60, 160):
                wait_until(lambda n=done_before_kill: ended(ledger) >= n, 180, f"{done_before_kill} tasks done")
                failovers.append(kill_leader(group))
                wait_until(lambda: connected_agents(group.leader()) == {"a1", "a2"}, 60, "the agents to re-attach")
            print(f"failover_s per kill: {', '.join(f'{s:.2f}' for s in failovers)}")

            def finished() -> bool:
                with contextlib.suppress(grpc.RpcError):
                    status = workflow_status(group.leader(), workflow_id)
                    return status.state in (
                        types_pb2.WORKFLOW_STATE_COMPLETED,
                        types_pb2.WORKFLOW_STATE_FAILED,
                        types_pb2.WORKFLOW_STATE_CANCELLED,
                    )
                return False

            wait_until(finished, 300, "the workflow to finish", interval=0.5)
            status = workflow_status(group.leader(), workflow_id)
        scanner.stop()

    states = [task.state for task in status.tasks]
    assert len(states) == 300
    assert states.count(types_pb2.TASK_STATE_COMPLETED) == 300, "tasks lost or failed"
    report = analyse(read_ledger(ledger), scanner.last_alive())
    assert report.reruns() == {}, "completed bodies ran again"
    assert report.overlaps == [], "two copies of a task ran at once"
    assert all(seconds < 3 * SERVE_WITHIN_S for seconds in failovers), failovers
