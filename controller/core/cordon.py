"""Cascade prevention (issue 10 §5): cordon an agent whose tasks keep failing while they succeed elsewhere.

The rule (the issue's semantics): an agent is cordoned for ``cordon_cooldown_s`` when its last
``cordon_after`` finished attempts all failed (FAILED or TIMED_OUT; cancellations and losses are not
the agent's verdict on a task) and those failures come from at least ``cordon_workflows`` different
workflows each of which has had a task succeed on another agent since. Never more than a third of
the connected agents of any of its agent types is cordoned at once, so a bad release that breaks
every agent cannot empty the fleet.

A cordoned agent keeps its stream and its running attempts; it only gets no new work (its view is
held back, like an agent that swallowed assignments) until the cool-down ends. The cordon (until
when, and why) is stored on the agent record, so it survives a controller restart and shows in
``corral agents`` and in explain's per-agent verdicts. The failure streaks are memory only: a
restart forgets them (at worst a bad agent needs ``cordon_after`` more failures).

Cost when unused: a success is one dict membership test per streak-holding workflow (none while
nothing fails); a failure appends to the agent's streak.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from corral.controller.core.model import AgentState, Attempt, AttemptState

if TYPE_CHECKING:
    from corral.controller.core.state import MachineState

__all__ = ["Cordons", "cordon_verdicts", "expire_cordons", "observe_finish", "restore_cordon"]

_FAILURES = frozenset({AttemptState.FAILED, AttemptState.TIMED_OUT})
_MAX_STREAK = 256  # failures remembered per agent
_MAX_SUSPECTS = 10_000  # workflows remembered as failing somewhere (oldest forgotten first)


@dataclass(slots=True)
class Cordons:
    """Memory of the cordon rule: failure streaks per agent, where suspect workflows succeeded."""

    streaks: dict[str, deque[str]] = field(default_factory=dict)  # agent id -> workflow ids of its failures
    # workflow id (failed somewhere) -> agents where one of its tasks succeeded since
    succeeded_on: dict[str, set[str]] = field(default_factory=dict)
    until: dict[str, float] = field(default_factory=dict)  # cordoned agent id -> end of its cool-down
    # Issue 11: agents cordoned by hand (``corral cordon``), until uncordoned; no timer.
    manual: set[str] = field(default_factory=set)

    def holds(self, agent_id: str) -> bool:
        """Whether the agent is cordoned (automatically or by hand): it gets no new work."""
        return agent_id in self.until or agent_id in self.manual


def observe_finish(m: MachineState, attempt: Attempt, outcome: AttemptState, now: float) -> None:
    """An attempt of an agent ended with ``outcome``: update the streaks and cordon if the rule holds."""
    config = m.config
    if config.cordon_after <= 0 or attempt.pulled:
        return
    c = m.cordons
    agent_id = attempt.agent_id
    if outcome is AttemptState.SUCCEEDED:
        c.streaks.pop(agent_id, None)
        if c.succeeded_on:
            seen = c.succeeded_on.get(attempt.workflow_id)
            if seen is not None and agent_id not in seen:
                seen.add(agent_id)
                for suspect in [a for a, s in c.streaks.items() if attempt.workflow_id in s]:
                    _judge(m, suspect, now)
        return
    if outcome not in _FAILURES:
        return
    streak = c.streaks.get(agent_id)
    if streak is None:
        # Every failure since its last success (bounded): a retry that lands on it again repeats a
        # workflow, so a window of only ``cordon_after`` could hold too few different ones.
        streak = c.streaks[agent_id] = deque(maxlen=max(config.cordon_after, _MAX_STREAK))
    streak.append(attempt.workflow_id)
    if attempt.workflow_id not in c.succeeded_on:
        if len(c.succeeded_on) >= _MAX_SUSPECTS:
            del c.succeeded_on[next(iter(c.succeeded_on))]
        c.succeeded_on[attempt.workflow_id] = set()
    _judge(m, agent_id, now)


def _judge(m: MachineState, agent_id: str, now: float) -> None:
    config, c = m.config, m.cordons
    streak = c.streaks.get(agent_id)
    if streak is None or len(streak) < config.cordon_after or c.holds(agent_id):
        return
    witnessed = {wf for wf in streak if c.succeeded_on.get(wf, set()) - {agent_id}}
    if len(witnessed) < config.cordon_workflows:
        return
    agent = m.agents.get(agent_id)
    if agent is None or not _within_a_third(m, agent_id):
        return
    until = now + config.cordon_cooldown_s
    agent.cordoned_until = until
    agent.cordon_reason = (
        f"cordoned: its last {len(streak)} attempts failed, from {len(witnessed)} workflows whose tasks "
        f"succeed on other agents; no new work for a cool-down of {config.cordon_cooldown_s:g}s"
    )
    m.touch_agent(agent)
    c.until[agent_id] = until
    del c.streaks[agent_id]
    view = m.views.get(agent_id)
    if view is not None:
        view.held_back = True


def _within_a_third(m: MachineState, agent_id: str) -> bool:
    """Whether cordoning this agent keeps every one of its types at most a third cordoned."""
    agent = m.agents[agent_id]
    for agent_type in agent.agent_types:
        peers = [
            a.id
            for a in m.agents.values()
            if agent_type in a.agent_types and a.state in (AgentState.CONNECTED, AgentState.DRAINING)
        ]
        cordoned = sum(1 for a in peers if m.cordons.holds(a))
        if 3 * (cordoned + 1) > len(peers):
            return False
    return True


def restore_cordon(m: MachineState, agent_id: str, until: float | None, by: str = "") -> None:
    """A restored agent's stored cordon (its view, built at its Hello, is held back while it lasts)."""
    if by:
        m.cordons.manual.add(agent_id)
    elif until is not None:
        m.cordons.until[agent_id] = until


def expire_cordons(m: MachineState, now: float) -> None:
    """End the cordons whose cool-down is over: the agent takes work again."""
    for agent_id, until in list(m.cordons.until.items()):
        if until > now:
            continue
        del m.cordons.until[agent_id]
        agent = m.agents.get(agent_id)
        if agent is not None:
            agent.cordoned_until = None
            agent.cordon_reason = ""
            m.touch_agent(agent)
        view = m.views.get(agent_id)
        if view is not None:
            view.held_back = agent_id in m.held_back


def cordon_verdicts(m: MachineState, verdicts: tuple[tuple[str, str, str], ...]) -> tuple[tuple[str, str, str], ...]:
    """explain's per-agent verdicts with the cordon reason for cordoned agents."""
    out = []
    for agent_id, name, reason in verdicts:
        agent = m.agents.get(agent_id)
        if m.cordons.holds(agent_id) and agent is not None and agent.cordon_reason:
            reason = agent.cordon_reason
        out.append((agent_id, name, reason))
    return tuple(out)
