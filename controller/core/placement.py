"""Placement: small named filters that each explain a rejection, then a scorer that picks an agent.

The shape follows Nomad's feasibility checkers and the Kubernetes scheduler framework: a chain of
filters (agent state, agent type, namespace, label constraints, capacity, free resources, attempt
window),
each answering ``None`` (fits) or a human reason, then a bin-pack or spread score among the agents
that passed. Because every rejection carries a reason, ``explain`` can tell an operator exactly why
a task is waiting, and whether it will ever run on the current cluster.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from corral.controller.core.model import RESOURCE_NAMES, Agent, AgentState, Resources

__all__ = [
    "FILTERS",
    "STRATEGIES",
    "AgentTypeFilter",
    "AgentView",
    "CapacityFilter",
    "ConstraintsFilter",
    "Demand",
    "Filter",
    "FreeResourcesFilter",
    "NamespaceFilter",
    "Scorer",
    "StateFilter",
    "WindowFilter",
    "choose",
    "explain",
    "feasible",
    "fits_now",
    "rejection",
    "utilisation",
]


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
        """Whether the agent takes new work at all: connected and its window not full."""
        return self.state is AgentState.CONNECTED and not self.held_back and self.outstanding < self.window

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
        )


@dataclass(frozen=True, slots=True)
class Demand:
    """What one task needs from an agent."""

    agent_type: str
    resources: Resources = field(default_factory=Resources)
    constraints: Mapping[str, str] = field(default_factory=dict)
    # Short tasks may be queued on an agent beyond its slots (prefetch); long or unknown ones only
    # take a free slot, so they stay in the controller's queue where priorities still apply.
    prefetchable: bool = True
    namespace: str = "default"

    def window(self, agent: AgentView) -> int:
        """How many outstanding attempts ``agent`` may hold when this task is added."""
        return agent.window if self.prefetchable else min(agent.window, agent.slots)


def _amount(value: float) -> str:
    return f"{value:g}"


def _resource_amounts(res: Resources) -> list[tuple[str, float]]:
    """(name, amount) of every resource dimension, custom ones named ``custom:NAME``."""
    pairs: list[tuple[str, float]] = [(name, float(getattr(res, name))) for name in RESOURCE_NAMES]
    pairs.extend((f"custom:{key}", float(value)) for key, value in res.custom.items())
    return pairs


def _get(res: Resources, name: str) -> float:
    if name.startswith("custom:"):
        return float(res.custom.get(name[7:], 0.0))
    return float(getattr(res, name))


class Filter(Protocol):
    """A feasibility check: ``None`` when the agent passes, else why it cannot take the task."""

    name: ClassVar[str]

    def check(self, demand: Demand, agent: AgentView) -> str | None: ...


class StateFilter:
    """Only connected agents take new work: draining, lost and disconnected ones are skipped."""

    name: ClassVar[str] = "state"

    def check(self, demand: Demand, agent: AgentView) -> str | None:
        if agent.state is not AgentState.CONNECTED:
            return f"agent is {agent.state.value}"
        if agent.held_back:
            return "agent left assignments unacknowledged; held back until it acknowledges again"
        return None


class AgentTypeFilter:
    """The agent must run the task's agent type (``shell``, ``python``, ...)."""

    name: ClassVar[str] = "agent_type"

    def check(self, demand: Demand, agent: AgentView) -> str | None:
        if demand.agent_type in agent.agent_types:
            return None
        runs = ", ".join(sorted(agent.agent_types)) or "none"
        return f"does not run agent_type {demand.agent_type!r} (runs: {runs})"


class NamespaceFilter:
    """An agent scoped to namespaces (by its credential) only runs tasks of those namespaces."""

    name: ClassVar[str] = "namespace"

    def check(self, demand: Demand, agent: AgentView) -> str | None:
        if not agent.namespaces or demand.namespace in agent.namespaces:
            return None
        return f"runs only namespaces {', '.join(sorted(agent.namespaces))}; task is in {demand.namespace!r}"


