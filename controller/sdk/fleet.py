"""Fleet hygiene in the SDK (issue 11): ``cordon_agent``, ``uncordon_agent`` and ``remove_agent``.

Mixins of :class:`~corral.controller.sdk.client.Client` and
:class:`~corral.controller.sdk.sync.SyncClient`. Agents are named by id, name or unique prefix.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from google.protobuf.message import Message

from corral.controller.sdk.cluster_types import AgentInfo
from corral.controller.sdk.records import Record
from corral.v1 import agent_pb2

if TYPE_CHECKING:
    from corral.controller.sdk.client import Client

__all__ = ["FleetMixin", "RemovedAgent", "SyncFleetMixin"]

R = TypeVar("R")


@dataclasses.dataclass(frozen=True)
class RemovedAgent(Record):
    """What ``remove_agent`` removed: the agent's record as it was, and the attempts requeued."""

    agent: AgentInfo
    requeued_attempts: int


class FleetMixin:
    """Cordon, uncordon and remove agents with the asyncio client."""

    async def _call(self, service: str, method: str, request: Message, *, timeout: float | bool | None = True) -> Any:
        raise NotImplementedError  # the Client's

    async def cordon_agent(self, agent_id: str, *, reason: str = "") -> AgentInfo:
        """Give an agent no new work until :meth:`uncordon_agent` (its running attempts carry on).

        The caller and ``reason`` (at most 256 characters) are recorded and shown with the agent."""
        request = agent_pb2.CordonAgentRequest(agent_id=agent_id, reason=reason)
        return AgentInfo.from_proto((await self._call("cluster", "CordonAgent", request)).agent)

    async def uncordon_agent(self, agent_id: str) -> AgentInfo:
        """End an agent's cordon, manual or automatic (the cordon on repeated failures)."""
        request = agent_pb2.UncordonAgentRequest(agent_id=agent_id)
        return AgentInfo.from_proto((await self._call("cluster", "UncordonAgent", request)).agent)

    async def remove_agent(self, agent_id: str, *, force: bool = False) -> RemovedAgent:
        """Forget an agent that left (disconnected, drained or lost, holding no attempt).

        ``force`` also removes a connected agent or one holding attempts: its stream is closed and
        its attempts are requeued now; a still-running agent comes back as a new record."""
        request = agent_pb2.RemoveAgentRequest(agent_id=agent_id, force=force)
        response = await self._call("cluster", "RemoveAgent", request)
        return RemovedAgent(AgentInfo.from_proto(response.agent), response.requeued_attempts)


class SyncFleetMixin:
    """The blocking versions, for :class:`~corral.controller.sdk.sync.SyncClient`."""

    _client: Client

    def _run(self, coroutine: Coroutine[Any, Any, R]) -> R:
        raise NotImplementedError  # the SyncClient's

    def cordon_agent(self, agent_id: str, *, reason: str = "") -> AgentInfo:
        """See :meth:`Client.cordon_agent`."""
        return self._run(self._client.cordon_agent(agent_id, reason=reason))

    def uncordon_agent(self, agent_id: str) -> AgentInfo:
        """See :meth:`Client.uncordon_agent`."""
        return self._run(self._client.uncordon_agent(agent_id))

    def remove_agent(self, agent_id: str, *, force: bool = False) -> RemovedAgent:
        """See :meth:`Client.remove_agent`."""
        return self._run(self._client.remove_agent(agent_id, force=force))
