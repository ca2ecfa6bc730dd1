"""Agents: sessions, heartbeats, leases, drains, re-adoption of attempts after a reconnect, and a
bounded agent table (forgotten after a TTL, capped)."""

from __future__ import annotations

import heapq

from corral.controller.core.attempt_ops import AttemptOps
from corral.controller.core.events import (
    AgentGone,
    AgentHeartbeat,
    AgentHello,
    Disconnect,
    DrainAgent,
    DrainOrder,
    Welcome,
)
from corral.controller.core.model import Agent, AgentState
from corral.controller.errors import FailedPrecondition, ResourceExhausted

__all__ = ["FleetOps"]

S = AgentState


class FleetOps(AttemptOps):
    """Handlers for the agent gateway's session events and the Cluster API."""

    def hello(self, event: AgentHello, now: float) -> Welcome:
        """A (re)connecting agent: new session epoch, re-adopt what it still runs, kill what moved on.

        A name the controller does not know, past ``max_agents``, first evicts the agents that have
        been forgettable (disconnected or lost, holding nothing) the longest (1/64 of the table at
        most); with none to evict it is refused with ResourceExhausted, changing nothing.
        """
        if event.agent_id not in self.agents and len(self.agents) >= self.config.max_agents:
            # Evict a small batch at once: a flood of new names then costs one scan of the table
            # per batch, not per Hello.
            batch = max(1, len(self.agents) // 64)
            oldest = heapq.nsmallest(
                batch, (a for a in self.agents.values() if self.forgettable(a)), key=lambda a: a.last_seen
            )
            if not oldest:
                raise ResourceExhausted(
                    f"the controller knows {len(self.agents)} agents, the max_agents={self.config.max_agents} "
                    "limit (--max-agents), and none can be forgotten (all connected or holding attempts)"
                )
            for evicted in oldest:
                self.forget_agent(evicted.id)
        self.epoch += 1
        self.set_meta("session_epoch", str(self.epoch))
        known = self.agents.get(event.agent_id)
        if known is None:
            known = Agent(id=event.agent_id, name=event.name)
            self.agents[known.id] = known
        agent = known
        agent.name = event.name
        agent.hostname = event.hostname
        agent.agent_types = event.agent_types
        agent.labels = dict(event.labels)
        agent.inventory = event.inventory
        agent.version = event.version
        agent.namespaces = event.namespaces
        agent.state = S.DRAINING if event.draining else S.CONNECTED
        agent.session_epoch = self.epoch
        agent.connected_at = now
        agent.last_seen = now
        self.touch_agent(agent)

        reported = set(event.running_attempt_ids)
        owned = self.active.get(agent.id, set())
        kill = tuple(sorted(reported - owned))
        # A fresh session may be a working agent again: no hold-back carries over.
        self.held_back.pop(agent.id, None)
        for attempt_id in owned:
            if attempt_id in reported:
                self.unconfirmed.pop(attempt_id, None)  # re-adopted
                self.unacknowledged.pop(attempt_id, None)  # it holds it: acknowledged
            else:
                # Not running any more: its Finished report may follow (it was never acked), so
                # give it a moment before declaring it lost.
                deadline = now + self.config.reconnect_grace_s
                self.unconfirmed[attempt_id] = min(self.unconfirmed.get(attempt_id, deadline), deadline)
        self.rebuild_view(agent)
        return Welcome(agent.id, self.epoch, kill)

    def forgettable(self, agent: Agent) -> bool:
        """Whether the agent may be forgotten: not online and holding no active attempt."""
        return agent.state in (S.DISCONNECTED, S.LOST) and not self.active.get(agent.id)

    def forget_agents(self, now: float) -> None:
        """Forget agents that have been gone, holding nothing, for longer than ``agent_ttl_s``.

        A returning agent is simply new again (its Hello recreates it), so forgetting loses only
        the listing of a machine that left.
        """
        if now < self.next_forget_check:
            return
        ttl = self.config.agent_ttl_s
        self.next_forget_check = now + min(1.0, ttl / 4)
        stale = [a.id for a in self.agents.values() if now - a.last_seen > ttl and self.forgettable(a)]
        for agent_id in stale:
            self.forget_agent(agent_id)

    def current(self, agent_id: str, session_epoch: int) -> Agent | None:
        """The agent if ``session_epoch`` is its live session (stale streams are ignored)."""
        agent = self.agents.get(agent_id)
        if agent is None or agent.session_epoch != session_epoch or agent.state not in (S.CONNECTED, S.DRAINING):
            return None
        return agent

    def seen(self, agent_id: str, session_epoch: int, now: float) -> bool:
        """A plain heartbeat: the agent of that live session is alive. Changes no stored record."""
        agent = self.current(agent_id, session_epoch)
        if agent is None:
            return False
        agent.last_seen = now
        return True

    def heartbeat(self, event: AgentHeartbeat, now: float) -> bool:
        agent = self.current(event.agent_id, event.session_epoch)
        if agent is None:
            return False
        agent.last_seen = now
        if event.draining and agent.state is S.CONNECTED:
            agent.state = S.DRAINING
            self.touch_agent(agent)
            self.rebuild_view(agent)
        if event.inventory is not None and event.inventory != agent.inventory:
            agent.inventory = event.inventory
            self.touch_agent(agent)
            self.rebuild_view(agent)
        return True

    def gone(self, event: AgentGone, now: float) -> None:
        """The session's stream closed. Its attempts stay owned until the lease says otherwise."""
        agent = self.current(event.agent_id, event.session_epoch)
        if agent is None:
            return
        agent.state = S.DISCONNECTED
        self.views.pop(agent.id, None)
        self.touch_agent(agent)

    def drain(self, event: DrainAgent, now: float) -> Agent:
        agent = self.agent(event.agent_id)
        if agent.state not in (S.CONNECTED, S.DRAINING):
            raise FailedPrecondition(f"agent {agent.name} is {agent.state}; only a connected agent drains")
        if agent.state is S.CONNECTED:
            agent.state = S.DRAINING
            self.touch_agent(agent)
            self.rebuild_view(agent)
        self.emit(DrainOrder(agent.id, event.grace_s))
        return agent

    def expire_leases(self, now: float) -> None:
        """Agents silent past their lease are lost, and their attempts requeued (no retry spent).

        Nobody is declared lost during the adoption grace after a controller start: agents need
        that long to notice the restart and reconnect.
        """
        if now < self.boot_time + self.config.adopt_grace_s or now < self.next_lease_check:
            return
        # Leases are seconds long: a scan of every agent a few times a second is plenty, and
        # keeps a busy tick rate (e.g. thousands of heartbeats) from rescanning the fleet each tick.
        self.next_lease_check = now + min(0.25, self.config.lease_s / 4)
        lease = self.config.lease_s
        for agent in self.agents.values():
            if agent.state is S.LOST or now - agent.last_seen <= lease:
                continue
            held = self.active.get(agent.id)
            if agent.state is S.DISCONNECTED and not held:
                continue  # left cleanly with nothing running
            if agent.state is not S.DISCONNECTED:
                # A partition may leave its stream open: close it so the agent must reconnect,
                # and learn in the Welcome which of its attempts were moved elsewhere.
                self.emit(Disconnect(agent.id, agent.session_epoch))
            agent.state = S.LOST
            self.views.pop(agent.id, None)
            self.touch_agent(agent)
            for attempt_id in sorted(held or ()):
                self.lose_attempt(self.attempts[attempt_id], now, f"agent {agent.name} lost (silent for {lease:g}s)")
