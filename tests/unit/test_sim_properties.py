"""Property tests: the real core, driven by the simulator, on random DAGs, fleets and failures.

After every step the machine's invariants hold (``validate()``) and no agent is allocated more than
it has; at the end every task that some agent can take was placed (the run ends, and only tasks no
agent can run are left waiting), attempts never overlap on a slot nor exceed an agent's cores, and
dependencies and retry limits are respected.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral.controller.core.machine import Machine
from corral.controller.core.model import Task
from corral.controller.sim import Fleet, Simulator
from corral.controller.spec import parse_workflow


@dataclass(frozen=True)
class Case:
    tasks: list[dict[str, Any]]
    durations: dict[str, float]
    failures: frozenset[tuple[str, int]]  # (task, attempt number) that fail
    fleet: Fleet


@st.composite
def cases(draw: st.DrawFn) -> Case:
    count = draw(st.integers(1, 24))
    tasks: list[dict[str, Any]] = []
    durations: dict[str, float] = {}
    failures: set[tuple[str, int]] = set()
    for i in range(count):
        name = f"t{i}"
        deps = draw(st.lists(st.integers(0, i - 1), max_size=3, unique=True)) if i else []
        retries = draw(st.integers(0, 2))
        agent_type = draw(st.sampled_from(["shell", "shell", "python"]))
        tasks.append(
            {
                "name": name,
                "payload": {"shell": "true"} if agent_type == "shell" else {"function": "mod:fn"},
                "agent_type": agent_type,
                "dependencies": [f"t{d}" for d in deps],
                "resources": {"cpu_cores": draw(st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.0]))},
                "retries": retries,
                "retry_backoff": 0.5,
            }
        )
        durations[name] = draw(st.floats(0.0, 5.0, allow_nan=False))
        for attempt in range(1, retries + 2):
            if draw(st.integers(0, 9)) == 0:  # one attempt in ten fails
                failures.add((name, attempt))
    fleet = Fleet(
        draw(st.integers(1, 3)),
        draw(st.integers(1, 4)),
        agent_types=draw(st.sampled_from([("shell", "python"), ("shell",)])),
        cpu_cores=draw(st.sampled_from([1.0, 2.0, 4.0])),
    )
    return Case(tasks, durations, frozenset(failures), fleet)


def over_allocated(machine: Machine) -> None:
    machine.validate()
    for view in machine.views.values():
        for name in ("cpu_cores", "memory_mb", "gpu_count"):
            used, has = getattr(view.allocated, name), getattr(view.capacity, name)
            assert used <= has + 1e-9, f"agent {view.name}: {name} {used} allocated of {has}"


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_the_core_places_every_placeable_task_and_never_over_allocates(case: Case) -> None:
    spec = parse_workflow({"name": "prop", "tasks": case.tasks})
    simulator = Simulator(case.fleet, check=over_allocated)
    result = simulator.run(
        spec,
        duration=lambda task: case.durations[task.name],
        fails=lambda task: (task.name, task.attempts) in case.failures,
    )
    simulator.machine.validate()
    fleet = case.fleet
    by_name = {t["name"]: t for t in case.tasks}

    def placeable(name: str) -> bool:
        task = by_name[name]
        return task["agent_type"] in fleet.agent_types and task["resources"]["cpu_cores"] <= (fleet.cpu_cores or 0)

    # Only tasks no agent can run are left waiting, and then the run says so.
    if result.state == "stuck":
        assert result.stuck and all(not placeable(name) for name, _ in result.stuck), result.stuck
    else:
        assert result.state in ("completed", "failed")
    if all(placeable(t["name"]) for t in case.tasks) and not case.failures:
        assert result.state == "completed"
        assert sorted(s.task for s in result.spans) == sorted(by_name)
        assert result.makespan >= result.bound - 1e-6

    # Attempts: one slot runs one at a time, an agent's running tasks fit its cores.
    for agent, spans in result.agent_spans().items():
        for one, other in itertools.combinations(spans, 2):
            if one.slot == other.slot:
                assert one.end <= other.start + 1e-9 or other.end <= one.start + 1e-9, (one, other)
        for span in spans:
            running = [s for s in spans if s.start <= span.start < s.end]
            cores = sum(by_name[s.task]["resources"]["cpu_cores"] for s in running)
            assert cores <= (fleet.cpu_cores or 0) + 1e-9, f"{agent} runs {cores} cores at {span.start}"

    # Dependencies, failures and retries as the spec says.
    succeeded = {s.task: s for s in result.spans if s.outcome == "succeeded"}
    attempts: dict[str, list[int]] = {}
    for span in result.spans:
        attempts.setdefault(span.task, []).append(span.attempt)
        for dep in by_name[span.task]["dependencies"]:
            assert dep in succeeded and succeeded[dep].end <= span.start + 1e-9, f"{span.task} ran before {dep}"
        expected = "failed" if (span.task, span.attempt) in case.failures else "succeeded"
        assert span.outcome == expected, span
    for name, numbers in attempts.items():
        # An attempt moved to an idle agent before it started never runs: numbers may skip one.
        assert numbers == sorted(set(numbers)), (name, numbers)
        failed = sum(1 for s in result.spans if s.task == name and s.outcome == "failed")
        assert failed <= by_name[name]["retries"] + 1 and len(numbers) == failed + (name in succeeded)
    state = {t.name: t.state for t in simulator.machine.tasks.values()}
    for name in by_name:
        if name in succeeded:
            assert state[name] == "completed"


def test_a_failing_task_is_retried_then_its_dependents_are_skipped() -> None:
    spec = parse_workflow(
        {
            "name": "fails",
            "tasks": [
                {"name": "a", "payload": {"shell": "x"}, "retries": 1, "retry_backoff": 1.0, "estimated_duration": 2},
                {"name": "b", "payload": {"shell": "x"}, "dependencies": ["a"], "estimated_duration": 1},
            ],
        }
    )

    def always(task: Task) -> bool:
        return task.name == "a"

    result = Simulator(Fleet(1, 1), check=over_allocated).run(spec, fails=always)
    assert result.state == "failed"
    assert [(s.task, s.attempt, s.outcome) for s in result.spans] == [("a", 1, "failed"), ("a", 2, "failed")]
    once = Simulator(Fleet(1, 1)).run(spec, fails=lambda task: task.name == "a" and task.attempts == 1)
    assert once.state == "completed" and [s.task for s in once.spans] == ["a", "a", "b"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(cases(), min_size=2, max_size=3))
def test_several_workflows_at_once_all_complete_on_a_shared_fleet(batch: list[Case]) -> None:
    # Each case's own fleet is ignored: every workflow shares the first one, with every agent type
    # and enough cores for any task, and no attempt fails, so every workflow must complete.
    fleet = Fleet(batch[0].fleet.agents, batch[0].fleet.slots, cpu_cores=4.0)
    specs = [parse_workflow({"name": f"wf{i}", "tasks": case.tasks}) for i, case in enumerate(batch)]
    simulator = Simulator(fleet, check=over_allocated)
    results = simulator.run_all(
        specs, duration=lambda task: batch[int(task_workflow(simulator, task)[2:])].durations[task.name]
    )
    for spec, result in zip(specs, results, strict=True):
        assert result.state == "completed", (spec.name, result.stuck)
        assert sorted(s.task for s in result.spans) == sorted(t.name for t in spec.tasks)
        assert {s.workflow for s in result.spans} == {spec.name}
        assert result.makespan >= result.bound - 1e-6
    lanes: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for result in results:
        for span in result.spans:
            lanes.setdefault((span.agent, span.slot), []).append((span.start, span.end))
    for intervals in lanes.values():
        intervals.sort()
        for (_, end), (start, _) in itertools.pairwise(intervals):
            assert start >= end - 1e-9


def task_workflow(simulator: Simulator, task: Task) -> str:
    """The name of a task's workflow, as the core knows it."""
    return simulator.machine.workflows[task.workflow_id].name
