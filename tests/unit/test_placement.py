"""Placement filters, scorers and explanations: every rejection names what is missing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.controller.core.model import Agent, AgentState, Inventory, Resources
from corral.controller.core.placement import (
    FILTERS,
    AgentView,
    Demand,
    choose,
    explain,
    feasible,
    fits_now,
    rejection,
    utilisation,
)


def agent(
    name: str,
    *,
    types: tuple[str, ...] = ("shell",),
    labels: dict[str, str] | None = None,
    state: AgentState = AgentState.CONNECTED,
    cpu: float = 8.0,
    memory: int = 8192,
    gpus: int = 0,
    slots: int = 4,
    window: int | None = None,
    allocated: Resources | None = None,
    outstanding: int = 0,
) -> AgentView:
    return AgentView(
        id=f"id-{name}",
        name=name,
        agent_types=frozenset(types),
        labels=labels or {},
        state=state,
        capacity=Resources(cpu_cores=cpu, memory_mb=memory, gpu_count=gpus),
        allocated=allocated or Resources(),
        slots=slots,
        outstanding=outstanding,
        window=slots if window is None else window,
        free_gpu_ids=list(range(gpus)),
    )


def demand(agent_type: str = "shell", constraints: dict[str, str] | None = None, **resources: float) -> Demand:
    return Demand(agent_type, Resources(**resources), constraints or {})  # type: ignore[arg-type]


def test_filters_have_distinct_names() -> None:
    names = [f.name for f in FILTERS]
    assert names == [
        "state",
        "agent_type",
        "namespace",
        "constraints",
        "label_expressions",
        "capacity",
        "resources",
        "window",
    ]


@pytest.mark.parametrize("state", [AgentState.DRAINING, AgentState.LOST, AgentState.DISCONNECTED])
def test_only_connected_agents_take_work(state: AgentState) -> None:
    reason = feasible(demand(), agent("a", state=state))
    assert reason == f"agent is {state.value}"
    assert state.value in (reason or "")


def test_agent_type_reason() -> None:
    assert feasible(demand("python"), agent("a", types=("shell",))) == (
        "does not run agent_type 'python' (runs: shell)"
    )


def test_constraint_reasons() -> None:
    d = demand(constraints={"zone": "eu"})
    assert feasible(d, agent("a", labels={"zone": "us"})) == "label zone=eu required, agent has zone=us"
    assert feasible(d, agent("b")) == "label zone=eu required, agent has no label zone"
    assert feasible(d, agent("c", labels={"zone": "eu", "x": "y"})) is None


def test_capacity_reason_names_the_resource() -> None:
    assert feasible(demand(gpu_count=4), agent("a")) == "needs gpu_count 4, agent has 0"
    assert rejection(demand(memory_mb=10000), agent("a")) == (
        "capacity",
        "needs memory_mb 10000, agent has 8192",
    )
    custom = Demand("shell", Resources(custom={"licence": 1.0}), {})
    assert feasible(custom, agent("a")) == "needs custom:licence 1, agent has 0"


def test_free_resources_reason_names_the_resource() -> None:
    busy = agent("a", allocated=Resources(cpu_cores=2.0, memory_mb=7168))
    assert feasible(demand(memory_mb=4096), busy) == "needs memory_mb 4096, 1024 free of 8192"
    assert feasible(demand(cpu_cores=6.5), busy) == "needs cpu_cores 6.5, 6 free of 8"
    assert feasible(demand(cpu_cores=6.0, memory_mb=1024), busy) is None


def test_window_reason() -> None:
    assert feasible(demand(), agent("a", slots=2, outstanding=2)) == "all 2 slots busy"
    assert feasible(demand(), agent("a", slots=2, window=3, outstanding=3)) == ("all 3 slots busy (2 + 1 prefetch)")
    assert feasible(demand(), agent("a", slots=2, window=3, outstanding=2)) is None


def test_allocate_release_and_clone() -> None:
    view = agent("a", gpus=4)
    copy = view.clone()
    ids = view.allocate(Resources(cpu_cores=2, memory_mb=1000, gpu_count=2))
    assert ids == (0, 1)
    assert view.free() == Resources(cpu_cores=6.0, memory_mb=7192, gpu_count=2)
    assert view.outstanding == 1 and view.free_gpu_ids == [2, 3]
    # The clone is independent.
    assert copy.outstanding == 0 and copy.free_gpu_ids == [0, 1, 2, 3]
    assert copy.allocated == Resources()
    assert view.allocate(Resources(gpu_count=1)) == (2,)
    view.release(Resources(cpu_cores=2, memory_mb=1000, gpu_count=2), ids)
    assert view.free_gpu_ids == [0, 1, 3]
    assert view.outstanding == 1
    with pytest.raises(ValueError, match="free GPU ids"):
        view.allocate(Resources(gpu_count=4))


def test_gpu_ids_are_trusted_over_counts() -> None:
    view = agent("a", gpus=2)
    view.free_gpu_ids = [1]  # one GPU id missing although the count says 2 are free
    assert feasible(demand(gpu_count=2), view) == "needs gpu_count 2, 1 free of 2"


def test_view_of_registered_agent() -> None:
    registered = Agent(
        id="ag1",
        name="box",
        agent_types=("shell", "python"),
        labels={"zone": "eu"},
        inventory=Inventory(Resources(cpu_cores=4, memory_mb=2048, gpu_count=2), slots=3, gpu_ids=()),
    )
    view = AgentView.of(registered, allocated=Resources(gpu_count=1), outstanding=1, used_gpu_ids=(0,), prefetch=2)
    assert view.agent_types == frozenset({"shell", "python"})
    assert view.window == 5 and view.slots == 3
    assert view.free_gpu_ids == [1]
    assert view.free().gpu_count == 1
    with_ids = AgentView.of(Agent(id="ag2", name="b", inventory=Inventory(Resources(gpu_count=2), gpu_ids=(4, 7))))
    assert with_ids.free_gpu_ids == [4, 7]


def test_binpack_prefers_most_allocated_that_fits() -> None:
    empty = agent("empty")
    half = agent("half", allocated=Resources(cpu_cores=4, memory_mb=4096), outstanding=1)
    full = agent("full", allocated=Resources(cpu_cores=7.5, memory_mb=8000), outstanding=1)
    d = demand(cpu_cores=1, memory_mb=512)
    assert choose(d, [empty, half, full]) is half
    assert choose(d, [empty, half, full], "spread") is empty


def test_ties_go_to_fewest_outstanding_then_name() -> None:
    busy = agent("a", outstanding=2)
    idle_b = agent("b")
    idle_c = agent("c")
    assert choose(demand(), [busy, idle_c, idle_b]) is idle_b
    assert choose(demand(), [busy, idle_c, idle_b], "spread") is idle_b


def test_choose_none_and_unknown_strategy() -> None:
    assert choose(demand("python"), [agent("a")]) is None
    assert choose(demand(), []) is None
    with pytest.raises(ValueError, match="unknown placement strategy"):
        choose(demand(), [agent("a")], "random")


def test_utilisation() -> None:
    assert utilisation(agent("a")) == 0.0
    assert utilisation(agent("a"), Resources(cpu_cores=4)) == pytest.approx(0.25)
    no_capacity = AgentView("z", "z", frozenset(), {}, AgentState.CONNECTED, Resources())
    assert utilisation(no_capacity) == 0.0


def test_explain_no_agents_connected() -> None:
    summary, per_agent = explain(demand(), [agent("a", state=AgentState.DRAINING)])
    assert summary == "no agents connected"
    assert per_agent == [("id-a", "agent is draining")]
    assert explain(demand(), [])[0] == "no agents connected"


def test_explain_no_agent_of_type() -> None:
    agents = [agent("a"), agent("b", types=("python",), state=AgentState.LOST)]
    summary, per_agent = explain(demand("python"), agents)
    assert summary == "no connected agent runs agent_type 'python'"
    assert [reason for _, reason in per_agent] == [
        "does not run agent_type 'python' (runs: shell)",
        "agent is lost",
    ]


def test_explain_no_agent_has_label() -> None:
    agents = [agent("a", labels={"zone": "us"}), agent("b")]
    assert explain(demand(constraints={"zone": "eu"}), agents)[0] == "no agent has label zone=eu"
    two = demand(constraints={"zone": "eu", "disk": "ssd"})
    assert explain(two, agents)[0] == "no agent has labels zone=eu, disk=ssd"


def test_explain_never_fits_names_the_resource() -> None:
    agents = [agent("small", memory=1024), agent("big", memory=4096)]
    summary, per_agent = explain(demand(memory_mb=8192), agents)
    assert summary == "not enough memory_mb on any agent: needs 8192, the largest agent has 4096"
    assert per_agent == [
        ("id-small", "needs memory_mb 8192, agent has 1024"),
        ("id-big", "needs memory_mb 8192, agent has 4096"),
    ]
    assert explain(demand(gpu_count=4), agents)[0] == (
        "not enough gpu_count on any agent: needs 4, the largest agent has 0"
    )


def test_explain_never_fits_in_combination() -> None:
    agents = [agent("cpu-box", cpu=32, memory=1024), agent("mem-box", cpu=2, memory=65536)]
    summary, _ = explain(demand(cpu_cores=16, memory_mb=16384), agents)
    assert summary.startswith("not enough resources on any agent")
    assert "cpu_cores 16" in summary and "memory_mb 16384" in summary


def test_explain_waiting_for_free_capacity() -> None:
    busy = agent("a", allocated=Resources(memory_mb=7168), outstanding=1)
    summary, per_agent = explain(demand(memory_mb=4096), [busy])
    assert summary == "waiting for free capacity: needs memory_mb 4096, at most 1024 free on any agent"
    assert per_agent == [("id-a", "needs memory_mb 4096, 1024 free of 8192")]

    full = [agent("a", slots=1, outstanding=1), agent("b", slots=2, outstanding=2)]
    assert explain(demand(), full)[0] == "waiting for free capacity: all slots busy on 2 agents"


def test_explain_placeable_now() -> None:
    agents = [agent("a", state=AgentState.DRAINING), agent("b")]
    summary, per_agent = explain(demand(), agents)
    assert summary == ""
    assert per_agent == [("id-a", "agent is draining"), ("id-b", "")]


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(list(AgentState)),
    st.sets(st.sampled_from(["shell", "python"])),
    st.dictionaries(st.sampled_from(["zone", "disk"]), st.sampled_from(["a", "b"]), max_size=2),
    st.integers(0, 4),  # capacity cpu
    st.integers(0, 4),  # allocated cpu (may exceed capacity after a shrink)
    st.integers(0, 3),  # gpus
    st.integers(0, 3),  # free gpu ids
    st.integers(0, 3),  # custom capacity
    st.integers(1, 3),  # window
    st.integers(0, 3),  # outstanding
    st.sampled_from(["shell", "python"]),
    st.dictionaries(st.sampled_from(["zone", "disk"]), st.sampled_from(["a", "b"]), max_size=2),
    st.integers(0, 5),  # needed cpu
    st.integers(0, 3),  # needed gpus
    st.integers(0, 3),  # needed custom
)
def test_fits_now_agrees_with_the_filters(
    state: AgentState,
    types: set[str],
    labels: dict[str, str],
    cpu: int,
    used_cpu: int,
    gpus: int,
    free_ids: int,
    custom: int,
    window: int,
    outstanding: int,
    agent_type: str,
    constraints: dict[str, str],
    need_cpu: int,
    need_gpus: int,
    need_custom: int,
) -> None:
    view = AgentView(
        id="a",
        name="a",
        agent_types=frozenset(types),
        labels=labels,
        state=state,
        capacity=Resources(cpu_cores=cpu, gpu_count=gpus, custom={"lic": float(custom)}),
        allocated=Resources(cpu_cores=used_cpu),
        slots=window,
        outstanding=outstanding,
        window=window,
        free_gpu_ids=list(range(min(free_ids, gpus))),
    )
    need = Demand(
        agent_type, Resources(cpu_cores=need_cpu, gpu_count=need_gpus, custom={"lic": float(need_custom)}), constraints
    )
    assert fits_now(need, view) == (feasible(need, view) is None)
