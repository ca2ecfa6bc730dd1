"""Deadlines: parsing, latest-finish propagation, admission verdicts, least-slack order, at-risk boost.

The machine-level tests run on the fake clock of :class:`Sim` (``START`` = 1000 s).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from bench.workloads.deadline import hit_rates, mix
from corral.controller.core.deadlines import (
    Verdict,
    admit,
    critical_path,
    latest_finishes,
    parse_deadline,
    resolve,
)
from corral.controller.core.machine import MachineConfig
from corral.controller.core.model import TaskState, WorkflowState
from corral.controller.core.queues import ReadyQueue
from corral.controller.errors import FailedPrecondition, InvalidArgument
from corral.controller.sdk.builder import Workflow
from corral.controller.sdk.errors import InvalidArgumentError
from corral.controller.sim import Fleet, Simulator
from corral.controller.spec import parse_workflow
from tests.unit.conftest import Sim, task_spec

# --- parsing ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [(600, 600.0), (1.5, 1.5), ("90", 90.0), ("10m", 600.0), ("1.5h", 5400.0), ("2d", 172800.0), ("250ms", 0.25)],
)
def test_relative_deadlines(text: object, seconds: float) -> None:
    assert parse_deadline(text) == (seconds, True)


def test_absolute_deadlines_need_a_zone() -> None:
    utc = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()
    assert parse_deadline("2026-01-02T03:04:05Z") == (utc, False)
    assert parse_deadline("2026-01-02T05:04:05+02:00") == (utc, False)
    with pytest.raises(ValueError, match="no zone"):
        parse_deadline("2026-01-02T03:04:05")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (math.nan, "finite"),
        (math.inf, "finite"),
        (0, "more than 0"),
        (-5, "more than 0"),
        ("-5m", "not a deadline"),
        (True, "RFC 3339"),
        ([1], "RFC 3339"),
        ("soon", "not a deadline"),
        ("nan", "not a deadline"),
        (400 * 86400, "at most"),
    ],
)
def test_bad_deadlines(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_deadline(value)


def test_resolve_at_submit() -> None:
    assert resolve(60.0, True, 1000.0) == 1060.0
    assert resolve(2000.0, False, 1000.0) == 2000.0
    with pytest.raises(ValueError, match="already past"):
        resolve(999.0, False, 1000.0)


def test_bad_deadlines_in_a_workflow_file_name_the_field() -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_workflow({"name": "w", "deadline": "2026-01-02T03:04:05", "tasks": [task_spec("a", deadline="x")]})
    paths = {v.field for v in caught.value.violations}
    assert paths == {"deadline", "tasks[0].deadline"}
    with pytest.raises(InvalidArgument) as caught:
        parse_workflow({"name": "w", "deadline_policy": "maybe", "tasks": [task_spec("a")]})
    assert [v.field for v in caught.value.violations] == ["deadline_policy"]


# --- latest finish and critical path ------------------------------------------------------------


def test_latest_finish_propagates_up_a_hand_dag() -> None:
    # a -> b -> d, a -> c -> d; c has its own, tighter deadline.
    parents = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}
    expected = {"a": 10.0, "b": 20.0, "c": 5.0, "d": 30.0}
    # Given out of topological order on purpose: the pass sorts them itself.
    latest = latest_finishes(["d", "c", "b", "a"], parents, {"c": 50.0}, expected, 100.0)
    assert latest["d"] == 100.0  # the workflow's deadline
    assert latest["b"] == 70.0  # d must start by 100 - 30
    assert latest["c"] == 50.0  # its own deadline is tighter than 70
    assert latest["a"] == 45.0  # min(70 - 20, 50 - 5)
    assert critical_path(["a", "b", "c", "d"], parents, expected) == 60.0


def test_no_deadline_means_unbounded() -> None:
    latest = latest_finishes(["a", "b"], {"b": ["a"]}, {}, {"a": 1.0, "b": 1.0}, None)
    assert latest == {"a": math.inf, "b": math.inf}


# --- admission ----------------------------------------------------------------------------------


def test_admission_verdicts() -> None:
    # Deadline 100 s out; critical path 50 s; 8 slots.
    assert admit(0.0, 100.0, 50.0, 0.0, 8).verdict is Verdict.FEASIBLE
    # 320 s of work ahead over 8 slots: 40 s wait, finish at 90, slack 10 < 10% of 100 -> at risk.
    at_risk = admit(0.0, 100.0, 50.0, 330.0, 8)
    assert at_risk.verdict is Verdict.AT_RISK and at_risk.wait_s == pytest.approx(41.25)
    late = admit(0.0, 100.0, 50.0, 800.0, 8)
    assert late.verdict is Verdict.INFEASIBLE and late.slack_s == pytest.approx(-50.0)
    assert "infeasible" in late.message() and "critical path 50.0s" in late.message()
    assert admit(0.0, 100.0, 50.0, 0.0, 0).verdict is Verdict.INFEASIBLE  # no slots: no promise


def _agent(sim: Sim, slots: int = 1) -> None:
    sim.hello("a1", slots=slots)


def test_reject_policy_refuses_an_infeasible_workflow_and_stores_nothing(make_sim: Callable[..., Sim]) -> None:
    sim = make_sim()
    _agent(sim)
    before = (dict(sim.machine.workflows), dict(sim.machine.tasks), len(sim.machine.queue))
    with pytest.raises(FailedPrecondition, match=r"deadline cannot be met.*critical path 500.0s"):
        sim.submit(
            [task_spec("a", estimated_duration=200), task_spec("b", "a", estimated_duration=300)],
            deadline="5m",
            deadline_policy="reject",
        )
    assert (dict(sim.machine.workflows), dict(sim.machine.tasks), len(sim.machine.queue)) == before
    assert sim.machine.take_changes().events == []


def test_warn_policy_accepts_and_logs_the_verdict(make_sim: Callable[..., Sim]) -> None:
    sim = make_sim()
    _agent(sim)
    wf, step = sim.submit([task_spec("a", estimated_duration=600)], deadline="5m")
    workflow = sim.machine.workflows[wf]
    assert workflow.deadline == 1000.0 + 300.0
    assert workflow.deadline_verdict == "infeasible"
    kinds = [e.kind for e in step.changes.events]
    assert "deadline_admission" in kinds
    entry = next(e for e in step.changes.events if e.kind == "deadline_admission")
    assert "infeasible" in entry.reason


def test_best_effort_is_silent(make_sim: Callable[..., Sim]) -> None:
    sim = make_sim()
    _agent(sim)
    wf, step = sim.submit([task_spec("a", estimated_duration=600)], deadline="5m", deadline_policy="best_effort")
    assert sim.machine.workflows[wf].deadline_verdict == ""
    assert "deadline_admission" not in [e.kind for e in step.changes.events]


def test_work_queued_ahead_makes_a_deadline_at_risk(make_sim: Callable[..., Sim]) -> None:
    sim = make_sim()
    _agent(sim, slots=1)
    wf, _ = sim.submit([task_spec("alone", estimated_duration=50)], name="first", deadline="100")
    assert sim.machine.workflows[wf].deadline_verdict == "feasible"
    # 9 more 50 s tasks at the same priority: one runs, 8 queue (400 s ahead on one slot).
    sim.submit([task_spec(f"t{i}", estimated_duration=50) for i in range(9)], name="busy")
    wf, _ = sim.submit([task_spec("late", estimated_duration=50)], name="second", deadline="500")
    verdict = sim.machine.workflows[wf].deadline_verdict
    # Ahead: the 9 queued 50 s tasks (the running one is not counted): wait 450 s on one slot,
    # finish 500 s out: slack 0, under 10% of the 500 s horizon.
    assert verdict == "at_risk"
    # Lower-priority work does not count as ahead.
    wf, _ = sim.submit([task_spec("top", estimated_duration=50, priority=90)], name="third", deadline="500")
    assert sim.machine.workflows[wf].deadline_verdict == "feasible"


def test_past_or_bad_deadline_at_submit_is_invalid_argument(make_sim: Callable[..., Sim]) -> None:
    sim = make_sim()
    with pytest.raises(InvalidArgument) as caught:
        sim.submit([task_spec("a")], deadline="1970-01-01T00:00:10Z")
    assert [v.field for v in caught.value.violations] == ["spec.deadline"]
    with pytest.raises(InvalidArgument) as caught:
        sim.submit([task_spec("a"), task_spec("b", deadline="1970-01-01T00:00:10+00:00")])
    assert [v.field for v in caught.value.violations] == ["spec.tasks[1].deadline"]
    assert sim.machine.workflows == {}


# --- queue order --------------------------------------------------------------------------------


def test_least_slack_first_within_a_band() -> None:
    queue = ReadyQueue(ageing_per_s=0.0)
    queue.push("none", "shell", 50, 0.0, score=100.0)
    queue.push("late", "shell", 50, 0.0, score=5.0, latest_start=900.0)
    queue.push("soon", "shell", 50, 0.0, score=1.0, latest_start=100.0)
    queue.push("high", "shell", 60, 0.0)  # a higher band beats any slack
    assert list(queue.candidates(["shell"], 0.0)) == ["high", "soon", "late", "none"]
    assert queue.order_key("soon") < queue.order_key("late") < queue.order_key("none")


def _blocked(sim: Sim) -> str:
    """One agent with one slot, taken by a running task: everything else queues. Its attempt id."""
    sim.hello("a1", slots=1)
    _, step = sim.submit([task_spec("blocker")], name="blocker", priority=100)
    attempt = step.assignments("a1")[0].attempt_id
    sim.started("a1", attempt)
    return attempt


def test_edf_in_the_machine_places_the_tighter_deadline_first(make_sim: Callable[..., Sim]) -> None:
    sim = make_sim(config=MachineConfig(ageing_per_s=0.0))
    blocker = _blocked(sim)
    loose, _ = sim.submit([task_spec("x", estimated_duration=10)], name="loose", deadline="1h")
    plain, _ = sim.submit([task_spec("y", estimated_duration=10)], name="plain")
    tight, _ = sim.submit([task_spec("z", estimated_duration=10)], name="tight", deadline="30m")
    step = sim.finished("a1", blocker)
    placed = [a.task.workflow_id for a in step.assignments("a1")]
    assert placed == [tight]
    assert sim.task(loose, "x").state is TaskState.READY and sim.task(plain, "y").state is TaskState.READY


def test_deadline_scheduling_off_keeps_fifo_and_skips_admission(make_sim: Callable[..., Sim]) -> None:
    sim = make_sim(config=MachineConfig(ageing_per_s=0.0, deadline_scheduling=False))
    blocker = _blocked(sim)
    first, _ = sim.submit([task_spec("x", estimated_duration=10)], name="first", deadline="1h")
    sim.submit([task_spec("z", estimated_duration=10)], name="tight", deadline="30m")
    assert sim.machine.workflows[first].deadline_verdict == ""
    step = sim.finished("a1", blocker)
    assert [a.task.workflow_id for a in step.assignments("a1")] == [first]


def test_at_risk_task_gains_a_band(make_sim: Callable[..., Sim]) -> None:
    sim = make_sim(config=MachineConfig(ageing_per_s=0.0, at_risk_boost=30))
    blocker = _blocked(sim)
    # Priority 60 without a deadline is a band above priority 50 with one...
    high, _ = sim.submit([task_spec("h", estimated_duration=10)], name="high", priority=60)
    urgent, _ = sim.submit([task_spec("u", estimated_duration=10)], name="urgent", priority=50, deadline="1000")
    queue = sim.machine.queue
    h, u = sim.task(high, "h").id, sim.task(urgent, "u").id
    assert queue.order_key(h) < queue.order_key(u)
    # ...until u's slack falls under 10% of its 1000 s horizon: latest start 1990, at risk from 1890.
    sim.advance(880.0)
    assert queue.order_key(h) < queue.order_key(u)
    sim.advance(20.0)
    assert queue.order_key(u) < queue.order_key(h)
    assert queue.entry(u) is not None and queue.entry(u).priority == 80  # type: ignore[union-attr]
    step = sim.finished("a1", blocker)
    assert [a.task.id for a in step.assignments("a1")] == [u]


def test_missed_deadline_is_logged_and_the_workflow_keeps_running(make_sim: Callable[..., Sim]) -> None:
    sim = make_sim()
    sim.hello("a1", slots=1)
    wf, step = sim.submit([task_spec("slow", estimated_duration=10)], deadline="60")
    attempt = step.assignments("a1")[0].attempt_id
    sim.started("a1", attempt)
    # The runtime ticks at the deadline, not later (an earlier, stale at-risk timer may come first).
    assert sim.machine.deadline_book.workflows.next_wakeup() == 1060.0
    timer = sim.machine.next_timer()
    assert timer is not None and timer <= 1060.0
    sim.advance(30.0)
    assert "deadline_missed" not in [e.kind for e in sim.store.workflow_events(wf)]
    sim.advance(40.0)
    assert [e.kind for e in sim.store.workflow_events(wf)].count("deadline_missed") == 1
    assert sim.machine.workflows[wf].state is WorkflowState.RUNNING
    sim.advance(100.0)
    assert [e.kind for e in sim.store.workflow_events(wf)].count("deadline_missed") == 1
    sim.finished("a1", attempt)
    assert sim.machine.workflows[wf].state is WorkflowState.COMPLETED


def test_deadlines_survive_the_store(make_sim: Callable[..., Sim]) -> None:
    sim = make_sim()
    sim.hello("a1", slots=1)
    wf, _ = sim.submit([task_spec("a", deadline="2h")], deadline="1h", deadline_policy="reject")
    snapshot = sim.store.load()
    workflow = next(w for w in snapshot.workflows if w.id == wf)
    task = next(t for t in snapshot.tasks if t.workflow_id == wf)
    assert workflow.deadline == 1000.0 + 3600.0 and workflow.deadline_policy == "reject"
    assert workflow.deadline_verdict == "feasible"
    assert task.deadline == 1000.0 + 7200.0 and not task.deadline_relative


# --- the simulator (the real core on a virtual clock) ---------------------------------------------


def _simulated_hits(scheduling: bool) -> list[bool]:
    """Six 10 s workflows on one slot, submitted at once; only the last has a tight deadline."""
    specs = [
        parse_workflow(
            {
                "name": f"w{i}",
                "deadline": "15" if i == 5 else "100",
                "tasks": [task_spec("t", estimated_duration=10)],
            }
        )
        for i in range(6)
    ]
    simulator = Simulator(Fleet(1, 1, agent_types=("shell",)), config=MachineConfig(deadline_scheduling=scheduling))
    results = simulator.run_all(specs)
    assert all(r.state == "completed" for r in results)
    return [r.makespan <= (15.0 if i == 5 else 100.0) for i, r in enumerate(results)]


def test_simulated_edf_meets_the_tight_deadline_that_fifo_misses() -> None:
    assert _simulated_hits(True) == [True] * 6
    assert _simulated_hits(False) == [True] * 5 + [False]


def test_bench_mix_meets_its_target_and_is_seeded() -> None:
    edf, fifo = hit_rates()
    assert edf - fifo >= 0.15
    assert [(s.name, d) for s, d in mix()] == [(s.name, d) for s, d in mix()]


def test_builder_takes_deadlines() -> None:
    wf = Workflow("w", deadline=timedelta(minutes=10), deadline_policy="reject")
    wf.task("a", shell="true", deadline=datetime(2030, 1, 1, tzinfo=UTC))
    spec = wf.build()
    assert (spec.deadline, spec.deadline_policy) == ("600.0", "reject")
    assert spec.tasks[0].deadline == "2030-01-01T00:00:00+00:00"
    assert Workflow.from_spec(spec).build() == spec
    with pytest.raises(InvalidArgumentError, match="no zone"):
        Workflow("w", deadline="2030-01-01T00:00:00")
