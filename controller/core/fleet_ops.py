"""Agents: sessions, heartbeats, leases, drains, re-adoption of attempts after a reconnect, and a
bounded agent table (forgotten after a TTL, capped).

Lost is not fenced (issue 8). An agent silent for ``lease_s`` is LOST: its stream is closed and
nothing new goes to it, but its attempts stay its own. The attempts of ``stop`` tasks are requeued
only at ``last_seen + fence_after + kill_grace + margin``, by when their supervisors have killed
them (they fence themselves when the agent stops renewing their lease), so two copies never run
at once. ``keep`` attempts run through a disconnect: they are requeued only when their agent comes
back without them or ``max_disconnect`` passes. An agent that comes back as a new process (a new
incarnation) without an attempt it ran lost that attempt with its process: that counts toward the
task's poison limit; partitions, outages and fencing never do.
"""

from __future__ import annotations

import heapq
from datetime import UTC, datetime

from corral.controller.core.attempt_ops import AttemptOps
from corral.controller.core.checkpoints import checkpointed
from corral.controller.core.dynamic import spawned
from corral.controller.core.events import (
    Ack,
    AgentGone,
    AgentHeartbeat,
    AgentHello,
    AgentReports,
    AttemptAccepted,
    AttemptCheckpoint,
    AttemptFinished,
    AttemptSpawn,
    AttemptStarted,
    Disconnect,
    DrainAgent,
    DrainOrder,
    HeartbeatAck,
    Welcome,
)
from corral.controller.core.model import Agent, AgentState, Attempt, AttemptState, TaskState, WorkflowState
from corral.controller.errors import FailedPrecondition, ResourceExhausted
from corral.controller.store.base import LogChunk

__all__ = ["DIED_WITH_AGENT", "FleetOps"]

