"""Compensation (issue 10): ``on_failure: compensate``, reverse order, results passed in, retries."""

from __future__ import annotations

import json
import random

import pytest
import yaml

from corral.controller.core import events as ev
from corral.controller.core.machine import Machine
from corral.controller.core.model import AttemptState, TaskState, WorkflowState
from corral.controller.core.requests import Caller
from corral.controller.core.runs import RetryRequest
from corral.controller.core.sagas import compensation_of
from corral.controller.errors import FailedPrecondition, InvalidArgument
from corral.controller.sdk.builder import Workflow
from corral.controller.spec import WorkflowSpec, parse_workflow
from tests.unit.conftest import Sim, task_spec

T = TaskState
W = WorkflowState
A = AttemptState
ME = Caller()


def _undo(name: str, retries: int = 0) -> dict[str, object]:
    return {"payload": {"shell": f"echo undo {name}"}, "retries": retries}


def _chain(sim: Sim, retries: int = 0) -> str:
    """a -> b -> c, a and b compensable; c fails."""
    wf, _ = sim.submit(
        [
            task_spec("a", compensate=_undo("a", retries)),
            task_spec("b", "a", compensate=_undo("b", retries)),
            task_spec("c", "b"),
        ],
        on_failure="compensate",
    )
    return wf


def _live(sim: Sim) -> list[str]:
    return [t.id for t in sim.machine.tasks.values() if t.state in (T.ASSIGNED, T.RUNNING)]


def _finish(sim: Sim, task_id: str, ok: bool = True) -> None:
    task = sim.machine.tasks[task_id]
    attempt = task.current_attempt_id
    assert attempt is not None
    sim.started("a1", attempt)
    if ok:
        sim.finished("a1", attempt, result=json.dumps(f"did {task.name}").encode())
    else:
        sim.finished("a1", attempt, A.FAILED, error="boom", retryable=True)


def test_compensations_run_in_reverse_order_with_the_task_result_then_the_workflow_fails(sim: Sim) -> None:
    sim.hello("a1")
    wf = _chain(sim)
    for name in ("a", "b"):
        _finish(sim, sim.task(wf, name).id)
    c = sim.task(wf, "c")
    attempt = c.current_attempt_id
    assert attempt is not None
    sim.started("a1", attempt)
    step = sim.finished("a1", attempt, A.FAILED, error="boom", retryable=False)
    workflow = sim.machine.workflows[wf]
    assert workflow.state is W.COMPENSATING
    # b's compensation first, with b's result as the input "task"; a's waits for it.
    placed = step.assignments()
    assert [p.task.name for p in placed] == ["b~compensate"]
    assert placed[0].inputs == {"task": b'"did b"'}
    assert json.loads(placed[0].task.payload) == {"shell": "echo undo b"}
    comp_a = compensation_of(sim.machine, sim.task(wf, "a"))
    assert comp_a is not None and comp_a.state is T.PENDING
    # Records share the index of the task they undo but are never ranked: they are queued with score 0.
    ordering = sim.machine.ordering
    assert wf not in ordering.ranks and ordering.rank_of(comp_a) is None and ordering.score(comp_a) == 0.0
    _finish(sim, placed[0].task.id)
    assert comp_a.state is T.ASSIGNED
    _finish(sim, comp_a.id)
    assert workflow.state is W.FAILED
    assert "compensation" not in workflow.error and "'c' failed" in workflow.error
    # The workflow's own tasks are unchanged; the listing does not show the compensation records.
    assert [sim.machine.tasks[t].name for t in workflow.task_ids] == ["a", "b", "c"]


def test_a_failed_compensation_skips_the_earlier_ones_and_retry_runs_them_again(sim: Sim) -> None:
    sim.hello("a1")
    wf = _chain(sim)
    for name in ("a", "b"):
        _finish(sim, sim.task(wf, name).id)
    _finish(sim, sim.task(wf, "c").id, ok=False)
    comp_b = compensation_of(sim.machine, sim.task(wf, "b"))
    assert comp_b is not None
    _finish(sim, comp_b.id, ok=False)
    workflow = sim.machine.workflows[wf]
    assert workflow.state is W.FAILED
    assert workflow.error.startswith("compensation_failed: compensation of 'b' failed")
    comp_a = compensation_of(sim.machine, sim.task(wf, "a"))
    assert comp_a is not None and comp_a.state is T.SKIPPED
    # Operator retry: the failed and skipped compensations run again, not the tasks.
    sim.do(RetryRequest(wf, ME))
    assert workflow.state is W.COMPENSATING and workflow.run == 1
    assert comp_b.state is T.ASSIGNED and comp_a.state is T.PENDING
    _finish(sim, comp_b.id)
    _finish(sim, comp_a.id)
    assert workflow.state is W.FAILED and not workflow.error.startswith("compensation_failed")
    # A later retry runs the compensated tasks again (their effects were undone) and c.
    sim.do(RetryRequest(wf, ME))
    assert workflow.run == 2 and sim.task(wf, "a").state is T.ASSIGNED
    for name in ("a", "b", "c"):
        _finish(sim, sim.task(wf, name).id)
    assert workflow.state is W.COMPLETED


