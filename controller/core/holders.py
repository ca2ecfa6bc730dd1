"""Which agents hold something of a live workflow, so that each is told when it ends.

An agent's python worker keeps a child process per workflow (modules, threads, files in the
worker's folder), which it otherwise ends only when another workflow's task comes to that worker.
When a workflow ends, every agent that ran one of its python attempts gets an acknowledgement
naming it (``Ack.ended_workflows``): its idle workers end that child at once, while no task waits
(see ``corral.agent.pypool``), so nothing of a finished workflow lives on and the next workflow's
first task finds a fresh child. Agents that ran its tasks before a controller restart are not
known again (this book is not stored): they end the child at the next workflow, as before.
"""

from __future__ import annotations

from collections.abc import Mapping

from corral.controller.core.events import Ack
from corral.controller.core.model import Agent

__all__ = ["WorkflowHolders"]


class WorkflowHolders:
    """Live workflow id -> the agents that ran one of its python attempts."""

    def __init__(self) -> None:
        self._agents: dict[str, set[str]] = {}

    def __len__(self) -> int:
        return len(self._agents)

    def ran(self, workflow_id: str, agent_id: str) -> None:
        """An attempt of the workflow was sent to the agent."""
        held = self._agents.get(workflow_id)
        if held is None:
            self._agents[workflow_id] = {agent_id}
        else:
            held.add(agent_id)

    def ended(self, workflow_id: str, agents: Mapping[str, Agent]) -> list[Ack]:
        """The workflow ended: an acknowledgement naming it for each agent that ran one of its
        python attempts and is still known (on its current session)."""
        held = self._agents.pop(workflow_id, None)
        if not held:
            return []
        return [Ack(a, agents[a].session_epoch, [], (workflow_id,)) for a in sorted(held) if a in agents]
