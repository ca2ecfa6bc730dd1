"""The issue 9 placement fields: label expressions, spread, affinity — in the workflow file, on the
wire, in the task records and in the SDK builder."""

from __future__ import annotations

import itertools

import pytest

from corral.controller.core.model import LabelExpr
from corral.controller.errors import InvalidArgument
from corral.controller.rpc.submission import admit_workflow
from corral.controller.rpc.wire_spec import spec_to_proto
from corral.controller.sdk.builder import Workflow, spec_to_yaml
from corral.controller.sdk.errors import InvalidArgumentError
from corral.controller.spec import parse_workflow_text

_FILE = """
name: placed
tasks:
  - name: a
    payload: {shell: "true"}
    constraints:
      os: linux
      zone: {in: [eu-1, eu-2]}
      arch: {not_in: [arm64]}
      gpu: {exists: true}
      spot: {exists: false}
    spread: zone
    affinity: {disk: ssd}
  - name: plain
    payload: {shell: "true"}
"""

_EXPRS = (
    LabelExpr("zone", "in", ("eu-1", "eu-2")),
    LabelExpr("arch", "not_in", ("arm64",)),
    LabelExpr("gpu", "exists"),
    LabelExpr("spot", "does_not_exist"),
)


def test_file_form_becomes_task_records_through_the_wire() -> None:
    spec = parse_workflow_text(_FILE)
    ids = (f"id{i}" for i in itertools.count())
    admitted = admit_workflow(spec_to_proto(spec), lambda: next(ids))
    placed, plain = admitted.tasks
    assert placed.constraints == {"os": "linux"}
    assert placed.constraint_exprs == _EXPRS
    assert (placed.spread, dict(placed.affinity)) == ("zone", {"disk": "ssd"})
    assert (plain.constraints, plain.constraint_exprs, plain.spread, dict(plain.affinity)) == ({}, (), "", {})


@pytest.mark.parametrize(
    ("value", "path", "words"),
    [
        ("{in: []}", "tasks[0].constraints.zone.in", "at least 1 item"),
        ("{in: [a], exists: true}", "tasks[0].constraints.zone", "exactly one of"),
        ("{}", "tasks[0].constraints.zone", "exactly one of"),
        ("{equals: a}", "tasks[0].constraints.zone.equals", "Extra inputs"),
        ("{exists: maybe}", "tasks[0].constraints.zone.exists", "boolean"),
        ("[a]", "tasks[0].constraints.zone", "valid string"),
    ],
)
def test_bad_expressions_are_refused_with_their_path(value: str, path: str, words: str) -> None:
    text = f'name: w\ntasks:\n  - name: a\n    payload: {{shell: "true"}}\n    constraints: {{zone: {value}}}\n'
    with pytest.raises(InvalidArgument) as caught:
        parse_workflow_text(text)
    (violation,) = caught.value.violations
    assert violation.field == path and words in violation.description


def test_sdk_builder_and_yaml_round_trip() -> None:
    wf = Workflow("placed")
    wf.shell(
        "a",
        "true",
        constraints={"os": "linux", "zone": {"in": ["eu-1", "eu-2"]}, "spot": {"exists": False}},
        spread="agent",
        affinity={"disk": "ssd"},
    )
    (task,) = wf.build().tasks
    assert task.label_expressions() == (LabelExpr("zone", "in", ("eu-1", "eu-2")), LabelExpr("spot", "does_not_exist"))
    again = parse_workflow_text(spec_to_yaml(wf.build()))
    assert again == wf.build()
    with pytest.raises(InvalidArgumentError, match="spread"):
        Workflow("w").shell("a", "true", spread="not a label")
