"""Cluster API: the agents the controller knows and their state."""

from __future__ import annotations

from typing import Any

from corral.controller.core import events as ev
from corral.controller.core.machine import Machine
from corral.controller.core.model import Agent
from corral.controller.errors import InvalidArgument
from corral.controller.rpc import fields, wire
from corral.controller.rpc.lookup import resolve
from corral.controller.runtime import Runtime
from corral.v1 import agent_pb2 as pb
from corral.v1 import agent_pb2_grpc, types_pb2

__all__ = ["ClusterService", "agent_id_of"]

_MAX_GRACE_S = 86_400.0


def agent_id_of(machine: Machine, typed: str) -> str:
    """An agent by id, name or unique id prefix."""
    fields.identifier(typed, "agent_id", "agent id")
    for agent in machine.agents.values():
        if agent.name == typed:
            return agent.id
    return resolve(machine.agents, typed, "agent", "agent_id")


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

        def listing(machine: Machine, now: float) -> pb.ListAgentsResponse:
            agents = sorted(machine.agents.values(), key=lambda a: a.name)
            return pb.ListAgentsResponse(
                agents=[self._info(machine, a) for a in agents if not states or a.state in states]
            )

        return await self.rt.call(listing, read=True)

    async def GetAgent(self, request: pb.GetAgentRequest, context: Any) -> pb.GetAgentResponse:
        def get(machine: Machine, now: float) -> pb.GetAgentResponse:
            agent = machine.agents[agent_id_of(machine, request.agent_id)]
            return pb.GetAgentResponse(agent=self._info(machine, agent))

        return await self.rt.call(get, read=True)

    async def DrainAgent(self, request: pb.DrainAgentRequest, context: Any) -> pb.DrainAgentResponse:
        fields.seconds(request.grace_s, "grace_s", _MAX_GRACE_S)

        def drain(machine: Machine, now: float) -> pb.DrainAgentResponse:
            agent_id = agent_id_of(machine, request.agent_id)
            agent = machine.drain(ev.DrainAgent(agent_id, request.grace_s or 30.0), now)
            return pb.DrainAgentResponse(agent=self._info(machine, agent))

        return await self.rt.call(drain)
