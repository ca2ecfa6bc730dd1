"""Weighted Dominant Resource Fairness across namespaces, and per-namespace quotas.

A namespace's **dominant share** is the largest, over cpu, memory, gpu and slots, of its running
usage divided by the cluster's capacity of that resource (every task takes a slot, so a task with
no resources still counts). Its **weighted share** is that divided by its weight (default 1). In a
pass the namespace with the lowest weighted share gets the next placement, and its share grows as
the pass places (DRF progressive filling), so a namespace with ready work and share 0 goes first.
Within one namespace the ready queue's order (aged priority band, then graph score) is kept, so
priorities only order work inside a namespace: setting priority 100 on everything gains a tenant
nothing over the others.

A **quota** caps a namespace's running cpu, memory, gpu and task count; a task that would exceed
it waits with the reason ``namespace X at quota: ...`` and is never placed over it.

The pass (:func:`~corral.controller.core.scheduling.plan`) only asks for a :class:`FairPicker`
when :attr:`PlanView.fair` is set, which the state machine does only when more than one namespace
exists or a quota or weight is set: with one namespace the pass costs exactly what it did.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Container, Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Protocol

from corral.controller.core.model import AgentState, Resources
from corral.controller.core.placement import AgentView, Demand, DemandClass, demand_class
from corral.controller.core.queues import OrderKey, ReadyQueue

__all__ = [
    "FairPicker",
    "FairShare",
    "Quota",
    "QuotaRow",
    "Usage",
    "capacity_of",
    "fair_for",
    "jain_index",
    "quota_of",
    "quota_rows",
]

#: How many tasks a pass may set aside (namespace at quota, class already failed) before it stops
#: looking further: keeps one pass O(placements + this) even behind a huge blocked namespace.
DROP_BUDGET = 4096

# A stream of the pass: (order key, task id, agent type, remaining ids of that agent type).
Stream = tuple[OrderKey, str, str, Iterator[str]]
_EMPTY: Iterator[str] = iter(())


@dataclass(frozen=True, slots=True)
class Quota:
    """A namespace's weight and limits; a limit of 0 means none."""

    weight: float = 1.0
    max_cpu: float = 0.0
    max_memory_mb: int = 0
    max_gpu: int = 0
    max_running: int = 0

    def is_default(self) -> bool:
        """Whether this is weight 1 with no limits (the namespace needs no fairness bookkeeping)."""
        return self == _DEFAULT


_DEFAULT = Quota()


@dataclass(slots=True)
class Usage:
    """Running (or offered) cpu, memory, gpu and slots (task count)."""

    cpu: float = 0.0
    memory_mb: float = 0.0
    gpu: float = 0.0
    slots: float = 0.0

    def add(self, resources: Resources, sign: int = 1) -> None:
        """Count (or with ``sign`` -1, uncount) one task needing ``resources``."""
        self.cpu += sign * resources.cpu_cores
        self.memory_mb += sign * resources.memory_mb
        self.gpu += sign * resources.gpu_count
        self.slots += sign


def capacity_of(agents: Iterable[AgentView]) -> Usage:
    """The cluster's capacity: the sum of the agents' cpu, memory, gpu and slots."""
    total = Usage()
    for agent in agents:
        total.cpu += agent.capacity.cpu_cores
        total.memory_mb += agent.capacity.memory_mb
        total.gpu += agent.capacity.gpu_count
        total.slots += agent.slots
    return total


def dominant(usage: Usage, capacity: Usage) -> float:
    """The largest share of the cluster ``usage`` takes of any resource the cluster has."""
    best = 0.0
    for used, total in (
        (usage.cpu, capacity.cpu),
        (usage.memory_mb, capacity.memory_mb),
        (usage.gpu, capacity.gpu),
        (usage.slots, capacity.slots),
    ):
        if total > 0 and used / total > best:
            best = used / total
    return best


