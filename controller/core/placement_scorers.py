"""The scorers of the placement pipeline: among the agents that passed every filter, which is best.

Scorers are applied lexicographically, in the order of :data:`SCORERS` (a free slot first, then
spread, then affinity, then the cluster's packing strategy); ties go to the agent with the fewest
outstanding attempts, then the lowest name, then id. Lexicographic rather than a weighted sum so
each preference is explainable on its own: spread is never traded away for a little packing.

Only the scorers that apply to a demand run (:meth:`Scorer.applies`), so a plain task pays for the
free-slot and strategy scores only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, ClassVar, Protocol

from corral.controller.core.model import Resources

if TYPE_CHECKING:
    from corral.controller.core.placement import AgentView, Demand

__all__ = [
    "SCORERS",
    "STRATEGIES",
    "AffinityScorer",
    "FreeSlotScorer",
    "ScoreContext",
    "Scorer",
    "SpreadScorer",
    "StrategyScorer",
    "spread_group",
    "utilisation",
]

_NOTHING = Resources()


def utilisation(agent: AgentView, extra: Resources | None = None) -> float:
    """Mean used fraction over the resource dimensions the agent has, after adding ``extra``."""
    cap, used = agent.capacity, agent.allocated
    add = extra if extra is not None else _NOTHING
    # Field by field rather than through Resources arithmetic or getattr: this runs for every
    # candidate agent of every placement and dominated the cost of a scheduling step.
    pairs = [
        (cap.cpu_cores, used.cpu_cores + add.cpu_cores),
        (cap.memory_mb, used.memory_mb + add.memory_mb),
        (cap.disk_mb, used.disk_mb + add.disk_mb),
        (cap.network_bandwidth_mbps, used.network_bandwidth_mbps + add.network_bandwidth_mbps),
        (cap.gpu_count, used.gpu_count + add.gpu_count),
    ]
    if cap.custom:
        pairs.extend((have, used.custom.get(key, 0.0) + add.custom.get(key, 0.0)) for key, have in cap.custom.items())
    total = 0.0
    count = 0
    for have, taken in pairs:
        if have > 0:
            fraction = taken / have
            total += 1.0 if fraction > 1.0 else (fraction if fraction > 0.0 else 0.0)
            count += 1
    return total / count if count else 0.0


def spread_group(label: str, agent: AgentView) -> str | None:
    """The value of ``label`` that ``agent`` belongs to; ``agent`` spreads per agent.

    Agents without the label form one group (None) of their own.
    """
    return agent.id if label == "agent" else agent.labels.get(label)


class ScoreContext:
    """What scorers need beyond one agent: the tasks each workflow runs where, kept current in a pass.

    ``running(workflow_id)`` gives the active attempts of a workflow per agent id; it is asked at
    most once per workflow per pass, and only for workflows with a spread task in the pass.
    """

    def __init__(
        self, agents: Mapping[str, AgentView], running: Callable[[str], Mapping[str, int]] | None = None
    ) -> None:
        self._agents = agents
        self._running = running
        self._per_agent: dict[str, dict[str, int]] = {}
        self._per_group: dict[tuple[str, str], dict[str | None, int]] = {}

    def spread_count(self, workflow_id: str, label: str, agent: AgentView) -> int:
        """Tasks of ``workflow_id`` active on agents in ``agent``'s group of ``label``."""
        key = (workflow_id, label)
        groups = self._per_group.get(key)
        if groups is None:
            groups = {}
            for agent_id, count in self._workflow(workflow_id).items():
                other = self._agents.get(agent_id)
                if other is not None and count:
                    group = spread_group(label, other)
                    groups[group] = groups.get(group, 0) + count
            self._per_group[key] = groups
        return groups.get(spread_group(label, agent), 0)

    def placed(self, workflow_id: str, agent: AgentView) -> None:
        """Count a placement made in this pass, so later spread scores see it."""
        per_agent = self._workflow(workflow_id)
        per_agent[agent.id] = per_agent.get(agent.id, 0) + 1
        for (wf, label), groups in self._per_group.items():
            if wf == workflow_id:
                group = spread_group(label, agent)
                groups[group] = groups.get(group, 0) + 1

    def _workflow(self, workflow_id: str) -> dict[str, int]:
        found = self._per_agent.get(workflow_id)
        if found is None:
            found = dict(self._running(workflow_id)) if self._running is not None else {}
            self._per_agent[workflow_id] = found
        return found


class Scorer(Protocol):
    """A preference among feasible agents: the higher score wins."""

    name: ClassVar[str]

    def applies(self, demand: Demand) -> bool:
        """Whether this scorer has anything to say about ``demand`` (else it is skipped)."""
        ...

    def score(self, demand: Demand, agent: AgentView, ctx: ScoreContext) -> float:
        """How much ``demand`` prefers ``agent``."""
        ...


class FreeSlotScorer:
    """An agent where the task starts at once beats one where it would wait in the prefetch queue."""

    name: ClassVar[str] = "free_slot"

    def applies(self, demand: Demand) -> bool:
        return True

    def score(self, demand: Demand, agent: AgentView, ctx: ScoreContext) -> float:
        return 1.0 if agent.outstanding < agent.slots else 0.0


class SpreadScorer:
    """``spread: LABEL``: prefer agents whose LABEL value runs the fewest tasks of the same workflow."""

    name: ClassVar[str] = "spread"

    def applies(self, demand: Demand) -> bool:
        return bool(demand.spread)

    def score(self, demand: Demand, agent: AgentView, ctx: ScoreContext) -> float:
        return -float(ctx.spread_count(demand.workflow_id, demand.spread, agent))


class AffinityScorer:
    """``affinity: {label: value}``: prefer agents with more of these labels (soft; never required)."""

    name: ClassVar[str] = "affinity"

    def applies(self, demand: Demand) -> bool:
        return bool(demand.affinity)

    def score(self, demand: Demand, agent: AgentView, ctx: ScoreContext) -> float:
        labels = agent.labels
        return float(sum(1 for key, value in demand.affinity.items() if labels.get(key) == value))


class StrategyScorer:
    """The cluster's packing strategy: ``binpack`` fills the fullest agent, ``spread`` the emptiest."""

    name: ClassVar[str] = "strategy"

    def __init__(self, strategy: str) -> None:
        self.sign = 1.0 if strategy == "binpack" else -1.0

    def applies(self, demand: Demand) -> bool:
        return True

    def score(self, demand: Demand, agent: AgentView, ctx: ScoreContext) -> float:
        # binpack keeps whole machines free for large tasks; spread evens the load.
        return self.sign * utilisation(agent, demand.resources)


STRATEGIES: dict[str, StrategyScorer] = {"binpack": StrategyScorer("binpack"), "spread": StrategyScorer("spread")}

# Label preferences between the free-slot rule and the packing strategy; see the module docstring.
SCORERS: tuple[Scorer, ...] = (SpreadScorer(), AffinityScorer())