class ConstraintsFilter:
    """Every ``key=value`` constraint must equal the agent's label of that key."""

    name: ClassVar[str] = "constraints"

    def check(self, demand: Demand, agent: AgentView) -> str | None:
        for key, wanted in demand.constraints.items():
            have = agent.labels.get(key)
            if have == wanted:
                continue
            if have is None:
                return f"label {key}={wanted} required, agent has no label {key}"
            return f"label {key}={wanted} required, agent has {key}={have}"
        return None


class CapacityFilter:
    """Could the task *ever* fit: its requirement against the agent's total capacity."""

    name: ClassVar[str] = "capacity"

    def check(self, demand: Demand, agent: AgentView) -> str | None:
        missing = demand.resources.shortfall(agent.capacity)
        if not missing:
            return None
        return "; ".join(
            f"needs {name} {_amount(_get(demand.resources, name))}, agent has {_amount(_get(agent.capacity, name))}"
            for name in missing
        )


class FreeResourcesFilter:
    """Does the task fit *now*: its requirement against what is not allocated."""

    name: ClassVar[str] = "resources"

    def check(self, demand: Demand, agent: AgentView) -> str | None:
        free = agent.free()
        missing = demand.resources.shortfall(free)
        # The GPU count can agree while the index list does not (a GPU reported lost): trust the ids.
        if "gpu_count" not in missing and demand.resources.gpu_count > len(agent.free_gpu_ids):
            missing.insert(0, "gpu_count")
            free = Resources(gpu_count=len(agent.free_gpu_ids))
        if not missing:
            return None
        return "; ".join(
            f"needs {name} {_amount(_get(demand.resources, name))}, "
            f"{_amount(max(0.0, _get(free, name)))} free of {_amount(_get(agent.capacity, name))}"
            for name in missing
        )


class WindowFilter:
    """The agent's window of outstanding attempts (slots + prefetch) must not be full."""

    name: ClassVar[str] = "window"

    def check(self, demand: Demand, agent: AgentView) -> str | None:
        window = demand.window(agent)
        if agent.outstanding < window:
            return None
        extra = window - agent.slots
        detail = f" ({agent.slots} + {extra} prefetch)" if extra > 0 else ""
        return f"all {window} slots busy{detail}"


# Cheap structural checks first, so the reason given is the most fundamental one.
FILTERS: tuple[Filter, ...] = (
    StateFilter(),
    AgentTypeFilter(),
    NamespaceFilter(),
    ConstraintsFilter(),
    CapacityFilter(),
    FreeResourcesFilter(),
    WindowFilter(),
)


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


def fits_now(demand: Demand, agent: AgentView) -> bool:
    """Exactly ``feasible(demand, agent) is None``, without building reasons: the hot path."""
    if agent.state is not AgentState.CONNECTED or agent.held_back or agent.outstanding >= demand.window(agent):
        return False
    if demand.agent_type not in agent.agent_types:
        return False
    if agent.namespaces and demand.namespace not in agent.namespaces:
        return False
    if demand.constraints:
        labels = agent.labels
        for key, wanted in demand.constraints.items():
            if labels.get(key) != wanted:
                return False
    req, cap, used = demand.resources, agent.capacity, agent.allocated
    # Same tolerance as Resources.shortfall. Free <= capacity, so this also covers the capacity filter.
    if req.cpu_cores > 0 and req.cpu_cores > cap.cpu_cores - used.cpu_cores + 1e-9:
        return False
    if req.memory_mb > 0 and req.memory_mb > cap.memory_mb - used.memory_mb + 1e-9:
        return False
    if req.disk_mb > 0 and req.disk_mb > cap.disk_mb - used.disk_mb + 1e-9:
        return False
    if (
        req.network_bandwidth_mbps > 0
        and req.network_bandwidth_mbps > cap.network_bandwidth_mbps - used.network_bandwidth_mbps + 1e-9
    ):
        return False
    if req.gpu_count > 0 and (
        req.gpu_count > cap.gpu_count - used.gpu_count + 1e-9 or req.gpu_count > len(agent.free_gpu_ids)
    ):
        return False
    for key, need in req.custom.items():
        if need > 0 and need > cap.custom.get(key, 0.0) - used.custom.get(key, 0.0) + 1e-9:
            return False
    return True


