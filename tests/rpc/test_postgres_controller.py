"""A real controller (runtime + gRPC server on port 0) on the PostgreSQL store.

Work survives a restart on the same database; logs and the event log are read off the event loop;
and when the database goes away writers get UNAVAILABLE, reads go on, and writes resume by
themselves once it is back, with nothing acknowledged lost.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import psycopg
import pytest

from corral.controller.errors import StorageUnavailable
from corral.controller.rpc.gateway import deliver
from corral.controller.runtime import Runtime
from corral.controller.server import build_server
from corral.controller.store.postgres import PostgresStore
from corral.v1 import agent_pb2, agent_pb2_grpc, orchestrator_pb2_grpc
from corral.v1 import orchestrator_pb2 as OR
from corral.v1 import types_pb2 as pb
from tests.pgserver import PgServer
from tests.rpc.conftest import shell_task, workflow_spec

RESUME_BOUND_S = 15.0  # resuming takes about a second (probe backoff <= 1 s); 3x slack and more


class PgController:
    """A controller on ``dsn`` with stubs; ``restart`` replaces it by a fresh one on the same database."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    async def start(self) -> PgController:
        self.runtime = Runtime(PostgresStore(self.dsn, pool_size=2), encode_actions=deliver)
        await self.runtime.start()
        self.server = await build_server(self.runtime, "127.0.0.1:0")
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.server.port}")
        self.orchestrator = orchestrator_pb2_grpc.OrchestratorStub(self.channel)
        self.gateway = agent_pb2_grpc.AgentGatewayStub(self.channel)
        return self

    async def stop(self) -> None:
        await self.channel.close()
        await self.server.stop(0)
        await self.runtime.stop()

    async def submit(self, name: str, **task: Any) -> str:
        spec = workflow_spec(name, [shell_task("a", **task)])
        response = await self.orchestrator.SubmitWorkflow(OR.SubmitWorkflowRequest(spec=spec, start=True))
        return str(response.workflow_id)


@pytest.fixture
async def pgc(pg_dsn: str) -> AsyncIterator[PgController]:
    controller = await PgController(pg_dsn).start()
    try:
        yield controller
    finally:
        await controller.stop()
    assert controller.runtime.failure is None


async def _agent(controller: PgController) -> Any:
    call = controller.gateway.Connect()
    hello = agent_pb2.Hello(
        agent_id="agent-1",
        name="node1",
        agent_types=["python"],
        inventory=pb.Inventory(cpu_cores=1, memory_mb=256, slots=1),
        incarnation="one",
    )
    await call.write(agent_pb2.AgentMessage(hello=hello))
    assert (await call.read()).WhichOneof("kind") == "welcome"
    return call


async def _next(call: Any, kind: str) -> Any:
    while True:
        message = await asyncio.wait_for(call.read(), RESUME_BOUND_S)
        assert message is not grpc.aio.EOF, f"the stream ended while waiting for {kind}"
        if message.WhichOneof("kind") == kind:
            return message


async def test_work_logs_and_events_live_in_postgresql_and_survive_a_restart(pgc: PgController) -> None:
    agent = await _agent(pgc)
    job = await pgc.submit("job", agent_type="python", payload={"function": "m:f"})
    (assignment,) = (await _next(agent, "assign")).assign.assignments
    attempt = assignment.attempt_id
    events = [
        agent_pb2.TaskEvent(attempt_id=attempt, started=agent_pb2.Started(pid=4242)),
        agent_pb2.TaskEvent(attempt_id=attempt, output=agent_pb2.Output(stdout=b"hello\n", stderr=b"warn\n")),
        agent_pb2.TaskEvent(attempt_id=attempt, output=agent_pb2.Output(stdout=b"world\n")),
        agent_pb2.TaskEvent(
            attempt_id=attempt, finished=agent_pb2.Finished(outcome=pb.ATTEMPT_OUTCOME_SUCCEEDED, result_json=b"42")
        ),
    ]
    await agent.write(agent_pb2.AgentMessage(events=agent_pb2.TaskEvents(events=events)))
    assert attempt in (await _next(agent, "ack")).ack.attempt_ids
    agent.cancel()
    logs = await pgc.orchestrator.GetTaskLogs(OR.GetTaskLogsRequest(task_id=assignment.task_id))
    assert (logs.attempt_id, logs.stdout, logs.stderr, logs.finished) == (attempt, b"hello\nworld\n", b"warn\n", True)
    assert logs.stdout_offset == 12
    tail = await pgc.orchestrator.GetTaskLogs(OR.GetTaskLogsRequest(task_id=assignment.task_id, stdout_offset=6))
    assert (tail.stdout, tail.stdout_offset) == (b"world\n", 12)
    history = await pgc.orchestrator.GetWorkflowEvents(OR.GetWorkflowEventsRequest(workflow_id=job))
    assert len(history.events) >= 3
    assert [e.seq for e in history.events] == sorted(e.seq for e in history.events)

    await pgc.stop()
    await pgc.start()  # a new controller process would do the same: rebuild from the database
    status = await pgc.orchestrator.GetWorkflowStatus(OR.GetWorkflowStatusRequest(workflow_id=job))
    assert status.status.state == pb.WORKFLOW_STATE_COMPLETED
    again = await pgc.orchestrator.GetTaskLogs(OR.GetTaskLogsRequest(task_id=assignment.task_id))
    assert again.stdout == b"hello\nworld\n"
    later = await pgc.orchestrator.GetWorkflowEvents(OR.GetWorkflowEventsRequest(workflow_id=job))
    assert [e.seq for e in later.events] == [e.seq for e in history.events]


def _database(dsn: str) -> str:
    return dsn.rsplit("/", 1)[1]


def _cut_off(server: PgServer, dsn: str, allow: bool) -> None:
    """Refuse (or allow again) connections to the database, ending the ones it has."""
    name = _database(dsn)
    with psycopg.connect(server.dsn(), autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allow).lower()}')
        if not allow:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )


async def test_a_lost_database_refuses_writes_and_resumes_by_itself(
    pgc: PgController, pg_server: PgServer, pg_dsn: str
) -> None:
    rt = pgc.runtime
    before = await pgc.submit("before")  # acknowledged: must survive everything below
    _cut_off(pg_server, pg_dsn, allow=False)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await pgc.submit("during")
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE, refused.value
    assert "storage unavailable: PostgreSQL" in (refused.value.details() or "")
    assert isinstance(rt.degraded, StorageUnavailable)
    # The probe keeps failing while the database is away: no false resume.
    waited = time.monotonic()
    while rt.failed_probes < 2:
        assert time.monotonic() - waited < RESUME_BOUND_S, "the store was not probed"
        await asyncio.sleep(0.05)
    assert rt.degraded is not None

    _cut_off(pg_server, pg_dsn, allow=True)
    back = time.monotonic()
    after = ""
    while not after:
        assert time.monotonic() - back < RESUME_BOUND_S, f"writes did not resume within {RESUME_BOUND_S} s"
        try:
            after = await pgc.submit("after")
        except grpc.aio.AioRpcError as exc:
            assert exc.code() is grpc.StatusCode.UNAVAILABLE, exc
            await asyncio.sleep(0.05)
    assert rt.degraded is None
    listed = await pgc.orchestrator.ListWorkflows(OR.ListWorkflowsRequest())
    assert sorted(w.name for w in listed.workflows) == ["after", "before"]
    store = PostgresStore(pg_dsn, pool_size=1)
    try:
        assert sorted(w.id for w in store.load().workflows) == sorted([before, after])
    finally:
        store.close()