def test_compensation_retries_on_its_own(sim: Sim) -> None:
    sim.hello("a1")
    wf = _chain(sim, retries=1)
    for name in ("a", "b"):
        _finish(sim, sim.task(wf, name).id)
    _finish(sim, sim.task(wf, "c").id, ok=False)
    comp_b = compensation_of(sim.machine, sim.task(wf, "b"))
    assert comp_b is not None
    _finish(sim, comp_b.id, ok=False)
    assert comp_b.state is T.READY and comp_b.retries_used == 1  # backoff, then again
    sim.advance(5)
    _finish(sim, comp_b.id)
    assert comp_b.state is T.COMPLETED and comp_b.attempts == 2


def test_graceful_cancel_compensates_and_ends_cancelled_force_skips(sim: Sim) -> None:
    sim.hello("a1")
    wf = _chain(sim)
    _finish(sim, sim.task(wf, "a").id)
    sim.do(ev.CancelWorkflow(wf))  # b runs: it is stopped gracefully
    b = sim.task(wf, "b")
    attempt = b.current_attempt_id
    assert attempt is not None
    sim.finished("a1", attempt, A.CANCELLED, error="terminated")
    workflow = sim.machine.workflows[wf]
    assert workflow.state is W.COMPENSATING and workflow.compensation == "cancelled"
    with pytest.raises(FailedPrecondition, match="--force"):
        sim.machine.handle(ev.CancelWorkflow(wf), sim.now)
    # a is undone (b never started: assigned only, so nothing of it to undo).
    comp_a = compensation_of(sim.machine, sim.task(wf, "a"))
    assert comp_a is not None and compensation_of(sim.machine, b) is None
    step = sim.do(ev.CancelWorkflow(wf, force=True))
    assert workflow.state is W.CANCELLED and comp_a.state is T.CANCELLED
    assert any(e.kind == "compensation_skipped" for e in step.changes.events)


def test_force_cancel_of_a_running_workflow_skips_compensation_and_says_so(sim: Sim) -> None:
    sim.hello("a1")
    wf = _chain(sim)
    _finish(sim, sim.task(wf, "a").id)
    step = sim.do(ev.CancelWorkflow(wf, force=True))
    assert sim.machine.workflows[wf].state is W.CANCELLED
    assert compensation_of(sim.machine, sim.task(wf, "a")) is None
    assert [e.reason for e in step.changes.events if e.kind == "compensation_skipped"] == [
        "force-cancel skips compensation"
    ]


def test_compensation_survives_a_restore(sim: Sim) -> None:
    sim.hello("a1")
    wf = _chain(sim)
    for name in ("a", "b"):
        _finish(sim, sim.task(wf, name).id)
    _finish(sim, sim.task(wf, "c").id, ok=False)
    restored = Machine(new_id=sim.new_id, rng=random.Random(0))
    restored.restore(sim.store.load(), sim.now)
    restored.validate()
    workflow = restored.workflows[wf]
    assert workflow.state is W.COMPENSATING
    a = restored.tasks[sim.task(wf, "a").id]
    comp_a = compensation_of(restored, a)
    assert comp_a is not None and comp_a.dependencies and comp_a.state is T.PENDING