# A scorer maps (demand, agent) to a number; the highest wins.
Scorer = Callable[[Demand, AgentView], float]


def _binpack(demand: Demand, agent: AgentView) -> float:
    # Fill the fullest agent that still fits, keeping whole machines free for large tasks.
    return utilisation(agent, demand.resources)


def _spread(demand: Demand, agent: AgentView) -> float:
    return -utilisation(agent, demand.resources)


STRATEGIES: dict[str, Scorer] = {"binpack": _binpack, "spread": _spread}


def choose(demand: Demand, agents: Sequence[AgentView], strategy: str = "binpack") -> AgentView | None:
    """The best agent that can take the task now, or None.

    An agent where the task starts at once (a free slot) beats one where it would wait in the
    agent's prefetch queue. Then ``binpack`` prefers the most allocated agent that fits, ``spread``
    the least; ties go to the agent with the fewest outstanding attempts, then to the lowest name
    (then id).
    """
    scorer = STRATEGIES.get(strategy)
    if scorer is None:
        raise ValueError(f"unknown placement strategy {strategy!r} (known: {', '.join(STRATEGIES)})")
    best: AgentView | None = None
    best_key: tuple[bool, float, int, str, str] | None = None
    for agent in agents:
        if not fits_now(demand, agent):
            continue
        key = (agent.outstanding >= agent.slots, -scorer(demand, agent), agent.outstanding, agent.name, agent.id)
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
    scoped = [a for a in typed if NamespaceFilter().check(demand, a) is None]
    if not scoped:
        return f"no connected agent of that type may run namespace {demand.namespace!r}", per_agent
    labelled = [a for a in scoped if ConstraintsFilter().check(demand, a) is None]
    if not labelled:
        wanted = ", ".join(f"{k}={v}" for k, v in demand.constraints.items())
        noun = "label" if len(demand.constraints) == 1 else "labels"
        return f"no agent has {noun} {wanted}", per_agent
    sized = [a for a in labelled if CapacityFilter().check(demand, a) is None]
    if not sized:
        return _never_fits(demand, labelled), per_agent
    return "waiting for free capacity: " + _busy(demand, sized), per_agent


def _never_fits(demand: Demand, agents: Sequence[AgentView]) -> str:
    for name, need in _resource_amounts(demand.resources):
        if need <= 0:
            continue
        largest = max(_get(a.capacity, name) for a in agents)
        if need > largest + 1e-9:
            return f"not enough {name} on any agent: needs {_amount(need)}, the largest agent has {_amount(largest)}"
    # Each resource exists somewhere, but never all together on one agent.
    return f"not enough resources on any agent: no single agent has all of {_describe(demand.resources)}"


def _busy(demand: Demand, agents: Sequence[AgentView]) -> str:
    roomy = [a for a in agents if a.outstanding < a.window]
    if not roomy:
        return f"all slots busy on {len(agents)} agent{'s' if len(agents) != 1 else ''}"
    for name, need in _resource_amounts(demand.resources):
        if need <= 0:
            continue
        most = max(float(len(a.free_gpu_ids)) if name == "gpu_count" else _get(a.free(), name) for a in roomy)
        if need > most + 1e-9:
            return f"needs {name} {_amount(need)}, at most {_amount(max(0.0, most))} free on any agent"
    return f"no agent has {_describe(demand.resources)} free at once"


def _describe(res: Resources) -> str:
    return ", ".join(f"{name} {_amount(v)}" for name, v in _resource_amounts(res) if v > 0) or "nothing"
