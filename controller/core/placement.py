"""Placement: one pipeline of named filters and scorers, used by scheduling and explain alike.

The shape follows Nomad's feasibility checkers and rank iterators and the Kubernetes scheduler
framework: a chain of filters (:mod:`~corral.controller.core.placement_filters`) each answering
``None`` (fits) or a human reason, then scorers (:mod:`~corral.controller.core.placement_scorers`)
that pick among the agents that passed. Scheduling and explain run the *same* filter objects:
scheduling asks their cheap ``passes`` face, explain their ``check`` face, so an explanation can
never disagree with a placement decision.

A scheduling pass evaluates the static filters once per demand class (:func:`demand_class`) and
agent (:class:`Candidates`), and the dynamic ones (free resources, the attempt window) per
placement.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from corral.controller.core.model import Agent, AgentState, LabelExpr, Resources
from corral.controller.core.placement_filters import (
    FILTERS,
    AgentTypeFilter,
    CapacityFilter,
    ConstraintsFilter,
    Filter,
    FreeResourcesFilter,
    LabelExpressionFilter,
    NamespaceFilter,
    StateFilter,
    WindowFilter,
    amount,
    resource_amounts,
    resource_get,
)
from corral.controller.core.placement_scorers import (
    SCORERS,
    STRATEGIES,
    ScoreContext,
    Scorer,
    StrategyScorer,
    utilisation,
)

__all__ = [
    "FILTERS",
    "SCORERS",
    "STRATEGIES",
    "AgentTypeFilter",
    "AgentView",
    "Candidates",
    "CapacityFilter",
    "ConstraintsFilter",
    "Demand",
    "DemandClass",
    "Filter",
    "FreeResourcesFilter",
    "LabelExpressionFilter",
    "NamespaceFilter",
    "ScoreContext",
    "Scorer",
    "StateFilter",
    "WindowFilter",
    "choose",
    "demand_class",
    "describe_class",
    "explain",
    "feasible",
    "fits_now",
    "rejection",
    "utilisation",
]

_STATIC: tuple[Filter, ...] = tuple(f for f in FILTERS if f.static)
_DYNAMIC: tuple[Filter, ...] = tuple(f for f in FILTERS if not f.static)
_NO_LABELS: Mapping[str, str] = {}


# New attempts one scheduling pass may give one agent (see AgentView.pass_window).
MAX_PASS_ADD = 256


@dataclass(slots=True)
class AgentView:
    """The scheduler's mutable picture of one agent: what it offers and what is committed on it.

    ``window`` bounds the attempts outstanding on the agent (running slots plus prefetch), so an
    agent is sent a little more work than it can run at once and never idles between batches.
    ``free_gpu_ids`` lists every GPU index not allocated, lowest first. ``namespaces`` are the
    namespaces whose tasks it may run (empty: all). ``held_back`` is set while the agent has left
    assignments unacknowledged: it gets no new work until it acknowledges again.
    """

    id: str
    name: str
    agent_types: frozenset[str]
    labels: Mapping[str, str]
    state: AgentState
    capacity: Resources
    allocated: Resources = field(default_factory=Resources)
    slots: int = 1
    outstanding: int = 0
    window: int = 1
    free_gpu_ids: list[int] = field(default_factory=list)
    namespaces: frozenset[str] = frozenset()
    held_back: bool = False
    # The machine's set of agents holding more attempts than slots (prefetched work that may be
    # stolen), kept current by allocate/release so the steal pass costs nothing when it is empty.
    # None for clones used in planning.
    crowded: set[str] | None = None
    # The pass window the last pass filled (0: it did not fill it). The slow start doubles from
    # it, so an agent that runs its work as fast as it gets it still opens up (see pass_window).
    grant: int = 0
    # Running attempts expected to end within the lookahead time (core/lookahead.py): the agent
    # may hold as many long tasks queued beyond its slots, so their slots never wait for a round trip.
    ending: int = 0

    @classmethod
    def of(
        cls,
        agent: Agent,
        *,
        allocated: Resources | None = None,
        outstanding: int = 0,
        used_gpu_ids: Sequence[int] = (),
        prefetch: int = 0,
        held_back: bool = False,
    ) -> AgentView:
        """The view of a registered agent given what its active attempts hold.

        GPU indexes come from the inventory; an inventory with a GPU count but no indexes (a
        ``--gpus N`` override) numbers them ``0..N-1``.
        """
        inventory = agent.inventory
        gpu_ids = inventory.gpu_ids or tuple(range(inventory.capacity.gpu_count))
        used = set(used_gpu_ids)
        return cls(
            id=agent.id,
            name=agent.name,
            agent_types=frozenset(agent.agent_types),
            labels=agent.labels,
            state=agent.state,
            capacity=inventory.capacity,
            allocated=allocated if allocated is not None else Resources(),
            slots=inventory.slots,
            outstanding=outstanding,
            window=inventory.slots + max(0, prefetch),
            free_gpu_ids=sorted(g for g in gpu_ids if g not in used),
            namespaces=frozenset(agent.namespaces),
            held_back=held_back,
        )

    def free(self) -> Resources:
        """Capacity not allocated."""
        return self.capacity - self.allocated

    def has_room(self) -> bool:
        """Whether the agent takes new work at all: connected and its window (or, for long tasks,
        its slots plus the attempts ending soon: :attr:`long_window`) not full."""
        return (
            self.state is AgentState.CONNECTED
            and not self.held_back
            and (self.outstanding < self.window or self.outstanding < self.long_window)
        )

    @property
    def long_window(self) -> int:
        """The outstanding attempts a long (not prefetchable) task may join: a free slot, or a slot
        whose running attempt is expected to end within the lookahead time (``lookahead_s``)."""
        return self.slots + self.ending

    def allocate(self, req: Resources) -> tuple[int, ...]:
        """Commit ``req`` and one outstanding attempt; returns the GPU indexes taken (lowest first)."""
        if req.gpu_count > len(self.free_gpu_ids):
            raise ValueError(f"agent {self.id} has {len(self.free_gpu_ids)} free GPU ids, {req.gpu_count} asked")
        taken = tuple(self.free_gpu_ids[: req.gpu_count])
        del self.free_gpu_ids[: req.gpu_count]
        self.allocated = self.allocated + req
        self.outstanding += 1
        if self.crowded is not None and self.outstanding > self.slots:
            self.crowded.add(self.id)
        return taken

    def release(self, req: Resources, gpu_ids: tuple[int, ...]) -> None:
        """Undo an :meth:`allocate` when its attempt ends."""
        self.allocated = self.allocated - req
        self.outstanding = max(0, self.outstanding - 1)
        if self.crowded is not None and self.outstanding <= self.slots:
            self.crowded.discard(self.id)
        back = set(self.free_gpu_ids)
        back.update(gpu_ids)
        self.free_gpu_ids = sorted(back)

    def pass_window(self) -> int:
        """The window one scheduling pass may fill: the prefetch opens by doubling (slow start).

        A pass may bring the agent to twice its outstanding attempts (at least twice its slots),
        or twice the window the last pass filled (:attr:`grant`), never past :attr:`window`. An
        idle agent with a deep window would otherwise get hundreds of attempts in one pass, and
        their commit and delivery delay the first ones' start (measured: 366 attempts took 20 ms
        before the first of 501 short tasks started). The reports of the first ones open the rest
        within a few ticks, and a busy agent's window is unaffected.

        The grant keeps the doubling going for an agent that finishes its work before the next
        pass: its outstanding count stays small, and twice that alone held a no-op agent at 2-4
        attempts a pass for many ticks, idle between them, while the other agent had 257. And one
        pass adds at most :data:`MAX_PASS_ADD`, however deep the window: a tick's batch (its
        commit, its messages, the memory they hold at once) stays bounded.
        """
        return min(self.window, 2 * max(self.slots, self.outstanding, self.grant), self.outstanding + MAX_PASS_ADD)

    def clone(self) -> AgentView:
        """An independent copy (``labels`` and resources are immutable and shared)."""
        return AgentView(
            self.id,
            self.name,
            self.agent_types,
            self.labels,
            self.state,
            self.capacity,
            self.allocated,
            self.slots,
            self.outstanding,
            self.window,
            list(self.free_gpu_ids),
            self.namespaces,
            self.held_back,
            grant=self.grant,
            ending=self.ending,
        )


@dataclass(slots=True)
class Demand:
    """What one task needs from an agent, and what it prefers. Read-only by convention.

    Not ``frozen``: one is built per queued task per scheduling pass, and a frozen dataclass
    sets each field through ``object.__setattr__`` (a measurable share of a no-op task's cost).
    """

    agent_type: str
    resources: Resources = field(default_factory=Resources)
    constraints: Mapping[str, str] = field(default_factory=dict)
    # Short tasks may be queued on an agent beyond its slots (prefetch); long or unknown ones only
    # take a free slot or one about to free (AgentView.long_window), so they stay in the
    # controller's queue, where priorities still apply, until a slot is (nearly) theirs.
    prefetchable: bool = True
    namespace: str = "default"
    constraint_exprs: tuple[LabelExpr, ...] = ()
    spread: str = ""  # a label (or "agent") to spread this workflow's tasks over
    affinity: Mapping[str, str] = field(default_factory=dict)
    workflow_id: str = ""  # whose tasks ``spread`` counts

    def window(self, agent: AgentView) -> int:
        """How many outstanding attempts ``agent`` may hold when this task is added."""
        # A short task may always go where a long one may (else, once the prefetch window closes
        # while tasks run long, long tasks sent ahead of their slots would starve short ones).
        long_window = agent.long_window
        return max(agent.window, long_window) if self.prefetchable else long_window


# A hashable key equal for demands that every filter and scorer treats alike.
DemandClass = tuple[object, ...]


def demand_class(demand: Demand) -> DemandClass:
    """The class of equal demand ``demand`` belongs to (agent type, resources, constraints, spread, ...).

    Tasks of one class pass and fail the same filters against the same agents, so a pass records
    one waiting reason per class, and explain finds a task's reason through its class. The
    workflow is part of the class only for spread tasks (their score counts their workflow).
    """
    res = demand.resources
    base = (
        demand.agent_type,
        demand.namespace,
        demand.prefetchable,
        res.cpu_cores,
        res.memory_mb,
        res.disk_mb,
        res.network_bandwidth_mbps,
        res.gpu_count,
    )
    # Almost every task has none of the optional parts: one test, no sorting (per task per pass).
    if not (res.custom or demand.constraints or demand.constraint_exprs or demand.spread or demand.affinity):
        return base
    return (
        *base,
        tuple(sorted(res.custom.items())),
        tuple(sorted(demand.constraints.items())),
        demand.constraint_exprs,
        demand.spread,
        demand.workflow_id if demand.spread else "",
        tuple(sorted(demand.affinity.items())),
    )


def describe_class(demand: Demand) -> str:
    """A demand class as a user reads it: ``shell cpu_cores=1 memory_mb=512 zone in (a, b)``."""
    parts = [demand.agent_type]
    parts.extend(f"{name}={amount(v)}" for name, v in resource_amounts(demand.resources) if v > 0)
    parts.extend(f"{k}={v}" for k, v in sorted(demand.constraints.items()))
    parts.extend(expr.describe() for expr in demand.constraint_exprs)
    if demand.spread:
        parts.append(f"spread={demand.spread}")
    parts.extend(f"affinity {k}={v}" for k, v in sorted(demand.affinity.items()))
    if demand.namespace != "default":
        parts.append(f"namespace={demand.namespace}")
    return " ".join(parts)


def rejection(demand: Demand, agent: AgentView) -> tuple[str, str] | None:
    """The first failing filter as ``(filter name, reason)``, or None when the agent fits now."""
    for check in FILTERS:
        reason = check.check(demand, agent)
        if reason is not None:
            return check.name, reason
    return None


def feasible(demand: Demand, agent: AgentView) -> str | None:
    """The first rejection reason, or None when ``agent`` can take the task right now."""
    found = rejection(demand, agent)
    return None if found is None else found[1]


def fits_now(demand: Demand, agent: AgentView) -> bool:
    """Exactly ``feasible(demand, agent) is None``, through the filters' cheap faces."""
    return all(f.passes(demand, agent) for f in FILTERS)


_FREE = FreeResourcesFilter()
_SCOPE = NamespaceFilter()
_EQUAL = ConstraintsFilter()
_EXPRS = LabelExpressionFilter()
_CAPACITY = CapacityFilter()


class Candidates:
    """Per scheduling pass: the agents passing the static filters, cached per demand class.

    Built over the pass's agent views (clones the pass allocates on); the dynamic filters are
    still checked per placement, since they change as the pass places tasks.
    """

    def __init__(self, by_type: Mapping[str, Sequence[AgentView]]) -> None:
        self._by_type = by_type
        self._cache: dict[DemandClass, list[AgentView]] = {}

    def of(self, demand: Demand, key: DemandClass) -> list[AgentView]:
        """The agents of ``demand``'s type that pass every static filter."""
        found = self._cache.get(key)
        if found is None:
            # Only the static filters that can reject this demand (the label ones need labels).
            checks = [
                f
                for f in _STATIC
                if not (f is _EQUAL and not demand.constraints) and not (f is _EXPRS and not demand.constraint_exprs)
            ]
            found = []
            for agent in self._by_type.get(demand.agent_type, ()):
                for check in checks:
                    if not check.passes(demand, agent):
                        break
                else:
                    found.append(agent)
            self._cache[key] = found
        return found


def choose(
    demand: Demand,
    agents: Sequence[AgentView],
    strategy: str = "binpack",
    ctx: ScoreContext | None = None,
    *,
    prefiltered: bool = False,
) -> AgentView | None:
    """The best agent that can take the task now, or None.

    Filters first (``prefiltered``: the static ones already passed, as :class:`Candidates`
    gives). Then the scorers, lexicographically: an agent where the task starts at once (a free
    slot) beats one where it would wait in the agent's prefetch queue; then ``spread`` (fewest
    tasks of the workflow in the agent's group), ``affinity`` (most preferred labels), then the
    packing strategy (``binpack``: the most allocated agent that fits; ``spread``: the least).
    Ties go to the agent with the fewest outstanding attempts, then the lowest name (then id).
    """
    packing: StrategyScorer | None = STRATEGIES.get(strategy)
    if packing is None:
        raise ValueError(f"unknown placement strategy {strategy!r} (known: {', '.join(STRATEGIES)})")
    extra = [s for s in SCORERS if s.applies(demand)] if (demand.spread or demand.affinity) else []
    context = ctx if ctx is not None else ScoreContext({})
    # The hot path (every placement): the dynamic filters' fast faces and the packing score are
    # called directly, and a task without label preferences builds no per-agent generator.
    free_ok = _FREE.passes
    sign, res, prefetchable = packing.sign, demand.resources, demand.prefetchable
    best: AgentView | None = None
    best_key: tuple[bool, tuple[float, ...], float, int, str, str] | None = None
    for agent in agents:
        if prefiltered:
            window = agent.slots + agent.ending  # Demand.window, inlined: the hot path of every placement
            if prefetchable and agent.window > window:
                window = agent.window
            if agent.outstanding >= window or not free_ok(demand, agent):
                continue
        elif not fits_now(demand, agent):
            continue
        preferences = tuple([-s.score(demand, agent, context) for s in extra]) if extra else ()
        key = (
            agent.outstanding >= agent.slots,
            preferences,
            -sign * utilisation(agent, res),
            agent.outstanding,
            agent.name,
            agent.id,
        )
        if best_key is None or key < best_key:
            best, best_key = agent, key
    return best


def explain(demand: Demand, agents: Sequence[AgentView]) -> tuple[str, list[tuple[str, str]]]:
    """Why a task cannot be placed: a one-line summary and ``(agent id, reason)`` per agent.

    The summary is ``""`` when some agent could take the task right now. Otherwise it narrows down
    in filter order: no agents connected; no connected agent runs the type; no agent has the
    labels; not enough of a resource on any agent (it waits until a bigger agent joins); or waiting
    for free capacity (it will run when current work finishes). Per-agent reasons are ``""`` for
    agents that fit.
    """
    per_agent = [(agent.id, feasible(demand, agent) or "") for agent in agents]
    if any(reason == "" for _, reason in per_agent):
        return "", per_agent

    connected = [a for a in agents if a.state is AgentState.CONNECTED]
    if not connected:
        return "no agents connected", per_agent
    typed = [a for a in connected if demand.agent_type in a.agent_types]
    if not typed:
        return f"no connected agent runs agent_type {demand.agent_type!r}", per_agent
    scoped = [a for a in typed if _SCOPE.passes(demand, a)]
    if not scoped:
        return f"no connected agent of that type may run namespace {demand.namespace!r}", per_agent
    labelled = [a for a in scoped if _EQUAL.passes(demand, a)]
    if not labelled:
        wanted = ", ".join(f"{k}={v}" for k, v in demand.constraints.items())
        noun = "label" if len(demand.constraints) == 1 else "labels"
        return f"no agent has {noun} {wanted}", per_agent
    matching = [a for a in labelled if _EXPRS.passes(demand, a)]
    if not matching:
        # Name the first expression no candidate satisfies (each may hold somewhere, never together).
        for expr in demand.constraint_exprs:
            if not any(expr.matches(a.labels) for a in labelled):
                return f"no agent matches label {expr.describe()}", per_agent
        together = "; ".join(expr.describe() for expr in demand.constraint_exprs)
        return f"no agent matches all of: {together}", per_agent
    sized = [a for a in matching if _CAPACITY.passes(demand, a)]
    if not sized:
        return _never_fits(demand, labelled), per_agent
    return "waiting for free capacity: " + _busy(demand, sized), per_agent


def _never_fits(demand: Demand, agents: Sequence[AgentView]) -> str:
    for name, need in resource_amounts(demand.resources):
        if need <= 0:
            continue
        largest = max(resource_get(a.capacity, name) for a in agents)
        if need > largest + 1e-9:
            return f"not enough {name} on any agent: needs {amount(need)}, the largest agent has {amount(largest)}"
    # Each resource exists somewhere, but never all together on one agent.
    return f"not enough resources on any agent: no single agent has all of {_describe(demand.resources)}"


def _busy(demand: Demand, agents: Sequence[AgentView]) -> str:
    roomy = [a for a in agents if a.outstanding < a.window]
    if not roomy:
        return f"all slots busy on {len(agents)} agent{'s' if len(agents) != 1 else ''}"
    for name, need in resource_amounts(demand.resources):
        if need <= 0:
            continue
        most = max(float(len(a.free_gpu_ids)) if name == "gpu_count" else resource_get(a.free(), name) for a in roomy)
        if need > most + 1e-9:
            return f"needs {name} {amount(need)}, at most {amount(max(0.0, most))} free on any agent"
    return f"no agent has {_describe(demand.resources)} free at once"


def _describe(res: Resources) -> str:
    return ", ".join(f"{name} {amount(v)}" for name, v in resource_amounts(res) if v > 0) or "nothing"
