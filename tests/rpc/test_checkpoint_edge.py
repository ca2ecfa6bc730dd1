"""Checkpoint reports at the edge: size limit with a field path, bad JSON dropped, wire conversion."""

from __future__ import annotations

import pytest

from corral.controller.core import events as ev
from corral.controller.core.checkpoints import MAX_CHECKPOINT_BYTES
from corral.controller.errors import InvalidArgument
from corral.controller.rpc import agent_input, wire
from corral.v1 import agent_pb2


def _event(data: bytes) -> agent_pb2.TaskEvent:
    return agent_pb2.TaskEvent(attempt_id="att-1", checkpoint=agent_pb2.Checkpoint(data_json=data))


def test_an_oversized_checkpoint_is_refused_with_its_path() -> None:
    batch = agent_pb2.TaskEvents(events=[_event(b"1"), _event(b"1" * (MAX_CHECKPOINT_BYTES + 1))])
    with pytest.raises(InvalidArgument) as caught:
        agent_input.check_events(batch)
    assert "events.events[1].checkpoint.data_json" in str(caught.value)


@pytest.mark.parametrize("data", [b"", b"{", b"NaN", b"[" * 200 + b"]" * 200])
def test_a_checkpoint_that_is_not_a_json_value_is_a_problem(data: bytes) -> None:
    assert agent_input.checkpoint_problem(data, 3) is not None


def test_a_good_checkpoint_becomes_a_report() -> None:
    assert agent_input.checkpoint_problem(b'{"n": 50}', 0) is None
    report = wire.task_event_from_proto("a1", 1, _event(b'{"n": 50}'))
    assert report == ev.AttemptCheckpoint("a1", "att-1", b'{"n": 50}')


def test_a_bad_map_through_the_wire_is_refused_with_its_path() -> None:
    from corral.controller.rpc.submission import admit_workflow
    from corral.v1 import types_pb2

    message = types_pb2.WorkflowSpec(
        name="wf",
        tasks=[
            types_pb2.TaskSpec(name="items", agent_type="shell", payload_json=b'{"shell": "echo []"}'),
            types_pb2.TaskSpec(
                name="each", agent_type="shell", payload_json=b'{"shell": "true"}', dependencies=["items"], map="nope"
            ),
        ],
    )
    with pytest.raises(InvalidArgument) as caught:
        admit_workflow(message, lambda: "1")
    assert "tasks[1].map" in str(caught.value)
    good = types_pb2.WorkflowSpec(name="wf", tasks=[message.tasks[0]])
    good.tasks.add(name="fan", agent_type="shell", payload_json=b'{"shell": "true"}', dependencies=["items/*"])
    admitted = admit_workflow(good, lambda: "2")
    fan = admitted.tasks[1]
    assert fan.dependencies == (admitted.tasks[0].id,) and fan.dynamic is not None
    assert fan.dynamic.group_deps == (admitted.tasks[0].id,)
