"""The placement pipeline of issue 9: label expressions, scorers, one plan with recorded reasons."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.controller.core.model import AgentState, AttemptState, LabelExpr, Resources, TaskState
from corral.controller.core.placement import (
    FILTERS,
    AgentView,
    Candidates,
    Demand,
    LabelExpressionFilter,
    ScoreContext,
    choose,
    demand_class,
    describe_class,
    explain,
)
from corral.controller.core.placement_scorers import (
    AffinityScorer,
    FreeSlotScorer,
    SpreadScorer,
    StrategyScorer,
)
from corral.controller.core.queues import ReadyQueue
from corral.controller.core.scheduling import PlanView, Steal, plan
from corral.controller.core.state import MachineConfig
from tests.unit.conftest import Sim, task_spec


def agent(
    name: str,
    *,
    labels: dict[str, str] | None = None,
    slots: int = 4,
    outstanding: int = 0,
    cpu: float = 8.0,
    allocated: Resources | None = None,
    state: AgentState = AgentState.CONNECTED,
) -> AgentView:
    return AgentView(
        id=name,
        name=name,
        agent_types=frozenset(("shell",)),
        labels=labels or {},
        state=state,
        capacity=Resources(cpu_cores=cpu, memory_mb=8192),
        allocated=allocated or Resources(),
        slots=slots,
        outstanding=outstanding,
        window=slots,
    )


def need(*exprs: LabelExpr, spread: str = "", affinity: dict[str, str] | None = None, wf: str = "w") -> Demand:
    return Demand("shell", Resources(cpu_cores=1.0), {}, True, "default", exprs, spread, affinity or {}, wf)


# --- label expressions ------------------------------------------------------------------------

ZONE_A = {"zone": "a"}


@pytest.mark.parametrize(
    ("expr", "labels", "reason"),
    [
        (LabelExpr("zone", "in", ("a", "b")), ZONE_A, None),
        (LabelExpr("zone", "in", ("b", "c")), ZONE_A, "label zone in (b, c) required, agent has zone=a"),
        (LabelExpr("zone", "in", ("a",)), {}, "label zone in (a) required, agent has no label zone"),
        (LabelExpr("zone", "not_in", ("b",)), ZONE_A, None),
        (LabelExpr("zone", "not_in", ("b",)), {}, None),  # no label: not in the set
        (LabelExpr("zone", "not_in", ("a", "b")), ZONE_A, "label zone not_in (a, b) required, agent has zone=a"),
        (LabelExpr("gpu", "exists"), {"gpu": "a100"}, None),
        (LabelExpr("gpu", "exists"), ZONE_A, "label gpu exists required, agent has no label gpu"),
        (LabelExpr("spot", "does_not_exist"), ZONE_A, None),
        (LabelExpr("spot", "does_not_exist"), {"spot": "1"}, "label spot does_not_exist required, agent has spot=1"),
    ],
)
def test_label_expression_filter(expr: LabelExpr, labels: dict[str, str], reason: str | None) -> None:
    check = LabelExpressionFilter()
    view = agent("a1", labels=labels)
    assert check.check(need(expr), view) == reason
    assert check.passes(need(expr), view) is (reason is None)


def test_every_expression_must_hold() -> None:
    both = need(LabelExpr("zone", "in", ("a",)), LabelExpr("gpu", "exists"))
    assert LabelExpressionFilter().check(both, agent("x", labels=ZONE_A)) == (
        "label gpu exists required, agent has no label gpu"
    )
    assert LabelExpressionFilter().check(both, agent("y", labels={"zone": "a", "gpu": "t4"})) is None


def test_explain_names_the_expression_no_agent_matches() -> None:
    agents = [agent("x", labels=ZONE_A), agent("y", labels={"zone": "b"})]
    summary, per_agent = explain(need(LabelExpr("zone", "in", ("c",))), agents)
    assert summary == "no agent matches label zone in (c)"
    assert all(reason for _, reason in per_agent)
    # Each expression holds somewhere, never both on one agent.
    split = need(LabelExpr("zone", "in", ("a",)), LabelExpr("zone2", "does_not_exist"))
    agents = [agent("x", labels={"zone": "a", "zone2": "1"}), agent("y", labels={"zone": "b"})]
    assert explain(split, agents)[0] == "no agent matches all of: zone in (a); zone2 does_not_exist"


_labels = st.dictionaries(st.sampled_from(["zone", "gpu", "spot"]), st.sampled_from(["a", "b"]), max_size=3)
_exprs = st.lists(
    st.builds(
        LabelExpr,
        st.sampled_from(["zone", "gpu", "spot"]),
        st.sampled_from(["in", "not_in", "exists", "does_not_exist"]),
        st.lists(st.sampled_from(["a", "b"]), min_size=1, max_size=2).map(tuple),
    ),
    max_size=3,
)


@settings(max_examples=200, deadline=None)
@given(labels=_labels, exprs=_exprs, outstanding=st.integers(0, 5), cpu=st.floats(0, 10))
def test_each_filters_fast_face_agrees_with_its_reason(
    labels: dict[str, str], exprs: list[LabelExpr], outstanding: int, cpu: float
) -> None:
    view = agent("a", labels=labels, outstanding=outstanding, allocated=Resources(cpu_cores=cpu))
    demand = need(*exprs)
    for check in FILTERS:
        assert check.passes(demand, view) is (check.check(demand, view) is None), check.name


def test_static_filters_come_first() -> None:
    flags = [f.static for f in FILTERS]
    assert flags == sorted(flags, reverse=True)
    assert [f.name for f in FILTERS if not f.static] == ["resources", "window"]


def test_candidates_cache_static_verdicts_per_class() -> None:
    x, y = agent("x", labels=ZONE_A), agent("y", labels={"zone": "b"})
    cands = Candidates({"shell": [x, y]})
    wanted = need(LabelExpr("zone", "in", ("a",)))
    assert cands.of(wanted, demand_class(wanted)) == [x]
    # The same class answers from the cache (a changed label would not show within a pass).
    y.labels = ZONE_A
    assert cands.of(wanted, demand_class(wanted)) == [x]


# --- scorers ----------------------------------------------------------------------------------


def test_free_slot_scorer() -> None:
    ctx = ScoreContext({})
    assert FreeSlotScorer().score(need(), agent("a", slots=2, outstanding=1), ctx) == 1.0
    assert FreeSlotScorer().score(need(), agent("a", slots=2, outstanding=2), ctx) == 0.0


def test_strategy_scorer_signs() -> None:
    busy = agent("busy", allocated=Resources(cpu_cores=4.0))
    ctx = ScoreContext({})
    assert StrategyScorer("binpack").score(need(), busy, ctx) > StrategyScorer("binpack").score(need(), agent("i"), ctx)
    assert StrategyScorer("spread").score(need(), busy, ctx) < StrategyScorer("spread").score(need(), agent("i"), ctx)


def test_spread_scorer_counts_the_workflows_tasks_per_label_value() -> None:
    a1, a2, b1 = agent("a1", labels=ZONE_A), agent("a2", labels=ZONE_A), agent("b1", labels={"zone": "b"})
    views = {v.id: v for v in (a1, a2, b1)}
    running = {"w": {"a1": 1, "a2": 2, "b1": 1}, "other": {"b1": 5}}
    ctx = ScoreContext(views, lambda wf: running.get(wf, {}))
    scorer = SpreadScorer()
    assert not scorer.applies(need()) and scorer.applies(need(spread="zone"))
    zone = need(spread="zone")
    assert [scorer.score(zone, v, ctx) for v in (a1, a2, b1)] == [-3.0, -3.0, -1.0]  # other workflows ignored
    per_agent = need(spread="agent")
    assert [scorer.score(per_agent, v, ctx) for v in (a1, a2, b1)] == [-1.0, -2.0, -1.0]
    ctx.placed("w", b1)
    assert scorer.score(zone, b1, ctx) == -2.0 and scorer.score(per_agent, b1, ctx) == -2.0


def test_spread_beats_packing_but_not_a_free_slot() -> None:
    a1 = agent("a1", labels=ZONE_A, allocated=Resources(cpu_cores=4.0))
    b1 = agent("b1", labels={"zone": "b"})
    views = {"a1": a1, "b1": b1}
    ctx = ScoreContext(views, lambda wf: {"a1": 1})
    assert choose(need(), [a1, b1], "binpack", ctx) is a1  # packing alone: the fuller agent
    assert choose(need(spread="zone"), [a1, b1], "binpack", ctx) is b1
    b1.outstanding = b1.slots = 1  # b1's only slot is busy: a task would wait there
    b1.window = 2
    assert choose(need(spread="zone"), [a1, b1], "binpack", ctx) is a1


def test_affinity_scorer_prefers_but_never_requires() -> None:
    plain, ssd = agent("a", labels={}), agent("z", labels={"disk": "ssd", "net": "fast"})
    ctx = ScoreContext({})
    scorer = AffinityScorer()
    wanted = need(affinity={"disk": "ssd", "net": "fast"})
    assert scorer.score(wanted, ssd, ctx) == 2.0 and scorer.score(wanted, plain, ctx) == 0.0
    assert choose(wanted, [plain, ssd]) is ssd  # "a" would win the name tie-break without affinity
    ssd.state = AgentState.DRAINING
    assert choose(wanted, [plain, ssd]) is plain  # soft: the only agent that fits still gets it


# --- the plan ---------------------------------------------------------------------------------


def _queue(demands: dict[str, Demand]) -> ReadyQueue:
    queue = ReadyQueue()
    for i, task_id in enumerate(demands):
        queue.push(task_id, demands[task_id].agent_type, 50, float(i))
    return queue


def test_plan_spreads_a_workflow_over_zones() -> None:
    demands = {f"t{i}": need(spread="zone") for i in range(4)}
    agents = [agent("a1", labels=ZONE_A), agent("b1", labels={"zone": "b"})]
    result = plan(PlanView(_queue(demands), demands.__getitem__, agents, running=lambda wf: {}), now=1.0)
    assert Counter(p.agent_id for p in result.placements) == {"a1": 2, "b1": 2}
    packed = {f"t{i}": need() for i in range(4)}
    result = plan(PlanView(_queue(packed), packed.__getitem__, agents), now=1.0)
    assert Counter(p.agent_id for p in result.placements) == {"a1": 4}


def test_plan_records_one_reason_per_waiting_class() -> None:
    big = Demand("shell", Resources(cpu_cores=6.0))
    huge = Demand("shell", Resources(cpu_cores=64.0))
    demands = {"big1": big, "big2": big, "huge": huge, "small": Demand("shell", Resources(cpu_cores=1.0))}
    agents = [agent("a1", allocated=Resources(cpu_cores=4.0))]
    result = plan(PlanView(_queue(demands), demands.__getitem__, agents), now=5.0)
    assert [p.task_id for p in result.placements] == ["small"]
    assert result.waiting == {
        demand_class(big): "waiting for free capacity: needs cpu_cores 6, at most 4 free on any agent",
        demand_class(huge): "not enough cpu_cores on any agent: needs 64, the largest agent has 8",
    }
    assert result.reason_for(big) == result.waiting[demand_class(big)]
    assert result.reason_for(big, ready_at=6.0).startswith("ready since the last scheduling pass")
    assert result.preemptions == [] and result.steals == []


def test_plan_says_why_tasks_were_not_reached() -> None:
    demands = {f"t{i}": Demand("shell", Resources(cpu_cores=1.0)) for i in range(3)}
    full = plan(PlanView(_queue(demands), demands.__getitem__, [agent("a", outstanding=4)]), now=0.0)
    assert full.placements == [] and full.stopped == "no agent had room for new work"
    assert full.reason_for(demands["t0"]) == "no agent running agent_type 'shell' had room for new work"
    # The agent fills up after two: the third was never looked at.
    filled = plan(PlanView(_queue(demands), demands.__getitem__, [agent("a", slots=2)]), now=0.0)
    assert len(filled.placements) == 2 and filled.waiting == {}
    assert filled.reason_for(demands["t2"]) == (
        "not reached: every agent running agent_type 'shell' filled up in the pass"
    )


def test_plan_stops_after_max_skips_and_says_so() -> None:
    classes = {f"t{i}": Demand("shell", Resources(cpu_cores=100.0 + i)) for i in range(5)}
    classes["small"] = Demand("shell", Resources(cpu_cores=1.0))
    result = plan(PlanView(_queue(classes), classes.__getitem__, [agent("a")], max_skips=3), now=0.0)
    assert result.placements == []
    assert result.stopped == "the pass ended after 3 tasks in a row could not be placed"
    assert result.reason_for(classes["small"]) == f"not reached: {result.stopped}"


def test_describe_class() -> None:
    demand = Demand(
        "shell", Resources(cpu_cores=2.0, memory_mb=512), {"os": "linux"}, True, "team", (LabelExpr("z", "exists"),)
    )
    assert describe_class(demand) == "shell cpu_cores=2 memory_mb=512 os=linux z exists namespace=team"


# --- the machine keeps the last plan; explain and status agree with it --------------------------


def test_explain_reports_the_last_plans_reason_and_a_fresh_evaluation(sim: Sim) -> None:
    sim.hello("a1", cpu=4, slots=8, labels=ZONE_A)
    wf, step = sim.submit(
        [
            task_spec("fits", resources={"cpu_cores": 3}),
            task_spec("waits", resources={"cpu_cores": 3}),
            task_spec("nowhere", constraints={"zone": {"in": ["b"]}}),
        ]
    )
    assert [a.task.name for a in step.assignments("a1")] == ["fits"]
    waits = sim.machine.explain(sim.task(wf, "waits").id, sim.now)
    assert waits.last_plan_reason == "waiting for free capacity: needs cpu_cores 3, at most 1 free on any agent"
    assert waits.last_plan_age_s == 0.0 and waits.demand_class == "shell cpu_cores=3"
    nowhere = sim.machine.explain(sim.task(wf, "nowhere").id, sim.now)
    assert nowhere.last_plan_reason == "no agent matches label zone in (b)" == nowhere.reason
    assert nowhere.unschedulable
    assert sim.machine.plan_reason(sim.task(wf, "waits")) == waits.last_plan_reason
    assert sim.machine.plan_reason(sim.task(wf, "fits")) == ""  # not waiting
    # A zone-b agent joins: the next pass places "nowhere" there; "waits" still does not fit.
    sim.hello("b1", cpu=2, labels={"zone": "b"})
    assert sim.task(wf, "nowhere").state is TaskState.ASSIGNED
    sim.advance(2.0)  # the tick runs a new pass: the recorded reason is that pass's
    again = sim.machine.explain(sim.task(wf, "waits").id, sim.now)
    assert sim.machine.last_plan is not None and sim.machine.last_plan.at == sim.now
    assert again.last_plan_age_s == 0.0
    assert again.last_plan_reason == "waiting for free capacity: needs cpu_cores 3, at most 1 free on any agent"


def test_spread_in_the_machine_counts_running_tasks(make_sim: type[Sim]) -> None:
    sim = make_sim(config=MachineConfig(prefetch=0))
    sim.hello("a1", labels=ZONE_A)
    wf, first = sim.submit([task_spec("t0", spread="zone")], name="one")
    assert len(first.assignments("a1")) == 1
    sim.hello("b1", labels={"zone": "b"})
    # The new workflow's tasks spread on their own; the running one of "one" does not count for them.
    wf2, step = sim.submit([task_spec(f"u{i}", spread="zone") for i in range(4)], name="two")
    assert Counter(a.task.name[0] for a in step.assignments("a1") + step.assignments("b1")) == {"u": 4}
    assert len(step.assignments("a1")) == 2 and len(step.assignments("b1")) == 2
    # A third submission of the same workflow name is still a new workflow: counts are per workflow id.
    wf3, step3 = sim.submit([task_spec("v0", spread="agent"), task_spec("v1", spread="agent")], name="three")
    assert {len(step3.assignments("a1")), len(step3.assignments("b1"))} == {1}
    assert wf != wf2 != wf3


def test_the_ticks_plan_carries_its_take_backs(sim: Sim) -> None:
    sim.hello("a0", slots=1)
    wf, _ = sim.submit([task_spec("first", estimated_duration=0.01), task_spec("second", estimated_duration=0.01)])
    queued = sim.attempt_of(wf, "second")  # prefetched behind "first" on a0
    sim.now += 0.05
    sim.hello("a1", slots=1)  # an idle slot: a0 is asked to give "second" back (two-phase)
    last = sim.machine.last_plan
    assert last is not None and last.at == sim.now
    assert last.steals == [Steal("a0", (queued,))] and last.placements == []


def test_plan_reason_of_a_task_in_retry_backoff(sim: Sim) -> None:
    sim.hello("a1")
    wf, step = sim.submit(
        [task_spec("flaky", retries=1, retry_backoff=30), task_spec("other", resources={"cpu_cores": 64})]
    )
    (first,) = step.assignments("a1")
    sim.finished("a1", first.attempt_id, AttemptState.FAILED)
    flaky = sim.task(wf, "flaky")
    assert flaky.state is TaskState.READY and flaky.not_before is not None
    sim.tick(after=1.0)  # a pass runs (for "other"); "flaky" is still in backoff
    assert sim.machine.plan_reason(flaky) == "in retry backoff during the last pass"
    assert sim.machine.plan_reason(sim.task(wf, "other")).startswith("not enough cpu_cores on any agent")


def test_status_reasons_tell_apart_tasks_that_differ_only_in_label_expressions(sim: Sim) -> None:
    sim.hello("a1", labels=ZONE_A)
    wf, _ = sim.submit(
        [
            task_spec("in-b", constraints={"zone": {"in": ["b"]}}),
            task_spec("in-c", constraints={"zone": {"in": ["c"]}}),
        ]
    )
    tasks = [sim.task(wf, "in-b"), sim.task(wf, "in-c")]
    reasons = {t.name: reason for t, reason, _ in sim.machine.waiting_reasons(tasks, sim.now)}
    assert reasons == {"in-b": "no agent matches label zone in (b)", "in-c": "no agent matches label zone in (c)"}
