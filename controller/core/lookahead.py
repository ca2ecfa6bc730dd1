"""Lookahead dispatch: a long task is sent to an agent shortly before one of its slots frees.

Short tasks are prefetched (queued on an agent beyond its slots, :meth:`MachineState.prefetch_for`).
Long or unknown ones only ever took a free slot, so each began with a whole control-loop round
trip (the report of the task before it, a commit, the assignment, the start) after its slot had
gone idle: milliseconds of an idle slot per long task. Measured on the montage trace with
estimates (2 agents x 4 slots): 8-10 idle slot-seconds against 4 when every task was prefetched.

A running attempt whose expected end (when its Started was applied, plus its expected duration:
the estimate, else what was learned) falls within the horizon is *ending* on its agent, and the
agent may hold one queued long task per ending attempt
(:attr:`~corral.controller.core.placement.AgentView.ending`). If the running one overruns, the
queued one is prefetched work like any other: the steal pass moves it to an agent with an idle
slot. An attempt with no expected duration never counts (nothing is bound to a guess).

The horizon is twice the measured dispatch latency (from placing an attempt on a free slot to
applying its Started: what the lookahead must cover, since the expected end is itself counted from
a Started applied that late), at most ``lookahead_s``. Binding a task to a slot early has a price:
a more critical task that becomes ready meanwhile can no longer have that slot. With no latency
(the simulator's agents) there is nothing to cover and no lookahead at all; measured in the
simulator with a fixed 50 ms horizon, cycles with estimates went from 0.992 to 1.075 of the best
list schedule.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping

from corral.controller.core.placement import AgentView

__all__ = ["EndingSoon"]

# The heap keeps entries of attempts that ended before their expected end; it is rebuilt from
# the running ones when it holds this many more entries than there are running attempts.
_SLACK = 1024


class EndingSoon:
    """Running attempts by expected end, and per agent how many end within the horizon.

    ``started`` when an attempt starts running, ``ended`` when it ends (any way), ``advance`` before
    each scheduling pass. O(log n) per attempt; a pass costs only the attempts that became due.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, str, str]] = []  # (expected end, attempt id, agent id)
        self._running: set[str] = set()  # attempt ids with an entry in the heap or counted
        self._counted: dict[str, str] = {}  # attempt id -> agent id: ending within the horizon
        self.by_agent: dict[str, int] = {}  # agent id -> attempts of it ending within the horizon
        self._placed: dict[str, float] = {}  # attempt id -> when it was placed on a free slot
        self.latency_s: float | None = None  # moving average: placed on a free slot -> Started applied

    def __len__(self) -> int:
        return len(self._running)

    def placed(self, attempt_id: str, now: float) -> None:
        """An attempt was placed on a free slot: its Started will measure the dispatch latency."""
        self._placed[attempt_id] = now

    def horizon(self, cap_s: float) -> float:
        """How far ahead an attempt's expected end counts: twice the dispatch latency, at most ``cap_s``."""
        latency = self.latency_s
        return 0.0 if latency is None or cap_s <= 0 else min(cap_s, 2 * latency)

    def took(self, attempt_id: str, now: float) -> None:
        """An attempt's Started was applied: one latency sample if it was placed on a free slot."""
        placed = self._placed.pop(attempt_id, None)
        if placed is not None:
            sample = max(0.0, now - placed)
            latency = self.latency_s
            self.latency_s = sample if latency is None else latency * 0.8 + sample * 0.2

    def started(self, attempt_id: str, agent_id: str, expected_end: float) -> None:
        """An attempt began running and is expected to end at ``expected_end`` (controller clock)."""
        if attempt_id in self._running:
            return
        self._running.add(attempt_id)
        heapq.heappush(self._heap, (expected_end, attempt_id, agent_id))
        if len(self._heap) > 2 * len(self._running) + _SLACK:
            running = self._running
            self._heap = [entry for entry in self._heap if entry[1] in running]
            heapq.heapify(self._heap)

    def advance(self, horizon: float, views: Mapping[str, AgentView]) -> None:
        """Count the running attempts expected to end by ``horizon`` on their agents."""
        heap = self._heap
        running, counted, by_agent = self._running, self._counted, self.by_agent
        while heap and heap[0][0] <= horizon:
            _, attempt_id, agent_id = heapq.heappop(heap)
            if attempt_id not in running or attempt_id in counted:
                continue  # ended before its expected end
            counted[attempt_id] = agent_id
            n = by_agent[agent_id] = by_agent.get(agent_id, 0) + 1
            view = views.get(agent_id)
            if view is not None:
                view.ending = n

    def ended(self, attempt_id: str, views: Mapping[str, AgentView]) -> None:
        """An attempt ended (finished, failed, lost, cancelled, taken back): it holds no slot now."""
        if self._placed:
            self._placed.pop(attempt_id, None)
        if attempt_id not in self._running:
            return
        self._running.discard(attempt_id)
        agent_id = self._counted.pop(attempt_id, None)
        if agent_id is None:
            return
        n = self.by_agent[agent_id] - 1
        if n:
            self.by_agent[agent_id] = n
        else:
            del self.by_agent[agent_id]
        view = views.get(agent_id)
        if view is not None:
            view.ending = n

    def next_end(self) -> float | None:
        """The earliest expected end not counted yet (it may belong to an attempt that ended)."""
        return self._heap[0][0] if self._heap else None

    def of(self, agent_id: str) -> int:
        """Attempts of ``agent_id`` ending within the horizon (a rebuilt view starts from this)."""
        return self.by_agent.get(agent_id, 0)
