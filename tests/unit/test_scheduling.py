"""The scheduling step: priority order, no over-allocation, no head-of-line blocking, bounded work."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.controller.core.model import AgentState, Resources
from corral.controller.core.placement import AgentView, Demand, feasible
from corral.controller.core.queues import ReadyQueue
from corral.controller.core.scheduling import Placement, PlanView, plan


def placements_of(
    queue: ReadyQueue,
    demand: Callable[[str], Demand],
    agents: Sequence[AgentView],
    now: float,
    strategy: str = "binpack",
    max_skips: int = 256,
) -> list[Placement]:
    """The placements of one pass (most tests here look only at them)."""
    return plan(PlanView(queue, demand, agents, strategy, None, max_skips), now).placements


def view(
    name: str,
    *,
    types: tuple[str, ...] = ("shell",),
    cpu: float = 4.0,
    memory: int = 4096,
    gpus: int = 0,
    slots: int = 4,
    window: int | None = None,
    labels: dict[str, str] | None = None,
    state: AgentState = AgentState.CONNECTED,
) -> AgentView:
    return AgentView(
        id=name,
        name=name,
        agent_types=frozenset(types),
        labels=labels or {},
        state=state,
        capacity=Resources(cpu_cores=cpu, memory_mb=memory, gpu_count=gpus),
        slots=slots,
        window=slots if window is None else window,
        free_gpu_ids=list(range(gpus)),
    )


class Tasks:
    """A queue plus the demands of its tasks, counting how often a demand is looked up."""

    def __init__(self) -> None:
        self.queue = ReadyQueue(ageing_per_s=0.0)
        self.demands: dict[str, Demand] = {}
        self.lookups: Counter[str] = Counter()

    def add(self, task_id: str, priority: int = 50, agent_type: str = "shell", **resources: float) -> None:
        self.demands[task_id] = Demand(agent_type, Resources(**resources), {})  # type: ignore[arg-type]
        self.queue.push(task_id, agent_type, priority, ready_at=float(len(self.demands)))

    def demand(self, task_id: str) -> Demand:
        self.lookups[task_id] += 1
        return self.demands[task_id]


def test_places_in_priority_order_up_to_the_window() -> None:
    tasks = Tasks()
    for i, priority in enumerate([10, 90, 50, 70]):
        tasks.add(f"t{i}", priority)
    placements = placements_of(tasks.queue, tasks.demand, [view("a", slots=3)], now=10.0)
    assert [p.task_id for p in placements] == ["t1", "t3", "t2"]
    assert {p.agent_id for p in placements} == {"a"}


def test_inputs_are_not_mutated() -> None:
    tasks = Tasks()
    tasks.add("t0", cpu_cores=1)
    agents = [view("a")]
    before = agents[0].clone()
    assert len(placements_of(tasks.queue, tasks.demand, agents, now=0.0)) == 1
    assert agents[0] == before
    assert len(tasks.queue) == 1 and "t0" in tasks.queue


def test_no_head_of_line_blocking() -> None:
    tasks = Tasks()
    tasks.add("huge", 100, memory_mb=1_000_000)
    tasks.add("gpu", 90, gpu_count=1)
    tasks.add("small", 1, memory_mb=100)
    placements = placements_of(tasks.queue, tasks.demand, [view("a")], now=0.0)
    assert placements == [Placement("small", "a", ())]


def test_max_skips_bounds_the_walk() -> None:
    tasks = Tasks()
    for i in range(100):
        tasks.add(f"big{i}", 100, memory_mb=1_000_000)
    tasks.add("small", 1)
    assert placements_of(tasks.queue, tasks.demand, [view("a")], now=0.0, max_skips=10) == []
    assert sum(tasks.lookups.values()) == 10
    assert placements_of(tasks.queue, tasks.demand, [view("a")], now=0.0, max_skips=1000) == [
        Placement("small", "a", ())
    ]


def test_stops_when_no_agent_has_room() -> None:
    tasks = Tasks()
    for i in range(1000):
        tasks.add(f"t{i}")
    placements = placements_of(tasks.queue, tasks.demand, [view("a", slots=2), view("b", slots=1)], now=0.0)
    assert len(placements) == 3
    assert Counter(p.agent_id for p in placements) == {"a": 2, "b": 1}
    # Only the placed tasks were looked at: a full cluster does not walk the queue.
    assert sum(tasks.lookups.values()) == 3


def test_types_without_room_are_not_walked() -> None:
    tasks = Tasks()
    for i in range(500):
        tasks.add(f"py{i}", 100, agent_type="python")
    tasks.add("sh", 1)
    python_full = view("p", types=("python",), slots=1)
    python_full.outstanding = 1
    placements = placements_of(tasks.queue, tasks.demand, [python_full, view("s")], now=0.0)
    assert placements == [Placement("sh", "s", ())]
    assert set(tasks.lookups) == {"sh"}


def test_type_dropped_once_its_agents_fill_up() -> None:
    tasks = Tasks()
    for i in range(300):
        tasks.add(f"py{i}", 100, agent_type="python")
    tasks.add("sh", 1)
    placements = placements_of(tasks.queue, tasks.demand, [view("p", types=("python",), slots=2), view("s")], now=0.0)
    assert [p.task_id for p in placements] == ["py0", "py1", "sh"]
    assert sum(tasks.lookups.values()) == 3


def test_gpu_ids_are_never_shared() -> None:
    tasks = Tasks()
    for i in range(4):
        tasks.add(f"g{i}", gpu_count=2)
    placements = placements_of(tasks.queue, tasks.demand, [view("a", gpus=4, slots=8)], now=0.0)
    assert [p.gpu_ids for p in placements] == [(0, 1), (2, 3)]


def test_backoff_respected() -> None:
    queue = ReadyQueue()
    queue.push("later", "shell", 100, ready_at=0.0, not_before=50.0)
    queue.push("now", "shell", 1, ready_at=0.0)
    demands = {"later": Demand("shell"), "now": Demand("shell")}
    agents = [view("a")]
    assert [p.task_id for p in placements_of(queue, demands.__getitem__, agents, now=10.0)] == ["now"]
    assert [p.task_id for p in placements_of(queue, demands.__getitem__, agents, now=50.0)] == ["later", "now"]


def test_binpack_and_spread() -> None:
    tasks = Tasks()
    for i in range(4):
        tasks.add(f"t{i}", cpu_cores=1)
    agents = [view("a", slots=8), view("b", slots=8)]
    packed = placements_of(tasks.queue, tasks.demand, agents, now=0.0)
    assert {p.agent_id for p in packed} == {"a"}
    spread = placements_of(tasks.queue, tasks.demand, agents, now=0.0, strategy="spread")
    assert Counter(p.agent_id for p in spread) == {"a": 2, "b": 2}
    with pytest.raises(ValueError, match="unknown placement strategy"):
        placements_of(tasks.queue, tasks.demand, agents, now=0.0, strategy="nope")


def test_empty_cases() -> None:
    tasks = Tasks()
    assert placements_of(tasks.queue, tasks.demand, [view("a")], now=0.0) == []
    tasks.add("t")
    assert placements_of(tasks.queue, tasks.demand, [], now=0.0) == []
    assert placements_of(tasks.queue, tasks.demand, [view("a", state=AgentState.DRAINING)], now=0.0) == []


_agent_specs = st.lists(
    st.tuples(
        st.sampled_from([("shell",), ("python",), ("shell", "python")]),
        st.integers(1, 8),  # cpu
        st.integers(1, 8).map(lambda m: m * 512),  # memory
        st.integers(0, 4),  # gpus
        st.integers(1, 4),  # slots
        st.integers(0, 2),  # prefetch
        st.integers(0, 3),  # already outstanding
        st.sampled_from([AgentState.CONNECTED, AgentState.CONNECTED, AgentState.DRAINING]),
        st.sampled_from(["eu", "us"]),
    ),
    max_size=5,
)
_task_specs = st.lists(
    st.tuples(
        st.sampled_from(["shell", "python"]),
        st.integers(0, 100),  # priority
        st.integers(0, 4),  # cpu
        st.integers(0, 4).map(lambda m: m * 512),  # memory
        st.sampled_from([0, 0, 0, 1, 2]),  # gpus
        st.sampled_from([None, "eu", "us"]),  # zone constraint
    ),
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(_agent_specs, _task_specs, st.sampled_from(["binpack", "spread"]))
def test_plan_properties(
    agent_specs: list[tuple[tuple[str, ...], int, int, int, int, int, int, AgentState, str]],
    task_specs: list[tuple[str, int, int, int, int, str | None]],
    strategy: str,
) -> None:
    agents: list[AgentView] = []
    for i, (types, cpu, memory, gpus, slots, prefetch, outstanding, state, zone) in enumerate(agent_specs):
        agent = view(
            f"a{i}",
            types=types,
            cpu=cpu,
            memory=memory,
            gpus=gpus,
            slots=slots,
            window=slots + prefetch,
            labels={"zone": zone},
            state=state,
        )
        agent.outstanding = min(outstanding, agent.window)
        agents.append(agent)
    queue = ReadyQueue(ageing_per_s=0.5)
    demands: dict[str, Demand] = {}
    for j, (agent_type, priority, cpu, memory, gpus, wanted_zone) in enumerate(task_specs):
        task_id = f"t{j}"
        demands[task_id] = Demand(
            agent_type,
            Resources(cpu_cores=cpu, memory_mb=memory, gpu_count=gpus),
            {"zone": wanted_zone} if wanted_zone else {},
        )
        queue.push(task_id, agent_type, priority, ready_at=float(j % 7))
    originals = [a.clone() for a in agents]

    placements = placements_of(queue, demands.__getitem__, agents, now=10.0, strategy=strategy, max_skips=10_000)

    assert agents == originals  # inputs untouched
    placed_ids = [p.task_id for p in placements]
    assert len(set(placed_ids)) == len(placed_ids)
    # Priority order: placements follow the queue's order.
    order = list(queue.candidates({"shell", "python"}, 10.0))
    assert placed_ids == [t for t in order if t in set(placed_ids)]

    # A pass fills each agent up to its pass window (the prefetch's slow start), never its whole window.
    by_id = {a.id: a.clone() for a in agents}
    for agent in by_id.values():
        agent.window = agent.pass_window()
    for placement in placements:
        agent = by_id[placement.agent_id]
        need = demands[placement.task_id]
        assert feasible(need, agent) is None, "placed on an agent that could not take it"
        assert set(placement.gpu_ids) <= set(agent.free_gpu_ids)
        assert len(placement.gpu_ids) == need.resources.gpu_count
        taken = agent.allocate(need.resources)
        assert taken == placement.gpu_ids
    for agent in by_id.values():
        free = agent.free()
        assert free.cpu_cores >= 0 and free.memory_mb >= 0 and free.gpu_count >= 0
        assert agent.outstanding <= max(agent.window, next(a for a in agents if a.id == agent.id).outstanding)

    # Maximal: with skips unbounded, every task left over fits nowhere after the placements.
    for task_id in order:
        if task_id not in set(placed_ids):
            assert all(feasible(demands[task_id], agent) is not None for agent in by_id.values())
