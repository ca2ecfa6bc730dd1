"""Memory per task (issue 12 §3): structural checks, never an RSS or a timing.

Per-task objects carry no ``__dict__``; words repeated on every task are one string in memory;
stored rows decode into shared values; the name index holds no tuple per task; a workflow's
result built in place equals the one built task by task.
"""

from __future__ import annotations

import itertools
from types import MappingProxyType
from typing import Any

import pytest

from corral.controller.core.durations import DurationSource, LearnedDuration
from corral.controller.core.model import (
    Agent,
    Attempt,
    Inventory,
    Resources,
    Task,
    TaskType,
    Workflow,
    WorkflowEvent,
    WorkflowState,
)
from corral.controller.core.name_index import NameIndex
from corral.controller.core.ordering import TaskRank
from corral.controller.rpc import wire
from corral.controller.rpc.submission import admit_workflow
from corral.controller.rpc.wire_spec import spec_to_proto
from corral.controller.sim import Fleet, Simulator
from corral.controller.spec import parse_workflow
from corral.controller.store import codec
from corral.v1 import types_pb2 as pb


def _spec(count: int, chain: bool = True, **extra: Any) -> Any:
    tasks = [
        {
            "name": f"t{i}",
            "agent_type": "python",
            "payload": {"function": "m:f", "args": [i]},
            "dependencies": [f"t{i - 1}"] if i and chain else [],
            **extra,
        }
        for i in range(count)
    ]
    return parse_workflow({"name": "slim", "tasks": tasks})


def _admitted(count: int, chain: bool = True, **extra: Any) -> Any:
    counter = itertools.count(1)
    # Decoded from bytes, as the server does: every string is a fresh object from the message.
    message = pb.WorkflowSpec.FromString(spec_to_proto(_spec(count, chain, **extra)).SerializeToString())
    return admit_workflow(message, lambda: f"{next(counter):06d}")


@pytest.mark.parametrize(
    "record",
    [
        Task("t-1", "wf-1", "a", 0, "shell", b"{}"),
        Attempt("a-1", "t-1", "wf-1", "agent-1", 1),
        Workflow("wf-1", "w", ["t-1"]),
        WorkflowEvent(1, 0.0, "wf-1", WorkflowState.RUNNING),
        Resources(),
        Inventory(),
        Agent("agent-1", "agent-1"),
        LearnedDuration(("task", "default", "w", "a"), 1.0, 1, 0.0),
    ],
    ids=lambda r: type(r).__name__,
)
def test_per_task_records_have_slots_and_no_dict(record: object) -> None:
    assert not hasattr(record, "__dict__")


def test_task_rank_is_a_tuple_without_dict() -> None:
    rank = TaskRank(1.0, 2.0, DurationSource.STRUCTURAL, 3.0)
    assert not hasattr(rank, "__dict__")


def test_admission_shares_the_words_and_resources_repeated_on_every_task() -> None:
    tasks = _admitted(50, chain=False, on_disconnect="keep", spread="zone", gang="g").tasks
    first = tasks[0]
    for task in tasks[1:]:
        assert task.agent_type is first.agent_type == "python"
        assert task.namespace is first.namespace
        assert task.workflow_id is first.workflow_id
        assert task.on_disconnect is first.on_disconnect == "keep"
        assert task.spread is first.spread == "zone"
        assert task.gang is first.gang == "g"
        assert task.resources is first.resources
        assert task.constraints is first.constraints
        assert task.affinity is first.affinity
    assert first.type is TaskType.COMPUTE


def test_decoded_rows_share_repeated_values_and_an_empty_read_only_mapping() -> None:
    tasks = _admitted(20).tasks
    rows = [codec.encode_task(t) for t in tasks]
    # Fresh string objects for every row, as SQLite returns them.
    copies = [tuple("".join(v) if isinstance(v, str) else v for v in row) for row in rows]
    decoded = [codec.decode_task(row) for row in copies]
    first = decoded[0]
    for original, task in zip(tasks, decoded, strict=True):
        assert task == original  # nothing lost
        assert task.workflow_id is first.workflow_id
        assert task.agent_type is first.agent_type
        assert task.namespace is first.namespace
        assert task.on_disconnect is first.on_disconnect
        assert task.resources is first.resources
        assert task.constraints is first.constraints
        assert task.affinity is first.affinity
    assert isinstance(first.constraints, MappingProxyType)
    with pytest.raises(TypeError):
        first.constraints["zone"] = "a"  # type: ignore[index]
    attempts = [
        codec.decode_attempt(codec.encode_attempt(Attempt(f"a-{i}", t.id, "".join(t.workflow_id), "".join("ag-1"), 1)))
        for i, t in enumerate(tasks)
    ]
    assert all(a.workflow_id is attempts[0].workflow_id and a.agent_id is attempts[0].agent_id for a in attempts)


def test_decoded_custom_resources_are_not_shared() -> None:
    text = codec.encode_resources(Resources(1.0, custom={"fpga": 1.0}))
    one, two = codec.decode_resources(text), codec.decode_resources(text)
    assert one == two == Resources(1.0, custom={"fpga": 1.0})
    assert one is not two and one.custom is not two.custom


def test_name_index_behaves_like_the_flat_dict_it_replaces() -> None:
    index = NameIndex()
    flat: dict[tuple[str, str], str] = {}
    for workflow_id, name, task_id in [("w1", "a", "t1"), ("w1", "b", "t2"), ("w2", "a", "t3"), ("w1", "a", "t4")]:
        index[(workflow_id, name)] = task_id
        flat[(workflow_id, name)] = task_id
    assert len(index) == len(flat) == 3
    assert sorted(index) == sorted(flat)
    for key, value in flat.items():
        assert index.get(key) == index[key] == value
        assert key in index
    assert index.get(("w3", "a")) is None and ("w1", "z") not in index
    with pytest.raises(KeyError):
        index[("w1", "z")]
    assert index.pop(("w1", "a")) == "t4"
    assert index.pop(("w1", "a"), None) is None
    assert index.pop(("w1", "b")) == "t2"
    assert len(index) == 1 and sorted(index) == [("w2", "a")]
    # No per-task key objects: one dict per workflow, emptied workflows dropped.
    assert index._workflows == {"w2": {"a": "t3"}}


def test_a_result_built_in_place_equals_one_built_task_by_task() -> None:
    sim = Simulator(Fleet(agents=2, slots=2), default_duration_s=0.5)
    spec = parse_workflow(
        {
            "name": "inplace",
            "tasks": [
                {"name": f"t{i}", "payload": {"shell": "true"}, "dependencies": [f"t{i // 2}"] if i else []}
                for i in range(12)
            ],
        }
    )
    assert sim.run(spec).state == "completed"
    machine = sim.machine
    (workflow,) = machine.workflows.values()
    built = wire.workflow_result(machine, workflow, sim.now)
    tasks = [machine.tasks[t] for t in workflow.task_ids]
    one_by_one = [wire.task_status(machine, t) for t in tasks]
    assert list(built.tasks) == one_by_one
    assert len(built.tasks) == 12 and built.results_json.keys() == {t.name for t in tasks}
