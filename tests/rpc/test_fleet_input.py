"""Issue 11 fleet RPCs at the edge: bad input is INVALID_ARGUMENT with its field, unknown agents NOT_FOUND."""

from __future__ import annotations

import grpc
import pytest

from corral.v1 import agent_pb2
from tests.rpc.conftest import Controller
from tests.rpc.test_bad_input import assert_invalid, rpc_error


async def test_bad_fleet_requests_name_their_field(controller: Controller) -> None:
    cluster = controller.cluster
    cases = [
        (cluster.CordonAgent(agent_pb2.CordonAgentRequest()), "agent_id"),
        (cluster.CordonAgent(agent_pb2.CordonAgentRequest(agent_id="a", reason="r" * 257)), "reason"),
        (cluster.CordonAgent(agent_pb2.CordonAgentRequest(agent_id="a", reason="bad\x00")), "reason"),
        (cluster.CordonAgent(agent_pb2.CordonAgentRequest(agent_id="a" * 300)), "agent_id"),
        (cluster.UncordonAgent(agent_pb2.UncordonAgentRequest()), "agent_id"),
        (cluster.RemoveAgent(agent_pb2.RemoveAgentRequest(agent_id="a\nb")), "agent_id"),
    ]
    for call, field in cases:
        await assert_invalid(controller, call, field)


@pytest.mark.parametrize("method", ["CordonAgent", "UncordonAgent", "RemoveAgent"])
async def test_unknown_agents_are_not_found(controller: Controller, method: str) -> None:
    request = getattr(agent_pb2, f"{method}Request")(agent_id="nobody")
    error = await rpc_error(getattr(controller.cluster, method)(request))
    assert error.code() is grpc.StatusCode.NOT_FOUND and "not found" in (error.details() or "")
