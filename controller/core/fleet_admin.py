"""Fleet hygiene (issue 11 §4): cordon and uncordon an agent by hand, and remove an agent's record.

A manual cordon reuses issue 10's cordon mechanism (:mod:`corral.controller.core.cordon`): the
agent's view is held back, so it gets no new work while its running attempts carry on. It has no
cool-down: it lasts until ``uncordon``, which also ends an automatic cordon early. Who cordoned it
and why are stored on the agent record (``cordoned_by``, ``cordon_reason``), so they survive a
controller restart and show in ``corral agents`` and in explain's per-agent verdicts.

Removing an agent forgets its record (memory and store). A connected or draining agent, or one
whose attempts still wait for their fence, is refused unless ``force``: then its stream is closed
and its attempts are requeued at once. The agent process, if still running, reconnects as a new
record and the Welcome tells it to kill what it still runs (those attempts moved on), so a forced
removal may briefly overlap two copies of a task; without ``force`` nothing is requeued early.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar

from corral.controller.core.events import Disconnect
from corral.controller.core.model import Agent, AgentState, AttemptState
from corral.controller.core.queries import agent_id_of
from corral.controller.errors import FailedPrecondition

if TYPE_CHECKING:
    from corral.controller.core.machine import Machine

__all__ = ["CordonRequest", "RemoveAgentRequest", "UncordonRequest", "fleet_handlers"]

#: The longest reason kept (checked at the edge too).
MAX_REASON = 256
_ONLINE = (AgentState.CONNECTED, AgentState.DRAINING)


@dataclass(frozen=True, slots=True)
class CordonRequest:
    """Cordon an agent (id, name or unique prefix) by hand: no new work until uncordoned."""

    READ: ClassVar[bool] = False
    agent: str
    by: str
    reason: str = ""

    def handle(self, m: Machine, now: float) -> Agent:
        """Idempotent: cordoning a cordoned agent records the new who and why (an automatic cordon
        becomes a manual one, without its cool-down)."""
        agent = m.agents[agent_id_of(m, self.agent)]
        c = m.cordons
        c.until.pop(agent.id, None)
        c.streaks.pop(agent.id, None)
        c.manual.add(agent.id)
        agent.cordoned_until = None
        agent.cordoned_by = self.by or "anonymous"
        why = self.reason[:MAX_REASON] or "no reason given"
        agent.cordon_reason = f"cordoned by {agent.cordoned_by}: {why}"
        m.touch_agent(agent)
        view = m.views.get(agent.id)
        if view is not None:
            view.held_back = True
        return agent


@dataclass(frozen=True, slots=True)
class UncordonRequest:
    """End an agent's cordon, manual or automatic; an agent not cordoned is left as it is."""

    READ: ClassVar[bool] = False
    agent: str

    def handle(self, m: Machine, now: float) -> Agent:
        agent = m.agents[agent_id_of(m, self.agent)]
        c = m.cordons
        if not c.holds(agent.id) and agent.cordoned_until is None and not agent.cordoned_by:
            return agent  # nothing to do: no write
        c.until.pop(agent.id, None)
        c.manual.discard(agent.id)
        c.streaks.pop(agent.id, None)  # a fresh start: old failures do not re-cordon it at once
        agent.cordoned_until = None
        agent.cordoned_by = ""
        agent.cordon_reason = ""
        m.touch_agent(agent)
        view = m.views.get(agent.id)
        if view is not None:
            view.held_back = agent.id in m.held_back
        return agent


@dataclass(frozen=True, slots=True)
class RemoveAgentRequest:
    """Forget an agent's record; answers ``(the record as it was, attempts requeued)``."""

    READ: ClassVar[bool] = False
    agent: str
    by: str
    force: bool = False

    def handle(self, m: Machine, now: float) -> tuple[Agent, int]:
        agent = m.agents[agent_id_of(m, self.agent)]
        held = sorted(m.active.get(agent.id, ()))
        if not self.force:
            if agent.state in _ONLINE:
                raise FailedPrecondition(
                    f"agent {agent.name} is {agent.state}: stop or drain it first, or remove it anyway with --force"
                )
            if held:
                raise FailedPrecondition(
                    f"agent {agent.name} ({agent.state}) still holds {len(held)} attempts, requeued when their "
                    "fence ends; --force requeues them now"
                )
        snapshot = replace(agent, state=agent.state)
        if agent.state in _ONLINE:
            m.emit(Disconnect(agent.id, agent.session_epoch))
        for attempt_id in held:
            attempt = m.attempts[attempt_id]
            if attempt.state.active:
                m.requeue(attempt, AttemptState.LOST, now, f"agent {agent.name} removed by {self.by}", kind="lost")
        m.forget_agent(agent.id)
        return snapshot, len(held)


def fleet_handlers(m: Machine) -> dict[type, Callable[[Any, float], Any]]:
    """The handlers of this module's requests, for the machine's handler table."""
    return {
        CordonRequest: lambda event, now: event.handle(m, now),
        UncordonRequest: lambda event, now: event.handle(m, now),
        RemoveAgentRequest: lambda event, now: event.handle(m, now),
    }