def jain_index(values: Iterable[float]) -> float:
    """Jain's fairness index: 1 when all values are equal, 1/n when one takes everything."""
    xs = list(values)
    if not xs:
        return 1.0
    square = sum(x * x for x in xs)
    return 1.0 if square == 0 else sum(xs) ** 2 / (len(xs) * square)


@dataclass(slots=True)
class FairShare:
    """Capacity, running usage per namespace, and weights/quotas: the fairness inputs of one pass.

    ``usage`` is updated in place by :meth:`charge` as the pass places tasks.
    """

    capacity: Usage
    usage: MutableMapping[str, Usage] = field(default_factory=dict)
    quotas: Mapping[str, Quota] = field(default_factory=dict)

    def quota(self, namespace: str) -> Quota:
        """The namespace's weight and limits (defaults when none were set)."""
        return self.quotas.get(namespace, _DEFAULT)

    def dominant(self, namespace: str) -> float:
        """The namespace's dominant share of the cluster (unweighted)."""
        used = self.usage.get(namespace)
        return 0.0 if used is None else dominant(used, self.capacity)

    def share(self, namespace: str) -> float:
        """The namespace's weighted dominant share: the lowest goes next."""
        weight = self.quota(namespace).weight
        return self.dominant(namespace) / (weight if weight > 0 else 1.0)

    def over_quota(self, namespace: str, resources: Resources) -> str:
        """Why one more task needing ``resources`` would exceed the namespace's quota ("" if not)."""
        quota = self.quotas.get(namespace)
        if quota is None:
            return ""
        used = self.usage.get(namespace) or Usage()
        for limit, now, need, what in (
            (quota.max_running, used.slots, 1, "running tasks"),
            (quota.max_cpu, used.cpu, resources.cpu_cores, "cpu"),
            (quota.max_memory_mb, used.memory_mb, resources.memory_mb, "memory_mb"),
            (quota.max_gpu, used.gpu, resources.gpu_count, "gpu"),
        ):
            if limit and now + need > limit:
                return f"namespace {namespace!r} at quota: {what} {now:g} in use of {limit:g} (task needs {need:g})"
        return ""

    def charge(self, namespace: str, resources: Resources) -> None:
        """Count one more running task of ``namespace`` (a placement of the pass)."""
        used = self.usage.get(namespace)
        if used is None:
            used = self.usage[namespace] = Usage()
        used.add(resources)


class FairPicker:
    """Hands a pass its tasks so the namespace with the lowest weighted share goes next.

    One merged stream per namespace over the pass's agent types (the queue keeps each namespace's
    tasks apart, in queue order), so choosing the next namespace costs O(namespaces) and never
    scans another namespace's backlog. Streams of agent types that filled up in the pass are
    dropped. Tasks of a namespace at quota, and of a demand class that already failed in the pass,
    are set aside (the quota reason recorded in ``waiting``); after :data:`DROP_BUDGET` of those
    the pass ends, so it stays O(placements + budget) behind a huge blocked namespace.
    """

    def __init__(
        self,
        fair: FairShare,
        demand: Callable[[str], Demand],
        queue: ReadyQueue,
        agent_types: Iterable[str],
        now: float,
    ) -> None:
        self.fair = fair
        self._demand = demand
        self._key = queue.order_key
        self._streams: dict[str, list[Stream]] = {}
        for agent_type in agent_types:
            for namespace in queue.partitions(agent_type):
                stream = queue.candidates((agent_type,), now, namespace)
                first = next(stream, None)
                if first is not None:
                    self._streams.setdefault(namespace, []).append((self._key(first), first, agent_type, stream))
        for streams in self._streams.values():
            heapq.heapify(streams)
        self._dropped = 0

    def placed(self, demand: Demand) -> None:
        """The pass placed a task with ``demand``: its namespace's share grows."""
        self.fair.charge(demand.namespace, demand.resources)

    def pop(self, waiting: MutableMapping[DemandClass, str], open_types: Container[str]) -> Stream | None:
        """The next task for the pass, as a stream item with nothing behind it; None when done.

        ``open_types`` are the agent types that still have an agent with room.
        """
        fair = self.fair
        all_streams = self._streams
        while self._dropped < DROP_BUDGET:
            best: str | None = None
            best_share = 0.0
            for namespace, streams in all_streams.items():
                if streams:
                    share = fair.share(namespace)
                    if best is None or share < best_share:
                        best, best_share = namespace, share
            if best is None:
                return None
            streams = all_streams[best]
            _, task_id, agent_type, stream = heapq.heappop(streams)
            if agent_type not in open_types:
                continue  # every agent of the type filled up: drop the stream
            following = next(stream, None)
            if following is not None:
                heapq.heappush(streams, (self._key(following), following, agent_type, stream))
            demand = self._demand(task_id)
            key = demand_class(demand)
            if key in waiting:
                self._dropped += 1  # its class failed already: placements only take capacity away
                continue
            reason = fair.over_quota(best, demand.resources)
            if reason:
                waiting[key] = reason
                self._dropped += 1
                if fair.over_quota(best, Resources()):
                    streams.clear()  # at its task count (or full) quota: none of its tasks can go
                continue
            return ((0.0, 0.0, 0.0, 0), task_id, agent_type, _EMPTY)
        return None


