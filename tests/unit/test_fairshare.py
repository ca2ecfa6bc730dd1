"""Weighted DRF across namespaces and per-namespace quotas, on hand-computed shares."""

from __future__ import annotations

import pytest

from corral.controller.core.fairshare import FairShare, Quota, Usage, capacity_of, dominant, jain_index
from corral.controller.core.model import Resources
from corral.controller.core.placement import Demand
from corral.controller.core.queues import ReadyQueue
from corral.controller.core.scheduling import PlanView, plan
from tests.unit.test_scheduling import view


class NsTasks:
    """A queue of tasks of several namespaces, in push order."""

    def __init__(self) -> None:
        self.queue = ReadyQueue(ageing_per_s=0.0)
        self.demands: dict[str, Demand] = {}

    def add(self, task_id: str, namespace: str, priority: int = 50, **resources: float) -> None:
        self.demands[task_id] = Demand("shell", Resources(**resources), {}, True, namespace)  # type: ignore[arg-type]
        self.queue.push(task_id, "shell", priority, ready_at=float(len(self.demands)), partition=namespace)

    def demand(self, task_id: str) -> Demand:
        return self.demands[task_id]


def test_dominant_share_is_the_largest_resource_fraction() -> None:
    capacity = Usage(cpu=8, memory_mb=8192, gpu=0, slots=8)
    # 2 of 8 cpu = 0.25, 4096 of 8192 MB = 0.5, 1 of 8 slots: memory dominates; no gpu in the cluster.
    assert dominant(Usage(cpu=2, memory_mb=4096, gpu=0, slots=1), capacity) == 0.5
    # A task with no resources still takes a slot: 3 of 8.
    assert dominant(Usage(slots=3), capacity) == 3 / 8
    fair = FairShare(capacity, {"a": Usage(cpu=4, slots=2)}, {"a": Quota(weight=2.0)})
    assert fair.dominant("a") == 0.5
    assert fair.share("a") == 0.25  # divided by its weight
    assert fair.share("nobody") == 0.0


def test_capacity_sums_agents() -> None:
    total = capacity_of([view("a", cpu=4, memory=1024, slots=2), view("b", cpu=2, memory=512, gpus=1, slots=3)])
    assert (total.cpu, total.memory_mb, total.gpu, total.slots) == (6, 1536, 1, 5)


def test_jain_index() -> None:
    assert jain_index([0.3, 0.3, 0.3]) == pytest.approx(1.0)
    assert jain_index([1.0, 0.0]) == pytest.approx(0.5)


def fair_pass(tasks: NsTasks, agents: list, fair: FairShare):  # type: ignore[no-untyped-def]
    return plan(PlanView(tasks.queue, tasks.demand, agents, "binpack", None, fair=fair), now=100.0)


def test_progressive_filling_alternates_equal_weights_despite_priority() -> None:
    tasks = NsTasks()
    # Namespace a queued first and with priority 100: without fairness it would take every slot.
    for i in range(8):
        tasks.add(f"a{i}", "a", priority=100)
    for i in range(8):
        tasks.add(f"b{i}", "b", priority=0)
    agents = [view("x", slots=4)]
    fair = FairShare(capacity_of(agents), {}, {})
    placed = [p.task_id for p in fair_pass(tasks, agents, fair).placements]
    assert sorted(placed) == ["a0", "a1", "b0", "b1"]
    assert fair.usage["a"].slots == fair.usage["b"].slots == 2
    # Within a namespace the queue order stands.
    assert [t for t in placed if t.startswith("a")] == ["a0", "a1"]


def test_weights_split_slots_in_proportion() -> None:
    tasks = NsTasks()
    for i in range(10):
        tasks.add(f"a{i}", "a")
        tasks.add(f"b{i}", "b")
    agents = [view("x", slots=6)]
    fair = FairShare(capacity_of(agents), {}, {"b": Quota(weight=2.0)})
    placed = [p.task_id for p in fair_pass(tasks, agents, fair).placements]
    assert sum(t.startswith("a") for t in placed) == 2
    assert sum(t.startswith("b") for t in placed) == 4


