"""The issue 8 task and workflow fields: on_disconnect, max_disconnect, max_agent_losses — in the
workflow file, on the wire (with its field paths) and in the SDK builder."""

from __future__ import annotations

import itertools

import pytest

from corral.controller.errors import InvalidArgument
from corral.controller.rpc.submission import admit_workflow
from corral.controller.rpc.wire_spec import spec_to_proto, wire_path
from corral.controller.sdk.builder import Workflow, spec_to_yaml
from corral.controller.sdk.errors import InvalidArgumentError
from corral.controller.spec import parse_duration, parse_workflow_text
from corral.v1 import types_pb2 as pb

_FILE = """
name: resilient
max_agent_losses: 5
tasks:
  - name: long
    payload: {shell: "sleep 600"}
    on_disconnect: keep
    max_disconnect: 10m
    max_agent_losses: 2
  - name: plain
    payload: {shell: "true"}
"""


@pytest.mark.parametrize(
    ("text", "seconds"),
    [(90, 90.0), (1.5, 1.5), ("45", 45.0), ("30s", 30.0), ("10m", 600.0), ("1.5h", 5400.0), ("2d", 172800.0)],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["10x", "", "m", "-5m", True, None, "inf"])
def test_bad_durations_are_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


def test_the_file_keys_reach_the_records() -> None:
    spec = parse_workflow_text(_FILE)
    counter = itertools.count()
    admitted = admit_workflow(spec_to_proto(spec), lambda: f"{next(counter)}")
    assert admitted.workflow.max_agent_losses == 5
    long, plain = admitted.tasks
    assert (long.on_disconnect, long.max_disconnect_s, long.max_agent_losses) == ("keep", 600.0, 2)
    assert (plain.on_disconnect, plain.max_disconnect_s, plain.max_agent_losses) == ("stop", None, None)


def test_bad_values_name_their_fields_and_store_nothing() -> None:
    message = pb.WorkflowSpec(
        name="w",
        max_agent_losses=0,
        tasks=[
            pb.TaskSpec(name="a", payload_json=b'{"shell":"true"}', on_disconnect=9),
            pb.TaskSpec(name="b", payload_json=b'{"shell":"true"}', max_disconnect_s=-1.0, max_agent_losses=1000),
        ],
    )
    with pytest.raises(InvalidArgument) as info:
        admit_workflow(message, lambda: "x")
    fields = {wire_path(v.field) for v in info.value.violations}
    assert fields == {
        "max_agent_losses",
        "tasks[0].on_disconnect",
        "tasks[1].max_disconnect_s",
        "tasks[1].max_agent_losses",
    }


def test_max_disconnect_is_for_keep_tasks_only() -> None:
    with pytest.raises(InvalidArgument, match="max_disconnect applies to on_disconnect: keep tasks only"):
        parse_workflow_text("name: w\ntasks: [{name: a, payload: {shell: 'true'}, max_disconnect: 60}]")


def test_the_builder_takes_the_fields_and_writes_them_back() -> None:
    wf = Workflow("built", max_agent_losses=4)
    wf.shell("a", "sleep 1", on_disconnect="keep", max_disconnect="90s", max_agent_losses=1)
    wf.shell("b", "true")
    spec = wf.build()
    assert spec.max_agent_losses == 4
    assert (spec.tasks[0].on_disconnect, spec.tasks[0].max_disconnect, spec.tasks[0].max_agent_losses) == (
        "keep",
        90.0,
        1,
    )
    text = spec_to_yaml(spec)
    assert "on_disconnect: keep" in text and "max_disconnect: 90.0" in text and "max_agent_losses: 4" in text
    assert parse_workflow_text(text) == spec
    with pytest.raises(InvalidArgumentError) as info:
        Workflow("bad").shell("x", "true", on_disconnect="pause")  # type: ignore[arg-type]
    assert [v.field for v in info.value.violations] == ["tasks[0].on_disconnect"]
