"""The task result cache (issue 10) in the pure core, on a fake clock."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

from corral.controller.core import events as ev
from corral.controller.core.cache import CacheBook, CacheEntry, ClearCacheRequest, invalidate
from corral.controller.core.machine import Machine, MachineConfig
from corral.controller.core.model import AttemptState, TaskState, WorkflowState
from corral.controller.core.requests import Caller
from corral.controller.rpc.submission import admit_workflow
from corral.controller.rpc.wire_spec import spec_to_proto
from corral.controller.spec import parse_workflow
from tests.unit.conftest import Sim, task_spec


def _cached(name: str, *deps: str, **fields: Any) -> dict[str, Any]:
    return task_spec(name, *deps, cache=fields.pop("cache", True), **fields)


def _run_all(sim: Sim, workflow_id: str, results: dict[str, bytes] | None = None) -> list[str]:
    """Complete every task of a workflow as it is assigned; the names that ran, in order."""
    ran: list[str] = []
    for _ in range(100):
        active = [
            t for t in sim.machine.tasks.values() if t.workflow_id == workflow_id and t.state is TaskState.ASSIGNED
        ]
        if not active:
            break
        for task in active:
            ran.append(task.name)
            result = (results or {}).get(task.name, b'{"from": "%s"}' % task.name.encode())
            sim.finished("a1", task.current_attempt_id or "", result=result)
    return ran


def test_a_second_workflow_completes_from_the_cache_and_runs_nothing(sim: Sim) -> None:
    sim.hello("a1")
    first, _ = sim.submit([_cached("a"), _cached("b", "a")])
    assert _run_all(sim, first) == ["a", "b"]
    assert sim.machine.workflows[first].state is WorkflowState.COMPLETED
    source = f"{first}/{sim.task(first, 'a').id}/{sim.task(first, 'a').current_attempt_id}"

    second, step = sim.submit([_cached("a"), _cached("b", "a")])
    assert step.assignments() == []
    assert sim.machine.workflows[second].state is WorkflowState.COMPLETED
    a = sim.task(second, "a")
    assert (a.state, a.cache_source, a.result) == (TaskState.COMPLETED, source, b'{"from": "a"}')
    assert sim.task(second, "b").cache_source.startswith(f"{first}/")
    kinds = [(e.task_name, e.kind) for e in step.changes.events if e.task_name]
    assert ("a", "cache_hit") in kinds and ("b", "cache_hit") in kinds
    assert sim.machine.explain(a.id, sim.now).reason.startswith("completed from the cache")


def test_the_key_covers_payload_inputs_version_and_namespace(sim: Sim) -> None:
    sim.hello("a1")
    first, _ = sim.submit([_cached("a"), _cached("b", "a")])
    _run_all(sim, first)
    # Another payload for a: a misses, so b's input may differ and b runs too.
    other, _ = sim.submit([_cached("a", payload={"shell": "echo other"}), _cached("b", "a")])
    assert _run_all(sim, other, {"a": b"2"}) == ["a", "b"]
    # Same work but a new version: a miss.
    versioned, _ = sim.submit([_cached("a", cache={"version": "2"})])
    assert _run_all(sim, versioned) == ["a"]
    # A task without a policy never uses the cache.
    plain, _ = sim.submit([task_spec("a")])
    assert _run_all(sim, plain) == ["a"]


def test_an_own_key_ignores_the_payload(sim: Sim) -> None:
    sim.hello("a1")
    first, _ = sim.submit([_cached("a", cache={"key": "k1"})])
    _run_all(sim, first)
    second, step = sim.submit([_cached("a", cache={"key": "k1"}, payload={"shell": "echo different"})])
    assert step.assignments() == [] and sim.task(second, "a").cache_source


def test_ttl_expiry_runs_the_task_again(sim: Sim) -> None:
    sim.hello("a1")
    first, _ = sim.submit([_cached("a", cache={"ttl": "10s"})])
    _run_all(sim, first)
    _, step = sim.submit([_cached("a", cache={"ttl": "10s"})])
    assert step.assignments() == []
    sim.advance(10.5)
    late, step = sim.submit([_cached("a", cache={"ttl": "10s"})])
    assert [a.task.name for a in step.assignments()] == ["a"]
    assert sim.task(late, "a").cache_source == ""


def test_no_cache_runs_everything_and_refreshes_the_entries(sim: Sim) -> None:
    sim.hello("a1")
    first, _ = sim.submit([_cached("a")])
    _run_all(sim, first, {"a": b"1"})
    spec = {"name": "wf", "tasks": [_cached("a")]}
    admitted = admit_workflow(spec_to_proto(parse_workflow(spec)), sim.new_id)
    admitted.workflow.no_cache = True
    step = sim.do(ev.SubmitWorkflow(admitted.workflow, admitted.tasks, start=True))
    assert [a.task.name for a in step.assignments()] == ["a"]
    _run_all(sim, admitted.workflow.id, {"a": b"2"})
    third, _ = sim.submit([_cached("a")])
    assert sim.task(third, "a").result == b"2"  # the refreshed entry


def test_failures_are_not_cached_and_a_retry_can_hit(sim: Sim) -> None:
    sim.hello("a1")
    first, _ = sim.submit([_cached("a")])
    sim.finished("a1", sim.attempt_of(first, "a"), AttemptState.FAILED, error="boom", retryable=False)
    assert sim.machine.workflows[first].state is WorkflowState.FAILED
    assert len(sim.machine.cache) == 0


def test_a_long_chain_of_cached_tasks_completes_without_recursion(make_sim: Callable[..., Sim]) -> None:
    sim = make_sim()
    sim.hello("a1", slots=64)
    names = [f"t{i}" for i in range(3000)]
    tasks = [_cached(n, *([names[i - 1]] if i else [])) for i, n in enumerate(names)]
    first, _ = sim.submit(tasks)
    for name in names:  # run the chain once, task by task
        sim.finished("a1", sim.attempt_of(first, name), result=b"1")
    second, step = sim.submit(tasks)
    assert step.assignments() == []
    assert sim.machine.workflows[second].state is WorkflowState.COMPLETED


def test_entries_survive_a_restart_through_the_store(sim: Sim) -> None:
    sim.hello("a1")
    first, _ = sim.submit([_cached("a", cache={"ttl": 60})])
    _run_all(sim, first, {"a": b"7"})
    restored = Machine(MachineConfig(), new_id=sim.new_id, rng=random.Random(1))
    restored.restore(sim.store.load(), sim.now)
    assert [e.result for e in restored.cache.entries.values()] == [b"7"]
    entry = next(iter(restored.cache.entries.values()))
    assert entry.expires_at == pytest.approx(entry.created_at + 60)


def test_the_book_is_bounded_by_entries_and_bytes() -> None:
    book = CacheBook(max_entries=3, max_bytes=10_000)
    for i in range(5):
        book.put(CacheEntry(f"k{i}", "default", b"x", "w/t/a", 0.0, None, float(i)))
    assert list(book.entries) == ["k2", "k3", "k4"] and book.evictions == 2
    assert book.get("k2", 10.0) is not None  # used: now the most recent
    book.put(CacheEntry("k5", "default", b"x", "w/t/a", 0.0, None, 11.0))
    assert list(book.entries) == ["k4", "k2", "k5"]
    small = CacheBook(max_entries=100, max_bytes=1000)
    for i in range(5):
        small.put(CacheEntry(f"k{i}", "default", b"y" * 200, "w/t/a", 0.0, None, 0.0))
    assert small.bytes <= 1000 and len(small) == 2
    small.put(CacheEntry("huge", "default", b"z" * 5000, "w/t/a", 0.0, None, 0.0))
    assert "huge" not in small.entries and len(small) == 2  # never fits: nothing evicted for it
    changes = small.take_changes()
    assert changes is not None and changes.deletes == {"k0", "k1", "k2"}


def test_invalidate_and_clear(sim: Sim) -> None:
    sim.hello("a1")
    first, _ = sim.submit([_cached("a"), _cached("b")])
    _run_all(sim, first)
    assert len(sim.machine.cache) == 2
    assert invalidate(sim.machine, sim.task(first, "a")) == 1
    second, step = sim.submit([_cached("a"), _cached("b")])
    assert [a.task.name for a in step.assignments()] == ["a"]
    cleared = sim.do(ClearCacheRequest(Caller(namespaces=("other",)))).result
    assert cleared == (0, 1)
    cleared = sim.do(ClearCacheRequest(Caller())).result
    assert cleared == (1, 0)
    assert sim.store.load().cache_entries == []  # the deletes were committed
    _run_all(sim, second)
    assert len(sim.store.load().cache_entries) == 1


@pytest.mark.parametrize(
    ("cache", "path"),
    [
        ({"ttl": -1}, "tasks[0].cache.ttl"),
        ({"ttl": "soon"}, "tasks[0].cache.ttl"),
        ({"ttl": "400d"}, "tasks[0].cache.ttl"),
        ({"key": ""}, "tasks[0].cache.key"),
        ({"version": "v\n2"}, "tasks[0].cache.version"),
        ({"color": "red"}, "tasks[0].cache.color"),
        ("yes", "tasks[0].cache"),
    ],
)
def test_a_bad_cache_policy_is_refused_with_its_path(cache: Any, path: str) -> None:
    from corral.controller.errors import InvalidArgument

    with pytest.raises(InvalidArgument) as exc:
        parse_workflow({"name": "wf", "tasks": [_cached("a", cache=cache)]})
    assert [v.field for v in exc.value.violations] == [path]


def test_a_bad_ttl_on_the_wire_names_the_request_field() -> None:
    from corral.controller.errors import InvalidArgument
    from corral.controller.rpc.admission import admit

    message = spec_to_proto(parse_workflow({"name": "wf", "tasks": [_cached("a", cache={"ttl": 5})]}))
    message.tasks[0].cache.ttl_s = float("nan")
    with pytest.raises(InvalidArgument) as exc:
        admit(message, True, lambda: "x")
    assert [v.field for v in exc.value.violations] == ["spec.tasks[0].cache.ttl_s"]


def test_gang_members_always_run(sim: Sim) -> None:
    sim.hello("a1")
    first, _ = sim.submit([_cached("a", gang="g"), _cached("b", gang="g")])
    assert _run_all(sim, first) == ["a", "b"]
    _, step = sim.submit([_cached("a", gang="g"), _cached("b", gang="g")])
    assert sorted(a.task.name for a in step.assignments()) == ["a", "b"]
