"""Forged reports and stolen identities against real processes: nobody completes or fails an
attempt it does not hold, a live agent identity cannot be taken over, a credential names its
agent, and a fake agent that swallows work cannot keep it."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest

from corral.controller.rpc import identity
from corral.controller.rpc.cluster import ClusterService
from corral.controller.rpc.errors import ErrorInterceptor
from corral.controller.rpc.gateway import AgentGatewayService, deliver
from corral.controller.runtime import Runtime
from corral.controller.store.sqlite import SqliteStore
from corral.v1 import (
    agent_pb2,
    agent_pb2_grpc,
    orchestrator_pb2,
    orchestrator_pb2_grpc,
    scheduler_pb2,
    scheduler_pb2_grpc,
    types_pb2,
)
from tests.procs import Cluster, start_controller, stop

from .agent_streams import RawAgent, agent_names, hello, shell_workflow, wait_workflow

DENIED = grpc.StatusCode.PERMISSION_DENIED
RUNNING = types_pb2.TASK_STATE_RUNNING
COMPLETED = types_pb2.WORKFLOW_STATE_COMPLETED


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    yield from Cluster.running(tmp_path)


@pytest.fixture
async def channel(cluster: Cluster) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(cluster.address) as chan:
        yield chan


async def _eventually(check: Callable[[], Awaitable[Any]], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        await asyncio.sleep(0.1)


async def _submit(channel: grpc.aio.Channel, spec: types_pb2.WorkflowSpec) -> str:
    stub = orchestrator_pb2_grpc.OrchestratorStub(channel)
    answer = await stub.SubmitWorkflow(orchestrator_pb2.SubmitWorkflowRequest(spec=spec, start=True), timeout=30)
    return str(answer.workflow_id)


async def _task(channel: grpc.aio.Channel, workflow_id: str, name: str) -> types_pb2.TaskStatus:
    stub = orchestrator_pb2_grpc.OrchestratorStub(channel)
    answer = await stub.GetWorkflowStatus(
        orchestrator_pb2.GetWorkflowStatusRequest(workflow_id=workflow_id, include_tasks=True), timeout=30
    )
    (task,) = [t for t in answer.status.tasks if t.name == name]
    return task


# --- forged reports -----------------------------------------------------------------------------


@pytest.mark.e2e
async def test_forged_reports_and_a_hijack_change_nothing_and_the_real_task_finishes(
    cluster: Cluster, channel: grpc.aio.Channel, tmp_path: Path
) -> None:
    cluster.add_agent("a1", slots=2)
    cluster.wait_for_agents(1)
    connected_at = (await agent_names(channel))["a1"].connected_at
    # A second real agent configured with the same name: refused, again and again, slowly.
    twin_dir = tmp_path / "twin"
    twin_dir.mkdir()
    cluster.add_agent("twin", extra=["--name", "a1", "--work-dir", str(twin_dir)])
    twin_started = time.monotonic()

    marker = tmp_path / "marker"
    command = f"sleep 3; echo real > {marker}; echo '{{\"real\": 1}}'"
    workflow_id = await _submit(channel, shell_workflow("victim", {"real": command}))
    task = await _eventually(
        lambda: _task_if(channel, workflow_id, "real", RUNNING), 30, "the real task to start on a1"
    )
    attempt_id = task.attempt_id
    assert task.agent_id == "a1"

    scheduler = scheduler_pb2_grpc.SchedulerStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await scheduler.CompleteTask(
            scheduler_pb2.CompleteTaskRequest(attempt_id=attempt_id, worker_id="a1", result_json=b'{"forged": 1}')
        )
    assert info.value.code() is DENIED
    assert "held by agent 'a1' over its stream" in (info.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await scheduler.FailTask(
            scheduler_pb2.FailTaskRequest(attempt_id=attempt_id, worker_id="a1", error="forged", permanent=True)
        )
    assert info.value.code() is DENIED

    # A hijack: a stream saying Hello as the live agent, with a forged Finished right behind it.
    hijacker = RawAgent(channel)
    hijacker.call = agent_pb2_grpc.AgentGatewayStub(channel).Connect()
    await hijacker.call.write(agent_pb2.AgentMessage(hello=hello("a1")))
    forged = agent_pb2.TaskEvent(
        attempt_id=attempt_id,
        finished=agent_pb2.Finished(outcome=types_pb2.ATTEMPT_OUTCOME_SUCCEEDED, result_json=b'{"forged": 2}'),
    )
    # The refusal may already have ended the call before this write: either way it is not applied.
    # When it had, grpc's asyncio client (grpc/grpc#36066) reports its own INTERNAL "Internal
    # error from Core" for the call instead of the controller's status; a second hijack, with no
    # write after its Hello, then shows the controller's refusal as it is.
    write_failed = False
    try:
        await hijacker.call.write(agent_pb2.AgentMessage(events=agent_pb2.TaskEvents(events=[forged])))
    except (asyncio.InvalidStateError, grpc.aio.AioRpcError):
        write_failed = True
    outcome = await hijacker.ended()
    hijacker.close()
    if write_failed and outcome.code is grpc.StatusCode.INTERNAL and outcome.details == "Internal error from Core":
        again = RawAgent(channel)
        again.call = agent_pb2_grpc.AgentGatewayStub(channel).Connect()
        await again.call.write(agent_pb2.AgentMessage(hello=hello("a1")))
        outcome = await again.ended()
        again.close()
    assert outcome.code is grpc.StatusCode.ALREADY_EXISTS, outcome
    assert "agent 'a1' is already connected from" in outcome.details
    assert "may be replaced only after its lease expires" in outcome.details

    # Nothing changed: the same attempt runs on the same, undisturbed session.
    still = await _task(channel, workflow_id, "real")
    assert (still.state, still.attempt_id, still.agent_id) == (RUNNING, attempt_id, "a1")
    info_a1 = (await agent_names(channel))["a1"]
    assert info_a1.state == types_pb2.AGENT_STATE_CONNECTED and info_a1.connected_at == connected_at

    status = await wait_workflow(channel, workflow_id, 60)
    assert status.state == COMPLETED
    (done,) = status.tasks
    assert json.loads(done.result_json) == {"real": 1} and done.attempts == 1
    assert marker.read_text() == "real\n"
    # The twin never got in, and was refused at a slow pace (backoff, not a tight loop).
    assert (await agent_names(channel))["a1"].connected_at == connected_at
    twin_log = tmp_path / "agent-twin.log"

    async def refused() -> bool:
        return "ALREADY_EXISTS" in twin_log.read_text(errors="replace")

    await _eventually(refused, 20, "the twin to be refused")
    window = time.monotonic() - twin_started
    refusals = twin_log.read_text(errors="replace").count("ALREADY_EXISTS")
    print(f"the twin agent was refused {refusals} times in {window:.1f}s")
    assert refusals <= 2 + window / 2, f"{refusals} refusals in {window:.1f}s: a tight loop"
    assert cluster.agents["twin"].poll() is None  # it keeps trying, it does not exit


async def _task_if(channel: grpc.aio.Channel, workflow_id: str, name: str, state: int) -> types_pb2.TaskStatus | None:
    task = await _task(channel, workflow_id, name)
    return task if task.state == state else None


@pytest.mark.e2e
async def test_a_pulled_attempt_is_reported_only_by_its_worker(channel: grpc.aio.Channel) -> None:
    scheduler = scheduler_pb2_grpc.SchedulerStub(channel)
    spec = types_pb2.TaskSpec(name="ext-job", agent_type="ext", payload_json=b'{"x": 1}')
    scheduled = await scheduler.ScheduleTask(scheduler_pb2.ScheduleTaskRequest(task=spec))
    pulled = await scheduler.GetNextTask(scheduler_pb2.GetNextTaskRequest(worker_id="w1", agent_types=["ext"]))
    assert pulled.found
    attempt_id = pulled.assignment.attempt_id
    for call in (
        scheduler.CompleteTask(
            scheduler_pb2.CompleteTaskRequest(attempt_id=attempt_id, worker_id="w2", result_json=b'"forged"')
        ),
        scheduler.FailTask(scheduler_pb2.FailTaskRequest(attempt_id=attempt_id, worker_id="w2", error="forged")),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        assert info.value.code() is DENIED
        assert "held by worker 'w1'; report from worker 'w2' refused" in (info.value.details() or "")
    task = await _task(channel, scheduled.workflow_id, "ext-job")
    assert (task.state, task.attempt_id, task.agent_id) == (RUNNING, attempt_id, "w1")
    await scheduler.CompleteTask(
        scheduler_pb2.CompleteTaskRequest(attempt_id=attempt_id, worker_id="w1", result_json=b'{"real": true}')
    )
    status = await wait_workflow(channel, scheduled.workflow_id, 10)
    assert status.state == COMPLETED and json.loads(status.tasks[0].result_json) == {"real": True}


# --- the blackhole ------------------------------------------------------------------------------


@pytest.mark.e2e
async def test_a_blackhole_agent_cannot_keep_work(cluster: Cluster, channel: grpc.aio.Channel) -> None:
    # A fake agent claiming 1,000 slots: it heartbeats, and never reads its stream.
    blackhole = RawAgent(channel)
    assert (await blackhole.open(hello("blackhole", slots=1000, cpu_cores=64.0))).welcome is not None

    async def heartbeat() -> None:
        while True:
            await blackhole.send(agent_pb2.AgentMessage(heartbeat=agent_pb2.Heartbeat()))
            await asyncio.sleep(1.0)

    beating = asyncio.create_task(heartbeat())
    try:
        cluster.add_agent("real", slots=4)
        cluster.wait_for_agents(2)
        started = time.monotonic()
        workflow_id = await _submit(channel, shell_workflow("swallowed", {f"t{i}": "true" for i in range(40)}))
        # The promise is 10 s; the bounded wait gives it 3x slack and the figure is printed.
        status = await wait_workflow(channel, workflow_id, 30)
        elapsed = time.monotonic() - started
        print(f"40 tasks, a blackhole agent with 1,000 slots: all ran on the real agent in {elapsed:.1f}s")
        assert status.state == COMPLETED
        assert {t.agent_id for t in status.tasks} == {"real"}
        taken_back = sum(1 for t in status.tasks if t.attempts > 1)
        assert taken_back > 0, "the blackhole never got anything: the test proves nothing"
        assert all(t.retries_used == 0 for t in status.tasks)  # take-backs spend no retry
        assert (await agent_names(channel))["blackhole"].state == types_pb2.AGENT_STATE_CONNECTED
    finally:
        beating.cancel()
        blackhole.close()


# --- a credential names its agent ---------------------------------------------------------------


class _ActAs(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Test-only stand-in for the auth interceptor: ``x-test-principal: kind/name`` becomes current,
    with the grant given to the constructor."""

    def __init__(self, grant: identity.Grant) -> None:
        self.grant = grant

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], details: grpc.HandlerCallDetails
    ) -> Any:
        handler = await continuation(details)
        found = [v for k, v in details.invocation_metadata or () if k == "x-test-principal"]
        if handler is None or handler.stream_stream is None or not found:
            return handler
        kind, _, name = str(found[0]).partition("/")
        principal = identity.Principal(kind, name, self.grant if kind == "agent" else identity.Grant("submitter"))
        inner = handler.stream_stream

        async def acting(requests: Any, context: Any) -> AsyncIterator[Any]:
            with identity.acting_as(principal):
                async for item in inner(requests, context):
                    yield item

        return grpc.stream_stream_rpc_method_handler(acting, handler.request_deserializer, handler.response_serializer)


