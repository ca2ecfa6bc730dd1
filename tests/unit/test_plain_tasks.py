"""Admission's fast path for plain tasks agrees with the pydantic model: whatever it accepts, the
model accepts as the same spec; anything else is left to the model (which words the errors)."""

from __future__ import annotations

import json
import math

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from corral.controller.errors import InvalidArgument
from corral.controller.rpc.plain_tasks import plain_task, plain_task_spec
from corral.controller.rpc.submission import _Records, admit_workflow
from corral.controller.rpc.wire_spec import task_mapping
from corral.controller.spec import TaskSpec
from corral.controller.spec_common import Limits
from corral.controller.store.codec import encode_task
from corral.v1 import types_pb2 as pb

_CHECKED = {"payload_checked": True}

names = st.one_of(
    st.sampled_from(["a", "build-1", "x.y_z", "A" * 128, "A" * 129, "-a", " a", "a\n", "é", "a/*", "", "a b"]),
    st.text(alphabet="ab-_./*\n é", min_size=0, max_size=6),
)
agent_types = st.sampled_from(["", "shell", "python", "ext", "bad type", "-x"])
payloads = st.sampled_from(
    [
        b"",
        b"{}",
        b'{"command": ["echo", "hi"]}',
        b'{"shell": "true"}',
        b'{"shell": ""}',
        b'{"command": [], "shell": "x"}',
        b'{"command": ["a\\u0000b"]}',
        b'{"function": "m:f", "args": [1]}',
        b'{"function": "m:f", "args": {}}',
        b'{"function": "not a function"}',
        b'{"function": "m:f", "kwargs": []}',
        b'{"x": "${params.day}"}',
        b"[1, 2]",
        b"3",
        b"null",
        b"{bad json",
        b'{"a": NaN}',
        b'{"deep": ' + b"[" * 40 + b"1" + b"]" * 40 + b"}",
        json.dumps({"shell": "x" * 70_000}).encode(),
    ]
)
dependencies = st.lists(names, max_size=3)
# The model's rule for estimated_duration: finite, 0 to max_timeout_s (0 is "none given").
estimates = st.one_of(
    st.sampled_from([0.0, 0.5, 1e-9, -0.0, -1.0, math.nan, math.inf, Limits.max_timeout_s, Limits.max_timeout_s * 2]),
    st.floats(allow_nan=True, allow_infinity=True),
)


def _slow(message: pb.TaskSpec) -> TaskSpec | None:
    try:
        return TaskSpec.model_validate(task_mapping(message, "tasks[0]"), context=_CHECKED)
    except (InvalidArgument, ValidationError):
        return None


@settings(max_examples=200, deadline=None)
@given(names, agent_types, payloads, dependencies, st.booleans(), estimates)
def test_the_fast_path_accepts_only_what_the_model_accepts_alike(
    name: str, agent_type: str, payload: bytes, deps: list[str], with_priority: bool, estimate: float
) -> None:
    message = pb.TaskSpec(
        name=name, agent_type=agent_type, payload_json=payload, dependencies=deps, estimated_duration_s=estimate
    )
    if with_priority:
        message.priority = 10  # not a plain task: the model's path
    fast = plain_task_spec(message, payload or b"{}", "tasks[0]")
    if fast is None:
        return
    assert not with_priority
    slow = _slow(message)
    assert slow is not None, (name, agent_type, payload, deps)
    assert fast == slow
    assert fast.model_dump() == slow.model_dump()


@settings(max_examples=100, deadline=None)
@given(names, agent_types, payloads, dependencies, st.sampled_from([None, 10]), estimates)
def test_the_fast_path_builds_the_record_the_model_path_builds(
    name: str, agent_type: str, payload: bytes, deps: list[str], default_priority: int | None, estimate: float
) -> None:
    message = pb.TaskSpec(
        name=name, agent_type=agent_type, payload_json=payload, dependencies=deps, estimated_duration_s=estimate
    )
    plain = plain_task(message, payload or b"{}", "tasks[0]", set())
    if plain is None:
        return
    slow = _slow(message)
    assert slow is not None
    records = _Records("wf-1", default_priority, "team-a")
    fast_record = records.plain_task(plain, "t-1", 3, payload or b"{}")
    slow_record = records.task(slow, "t-1", 3, payload or b"{}")
    assert encode_task(fast_record) == encode_task(slow_record)
    assert fast_record == slow_record


@settings(max_examples=200, deadline=None)
@given(estimates)
def test_an_estimate_takes_the_fast_path_exactly_when_the_model_accepts_it(estimate: float) -> None:
    message = pb.TaskSpec(name="t", payload_json=b'{"shell": "true"}', estimated_duration_s=estimate)
    plain = plain_task(message, message.payload_json, "tasks[0]", set())
    slow = _slow(message)
    assert (plain is None) == (slow is None), estimate
    if plain is not None and slow is not None:
        assert plain_task_spec(message, message.payload_json, "tasks[0]") == slow
        records = _Records("wf-1", None, "default")
        fast_record = records.plain_task(plain, "t-1", 0, message.payload_json)
        assert encode_task(fast_record) == encode_task(records.task(slow, "t-1", 0, message.payload_json))


def test_plain_tasks_take_the_fast_path() -> None:
    message = pb.TaskSpec(name="t1", agent_type="python", payload_json=b'{"function": "m:f", "args": [1]}')
    message.dependencies.extend(["t0"])
    fast = plain_task_spec(message, message.payload_json, "tasks[0]")
    assert fast is not None and fast == _slow(message)
    shell = pb.TaskSpec(name="s", payload_json=b'{"shell": "true"}')
    assert plain_task_spec(shell, shell.payload_json, "tasks[0]") is not None
    estimated = pb.TaskSpec(name="e", payload_json=b'{"shell": "true"}', estimated_duration_s=0.25)
    plain = plain_task(estimated, estimated.payload_json, "tasks[0]", set())
    assert plain is not None and plain.estimated_duration == 0.25
    assert _Records("wf-1", None, "default").plain_task(plain, "t-1", 0, b"{}").estimated_duration_s == 0.25


def test_errors_are_the_models_whichever_path_a_task_takes() -> None:
    spec = pb.WorkflowSpec(name="w")
    spec.tasks.add(name="ok", agent_type="python", payload_json=b'{"function": "m:f"}')
    spec.tasks.add(name="bad", agent_type="python", payload_json=b'{"function": "nope"}')
    spec.tasks.add(name="b c", payload_json=b'{"shell": "true"}')
    try:
        admit_workflow(spec, lambda: "x")
    except InvalidArgument as exc:
        fields = [v.field for v in exc.violations]
    else:
        raise AssertionError("admitted a bad workflow")
    assert fields == ["tasks[1]", "tasks[2].name"]
