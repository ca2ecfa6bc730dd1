"""Property: the DRF fairness bound holds in any saturated pass.

No namespace's weighted dominant share exceeds that of another namespace that still has ready
work which would fit, by more than one of its own tasks' weighted dominant share.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from corral.controller.core.fairshare import FairShare, Quota, Usage, capacity_of, dominant
from corral.controller.core.model import Resources
from corral.controller.core.scheduling import PlanView, plan
from tests.unit.test_fairshare import NsTasks
from tests.unit.test_scheduling import view

shapes = st.tuples(st.sampled_from([0.0, 0.5, 1.0, 2.0]), st.sampled_from([0, 512, 1024, 4096]))
loads = st.lists(st.tuples(st.sampled_from([1.0, 2.0, 3.0]), shapes, st.integers(1, 30)), min_size=2, max_size=4)


def _still_fits(resources: Resources, fair: FairShare) -> bool:
    """Whether one more task needing ``resources`` fits in what the pass left free."""
    used = Usage()
    for usage in fair.usage.values():
        used.cpu, used.memory_mb, used.slots = (
            used.cpu + usage.cpu,
            used.memory_mb + usage.memory_mb,
            used.slots + usage.slots,
        )
    total = fair.capacity
    return (
        used.cpu + resources.cpu_cores <= total.cpu
        and used.memory_mb + resources.memory_mb <= total.memory_mb
        and used.slots + 1 <= total.slots
    )


@settings(max_examples=60, deadline=None)
@given(
    loads=loads,
    cpu=st.sampled_from([4.0, 8.0, 16.0]),
    memory=st.sampled_from([8192, 16384]),
    slots=st.integers(2, 24),
)
def test_the_fairness_bound_holds(
    loads: list[tuple[float, tuple[float, int], int]], cpu: float, memory: int, slots: int
) -> None:
    tasks = NsTasks()
    need: dict[str, Resources] = {}
    quotas: dict[str, Quota] = {}
    for n, (weight, (task_cpu, task_memory), count) in enumerate(loads):
        name = f"ns{n}"
        need[name] = Resources(cpu_cores=task_cpu, memory_mb=task_memory)
        quotas[name] = Quota(weight=weight)
        for i in range(count):
            tasks.add(f"{name}-{i}", name, cpu_cores=task_cpu, memory_mb=task_memory)
    # One agent: no fragmentation, so "would still fit" is a property of the totals.
    agent = view("x", cpu=cpu, memory=memory, slots=slots)
    fair = FairShare(capacity_of([agent]), {}, quotas)
    result = plan(PlanView(tasks.queue, tasks.demand, [agent], "binpack", None, fair=fair), now=1.0)
    placed: dict[str, int] = {}
    for p in result.placements:
        ns = p.task_id.split("-")[0]
        placed[ns] = placed.get(ns, 0) + 1
    capacity = fair.capacity
    for i in placed:
        one = Usage()
        one.add(need[i])
        bound = dominant(one, capacity) / quotas[i].weight
        for j in need:
            wants_more = placed.get(j, 0) < sum(1 for t in tasks.demands if t.startswith(f"{j}-"))
            if j == i or not wants_more or not _still_fits(need[j], fair):
                continue
            assert fair.share(i) <= fair.share(j) + bound + 1e-9, (i, j, placed)