@pytest.fixture
async def bound_gateway(tmp_path: Path) -> AsyncIterator[tuple[grpc.aio.Channel, Runtime]]:
    runtime = Runtime(SqliteStore(tmp_path / "c.db"), encode_actions=deliver)
    await runtime.start()
    grant = identity.Grant("agent", ("team-a",), {"zone": "eu"}, ())
    server = grpc.aio.server(interceptors=[_ActAs(grant), ErrorInterceptor()])
    agent_pb2_grpc.add_AgentGatewayServicer_to_server(AgentGatewayService(runtime), server)
    agent_pb2_grpc.add_ClusterServicer_to_server(ClusterService(runtime), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel, runtime
    finally:
        await server.stop(0)
        await runtime.stop()


async def test_an_agent_credential_names_the_agent_and_sets_its_labels(
    bound_gateway: tuple[grpc.aio.Channel, Runtime],
) -> None:
    channel, runtime = bound_gateway
    as_a1 = [("x-test-principal", "agent/a1")]

    impostor = RawAgent(channel, metadata=as_a1)
    outcome = await impostor.open(hello("a2"))
    impostor.close()
    assert outcome.code is DENIED and "this credential is agent 'a1'; Hello says 'a2'" in outcome.details

    not_an_agent = RawAgent(channel, metadata=[("x-test-principal", "token/t1")])
    outcome = await not_an_agent.open(hello("a1"))
    not_an_agent.close()
    assert outcome.code is DENIED and "needs an agent credential" in outcome.details
    assert await agent_names(channel) == {}

    # The real a1 claims a label and an extra agent type: only its grant counts.
    claim = hello("a1", types=("shell", "python", "docker"))
    claim.labels["gpu"] = "yes"
    agent = RawAgent(channel, metadata=as_a1)
    welcome = (await agent.open(claim)).welcome
    assert welcome is not None
    assert dict(welcome.labels) == {"zone": "eu"}
    assert list(welcome.agent_types) == ["shell", "python"]
    assert welcome.assignment_lease_s == 3.0
    info = (await agent_names(channel))["a1"]
    assert dict(info.labels) == {"zone": "eu"} and list(info.agent_types) == ["shell", "python"]
    assert runtime.machine.agents["a1"].namespaces == ("team-a",)

    # The same credential a second time, while the first session lives: refused, first untouched.
    again = RawAgent(channel, metadata=as_a1)
    outcome = await again.open(hello("a1"))
    again.close()
    assert outcome.code is grpc.StatusCode.ALREADY_EXISTS
    assert runtime.machine.agents["a1"].session_epoch == welcome.session_epoch
    agent.close()


@pytest.mark.e2e
async def test_a_session_silent_past_its_lease_may_be_replaced(tmp_path: Path) -> None:
    # A 1 s lease (and the default 30 s adoption grace, during which nobody is declared lost):
    # only the silence of the live session decides whether a second Hello may replace it.
    proc, address = start_controller(tmp_path, extra=["--lease", "1", "--heartbeat-interval", "0.2"])
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            first = RawAgent(channel)
            welcome = (await first.open(hello("a1"))).welcome
            assert welcome is not None
            second = RawAgent(channel)
            outcome = await second.open(hello("a1"))
            second.close()
            assert outcome.code is grpc.StatusCode.ALREADY_EXISTS
            assert f"(session {welcome.session_epoch}, seen " in outcome.details
            await asyncio.sleep(1.5)  # first stays silent past its lease
            third = RawAgent(channel)
            replacement = (await third.open(hello("a1"))).welcome
            assert replacement is not None and replacement.session_epoch > welcome.session_epoch
            # The silent stream was ended by the controller; the new one is the agent's session.
            assert (await first.ended()).code is grpc.StatusCode.OK
            assert (await agent_names(channel))["a1"].state == types_pb2.AGENT_STATE_CONNECTED
            first.close()
            third.close()
    finally:
        stop(proc)
