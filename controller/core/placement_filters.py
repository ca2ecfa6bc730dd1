"""The filters of the placement pipeline: each says whether an agent can take a task, and why not.

Every filter has two faces over the same rule: :meth:`Filter.check` returns the human reason for a
rejection (explain, status, the plan's recorded reasons) and :meth:`Filter.passes` answers yes/no
without building strings (the scheduling hot path). Tests hold the two to agree.

``static`` filters look only at things that do not change while one scheduling pass runs (the
agent's state, types, namespaces, labels and total capacity), so a pass evaluates them once per
demand class and agent; the others (free resources, the attempt window) change with every
placement and are checked per placement.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Protocol

from corral.controller.core.model import RESOURCE_NAMES, AgentState, Resources

if TYPE_CHECKING:
    from corral.controller.core.placement import AgentView, Demand

__all__ = [
    "FILTERS",
    "AgentTypeFilter",
    "CapacityFilter",
    "ConstraintsFilter",
    "Filter",
    "FreeResourcesFilter",
    "LabelExpressionFilter",
    "NamespaceFilter",
    "StateFilter",
    "WindowFilter",
    "amount",
    "resource_amounts",
    "resource_get",
]


def amount(value: float) -> str:
    """A resource amount as a user reads it (no trailing ``.0``)."""
    return f"{value:g}"


def resource_amounts(res: Resources) -> list[tuple[str, float]]:
    """(name, amount) of every resource dimension, custom ones named ``custom:NAME``."""
    pairs: list[tuple[str, float]] = [(name, float(getattr(res, name))) for name in RESOURCE_NAMES]
    pairs.extend((f"custom:{key}", float(value)) for key, value in res.custom.items())
    return pairs


def resource_get(res: Resources, name: str) -> float:
    """One dimension of ``res`` by the name :func:`resource_amounts` gives it."""
    if name.startswith("custom:"):
        return float(res.custom.get(name[7:], 0.0))
    return float(getattr(res, name))


class Filter(Protocol):
    """A feasibility check of one agent for one demand."""

    name: ClassVar[str]
    static: ClassVar[bool]

    def check(self, demand: Demand, agent: AgentView) -> str | None:
        """``None`` when the agent passes, else why it cannot take the task."""
        ...

    def passes(self, demand: Demand, agent: AgentView) -> bool:
        """Exactly ``check(demand, agent) is None``, without building the reason."""
        ...


class StateFilter:
    """Only connected agents take new work: draining, lost and disconnected ones are skipped."""

    name: ClassVar[str] = "state"
    static: ClassVar[bool] = True

    def check(self, demand: Demand, agent: AgentView) -> str | None:
        if agent.state is not AgentState.CONNECTED:
            return f"agent is {agent.state.value}"
        if agent.held_back:
            return (
                "agent held back: it left assignments unacknowledged, or its lease ran out; "
                "until it acknowledges or beats again"
            )
        return None

    def passes(self, demand: Demand, agent: AgentView) -> bool:
        return agent.state is AgentState.CONNECTED and not agent.held_back


class AgentTypeFilter:
    """The agent must run the task's agent type (``shell``, ``python``, ...)."""

    name: ClassVar[str] = "agent_type"
    static: ClassVar[bool] = True

    def check(self, demand: Demand, agent: AgentView) -> str | None:
        if demand.agent_type in agent.agent_types:
            return None
        runs = ", ".join(sorted(agent.agent_types)) or "none"
        return f"does not run agent_type {demand.agent_type!r} (runs: {runs})"

    def passes(self, demand: Demand, agent: AgentView) -> bool:
        return demand.agent_type in agent.agent_types


class NamespaceFilter:
    """An agent scoped to namespaces (by its credential) only runs tasks of those namespaces."""

    name: ClassVar[str] = "namespace"
    static: ClassVar[bool] = True

    def check(self, demand: Demand, agent: AgentView) -> str | None:
        if self.passes(demand, agent):
            return None
        return f"runs only namespaces {', '.join(sorted(agent.namespaces))}; task is in {demand.namespace!r}"

    def passes(self, demand: Demand, agent: AgentView) -> bool:
        return not agent.namespaces or demand.namespace in agent.namespaces


