"""Dynamic tasks in the state machine: spawn (idempotent, bounded), fan-in over X/*, map."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from corral.controller.core import events as ev
from corral.controller.core.dynamic import MAX_CHILDREN
from corral.controller.core.machine import Machine
from corral.controller.core.model import AttemptState, TaskState
from corral.controller.errors import InvalidArgument
from corral.controller.rpc.spawn_input import spawn_report
from corral.controller.spec import parse_workflow

from .conftest import Sim, task_spec


def _spawn(sim: Sim, reporter: str, attempt_id: str, tasks: list[dict[str, Any]]) -> ev.AgentReports:
    report = spawn_report(reporter, attempt_id, json.dumps(tasks).encode(), "spawn")
    epoch = sim.machine.agents[reporter].session_epoch
    return ev.AgentReports(reporter, epoch, (report,))


def _child(name: str, *deps: str) -> dict[str, Any]:
    return {"name": name, "payload": {"shell": f"echo {name}"}, "dependencies": list(deps)}


def _run_all(sim: Sim, wf: str, result: Any = None) -> None:
    """Start and complete every assigned task, repeatedly, until nothing is assigned."""
    while True:
        running = [t for t in sim.machine.tasks.values() if t.workflow_id == wf and t.state in (TaskState.ASSIGNED,)]
        if not running:
            return
        for task in running:
            attempt = task.current_attempt_id
            assert attempt is not None
            sim.started("a1", attempt)
            value = result(task) if callable(result) else result
            sim.finished("a1", attempt, result=json.dumps(value).encode())


def test_a_fan_in_over_x_star_gets_every_childs_result(sim: Sim) -> None:
    sim.hello("a1", slots=200, cpu=200)
    wf, _ = sim.submit([task_spec("x"), task_spec("fan", "x/*")])
    x = sim.attempt_of(wf, "x")
    sim.started("a1", x)
    step = sim.do(_spawn(sim, "a1", x, [_child(f"c{i}", "x") for i in range(100)]))
    assert [e.kind for e in step.changes.events if e.kind == "spawned"] == ["spawned"]
    fan = sim.task(wf, "fan")
    assert len(fan.dependencies) == 101 and fan.state is TaskState.PENDING
    assert sim.task(wf, "x/c7").state is TaskState.PENDING  # waits for its spawner
    sim.finished("a1", x, result=b"0")
    _run_all(sim, wf, result=lambda t: int(t.name.split("/c")[1]) if "/c" in t.name else None)
    assignments = [a for a in sim.machine.tasks.values() if a.name == "fan"]
    assert assignments[0].state is TaskState.COMPLETED
    workflow = sim.machine.workflows[wf]
    assert workflow.state.value == "completed" and len(workflow.task_ids) == 102


def test_fan_in_inputs_hold_the_children(sim: Sim) -> None:
    sim.hello("a1", slots=10)
    wf, _ = sim.submit([task_spec("x"), task_spec("fan", "x/*")])
    x = sim.attempt_of(wf, "x")
    sim.started("a1", x)
    sim.do(_spawn(sim, "a1", x, [_child("a"), _child("b", "a")]))  # b depends on its sibling a
    assert sim.task(wf, "x/b").dependencies == (sim.task(wf, "x/a").id,)
    sim.finished("a1", x, result=b"1")
    for name in ("x/a", "x/b"):
        attempt = sim.attempt_of(wf, name)
        sim.started("a1", attempt)
        step = sim.finished("a1", attempt, result=b"2")
    (assignment,) = step.assignments()
    assert dict(assignment.inputs) == {"x": b"1", "x/a": b"2", "x/b": b"2"}


def test_a_spawned_task_is_unranked_until_its_workflow_is_ranked_again(sim: Sim) -> None:
    sim.hello("a1", slots=10)
    wf, _ = sim.submit([task_spec("x", estimated_duration=3.0)])
    x = sim.attempt_of(wf, "x")
    sim.started("a1", x)
    sim.do(_spawn(sim, "a1", x, [_child("c")]))
    ordering, child = sim.machine.ordering, sim.task(wf, "x/c")
    assert child.index == 1 and ordering.rank_of(child) is None and ordering.score(child) == 0.0
    sim.machine.rank_workflow(sim.machine.workflows[wf])  # as a restart would
    ranked = ordering.rank_of(child)
    assert ranked is not None and ranked.rank_s == 3.0  # unknown: weighs the mean of the known ones


def test_spawning_is_idempotent_across_attempts(sim: Sim) -> None:
    sim.hello("a1")
    wf, _ = sim.submit([task_spec("x", retries=1, retry_backoff=0)])
    first = sim.attempt_of(wf, "x")
    sim.started("a1", first)
    sim.do(_spawn(sim, "a1", first, [_child("a"), _child("b")]))
    if not sim.finished("a1", first, AttemptState.FAILED, error="crash").assignments():
        sim.tick(after=1.0)
    second = sim.attempt_of(wf, "x")
    sim.started("a1", second)
    sim.do(_spawn(sim, "a1", second, [_child("a"), _child("b"), _child("c")]))
    names = sorted(sim.machine.tasks[t].name for t in sim.machine.workflows[wf].task_ids)
    assert names == ["x", "x/a", "x/b", "x/c"]  # a and b once; c is new


def test_a_stale_attempt_cannot_spawn(sim: Sim) -> None:
    sim.hello("a1")
    sim.hello("a2")
    wf, _ = sim.submit([task_spec("x")])
    attempt = sim.attempt_of(wf, "x")
    sim.do(_spawn(sim, "a2", attempt, [_child("a")]))  # not a2's attempt
    assert len(sim.machine.workflows[wf].task_ids) == 1


@pytest.mark.parametrize(
    ("children", "expected"),
    [
        ([_child(f"c{i}") for i in range(MAX_CHILDREN + 1)], "over the limit"),
        ([_child("a", "nope")], "spawn[0].dependencies[0]: unknown task 'nope'"),
        ([_child("a"), _child("a")], "spawn[1].name: duplicate"),
        ([{"name": "a", "payload": {}}], "spawn[0]"),
        ([{"name": "a", "payload": {"shell": "x"}, "gang": "g"}], "spawn[0].gang"),
        ([{"name": "bad/name", "payload": {"shell": "x"}}], "spawn[0].name"),
    ],
)
def test_a_bad_spawn_fails_the_spawner_with_the_path(sim: Sim, children: list[dict[str, Any]], expected: str) -> None:
    sim.hello("a1")
    wf, _ = sim.submit([task_spec("x", retries=3), task_spec("after", "x")])
    attempt = sim.attempt_of(wf, "x")
    sim.started("a1", attempt)
    step = sim.do(_spawn(sim, "a1", attempt, children))
    x = sim.task(wf, "x")
    assert x.state is TaskState.FAILED and x.failure_reason == "spawn_invalid", x.error
    assert expected in x.error
    assert len(sim.machine.workflows[wf].task_ids) == 2  # nothing added
    assert sim.task(wf, "after").state is TaskState.SKIPPED
    (cancel,) = step.of(ev.CancelAttempts)  # its attempt is stopped
    assert cancel.attempt_ids == [attempt] and cancel.force


def test_map_fans_out_over_the_upstream_list_and_gathers(sim: Sim) -> None:
    sim.hello("a1", slots=100, cpu=100, types=("shell", "python"))
    double = {"function": "m:double"}
    wf, _ = sim.submit(
        [
            task_spec("items"),
            task_spec("each", "items", map="items", agent_type="python", payload=double),
            task_spec("total", "each"),
        ]
    )
    items = sim.attempt_of(wf, "items")
    sim.started("a1", items)
    step = sim.finished("a1", items, result=json.dumps(list(range(50))).encode())
    placed = step.assignments()
    assert len(placed) == 50
    by_name = {a.task.name: a for a in placed}
    assert by_name["each/7"].inputs["item"] == b"7"
    assert json.loads(by_name["each/7"].inputs["items"]) == list(range(50))  # its other inputs too
    for assignment in placed:
        sim.started("a1", assignment.attempt_id)
        item = json.loads(assignment.inputs["item"])
        step = sim.finished("a1", assignment.attempt_id, result=json.dumps(item * 2).encode())
    each = sim.task(wf, "each")
    assert each.state is TaskState.COMPLETED and json.loads(each.result or b"") == [2 * i for i in range(50)]
    (total,) = step.assignments()
    assert json.loads(total.inputs["each"]) == [2 * i for i in range(50)]


def test_map_over_something_else_than_a_list_fails_the_task(sim: Sim) -> None:
    sim.hello("a1")
    wf, _ = sim.submit([task_spec("items"), task_spec("each", "items", map="items")])
    items = sim.attempt_of(wf, "items")
    sim.started("a1", items)
    sim.finished("a1", items, result=b'{"not": "a list"}')
    each = sim.task(wf, "each")
    assert each.state is TaskState.FAILED and each.failure_reason == "map_invalid" and "not a list" in each.error


def test_an_empty_map_completes_with_an_empty_list(sim: Sim) -> None:
    sim.hello("a1")
    wf, _ = sim.submit([task_spec("items"), task_spec("each", "items", map="items")])
    items = sim.attempt_of(wf, "items")
    sim.started("a1", items)
    sim.finished("a1", items, result=b"[]")
    assert sim.task(wf, "each").result == b"[]" and sim.machine.workflows[wf].state.value == "completed"


def test_spawned_tasks_and_fan_ins_survive_a_restart(sim: Sim) -> None:
    sim.hello("a1", slots=10)
    wf, _ = sim.submit([task_spec("x"), task_spec("fan", "x/*")])
    x = sim.attempt_of(wf, "x")
    sim.started("a1", x)
    sim.do(_spawn(sim, "a1", x, [_child("a"), _child("b")]))
    restored = Machine(sim.config, new_id=sim.new_id, rng=random.Random(1), boot_time=sim.now)
    restored.restore(sim.store.load(), sim.now)
    restored.validate()
    fan = restored.tasks[restored.by_name[(wf, "fan")]]
    assert {restored.tasks[d].name for d in fan.dependencies} == {"x", "x/a", "x/b"}
    assert restored.dynamic.waiters[sim.task(wf, "x").id] == [fan.id]
    assert restored.dynamic.children[sim.task(wf, "x").id] == 2


@pytest.mark.parametrize(
    ("task", "path"),
    [
        (task_spec("each", "items", map="other"), "tasks[1].map"),
        (task_spec("each", "nope/*"), "tasks[1].dependencies[0]: unknown task"),
        (task_spec("each", "items/x"), "dependencies[0]"),
    ],
)
def test_bad_map_and_group_dependencies_are_invalid_argument(task: dict[str, Any], path: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_workflow({"name": "wf", "tasks": [task_spec("items"), task]})
    assert path in str(caught.value)
