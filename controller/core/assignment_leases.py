"""Assignment leases and hold-backs: an assignment an agent does not acknowledge is taken back (only
from an agent heard from since), and an agent that swallowed work, or whose lease ran out, gets no
new work for a while. Also the requeue every take-back ends in."""

from __future__ import annotations

from collections import deque

from corral.controller.core.events import CancelAttempts
from corral.controller.core.model import AgentState, Attempt, AttemptState, TaskState, WorkflowState
from corral.controller.core.workflow_ops import WorkflowOps

__all__ = ["AssignmentLeases"]

A = AttemptState
T = TaskState
# An agent heard from this long after an assignment left would have acknowledged it by then (it
# holds an Accepted at most 0.25 s, agent/outbox.py; a Started goes at once): its silence about
# that assignment means the Assign was lost. Heard from nothing since, it may be cut off instead.
_HEARD_AFTER_ASSIGN_S = 1.0


class AssignmentLeases(WorkflowOps):
    def hold(self, agent_id: str, until: float) -> None:
        """No new work for this agent before ``until`` (or an acknowledgement, or its next beat)."""
        self.held_back[agent_id] = max(self.held_back.get(agent_id, 0.0), until)
        view = self.views.get(agent_id)
        if view is not None:
            view.held_back = True

    def release_hold(self, agent_id: str) -> None:
        """Lift the agent's hold-back, if any (a cordon still holds it)."""
        if self.held_back.pop(agent_id, None) is not None:
            view = self.views.get(agent_id)
            if view is not None:
                view.held_back = self.cordons.holds(agent_id)

    def hold_until_beat(self, agent_id: str, now: float) -> None:
        """The agent's supervisors fenced: its lease ran out, so what is placed on it before an echo
        renews the lease is refused at start (after a long outage, over and over, make chaos
        controller-down-45). No new work until its next heartbeat (or an assignment lease)."""
        self.awaiting_beat.add(agent_id)
        self.hold(agent_id, now + self.config.assignment_lease_s)

    def acknowledged(self, agent_id: str, attempt_id: str) -> None:
        """The agent holds this attempt: its lease is settled and any hold-back lifts."""
        self.unacknowledged.pop(attempt_id, None)
        self.release_hold(agent_id)

    def lose_attempt(self, attempt: Attempt, now: float, why: str) -> None:
        """Its agent never re-reported it: requeue without spending a retry."""
        self.requeue(attempt, A.LOST, now, why, kind="lost")

    def requeue(self, attempt: Attempt, outcome: AttemptState, now: float, why: str, *, kind: str = "requeued") -> None:
        """End an attempt that did not fail by itself and make its task ready again (no retry spent);
        in a cancelling workflow the task is cancelled instead. ``kind`` names the log entry."""
        task = self.tasks[attempt.task_id]
        workflow = self.workflows[task.workflow_id]
        self.end_attempt(attempt, outcome, now, why)
        if workflow.state is WorkflowState.CANCELLING:
            task.finished_at = now
            self.set_task_state(task, T.CANCELLED, now, "workflow cancelled")
        else:
            self.make_ready(task, now, kind=kind, reason=why)
        self.finish_if_done(workflow, now)

    def next_assignment_deadline(self) -> float | None:
        """The earliest assignment lease still running (settled ones are dropped on the way)."""
        queue, pending = self.ack_queue, self.unacknowledged
        while queue and pending.get(queue[0][1]) != queue[0][0]:
            queue.popleft()
        return queue[0][0] if queue else None

    def restart_assignment_leases(self, now: float) -> None:
        """Give every unacknowledged assignment a full lease from ``now`` (after a storage outage,
        during which an agent's Accepted or Started could not be recorded: taking the attempt back
        then could run a second copy)."""
        lease = self.config.assignment_lease_s
        for attempt_id, deadline in self.unacknowledged.items():
            self.unacknowledged[attempt_id] = max(deadline, now + lease)
        self.ack_queue = deque(sorted((d, a) for a, d in self.unacknowledged.items()))

    def expire_assignments(self, now: float) -> None:
        """Take back assignments not acknowledged within the lease, and hold their agents back.

        The attempt ends LOST and its task is requeued without spending a retry; its agent is told
        to kill it should it ever get it, and gets no new work until it acknowledges something
        (or ``hold_back_s`` passes), so a blackhole agent cannot keep swallowing work.
        """
        for agent_id, until in list(self.held_back.items()):
            if until <= now:
                self.release_hold(agent_id)
        lease = self.config.assignment_lease_s
        taken: dict[str, list[str]] = {}
        while (deadline := self.next_assignment_deadline()) is not None and deadline <= now:
            _, attempt_id = self.ack_queue.popleft()
            del self.unacknowledged[attempt_id]
            attempt = self.attempts[attempt_id]
            agent = self.agents.get(attempt.agent_id)
            if agent is not None and agent.state not in (AgentState.CONNECTED, AgentState.DRAINING):
                # Its stream is gone: the agent may have got the assignment and started it just
                # before it died or was cut off, its Accepted lost with it. Taking it back now could
                # run two copies; it stays with the agent and follows the fence clock like a running
                # attempt (or the agent's next Hello says whether it holds it).
                continue
            if agent is not None and agent.last_seen < attempt.assigned_at + _HEARD_AFTER_ASSIGN_S:
                # Nothing heard from the agent since: a partition looks like a live stream until
                # its keepalive fails, and the agent may have started the attempt with its reports
                # held up behind the fault. Taking it back now could run two copies (make chaos,
                # partition-20). Asked again a lease later: by then the agent has spoken without
                # acknowledging it (its Assign was lost: taken back then), or it is lost and the
                # attempt follows the fence clock, or its reports arrived.
                again = now + lease
                self.unacknowledged[attempt_id] = again
                self.ack_queue.append((again, attempt_id))
                continue
            name = agent.name if agent is not None else attempt.agent_id
            self.requeue(attempt, A.LOST, now, f"not acknowledged by agent {name} within {lease:g}s")
            taken.setdefault(attempt.agent_id, []).append(attempt_id)
        for agent_id, attempt_ids in taken.items():
            self.emit(CancelAttempts(agent_id, attempt_ids, True, 0.0))
            self.hold(agent_id, now + self.config.hold_back_s)
