"""Bad input over gRPC for issue 10's fallback, allow_failure, min_success and approval fields: a precise
INVALID_ARGUMENT with the request's field path, nothing stored."""

from __future__ import annotations

import json

import pytest

from corral.controller.spec import Limits
from corral.v1 import types_pb2 as pb
from tests.rpc.conftest import Controller, shell_task, workflow_spec
from tests.rpc.test_bad_input import _submit, assert_invalid

CASES = [
    ("fallback-not-json", [shell_task("a", fallback_json=b"{nope")], "spec.tasks[0].fallback_json"),
    ("fallback-shape", [shell_task("a", fallback_json=b'{"sh": "x"}')], "spec.tasks[0].fallback_json"),
    (
        "fallback-too-big",
        [shell_task("a", fallback_json=json.dumps({"shell": "x" * Limits.max_payload_bytes}).encode())],
        "spec.tasks[0].fallback_json",
    ),
    ("min-success-over-deps", [shell_task("a"), shell_task("b", "a", min_success=2)], "spec.tasks[1].min_success"),
    ("min-success-zero", [shell_task("a"), shell_task("b", "a", min_success=0)], "spec.tasks[1].min_success"),
    (
        "approval-with-payload",
        [shell_task("a", approval=pb.ApprovalSpec(message="ok?"))],
        "spec.tasks[0].approval",
    ),
    (
        "approval-bad-timeout",
        [shell_task("a", payload=b"", approval=pb.ApprovalSpec(timeout_s=-1))],
        "spec.tasks[0].approval.timeout_s",
    ),
    (
        "approval-control-character",
        [shell_task("a", payload=b"", approval=pb.ApprovalSpec(message="a\x1bb"))],
        "spec.tasks[0].approval.message",
    ),
]


@pytest.mark.parametrize(("tasks", "field"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_bad_rules_are_refused_with_their_field_path(
    controller: Controller, tasks: list[pb.TaskSpec], field: str
) -> None:
    await assert_invalid(controller, _submit(controller, workflow_spec("wf", tasks)), field)