S = AgentState
A = AttemptState
T = TaskState
#: How the error of an attempt lost with its agent's process begins (the poison count's evidence).
DIED_WITH_AGENT = "died with its agent"


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
        # Out of touch for fence_after_s or longer (by what this controller last heard, which after
        # a restart of it is older still): its supervisors' lease has run out, so what is placed on
        # it before an echo renews the lease is refused at start. Its reports of the attempts they
        # fenced would hold it back (hold_until_beat), but work placed between this Hello and those
        # reports was refused (make chaos controller-down-45). Its first heartbeat follows at once.
        fence_after = self.config.fence_after_s
        lapsed = fence_after > 0 and agent.last_seen > 0 and now - agent.last_seen >= fence_after
        agent.last_seen = now
        # A new process (not a reconnect of the same one): what it no longer holds died with the old.
        restarted = bool(agent.incarnation) and bool(event.incarnation) and event.incarnation != agent.incarnation
        agent.incarnation = event.incarnation or agent.incarnation
        self.touch_agent(agent)

        reported = set(event.running_attempt_ids)
        finishing = set(event.finished_attempt_ids)
        owned = self.active.get(agent.id, set())
        kill = tuple(sorted(reported - owned))
        # A fresh session may be a working agent again: no hold-back carries over.
        self.held_back.pop(agent.id, None)
        if lapsed:
            self.hold_until_beat(agent.id, now)
        self.views.pop(agent.id, None)  # rebuilt below from what it still holds
        died: list[str] = []
        for attempt_id in sorted(owned):
            self.fence_at.pop(attempt_id, None)  # back in time: nothing is fenced
            if attempt_id in reported:
                self.unconfirmed.pop(attempt_id, None)  # re-adopted
                self.unacknowledged.pop(attempt_id, None)  # it holds it: acknowledged
            elif attempt_id in finishing or not restarted:
                # Not running any more: its Finished report may follow (it was never acked), so
                # give it a moment before declaring it lost.
                deadline = now + self.config.reconnect_grace_s
                self.unconfirmed[attempt_id] = min(self.unconfirmed.get(attempt_id, deadline), deadline)
            else:
                died.append(attempt_id)
        for attempt_id in died:
            self.died_with_agent(self.attempts[attempt_id], agent, now)
        self.rebuild_view(agent)
        return Welcome(agent.id, self.epoch, kill)

    def died_with_agent(self, attempt: Attempt, agent: Agent, now: float) -> None:
        """An attempt its agent's previous process held and the new one does not: requeue it at once.

        A RUNNING one counts an agent loss; at the task's limit the task fails as poison (a task
        that kills its agent must not loop for ever). One never started counts nothing.
        """
        task = self.tasks[attempt.task_id]
        if attempt.state is not A.RUNNING:
            self.requeue(attempt, A.LOST, now, f"agent {agent.name} restarted before starting it")
            return
        task.agent_losses += 1
        limit = self.loss_limit(task.id)
        why = f"{DIED_WITH_AGENT} {agent.name} (loss {task.agent_losses} of {limit})"
        workflow = self.workflows[task.workflow_id]
        if task.agent_losses < limit or workflow.state is WorkflowState.CANCELLING:
            self.requeue(attempt, A.LOST, now, why, kind="lost")
            return
        self.end_attempt(attempt, A.LOST, now, why)
        agents = sorted(
            {
                self.agents[a.agent_id].name if a.agent_id in self.agents else a.agent_id
                for a in self.attempts.values()
                if a.task_id == task.id and a.error.startswith(DIED_WITH_AGENT)
            }
        )
        task.error = (
            f"poison: {task.agent_losses} attempts died with their agent "
            f"(max_agent_losses={limit}; agents: {', '.join(agents)})"
        )
        task.failure_reason = "poison"
        task.finished_at = now
        self.set_task_state(task, T.FAILED, now, task.error, kind="poison")
        self.skip_descendants(task, now)
        self.finish_if_done(workflow, now)

    def loss_limit(self, task_id: str) -> int:
        """Agent losses after which a task is poison: its own field, its workflow's, the default."""
        task = self.tasks[task_id]
        if task.max_agent_losses is not None:
            return task.max_agent_losses
        workflow_limit = self.workflows[task.workflow_id].max_agent_losses
        return workflow_limit if workflow_limit is not None else self.config.max_agent_losses

    def forgettable(self, agent: Agent) -> bool:
        """Whether the agent may be forgotten: not online and holding no active attempt."""
        return agent.state in (S.DISCONNECTED, S.DRAINED, S.LOST) and not self.active.get(agent.id)

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

    def heartbeat(self, event: AgentHeartbeat, now: float) -> bool:
        """The agent is alive: memory only (a plain one commits nothing), echoed after the tick
        (the first of a session, then one every ``echo_every_s``).

        False for a session the controller no longer accepts (lost or replaced): it must reconnect.
        """
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
        echoed = self.echoed.get(agent.id)
        renewing = agent.id in self.awaiting_beat
        due = echoed is None or echoed[0] != event.session_epoch or now - echoed[1] >= self.config.echo_every_s
        if renewing or due:
            self.echoed[agent.id] = (event.session_epoch, now)
            self.emit(HeartbeatAck(agent.id, event.session_epoch, event.seq))
        if renewing:
            # The echo goes out before anything placed from now on: the agent renews its lease first.
            self.awaiting_beat.discard(agent.id)
            self.release_hold(agent.id)
        return True

    def reports(self, event: AgentReports, now: float) -> bool:
        """A batch of reports from a live session, applied in order; finished ones are acked after
        the commit. False (nothing applied, nothing acked) for a stale session: its reports wait
        for the agent's next connection."""
        agent_id = event.agent_id
        agent = self.current(agent_id, event.session_epoch)
        if agent is None:
            return False
        agent.last_seen = now
        finished: list[str] = []
        for report in event.reports:
            if isinstance(report, LogChunk):
                attempt = self.attempts.get(report.attempt_id)
                if attempt is not None and attempt.agent_id == agent_id:
                    self.add_logs(report)
            elif isinstance(report, AttemptFinished):
                finished.append(report.attempt_id)
                self.finished(self.checked_result(report), now)
            elif isinstance(report, AttemptStarted):
                self.started(report, now)
            elif isinstance(report, AttemptAccepted):
                self.accepted(report, now)
            elif isinstance(report, AttemptCheckpoint):
                checkpointed(self, report, now)
            elif isinstance(report, AttemptSpawn):
                spawned(self, report, now)
            else:
                self.released(report, now)
        if finished:
            self.emit(Ack(agent_id, event.session_epoch, finished))
        return True

    def checked_result(self, report: AttemptFinished) -> AttemptFinished:
        """A result over ``max_result_bytes`` fails its attempt for good, with the reason.

        Refusing the report instead would not help: the agent re-sends an unacknowledged Finished
        report after every reconnect, forever.
        """
        limit = self.config.max_result_bytes
        if report.result is None or len(report.result) <= limit:
            return report
        return AttemptFinished(
            report.reporter,
            report.attempt_id,
            A.FAILED,
            report.exit_code,
            None,
            f"the agent reported a result of {len(report.result)} bytes, over the max_result_bytes={limit} limit",
            False,
            report.session_epoch,
            report.at,
        )

    def gone(self, event: AgentGone, now: float) -> None:
        """The session's stream closed. Its attempts stay owned until the lease says otherwise."""
        agent = self.current(event.agent_id, event.session_epoch)
        if agent is None:
            return
        # A draining agent leaves when its work is done: the drain's final state (issue 11).
        agent.state = S.DRAINED if agent.state is S.DRAINING else S.DISCONNECTED
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
        """Agents silent past their lease are lost: nothing new is placed on them, and the fence
        clock of what they hold starts (see :meth:`expire_fences`); nothing is requeued yet.

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
            if agent.state in (S.DISCONNECTED, S.DRAINED) and not held:
                continue  # left cleanly with nothing running
            if agent.state not in (S.DISCONNECTED, S.DRAINED):
                # A partition may leave its stream open: close it so the agent must reconnect,
                # and learn in the Welcome which of its attempts were moved elsewhere.
                self.emit(Disconnect(agent.id, agent.session_epoch))
            agent.state = S.LOST
            self.views.pop(agent.id, None)
            self.touch_agent(agent)
            renewed = self.last_renewal(agent)
            for attempt_id in held or ():
                deadline = self.fence_deadline(self.attempts[attempt_id], agent.last_seen, renewed)
                # Never earlier than a wait already set (the one after a controller restart).
                self.fence_at[attempt_id] = max(self.fence_at.get(attempt_id, deadline), deadline)

    def last_renewal(self, agent: Agent) -> float:
        """The latest time the agent's supervisors' lease can count from (on this clock).

        Only an echo of a heartbeat renews it, to that heartbeat's send time plus fence-after, and
        an echo is decided in the tick that applied the heartbeat, after it was sent: so the last
        echo's tick bounds every renewal. It is up to ``echo_every_s`` before the agent was last
        heard, and in a one-way partition (the agent's heartbeats still arrive, the echoes do not)
        it is what keeps the requeue close to the fault. Unknown after a controller start: then
        ``last_seen``, which the restore sets to the start.
        """
        echoed = self.echoed.get(agent.id)
        return echoed[1] if echoed is not None else agent.last_seen

    def fence_deadline(self, attempt: Attempt, silent_since: float, renewed: float) -> float:
        """When an attempt of an agent silent since then is requeued: fenced (``stop``: fence-after,
        the kill grace and the margin after its lease's last renewal, ``renewed``) or given up
        (``keep``: ``max_disconnect`` after ``silent_since``)."""
        task = self.tasks[attempt.task_id]
        if task.on_disconnect == "keep":
            limit = task.max_disconnect_s if task.max_disconnect_s is not None else self.config.max_disconnect_s
            return silent_since + limit
        return renewed + self.config.fence_total_s

    def expire_fences(self, now: float) -> None:
        """Requeue the attempts of silent agents whose fence deadline passed (no retry spent, no
        poison count). A ``stop`` attempt's task counts a rerun after fence."""
        due = [attempt_id for attempt_id, deadline in self.fence_at.items() if deadline <= now]
        for attempt_id in due:
            del self.fence_at[attempt_id]
            attempt = self.attempts[attempt_id]
            task = self.tasks[attempt.task_id]
            agent = self.agents.get(attempt.agent_id)
            name = agent.name if agent is not None else attempt.agent_id
            since = agent.last_seen if agent is not None else now
            if task.on_disconnect == "keep":
                limit = task.max_disconnect_s if task.max_disconnect_s is not None else self.config.max_disconnect_s
                why = f"agent {name} disconnected longer than max_disconnect ({limit:g}s)"
                self.requeue(attempt, A.LOST, now, why, kind="lost")
                continue
            # Counted for an ASSIGNED attempt too: its agent may have started it and died before
            # the Started report left (seen in make chaos's agent kill -9). Whether a body ran is
            # unknowable here, so the count says "may have run twice", never less than the truth.
            task.reruns_after_fence += 1
            stamp = datetime.fromtimestamp(since, UTC).strftime("%H:%M:%S")
            why = f"fenced: agent {name} silent since {stamp} UTC ({now - since:.1f}s)"
            self.requeue(attempt, A.LOST, now, why, kind="fenced")
