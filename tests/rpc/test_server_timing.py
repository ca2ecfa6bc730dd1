"""The ``corral-server-us`` trailer: on every unary answer, successes and errors, and plausible."""

from __future__ import annotations

import time

import grpc
import pytest

from corral.controller.rpc.server_timing import TRAILER, server_us
from corral.v1 import orchestrator_pb2 as OR
from tests.rpc.conftest import Controller, bad_request, shell_task, workflow_spec


async def test_a_successful_answer_carries_the_server_time(controller: Controller) -> None:
    spec = workflow_spec("timed", [shell_task("a"), shell_task("b", "a")])
    for _ in range(3):  # the first call of a method builds its wrapper; later ones reuse it
        began = time.perf_counter_ns()
        call = controller.orchestrator.SubmitWorkflow(OR.SubmitWorkflowRequest(spec=spec))
        response = await call
        client_us = (time.perf_counter_ns() - began) // 1000
        assert response.workflow_id
        trailers = await call.trailing_metadata()
        us = server_us(trailers)
        assert us is not None, trailers
        # The submit commits to SQLite, so it takes well over a microsecond in the server, and
        # never more than the client waited for the whole call.
        assert 0 < us <= client_us
        assert [key for key, _ in trailers].count(TRAILER) == 1


async def test_an_error_keeps_its_details_and_gains_the_server_time(controller: Controller) -> None:
    bad = workflow_spec("bad", [shell_task("a", "missing")])
    began = time.perf_counter_ns()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await controller.orchestrator.SubmitWorkflow(OR.SubmitWorkflowRequest(spec=bad))
    client_us = (time.perf_counter_ns() - began) // 1000
    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert any("missing" in description for _, description in bad_request(error))  # rich details kept
    us = server_us(error.trailing_metadata())
    assert us is not None and 0 <= us <= client_us

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await controller.orchestrator.GetWorkflowStatus(OR.GetWorkflowStatusRequest(workflow_id="wf-nope"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert server_us(caught.value.trailing_metadata()) is not None


async def test_streams_are_left_alone(controller: Controller) -> None:
    submitted = await controller.orchestrator.SubmitWorkflow(
        OR.SubmitWorkflowRequest(spec=workflow_spec("s", [shell_task("a")]))
    )
    call = controller.orchestrator.WatchWorkflow(OR.WatchWorkflowRequest(workflow_id=submitted.workflow_id))
    async for _ in call:
        break
    call.cancel()
    # A cancelled stream has no server trailers of ours: the interceptor only times unary answers.
    assert server_us(await call.trailing_metadata()) is None


def test_server_us_reads_the_trailer() -> None:
    assert server_us([("a", "1"), (TRAILER, "250")]) == 250
    assert server_us([(TRAILER, b"17")]) == 17
    assert server_us([(TRAILER, "-3")]) is None
    assert server_us(None) is None