class _NamespaceLike(Protocol):
    weight: float
    max_cpu: float
    max_memory_mb: int
    max_gpu: int
    max_running: int


class _AttemptLike(Protocol):
    task_id: str


class _TaskLike(Protocol):
    namespace: str
    resources: Resources


def quota_of(namespace: _NamespaceLike) -> Quota:
    """The weight and limits set on a namespace record."""
    return Quota(namespace.weight, namespace.max_cpu, namespace.max_memory_mb, namespace.max_gpu, namespace.max_running)


def fair_for(
    namespaces: Mapping[str, _NamespaceLike],
    agents: Iterable[AgentView],
    active: Mapping[str, Iterable[str]],
    attempts: Mapping[str, _AttemptLike],
    tasks: Mapping[str, _TaskLike],
    always: bool = False,
) -> FairShare | None:
    """The fairness inputs of a pass, or None when there is nothing to be fair about.

    None (the pass keeps plain queue order, at no cost) when only one namespace exists and it has
    neither a quota nor a weight, unless ``always`` (reports). O(namespaces + agents + running).
    """
    quotas: dict[str, Quota] = {}
    for name, record in namespaces.items():
        quota = quota_of(record)
        if not quota.is_default():
            quotas[name] = quota
    if len(namespaces) <= 1 and not quotas and not always:
        return None
    usage: dict[str, Usage] = {}
    for held in active.values():
        for attempt_id in held:
            task = tasks[attempts[attempt_id].task_id]
            used = usage.get(task.namespace)
            if used is None:
                used = usage[task.namespace] = Usage()
            used.add(task.resources)
    live = [a for a in agents if a.state is AgentState.CONNECTED]
    return FairShare(capacity_of(live), usage, quotas)


@dataclass(frozen=True, slots=True)
class QuotaRow:
    """One namespace as ``corral quota`` shows it: running usage vs quota, weight and shares."""

    namespace: str
    quota: Quota
    usage: Usage
    dominant_share: float
    weighted_share: float


def quota_rows(
    namespaces: Mapping[str, _NamespaceLike],
    agents: Iterable[AgentView],
    active: Mapping[str, Iterable[str]],
    attempts: Mapping[str, _AttemptLike],
    tasks: Mapping[str, _TaskLike],
) -> list[QuotaRow]:
    """Every namespace's usage, quota and shares, by name. O(namespaces + agents + running)."""
    fair = fair_for(namespaces, agents, active, attempts, tasks, always=True)
    assert fair is not None  # always=True
    return [
        QuotaRow(
            name,
            quota_of(namespaces[name]),
            fair.usage.get(name) or Usage(),
            fair.dominant(name),
            fair.share(name),
        )
        for name in sorted(namespaces)
    ]
