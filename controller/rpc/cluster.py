"""Cluster API: the agents the controller knows and their state."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from corral.controller.core import requests as rq
from corral.controller.core.fleet_admin import MAX_REASON, CordonRequest, RemoveAgentRequest, UncordonRequest
from corral.controller.core.machine import Machine
from corral.controller.core.model import Agent, AgentState
from corral.controller.errors import InvalidArgument
from corral.controller.rpc import fields, wire
from corral.controller.rpc.auth import current_caller
from corral.controller.runtime import Runtime
from corral.v1 import agent_pb2 as pb
from corral.v1 import agent_pb2_grpc, types_pb2

__all__ = ["ClusterService", "note_drained"]

_MAX_GRACE_S = 86_400.0
log = logging.getLogger("corral.controller.cluster")


def note_drained(agent_id: str) -> Callable[[Machine, object, float], None]:
    """The ``then`` of an AgentGone (issue 11): the drain's last line, once a draining agent left."""

    def then(machine: Machine, answer: object, now: float) -> None:
        agent = machine.agents.get(agent_id)
        if agent is not None and agent.state is AgentState.DRAINED:
            log.info("agent %s (%s) drained: its work is done and it left; final state drained", agent.name, agent.id)

    return then


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

        grace = request.grace_s or 30.0
        response: pb.DrainAgentResponse = await self.rt.handle(rq.DrainRequest(request.agent_id, grace), render)
        # Issue 11: one clear line per drain (the agent logs its side and exits when done).
        agent = response.agent
        log.info(
            "agent %s (%s) draining, requested by %s: no new work; %d running attempts get %gs to finish",
            agent.name,
            agent.agent_id,
            current_caller().name,
            agent.running_attempts,
            grace,
        )
        return response

    # --- issue 11: cordon, uncordon, remove ----------------------------------------------------------

    async def CordonAgent(self, request: pb.CordonAgentRequest, context: Any) -> pb.CordonAgentResponse:
        fields.identifier(request.agent_id, "agent_id", "agent id")
        reason = fields.text(request.reason, "reason", MAX_REASON)
        caller = current_caller().name

        def render(machine: Machine, agent: Agent, now: float) -> pb.CordonAgentResponse:
            return pb.CordonAgentResponse(agent=self._info(machine, agent))

        response: pb.CordonAgentResponse = await self.rt.handle(CordonRequest(request.agent_id, caller, reason), render)
        log.info("agent %s cordoned by %s: %s", response.agent.name, caller, reason or "no reason given")
        return response

    async def UncordonAgent(self, request: pb.UncordonAgentRequest, context: Any) -> pb.UncordonAgentResponse:
        fields.identifier(request.agent_id, "agent_id", "agent id")

        def render(machine: Machine, agent: Agent, now: float) -> pb.UncordonAgentResponse:
            return pb.UncordonAgentResponse(agent=self._info(machine, agent))

        response: pb.UncordonAgentResponse = await self.rt.handle(UncordonRequest(request.agent_id), render)
        log.info("agent %s uncordoned by %s", response.agent.name, current_caller().name)
        return response

    async def RemoveAgent(self, request: pb.RemoveAgentRequest, context: Any) -> pb.RemoveAgentResponse:
        fields.identifier(request.agent_id, "agent_id", "agent id")
        caller = current_caller().name

        def render(machine: Machine, removed: tuple[Agent, int], now: float) -> pb.RemoveAgentResponse:
            agent, requeued = removed
            info = wire.agent_info(agent, None, 0, None)
            return pb.RemoveAgentResponse(agent=info, requeued_attempts=requeued)

        event = RemoveAgentRequest(request.agent_id, caller, request.force)
        response: pb.RemoveAgentResponse = await self.rt.handle(event, render)
        log.info(
            "agent %s (%s) removed by %s%s; %d attempts requeued",
            response.agent.name,
            response.agent.agent_id,
            caller,
            " (forced)" if request.force else "",
            response.requeued_attempts,
        )
        return response
