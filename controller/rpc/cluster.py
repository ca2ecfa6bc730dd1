"""Cluster API: the agents the controller knows and their state."""

from __future__ import annotations

from typing import Any

from corral.controller.core import requests as rq
from corral.controller.core.machine import Machine
from corral.controller.core.model import Agent
from corral.controller.errors import InvalidArgument
from corral.controller.rpc import fields, wire
from corral.controller.runtime import Runtime
from corral.v1 import agent_pb2 as pb
from corral.v1 import agent_pb2_grpc, types_pb2

__all__ = ["ClusterService"]

_MAX_GRACE_S = 86_400.0


class ClusterService(agent_pb2_grpc.ClusterServicer):
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    def _info(self, machine: Machine, agent: Agent) -> types_pb2.AgentInfo:
        return wire.agent_info(
            agent, machine.views.get(agent.id), len(machine.active.get(agent.id, ())), self.rt.usage.get(agent.id)
        )

    async def ListAgents(self, request: pb.ListAgentsRequest, context: Any) -> pb.ListAgentsResponse:
        states = set()
        for i, state in enumerate(request.states):
            if state not in wire.AGENT_STATE_FROM_PB:
                raise InvalidArgument.field(f"states[{i}]", f"unknown agent state {state}")
            states.add(wire.AGENT_STATE_FROM_PB[state])

        def render(machine: Machine, agents: list[Agent], now: float) -> pb.ListAgentsResponse:
            return pb.ListAgentsResponse(agents=[self._info(machine, a) for a in agents])

        response: pb.ListAgentsResponse = await self.rt.handle(rq.ListAgentsQuery(frozenset(states)), render)
        return response

    async def GetAgent(self, request: pb.GetAgentRequest, context: Any) -> pb.GetAgentResponse:
        fields.identifier(request.agent_id, "agent_id", "agent id")

        def render(machine: Machine, agent: Agent, now: float) -> pb.GetAgentResponse:
            return pb.GetAgentResponse(agent=self._info(machine, agent))

        response: pb.GetAgentResponse = await self.rt.handle(rq.AgentQuery(request.agent_id), render)
        return response

    async def DrainAgent(self, request: pb.DrainAgentRequest, context: Any) -> pb.DrainAgentResponse:
        fields.seconds(request.grace_s, "grace_s", _MAX_GRACE_S)
        fields.identifier(request.agent_id, "agent_id", "agent id")

        def render(machine: Machine, agent: Agent, now: float) -> pb.DrainAgentResponse:
            return pb.DrainAgentResponse(agent=self._info(machine, agent))

        response: pb.DrainAgentResponse = await self.rt.handle(
            rq.DrainRequest(request.agent_id, request.grace_s or 30.0), render
        )
        return response
