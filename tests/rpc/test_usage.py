"""Measured usage per attempt at the agent edge: a Finished report's peak RSS and CPU seconds reach
the attempt (SQLite) and TaskStatus; bad values are refused with their field path and change nothing."""

from __future__ import annotations

import asyncio
import math

import grpc
import grpc.aio
import pytest

from corral.controller.errors import InvalidArgument
from corral.controller.rpc.agent_input import MAX_CPU_S, MAX_PEAK_RSS_BYTES, check_events
from corral.controller.store.sqlite import SqliteStore
from corral.v1 import agent_pb2, orchestrator_pb2, types_pb2

from .conftest import Controller

MB = 1 << 20


async def _assigned(controller: Controller) -> tuple[grpc.aio.StreamStreamCall, str, str]:
    """A connected agent holding the one task of a started workflow: (stream, workflow id, attempt id)."""
    call = controller.gateway.Connect()
    await call.write(agent_pb2.AgentMessage(hello=agent_pb2.Hello(agent_id="a1", name="a1", agent_types=["shell"])))
    submitted = await controller.orchestrator.SubmitWorkflow(
        orchestrator_pb2.SubmitWorkflowRequest(
            spec=types_pb2.WorkflowSpec(
                name="w", tasks=[types_pb2.TaskSpec(name="t", agent_type="shell", payload_json=b'{"shell":"true"}')]
            ),
            start=True,
        )
    )
    async with asyncio.timeout(10):
        while (message := await call.read()).WhichOneof("kind") != "assign":
            pass
    return call, submitted.workflow_id, message.assign.assignments[0].attempt_id


def _finished(attempt_id: str, rss: int, cpu: float) -> agent_pb2.AgentMessage:
    event = agent_pb2.TaskEvent(
        attempt_id=attempt_id,
        finished=agent_pb2.Finished(
            outcome=types_pb2.ATTEMPT_OUTCOME_SUCCEEDED, result_json=b"1", peak_rss_bytes=rss, cpu_s=cpu
        ),
    )
    event.at.GetCurrentTime()
    return agent_pb2.AgentMessage(events=agent_pb2.TaskEvents(events=[event]))


async def _status(controller: Controller, workflow_id: str) -> types_pb2.TaskStatus:
    response = await controller.orchestrator.GetWorkflowStatus(
        orchestrator_pb2.GetWorkflowStatusRequest(workflow_id=workflow_id, include_tasks=True)
    )
    (task,) = response.status.tasks
    return task


async def test_the_usage_of_a_finished_attempt_reaches_task_status_and_the_store(controller: Controller) -> None:
    call, workflow_id, attempt_id = await _assigned(controller)
    assert (await _status(controller, workflow_id)).peak_rss_bytes == 0
    await call.write(_finished(attempt_id, 52 * MB, 1.25))
    async with asyncio.timeout(10):
        while (await call.read()).WhichOneof("kind") != "ack":
            pass
    status = await _status(controller, workflow_id)
    assert status.state == types_pb2.TASK_STATE_COMPLETED
    assert (status.attempt_id, status.peak_rss_bytes, status.cpu_s) == (attempt_id, 52 * MB, 1.25)
    store = SqliteStore(controller.db)
    try:
        (attempt,) = store.load().attempts
        events = store.workflow_events(workflow_id)
    finally:
        store.close()
    assert (attempt.peak_rss_bytes, attempt.cpu_s) == (52 * MB, 1.25)
    assert events[-2].kind == "completed" and events[-2].message == "peak RSS 52.0 MiB, CPU 1.25 s"
    call.cancel()


@pytest.mark.parametrize(
    ("rss", "cpu", "field"),
    [
        (-1, 0.5, "events.events[0].finished.peak_rss_bytes"),
        (MAX_PEAK_RSS_BYTES + 1, 0.5, "events.events[0].finished.peak_rss_bytes"),
        (MB, math.nan, "events.events[0].finished.cpu_s"),
        (MB, -0.5, "events.events[0].finished.cpu_s"),
        (MB, math.inf, "events.events[0].finished.cpu_s"),
        (MB, MAX_CPU_S * 2, "events.events[0].finished.cpu_s"),
    ],
)
def test_bad_usage_is_named_by_its_field(rss: int, cpu: float, field: str) -> None:
    check_events(_finished("a1", MAX_PEAK_RSS_BYTES, MAX_CPU_S).events)  # the bounds themselves pass
    with pytest.raises(InvalidArgument) as info:
        check_events(_finished("a1", rss, cpu).events)
    assert [v.field for v in info.value.violations] == [field]


async def test_a_report_with_bad_usage_closes_the_stream_and_changes_nothing(controller: Controller) -> None:
    call, workflow_id, attempt_id = await _assigned(controller)
    await call.write(_finished(attempt_id, 52 * MB, math.nan))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async with asyncio.timeout(10):
            while True:
                await call.read()
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "events.events[0].finished.cpu_s" in (info.value.details() or "")
    status = await _status(controller, workflow_id)
    assert status.state != types_pb2.TASK_STATE_COMPLETED
    assert (status.peak_rss_bytes, status.cpu_s) == (0, 0.0)
    assert controller.runtime.machine.attempts[attempt_id].cpu_s == 0.0
