"""Bad input of issue 10 over gRPC (cache policies, parameters, ClearCache): INVALID_ARGUMENT with
the request's field path, in the message and in BadRequest, and nothing stored."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from corral.v1 import admin_pb2, admin_pb2_grpc, orchestrator_pb2
from corral.v1 import types_pb2 as pb
from tests.rpc.conftest import Controller, shell_task, workflow_spec
from tests.rpc.test_bad_input import assert_invalid, rpc_error


def _submit(controller: Controller, spec: pb.WorkflowSpec, **request: Any) -> Any:
    return controller.orchestrator.SubmitWorkflow(
        orchestrator_pb2.SubmitWorkflowRequest(spec=spec, start=True, **request)
    )


CASES: list[tuple[str, pb.WorkflowSpec, dict[str, Any], str, str]] = [
    (
        "negative-ttl",
        workflow_spec("wf", [shell_task("a", cache=pb.TaskCache(ttl_s=-1))]),
        {},
        "spec.tasks[0].cache.ttl_s",
        "ttl",
    ),
    (
        "key-with-newline",
        workflow_spec("wf", [shell_task("a", cache=pb.TaskCache(key="a\nb"))]),
        {},
        "spec.tasks[0].cache.key",
        "control",
    ),
    (
        "unknown-template",
        workflow_spec("wf", [shell_task("a", payload={"shell": "echo ${params.who}"})]),
        {},
        "spec.tasks[0].payload_json.shell",
        "unknown parameter 'who'",
    ),
    (
        "undeclared-value",
        workflow_spec("wf", [shell_task("a")], params_json=b'{"n": 1}'),
        {"params": {"m": "1"}},
        "params.m",
        "unknown parameter",
    ),
    (
        "wrong-type",
        workflow_spec("wf", [shell_task("a")], params_json=b'{"n": 1}'),
        {"params": {"n": "one"}},
        "params.n",
        "integer",
    ),
    (
        "required-missing",
        workflow_spec("wf", [shell_task("a")], params_json=b'{"who": null}'),
        {},
        "params.who",
        "required",
    ),
    (
        "bad-default",
        workflow_spec("wf", [shell_task("a")], params_json=b'{"n": [1]}'),
        {},
        "spec.params_json.n",
        "",
    ),
    (
        "params-not-json",
        workflow_spec("wf", [shell_task("a")], params_json=b"{nope"),
        {},
        "spec.params_json",
        "",
    ),
]


@pytest.mark.parametrize(("spec", "request_fields", "field", "word"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_bad_cache_and_params_input(
    controller: Controller, spec: pb.WorkflowSpec, request_fields: dict[str, Any], field: str, word: str
) -> None:
    words = (word,) if word else ()
    await assert_invalid(controller, _submit(controller, spec, **request_fields), field, *words)


async def test_clear_cache_refuses_a_bad_namespace(controller: Controller) -> None:
    admin = admin_pb2_grpc.AdminStub(controller.channel)
    error = await rpc_error(admin.ClearCache(admin_pb2.ClearCacheRequest(namespace="x" * 200)))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT and "namespace" in (error.details() or "")
    error = await rpc_error(admin.ClearCache(admin_pb2.ClearCacheRequest(namespace="absent")))
    assert error.code() is grpc.StatusCode.NOT_FOUND