class ConstraintsFilter:
    """Every ``key=value`` constraint must equal the agent's label of that key."""

    name: ClassVar[str] = "constraints"
    static: ClassVar[bool] = True

    def check(self, demand: Demand, agent: AgentView) -> str | None:
        for key, wanted in demand.constraints.items():
            have = agent.labels.get(key)
            if have == wanted:
                continue
            if have is None:
                return f"label {key}={wanted} required, agent has no label {key}"
            return f"label {key}={wanted} required, agent has {key}={have}"
        return None

    def passes(self, demand: Demand, agent: AgentView) -> bool:
        labels = agent.labels
        return all(labels.get(key) == wanted for key, wanted in demand.constraints.items())


class LabelExpressionFilter:
    """Every label expression (``in``, ``not_in``, ``exists``, ``does_not_exist``) must hold."""

    name: ClassVar[str] = "label_expressions"
    static: ClassVar[bool] = True

    def check(self, demand: Demand, agent: AgentView) -> str | None:
        for expr in demand.constraint_exprs:
            if expr.matches(agent.labels):
                continue
            have = agent.labels.get(expr.key)
            has = f"agent has {expr.key}={have}" if have is not None else f"agent has no label {expr.key}"
            return f"label {expr.describe()} required, {has}"
        return None

    def passes(self, demand: Demand, agent: AgentView) -> bool:
        labels = agent.labels
        return all(expr.matches(labels) for expr in demand.constraint_exprs)


class CapacityFilter:
    """Could the task *ever* fit: its requirement against the agent's total capacity."""

    name: ClassVar[str] = "capacity"
    static: ClassVar[bool] = True

    def check(self, demand: Demand, agent: AgentView) -> str | None:
        missing = demand.resources.shortfall(agent.capacity)
        if not missing:
            return None
        return "; ".join(
            f"needs {name} {amount(resource_get(demand.resources, name))}, "
            f"agent has {amount(resource_get(agent.capacity, name))}"
            for name in missing
        )

    def passes(self, demand: Demand, agent: AgentView) -> bool:
        return not demand.resources.shortfall(agent.capacity)


class FreeResourcesFilter:
    """Does the task fit *now*: its requirement against what is not allocated."""

    name: ClassVar[str] = "resources"
    static: ClassVar[bool] = False

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
            f"needs {name} {amount(resource_get(demand.resources, name))}, "
            f"{amount(max(0.0, resource_get(free, name)))} free of {amount(resource_get(agent.capacity, name))}"
            for name in missing
        )

    def passes(self, demand: Demand, agent: AgentView) -> bool:
        req, cap, used = demand.resources, agent.capacity, agent.allocated
        # Field by field (same tolerance as Resources.shortfall): this runs for every candidate
        # agent of every placement, and building Resources objects dominated a scheduling step.
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


class WindowFilter:
    """The agent's window of outstanding attempts (slots + prefetch) must not be full."""

    name: ClassVar[str] = "window"
    static: ClassVar[bool] = False

    def check(self, demand: Demand, agent: AgentView) -> str | None:
        window = demand.window(agent)
        if agent.outstanding < window:
            return None
        extra = window - agent.slots
        what = "prefetch" if demand.prefetchable else "ending soon"
        detail = f" ({agent.slots} + {extra} {what})" if extra > 0 else ""
        return f"all {window} slots busy{detail}"

    def passes(self, demand: Demand, agent: AgentView) -> bool:
        return agent.outstanding < demand.window(agent)


# Cheap structural checks first, so the reason given is the most fundamental one. Static filters
# come before dynamic ones: a pass caches the static verdicts per demand class.
FILTERS: tuple[Filter, ...] = (
    StateFilter(),
    AgentTypeFilter(),
    NamespaceFilter(),
    ConstraintsFilter(),
    LabelExpressionFilter(),
    CapacityFilter(),
    FreeResourcesFilter(),
    WindowFilter(),
)