def test_drf_uses_each_namespaces_dominant_resource() -> None:
    # 9 cpu, 18 GB: a's tasks need <1 cpu, 4 GB> (memory dominant, 2/9 per task), b's <3 cpu, 1 GB>
    # (cpu dominant, 1/3 per task). DRF gives a 3 tasks (share 2/3) and b 2 tasks (share 2/3).
    tasks = NsTasks()
    for i in range(6):
        tasks.add(f"a{i}", "a", cpu_cores=1, memory_mb=4096)
        tasks.add(f"b{i}", "b", cpu_cores=3, memory_mb=1024)
    agents = [view("x", cpu=9, memory=18432, slots=100)]
    fair = FairShare(capacity_of(agents), {}, {})
    placed = [p.task_id for p in fair_pass(tasks, agents, fair).placements]
    assert sum(t.startswith("a") for t in placed) == 3
    assert sum(t.startswith("b") for t in placed) == 2
    assert fair.dominant("a") == pytest.approx(fair.dominant("b"))


def test_a_namespace_with_share_zero_goes_first() -> None:
    tasks = NsTasks()
    # A long backlog of a queued ahead: the pass must not have to walk it to find b's task.
    for i in range(5000):
        tasks.add(f"a{i}", "a")
    tasks.add("b0", "b")
    agents = [view("x", slots=1)]
    # a already runs 3 tasks elsewhere; b runs nothing.
    fair = FairShare(Usage(cpu=4, memory_mb=4096, slots=4), {"a": Usage(slots=3)}, {})
    assert [p.task_id for p in fair_pass(tasks, agents, fair).placements] == ["b0"]


def test_quota_caps_running_tasks_and_gives_the_reason() -> None:
    tasks = NsTasks()
    for i in range(6):
        tasks.add(f"a{i}", "a")
    agents = [view("x", slots=8)]
    fair = FairShare(capacity_of(agents), {"a": Usage(slots=1)}, {"a": Quota(max_running=3)})
    result = fair_pass(tasks, agents, fair)
    assert len(result.placements) == 2  # 1 already running + 2 = the quota of 3
    reason = result.reason_for(tasks.demand("a5"))
    assert reason.startswith("namespace 'a' at quota: running tasks 3 in use of 3")


def test_quota_on_cpu_is_never_exceeded_and_others_still_run() -> None:
    tasks = NsTasks()
    for i in range(5):
        tasks.add(f"a{i}", "a", cpu_cores=1.5)
    for i in range(2):
        tasks.add(f"b{i}", "b", cpu_cores=1)
    agents = [view("x", cpu=16, slots=16)]
    fair = FairShare(capacity_of(agents), {}, {"a": Quota(max_cpu=4)})
    placed = [p.task_id for p in fair_pass(tasks, agents, fair).placements]
    assert sum(t.startswith("a") for t in placed) == 2  # 3 x 1.5 = 4.5 > 4
    assert sum(t.startswith("b") for t in placed) == 2
    assert fair.usage["a"].cpu <= 4
    assert "cpu 3 in use of 4 (task needs 1.5)" in fair_pass(tasks, agents, fair).reason_for(tasks.demand("a4"))


def test_the_queue_walks_one_partition_alone_or_all_merged_in_order() -> None:
    queue = ReadyQueue(ageing_per_s=0.0)
    for i, (ns, priority) in enumerate([("a", 10), ("b", 90), ("a", 50), ("b", 20)]):
        queue.push(f"t{i}", "shell", priority, ready_at=float(i), partition=ns)
    assert queue.partitions("shell") == ["a", "b"]
    assert list(queue.candidates(("shell",), 10.0, "a")) == ["t2", "t0"]
    assert list(queue.candidates(("shell",), 10.0, "b")) == ["t1", "t3"]
    assert list(queue.candidates(("shell",), 10.0)) == ["t1", "t2", "t3", "t0"]
    queue.discard("t2")
    assert list(queue.candidates(("shell",), 10.0, "a")) == ["t0"]


def test_a_namespace_at_its_task_quota_is_not_walked() -> None:
    tasks = NsTasks()
    for i in range(3 * 4096):
        tasks.add(f"a{i}", "a")
    tasks.add("b0", "b")
    agents = [view("x", slots=4)]
    # a already runs its quota of 2 tasks: once b's task is placed, the pass must end, not walk a.
    fair = FairShare(capacity_of(agents), {"a": Usage(slots=2)}, {"a": Quota(max_running=2)})
    looked: list[str] = []

    def demand(task_id: str) -> Demand:
        looked.append(task_id)
        return tasks.demand(task_id)

    result = plan(PlanView(tasks.queue, demand, agents, "binpack", None, fair=fair), now=100.0)
    assert [p.task_id for p in result.placements] == ["b0"]
    assert len(looked) < 10
