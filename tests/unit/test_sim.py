"""The simulator: the real core on a virtual clock with simulated agents."""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest

from corral.controller.core.machine import Machine
from corral.controller.core.model import Task
from corral.controller.errors import InvalidArgument
from corral.controller.sim import Fleet, SimResult, SimulationError, Simulator, Span, parse_shape
from corral.controller.spec import WorkflowSpec, parse_workflow


def task(name: str, seconds: float, *deps: str, **fields: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": name, "payload": {"shell": "true"}, "dependencies": list(deps)}
    if seconds:
        spec["estimated_duration"] = seconds
    spec.update(fields)
    return spec


def workflow(*tasks: dict[str, Any], name: str = "wf") -> WorkflowSpec:
    return parse_workflow({"name": name, "tasks": list(tasks)})


def check_schedule(result: SimResult, spec: WorkflowSpec) -> None:
    """No slot runs two attempts at once, no agent more than its slots, dependencies respected."""
    by_lane: dict[tuple[str, int], list[Span]] = {}
    for span in result.spans:
        assert 0 <= span.slot < result.fleet.slots
        by_lane.setdefault((span.agent, span.slot), []).append(span)
    for spans in by_lane.values():
        spans.sort(key=lambda s: s.start)
        for before, after in itertools.pairwise(spans):
            assert after.start >= before.end - 1e-9, f"{before} overlaps {after}"
    ends = {s.task: s.end for s in result.spans if s.outcome == "succeeded"}
    starts = {s.task: s.start for s in result.spans}
    for t in spec.tasks:
        for dep in t.dependencies:
            assert starts[t.name] >= ends[dep] - 1e-9, f"{t.name} started before {dep} ended"


def test_a_chain_on_one_slot_takes_the_sum_of_its_durations() -> None:
    spec = workflow(task("a", 2.0), task("b", 3.0, "a"), task("c", 4.0, "b"))
    result = Simulator(Fleet(1, 1)).run(spec)
    assert result.state == "completed"
    assert result.makespan == pytest.approx(9.0)
    assert result.critical_path == pytest.approx(9.0) and result.total_work == pytest.approx(9.0)
    assert [(s.task, s.start, s.end) for s in result.spans] == [("a", 0.0, 2.0), ("b", 2.0, 5.0), ("c", 5.0, 9.0)]
    assert result.ratio == pytest.approx(1.0)


def test_a_wide_dag_on_2x4_is_bounded_by_work_over_eight_slots() -> None:
    # 40 independent 1 s tasks then a join: exactly 5 waves of 8, then the join.
    spec = workflow(*[task(f"w{i}", 1.0) for i in range(40)], task("join", 1.0, *[f"w{i}" for i in range(40)]))
    result = Simulator(Fleet(2, 4)).run(spec)
    assert result.state == "completed"
    assert result.total_work == pytest.approx(41.0)
    assert result.makespan == pytest.approx(6.0)  # 40 / 8 + 1: not a moment lost
    assert {s.agent for s in result.spans} == {"sim-1", "sim-2"}
    check_schedule(result, spec)


def test_random_wide_work_is_within_grahams_bound_of_work_over_slots() -> None:
    rng = random.Random(7)
    durations = [rng.uniform(0.1, 3.0) for _ in range(200)]
    spec = workflow(*[task(f"w{i}", d) for i, d in enumerate(durations)])
    result = Simulator(Fleet(2, 4)).run(spec)
    work = sum(durations)
    # Any greedy list schedule of independent tasks on m slots: work / m <= makespan <= work / m + max.
    assert work / 8 - 1e-9 <= result.makespan <= work / 8 + max(durations)
    check_schedule(result, spec)


def test_durations_come_from_the_callback_then_the_estimate_then_the_default() -> None:
    spec = workflow(task("a", 5.0), task("b", 0.0), task("c", 0.0, "a", "b"))
    by_estimate = Simulator(Fleet(1, 2), default_duration_s=2.0).run(spec)
    assert by_estimate.makespan == pytest.approx(7.0) and by_estimate.defaulted == 2
    seen: list[tuple[str, int]] = []

    def duration(t: Task) -> float:
        seen.append((t.name, t.attempts))
        return {"a": 1.0, "b": 4.0, "c": 0.5}[t.name]

    by_callback = Simulator(Fleet(1, 2)).run(spec, duration)
    assert by_callback.makespan == pytest.approx(4.5) and by_callback.defaulted == 0
    assert sorted(seen) == [("a", 1), ("b", 1), ("c", 1)]


def test_a_bad_duration_is_refused_with_the_task_named() -> None:
    spec = workflow(task("a", 1.0), task("b", 1.0, "a"))
    with pytest.raises(SimulationError, match="task b: duration must be between 0"):
        Simulator(Fleet(1, 1)).run(spec, lambda t: -1.0 if t.name == "b" else 1.0)
    with pytest.raises(SimulationError, match="task a: duration"):
        Simulator(Fleet(1, 1)).run(spec, lambda t: float("nan"))


def test_day_long_tasks_finish_without_their_agents_being_lost() -> None:
    # The clock jumps a day at once; heartbeats must keep the core from losing the idle agent
    # (the busy one's reports alone would keep it alive).
    spec = workflow(task("long", 86_400.0), task("after", 60.0, "long"))
    result = Simulator(Fleet(2, 1)).run(spec)
    assert result.state == "completed"
    assert result.makespan == pytest.approx(86_460.0)
    assert [s.outcome for s in result.spans] == ["succeeded", "succeeded"]


def test_a_task_that_outlives_its_timeout_times_out_and_retries() -> None:
    spec = workflow(task("slow", 10.0, timeout=2.0, retries=1, retry_backoff=1.0), task("next", 1.0, "slow"))
    result = Simulator(Fleet(1, 1)).run(spec)
    assert result.state == "failed"
    slow = [s for s in result.spans if s.task == "slow"]
    assert [(s.attempt, s.outcome) for s in slow] == [(1, "timed_out"), (2, "timed_out")]
    assert slow[0].end == pytest.approx(2.0)
    assert slow[1].start >= slow[0].end + 0.75  # retry backoff 1 s, +-25% jitter
    assert all(s.task != "next" for s in result.spans)  # skipped


def test_a_task_no_agent_can_run_is_reported_with_the_cores_reason() -> None:
    spec = workflow(task("a", 1.0), task("gpu", 1.0, "a", resources={"gpu_count": 1}))
    result = Simulator(Fleet(2, 2)).run(spec)
    assert result.state == "stuck"
    assert [name for name, _ in result.stuck] == ["gpu"]
    assert "gpu" in result.stuck[0][1]
    assert result.makespan == pytest.approx(1.0)
    python_only = Simulator(Fleet(1, 1, agent_types=("python",))).run(workflow(task("a", 1.0)))
    assert python_only.state == "stuck" and "shell" in python_only.stuck[0][1]


def test_resources_limit_concurrency_as_on_a_real_agent() -> None:
    # 4 slots but 4 cores: two 3-core tasks cannot run together; two 1-core ones can join either.
    spec = workflow(*[task(f"big{i}", 1.0, resources={"cpu_cores": 3}) for i in range(2)])
    assert Simulator(Fleet(1, 4)).run(spec).makespan == pytest.approx(2.0)
    assert Simulator(Fleet(1, 4, cpu_cores=6)).run(spec).makespan == pytest.approx(1.0)


def test_runs_are_deterministic_and_a_second_run_on_the_same_core_works() -> None:
    rng = random.Random(3)
    tasks = [
        task(f"t{i}", rng.uniform(0.1, 2.0), *(f"t{j}" for j in range(i) if rng.random() < 0.1)) for i in range(60)
    ]
    spec = workflow(*tasks)
    first = Simulator(Fleet(2, 3)).run(spec)
    again = Simulator(Fleet(2, 3)).run(spec)
    assert first.spans == again.spans and first.makespan == again.makespan
    simulator = Simulator(Fleet(2, 3))
    simulator.run(spec)
    second = simulator.run(spec)
    assert second.state == "completed" and len(second.spans) == 60
    assert min(s.start for s in second.spans) == 0.0  # times are from its own submission
    check_schedule(second, spec)
    simulator.machine.validate()


def test_fleets_refuse_absurd_sizes_with_the_limit() -> None:
    assert parse_shape("2x4") == (2, 4) and parse_shape(" 10 X 1 ") == (10, 1)
    for text in ("2", "2x", "x4", "2x4x1", "-1x4", "2.5x4", ""):
        with pytest.raises(InvalidArgument, match="is not AGENTSxSLOTS"):
            parse_shape(text)
    with pytest.raises(InvalidArgument, match="agents: must be between 1 and 1000, got 0"):
        Fleet(0, 4)
    with pytest.raises(InvalidArgument, match="agents: must be between 1 and 1000, got 1001"):
        Fleet(1001, 1)
    with pytest.raises(InvalidArgument, match="slots: must be between 1 and 4096"):
        Fleet(1, 5000)
    with pytest.raises(InvalidArgument, match="1000 x 4096 = 4096000 slots, over 100000"):
        Fleet(1000, 4096)
    with pytest.raises(InvalidArgument, match="default_duration"):
        Simulator(Fleet(1, 1), default_duration_s=-1.0)


def test_thousands_of_tasks_run_on_virtual_time_without_sleeping(monkeypatch: pytest.MonkeyPatch) -> None:
    # Speed is a bench figure (`bench.run --only sim` prints the wall time); here: the clock is
    # virtual, so nothing may sleep however long the simulated tasks run.
    import time

    def no_sleep(seconds: float) -> None:
        raise AssertionError(f"the simulator slept {seconds} s")

    monkeypatch.setattr(time, "sleep", no_sleep)
    spec = workflow(*[task(f"t{i}", 1.0 + (i % 7), *([f"t{i - 50}"] if i >= 50 else [])) for i in range(2000)])
    result = Simulator(Fleet(2, 4)).run(spec)
    assert result.state == "completed" and len(result.spans) == 2000
    assert result.makespan >= result.bound - 1e-9
    assert result.makespan >= 900.0  # a quarter hour of simulated work, no real waiting


def test_zero_duration_tasks_end_at_the_instant_they_start() -> None:
    spec = workflow(task("a", 0.0), task("b", 0.0, "a"), task("c", 2.0, "b"))
    result = Simulator(Fleet(1, 1)).run(spec, lambda t: 0.0 if t.name != "c" else 2.0)
    assert result.state == "completed"
    assert [(s.task, s.start, s.end) for s in result.spans] == [("a", 0.0, 0.0), ("b", 0.0, 0.0), ("c", 0.0, 2.0)]


def test_several_workflows_share_the_fleet_and_each_gets_its_own_result() -> None:
    long = workflow(task("x", 4.0), name="long")
    chain = workflow(task("x", 1.0), task("y", 1.0, "x"), name="chain")
    simulator = Simulator(Fleet(1, 2))
    first, second = simulator.run_all([long, chain])
    assert (first.workflow, first.state) == ("long", "completed") and first.makespan == pytest.approx(4.0)
    assert (second.workflow, second.state) == ("chain", "completed") and second.makespan == pytest.approx(2.0)
    assert [(s.workflow, s.task) for s in first.spans] == [("long", "x")]
    assert [(s.workflow, s.task) for s in second.spans] == [("chain", "x"), ("chain", "y")]
    assert second.bound == pytest.approx(2.0) and first.bound == pytest.approx(4.0)
    simulator.machine.validate()


def test_one_bad_workflow_in_a_batch_runs_nothing() -> None:
    simulator = Simulator(Fleet(1, 1))
    bad = WorkflowSpec.model_construct(name="bad", tasks=[])
    with pytest.raises(InvalidArgument, match="at least one task"):
        simulator.run_all([workflow(task("a", 1.0)), bad])
    assert not simulator.machine.workflows
    with pytest.raises(InvalidArgument, match="between 1 and 1000 workflows"):
        simulator.run_all([])


def test_latency_delays_every_message_each_way() -> None:
    # Each task: the assignment takes 10 ms to reach the agent, its Finished report 10 ms back.
    spec = workflow(task("a", 2.0), task("b", 3.0, "a"), task("c", 4.0, "b"))
    result = Simulator(Fleet(1, 1), latency_s=0.01).run(spec)
    assert result.state == "completed"
    assert [s.task for s in result.spans] == ["a", "b", "c"]
    times = [t for s in result.spans for t in (s.start, s.end)]
    assert times == pytest.approx([0.01, 2.01, 2.03, 5.03, 5.05, 9.05])
    assert result.makespan == pytest.approx(9.06)
    with pytest.raises(InvalidArgument, match="latency: must be between 0 and 1 seconds"):
        Simulator(Fleet(1, 1), latency_s=2.0)


def test_latency_keeps_a_wide_dag_correct() -> None:
    rng = random.Random(11)
    spec = workflow(*[task(f"t{i}", rng.uniform(0.0, 0.05), *([f"t{i - 9}"] if i >= 9 else [])) for i in range(300)])
    result = Simulator(Fleet(2, 4), latency_s=0.002, check=Machine.validate).run(spec)
    assert result.state == "completed" and sorted(s.task for s in result.spans) == sorted(t.name for t in spec.tasks)
    check_schedule(result, spec)
    assert result.makespan > Simulator(Fleet(2, 4)).run(spec).makespan  # overhead costs time