@pytest.mark.parametrize(
    ("compensate", "path", "words"),
    [
        ({"payload": {"shell": "x"}, "dependencies": ["a"]}, "tasks[1].compensate", "cannot have dependencies"),
        ({"payload": {}}, "tasks[1].compensate.payload", ""),
        ({"payload": {"nope": 1}}, "tasks[1]", "compensate.payload"),
        ({"payload": {"shell": "x"}, "retries": -1}, "tasks[1].compensate.retries", ""),
    ],
)
def test_bad_compensations_are_refused_with_a_field_path(compensate: object, path: str, words: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        parse_workflow(
            {
                "name": "w",
                "on_failure": "compensate",
                "tasks": [task_spec("a"), task_spec("b", "a", compensate=compensate)],
            }
        )
    fields = {v.field: v.description for v in refused.value.violations}
    assert path in fields, fields
    assert words in fields[path]


def test_on_failure_must_be_known() -> None:
    with pytest.raises(InvalidArgument) as refused:
        parse_workflow({"name": "w", "on_failure": "explode", "tasks": [task_spec("a")]})
    assert [v.field for v in refused.value.violations] == ["on_failure"]


def test_the_builder_and_the_file_format_carry_on_failure_and_compensate() -> None:
    wf = Workflow("saga", on_failure="compensate")
    a = wf.shell("a", shell="echo a", compensate={"payload": {"shell": "echo undo"}, "retries": 2})
    wf.shell("b", shell="echo b", depends_on=[a])
    spec = wf.build()
    assert spec.on_failure == "compensate"
    assert spec.tasks[0].compensate is not None and spec.tasks[0].compensate.retries == 2
    again = parse_workflow(yaml.safe_load(wf.to_yaml()))
    assert again == spec
    schema = WorkflowSpec.model_json_schema()
    assert "on_failure" in schema["properties"] and "CompensateSpec" in schema["$defs"]


def test_a_task_killed_while_running_is_compensated_too(sim: Sim) -> None:
    sim.hello("a1")
    wf = _chain(sim)
    _finish(sim, sim.task(wf, "a").id)
    b = sim.task(wf, "b")
    attempt = b.current_attempt_id
    assert attempt is not None
    sim.started("a1", attempt)
    sim.do(ev.CancelWorkflow(wf))
    sim.finished("a1", attempt, A.CANCELLED, error="terminated")
    assert b.state is T.CANCELLED
    comp_b, comp_a = compensation_of(sim.machine, b), compensation_of(sim.machine, sim.task(wf, "a"))
    assert comp_b is not None and comp_a is not None
    assert comp_b.state is T.ASSIGNED and comp_a.dependencies == (comp_b.id,)
    _finish(sim, comp_b.id)
    _finish(sim, comp_a.id)
    workflow = sim.machine.workflows[wf]
    assert workflow.state is W.CANCELLED and workflow.error == "cancelled"


def test_a_cached_task_is_not_compensated_and_an_undone_one_loses_its_cache_entry(sim: Sim) -> None:
    """Glue of the cache and compensation: cached effects belong to another workflow; undone ones
    must run again rather than be reused."""
    sim.hello("a1")
    first, _ = sim.submit([task_spec("a", cache=True)], name="warm")
    _finish(sim, sim.task(first, "a").id)
    assert len(sim.machine.cache.entries) == 1
    wf, _ = sim.submit(
        [
            task_spec("a", cache=True, compensate=_undo("a")),  # the same work: a hit
            task_spec("b", "a", cache=True, compensate=_undo("b")),
            task_spec("c", "b"),
        ],
        on_failure="compensate",
    )
    assert sim.task(wf, "a").cache_source  # completed from the cache, nothing ran
    _finish(sim, sim.task(wf, "b").id)
    assert len(sim.machine.cache.entries) == 2  # b's success was stored
    c = sim.task(wf, "c")
    assert c.current_attempt_id is not None
    sim.started("a1", c.current_attempt_id)
    step = sim.finished("a1", c.current_attempt_id, A.FAILED, error="boom", retryable=False)
    assert [p.task.name for p in step.assignments()] == ["b~compensate"]  # never a~compensate
    assert compensation_of(sim.machine, sim.task(wf, "a")) is None
    _finish(sim, step.assignments()[0].task.id)
    assert sim.machine.workflows[wf].state is W.FAILED
    # b was undone: its entry is gone; a's (another workflow's effects) stays.
    assert [e.source.split("/")[0] for e in sim.machine.cache.entries.values()] == [first]


def test_a_fallbacks_success_is_not_cached(sim: Sim) -> None:
    sim.hello("a1")
    wf, _ = sim.submit([task_spec("a", cache=True, fallback={"shell": "echo plan b"})])
    task = sim.task(wf, "a")
    assert task.current_attempt_id is not None
    sim.started("a1", task.current_attempt_id)
    sim.finished("a1", task.current_attempt_id, A.FAILED, error="boom", retryable=False)
    assert task.fallback_used and task.current_attempt_id is not None
    _finish(sim, task.id)
    assert task.state is T.COMPLETED and not sim.machine.cache.entries
