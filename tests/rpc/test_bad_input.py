"""Bad input over gRPC: a precise status, the field path in the message and in BadRequest, nothing stored."""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable
from typing import Any

import grpc
import pytest

from corral.controller.errors import InvalidArgument
from corral.controller.spec import Limits, parse_workflow_text
from corral.v1 import agent_pb2, orchestrator_pb2, scheduler_pb2
from corral.v1 import types_pb2 as pb
from tests.rpc.conftest import Controller, bad_request, shell_task, workflow_spec

INVALID = grpc.StatusCode.INVALID_ARGUMENT


async def rpc_error(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


async def assert_invalid(controller: Controller, call: Awaitable[Any], field: str, *words: str) -> str:
    """The call fails with INVALID_ARGUMENT naming ``field`` (message and BadRequest) and stores nothing."""
    error = await rpc_error(call)
    assert error.code() is INVALID, error.details()
    message = error.details() or ""
    assert field in message
    for word in words:
        assert word in message
    fields = [name for name, _ in bad_request(error)]
    assert field in fields, fields
    listing = await controller.orchestrator.ListWorkflows(orchestrator_pb2.ListWorkflowsRequest())
    assert list(listing.workflows) == []
    assert controller.stored() == (0, 0)
    return message


def _spec(*tasks: pb.TaskSpec, **fields: Any) -> pb.WorkflowSpec:
    return workflow_spec("wf", tasks, **fields)


def _submit(controller: Controller, spec: pb.WorkflowSpec | None) -> Awaitable[Any]:
    request = orchestrator_pb2.SubmitWorkflowRequest(start=True)
    if spec is not None:
        request.spec.CopyFrom(spec)
    return controller.orchestrator.SubmitWorkflow(request)


BIG = "x" * (Limits.max_payload_bytes + 1)

SPEC_CASES: list[tuple[str, pb.WorkflowSpec | None, str, tuple[str, ...]]] = [
    ("missing-spec", None, "spec", ("required",)),
    ("no-tasks", _spec(), "spec.tasks", ()),
    ("self-dependency", _spec(shell_task("a", "a")), "spec.tasks[0].dependencies[0]", ("depends on itself",)),
    ("unknown-dependency", _spec(shell_task("a", "zzz")), "spec.tasks[0].dependencies[0]", ("unknown task 'zzz'",)),
    (
        "duplicate-dependency",
        _spec(shell_task("a"), shell_task("b", "a", "a")),
        "spec.tasks[1].dependencies[1]",
        ("duplicate dependency 'a'",),
    ),
    ("duplicate-name", _spec(shell_task("a"), shell_task("a")), "spec.tasks[1].name", ("duplicate task name",)),
    *[
        (
            f"cpu-{label}",
            _spec(shell_task("a", resources=pb.ResourceRequirements(cpu_cores=value))),
            "spec.tasks[0].resources.cpu_cores",
            (),
        )
        for label, value in (("negative", -1.0), ("nan", math.nan), ("inf", math.inf), ("huge", 1e9))
    ],
    (
        "memory-negative",
        _spec(shell_task("a", resources=pb.ResourceRequirements(memory_mb=-5))),
        "spec.tasks[0].resources.memory_mb",
        (),
    ),
    (
        "gpu-huge",
        _spec(shell_task("a", resources=pb.ResourceRequirements(gpu_count=100_000))),
        "spec.tasks[0].resources.gpu_count",
        (),
    ),
    *[
        (f"priority-{value}", _spec(shell_task("a", priority=value)), "spec.tasks[0].priority", ())
        for value in (101, -1)
    ],
    ("workflow-priority", _spec(shell_task("a"), priority=101), "spec.priority", ()),
    *[
        (f"timeout-{value:g}", _spec(shell_task("a", timeout_s=value)), "spec.tasks[0].timeout_s", ("timeout",))
        for value in (0.0, -3.0, math.nan)
    ],
    *[(f"retries-{value}", _spec(shell_task("a", retries=value)), "spec.tasks[0].retries", ()) for value in (101, -1)],
    (
        "payload-too-big",
        _spec(shell_task("a", payload={"shell": BIG})),
        "spec.tasks[0].payload_json",
        ("max_payload_bytes",),
    ),
    (
        "metadata-too-big",
        _spec(shell_task("a"), metadata_json=json.dumps({"note": BIG}).encode()),
        "spec.metadata_json",
        ("max_metadata_bytes",),
    ),
    ("metadata-not-json", _spec(shell_task("a"), metadata_json=b"{oops"), "spec.metadata_json", ("not valid JSON",)),
    (
        "payload-not-json",
        _spec(shell_task("a", payload=b"{not json")),
        "spec.tasks[0].payload_json",
        ("not valid JSON",),
    ),
    (
        "payload-not-utf8",
        _spec(shell_task("a", payload=b"\xff\xfe")),
        "spec.tasks[0].payload_json",
        ("not valid JSON",),
    ),
    ("payload-not-object", _spec(shell_task("a", payload=b"[1, 2]")), "spec.tasks[0].payload_json", ()),
    *[
        (f"task-name-{label}", _spec(shell_task(name)), "spec.tasks[0].name", ())
        for label, name in (("space", "bad name"), ("slash", "a/b"), ("dash-first", "-a"), ("long", "n" * 200))
    ],
    ("task-name-empty", _spec(shell_task("")), "spec.tasks[0].name", ()),
    ("workflow-name", workflow_spec("no way", [shell_task("a")]), "spec.name", ()),
    ("shell-without-command", _spec(shell_task("a", payload={"env": {}})), "spec.tasks[0]", ("'command'",)),
    (
        "shell-command-not-list",
        _spec(shell_task("a", payload={"command": "ls -l"})),
        "spec.tasks[0]",
        ("payload.command",),
    ),
    (
        "python-without-function",
        _spec(shell_task("a", agent_type="python", payload={"function": "nocolon"})),
        "spec.tasks[0]",
        ("module:function",),
    ),
    ("unknown-task-type", _spec(shell_task("a", type=99)), "spec.tasks[0].type", ()),
    # JSON: depth is measured on the raw bytes before parsing (no RecursionError, no INTERNAL);
    # NaN, Infinity and numbers beyond a double are not JSON.
    *[
        (
            f"payload-deep-{levels}",
            _spec(shell_task("a", payload=b'{"shell":"x","n":' + b"[" * levels + b"]" * levels + b"}")),
            "spec.tasks[0].payload_json",
            ("maxjson_depth",),
        )
        for levels in (Limits.maxjson_depth, 500, 10_000)
    ],
    (
        "payload-deep-in-objects",
        _spec(shell_task("a", payload=b'{"shell":"x","n":' + b'{"k":' * 600 + b"1" + b"}" * 600 + b"}")),
        "spec.tasks[0].payload_json",
        ("maxjson_depth",),
    ),
    (
        "metadata-deep",
        _spec(shell_task("a"), metadata_json=b'{"a":' + b"[" * 500 + b"]" * 500 + b"}"),
        "spec.metadata_json",
        ("maxjson_depth",),
    ),
    *[
        (
            f"payload-{label}",
            _spec(shell_task("a", payload=b'{"shell":"x","n":' + literal + b"}")),
            "spec.tasks[0].payload_json",
            (),
        )
        for label, literal in (("nan", b"NaN"), ("inf", b"Infinity"), ("minus-inf", b"-Infinity"), ("1e400", b"1e400"))
    ],
    ("metadata-nan", _spec(shell_task("a"), metadata_json=b'{"x":[NaN]}'), "spec.metadata_json", ("NaN",)),
    # Names are rejected, not stripped.
    *[
        (f"task-name-{label}", _spec(shell_task(name)), "spec.tasks[0].name", ())
        for label, name in (
            ("leading-space", " a"),
            ("trailing-space", "a "),
            ("newline", "a\n"),
            ("tab", "\ta"),
            ("nul", "a\x00"),
        )
    ],
    ("workflow-name-newline", workflow_spec("wf\n", [shell_task("a")]), "spec.name", ()),
    ("dependency-padded", _spec(shell_task("a"), shell_task("b", " a")), "spec.tasks[1].dependencies[0]", ()),
    ("agent-type-newline", _spec(shell_task("a", agent_type="shell\n")), "spec.tasks[0].agent_type", ()),
    # Control characters in free text.
    ("label-value-nul", _spec(shell_task("a"), labels={"k": "v\x00"}), "spec.labels.k", ("control",)),
    ("label-value-escape", _spec(shell_task("a"), labels={"k": "\x1b[31m"}), "spec.labels.k", ("control",)),
    ("label-key-space", _spec(shell_task("a"), labels={"bad key": "v"}), "spec.labels.bad key", ()),
    (
        "constraint-value-newline",
        _spec(shell_task("a", constraints={"zone": "a\nb"})),
        "spec.tasks[0].constraints.zone",
        ("control",),
    ),
    (
        "constraint-value-nul",
        _spec(shell_task("a", constraints={"zone": "\x00"})),
        "spec.tasks[0].constraints.zone",
        (),
    ),
    # Label expressions, spread and affinity (issue 9).
    *[
        (
            f"label-expression-{label}",
            _spec(shell_task("a", constraint_exprs=[pb.LabelExpression(key="zone", op=op, values=values)])),
            f"spec.tasks[0].constraint_exprs[0].{where}",
            words,
        )
        for label, op, values, where, words in (
            ("unknown-op", "maybe", ["a"], "op", ("unknown op",)),
            ("in-without-values", "in", [], "values", ("at least one",)),
            ("exists-with-values", "exists", ["a"], "values", ("takes no values",)),
        )
    ],
    (
        "label-expression-twice",
        _spec(
            shell_task("a", constraints={"zone": "a"}, constraint_exprs=[pb.LabelExpression(key="zone", op="exists")])
        ),
        "spec.tasks[0].constraint_exprs[0].key",
        ("twice",),
    ),
    (
        "label-expression-value-nul",
        _spec(shell_task("a", constraint_exprs=[pb.LabelExpression(key="zone", op="in", values=["\x00"])])),
        "spec.tasks[0].constraints.zone.in[0]",
        ("control",),
    ),
    ("spread-bad-label", _spec(shell_task("a", spread="no such\nlabel")), "spec.tasks[0].spread", ()),
    ("affinity-value-nul", _spec(shell_task("a", affinity={"disk": "\x00"})), "spec.tasks[0].affinity.disk", ()),
    (
        "command-nul",
        _spec(shell_task("a", payload={"command": ["echo", "a\x00b"]})),
        "spec.tasks[0]",
        ("command[1]", "NUL"),
    ),
    ("env-nul", _spec(shell_task("a", payload={"shell": "x", "env": {"A": "\x00"}})), "spec.tasks[0]", ("NUL",)),
    ("cwd-nul", _spec(shell_task("a", payload={"shell": "x", "cwd": "a\x00"})), "spec.tasks[0]", ("NUL",)),
    # Every number: NaN, sign, range.
    *[
        (f"{field}-{label}", _spec(shell_task("a", **{field: value})), f"spec.tasks[0].{field}", ())
        for field in ("estimated_duration_s", "retry_backoff_s")
        for label, value in (("nan", math.nan), ("inf", math.inf), ("negative", -1.0), ("huge", 1e300))
    ],
    ("timeout-inf", _spec(shell_task("a", timeout_s=math.inf)), "spec.tasks[0].timeout_s", ("timeout",)),
    ("timeout-huge", _spec(shell_task("a", timeout_s=1e12)), "spec.tasks[0].timeout_s", ("max_timeout_s",)),
    *[
        (
            f"resource-{name}-{label}",
            _spec(shell_task("a", resources=pb.ResourceRequirements(**{name: value}))),
            f"spec.tasks[0].resources.{name}",
            (),
        )
        for name, label, value in (
            ("disk_mb", "negative", -1),
            ("gpu_count", "negative", -5),
            ("network_bandwidth_mbps", "negative", -1),
            ("memory_mb", "huge", 1 << 62),
        )
    ],
    *[
        (
            f"custom-resource-{label}",
            _spec(shell_task("a", resources=pb.ResourceRequirements(custom_resources={"licence": value}))),
            "spec.tasks[0].resources.custom_resources",
            ("finite", ">=", "<=")[i : i + 1],
        )
        for i, (label, value) in enumerate((("nan", math.nan), ("negative", -1.0), ("huge", 1e300)))
    ],
    ("workflow-priority-negative", _spec(shell_task("a"), priority=-1), "spec.priority", ()),
]


@pytest.mark.parametrize(("spec", "field", "words"), [c[1:] for c in SPEC_CASES], ids=[c[0] for c in SPEC_CASES])
async def test_bad_workflow_is_refused_with_its_field_path(
    controller: Controller, spec: pb.WorkflowSpec | None, field: str, words: tuple[str, ...]
) -> None:
    await assert_invalid(controller, _submit(controller, spec), field, *words)


def _rotations(*names: str) -> set[str]:
    """Every way to write the cycle names[0] -> names[1] -> ... -> names[0]."""
    return {" -> ".join([*names[i:], *names[:i], names[i]]) for i in range(len(names))}


CYCLES = {
    "two": (_spec(shell_task("a", "b"), shell_task("b", "a")), ("a", "b")),
    "three": (
        _spec(shell_task("a", "c"), shell_task("b", "a"), shell_task("c", "b"), shell_task("free")),
        ("a", "b", "c"),
    ),
}


@pytest.mark.parametrize("which", sorted(CYCLES))
async def test_cycle_is_refused_and_named(controller: Controller, which: str) -> None:
    spec, cycle = CYCLES[which]
    error = await rpc_error(_submit(controller, spec))
    assert error.code() is INVALID
    ((field, description),) = bad_request(error)
    assert description.startswith("dependency cycle: ")
    assert description.removeprefix("dependency cycle: ") in _rotations(*cycle)
    # The path names the dependencies of a task on the cycle.
    assert field in {f"spec.tasks[{i}].dependencies" for i in range(len(cycle))}
    assert f"{field}: {description}" in (error.details() or "")
    listing = await controller.orchestrator.ListWorkflows(orchestrator_pb2.ListWorkflowsRequest())
    assert list(listing.workflows) == []
    assert controller.stored() == (0, 0)
    plan = controller.orchestrator.GetExecutionPlan(orchestrator_pb2.GetExecutionPlanRequest(spec=spec))
    await assert_invalid(controller, plan, field, description)
    analysis = controller.scheduler.AnalyzeDependencies(scheduler_pb2.AnalyzeDependenciesRequest(spec=spec))
    await assert_invalid(controller, analysis, field, description)


async def test_every_violation_is_reported(controller: Controller) -> None:
    spec = _spec(
        shell_task("a", priority=200, resources=pb.ResourceRequirements(cpu_cores=-1)),
        shell_task("bad name"),
    )
    error = await rpc_error(_submit(controller, spec))
    fields = {name for name, _ in bad_request(error)}
    assert {"spec.tasks[0].priority", "spec.tasks[0].resources.cpu_cores", "spec.tasks[1].name"} <= fields
    assert controller.stored() == (0, 0)


async def test_field_path_names_the_request_field(controller: Controller) -> None:
    error = await rpc_error(_submit(controller, _spec(shell_task("a", timeout_s=-1.0))))
    assert [name for name, _ in bad_request(error)] == ["spec.tasks[0].timeout_s"]


async def test_bad_idempotency_key_is_refused(controller: Controller) -> None:
    request = orchestrator_pb2.SubmitWorkflowRequest(spec=_spec(shell_task("a")), idempotency_key="k" * 300)
    await assert_invalid(controller, controller.orchestrator.SubmitWorkflow(request), "idempotency_key")


async def test_bad_standalone_task_is_refused(controller: Controller) -> None:
    task = shell_task("a", resources=pb.ResourceRequirements(cpu_cores=-2))
    call = controller.scheduler.ScheduleTask(scheduler_pb2.ScheduleTaskRequest(task=task))
    await assert_invalid(controller, call, "task.resources.cpu_cores")
    call = controller.scheduler.ScheduleTask(scheduler_pb2.ScheduleTaskRequest())
    await assert_invalid(controller, call, "task", "required")
    call = controller.scheduler.ScheduleTask(scheduler_pb2.ScheduleTaskRequest(task=shell_task("a", "b")))
    await assert_invalid(controller, call, "task.dependencies[0]")


async def test_plan_and_analysis_validate_their_spec(controller: Controller) -> None:
    unknown = _spec(shell_task("a", "ghost"))
    call = controller.orchestrator.GetExecutionPlan(orchestrator_pb2.GetExecutionPlanRequest(spec=unknown))
    await assert_invalid(controller, call, "spec.tasks[0].dependencies[0]", "unknown task 'ghost'")
    call = controller.orchestrator.GetExecutionPlan(orchestrator_pb2.GetExecutionPlanRequest())
    await assert_invalid(controller, call, "source")
    call = controller.scheduler.AnalyzeDependencies(scheduler_pb2.AnalyzeDependenciesRequest())
    await assert_invalid(controller, call, "spec", "required")
    call = controller.scheduler.AnalyzeDependencies(scheduler_pb2.AnalyzeDependenciesRequest(spec=unknown))
    await assert_invalid(controller, call, "spec.tasks[0].dependencies[0]")


async def test_bad_request_fields_of_other_rpcs(controller: Controller) -> None:
    orch, sched = controller.orchestrator, controller.scheduler
    cases: list[tuple[Awaitable[Any], str]] = [
        (orch.ListWorkflows(orchestrator_pb2.ListWorkflowsRequest(limit=5000)), "limit"),
        (orch.ListWorkflows(orchestrator_pb2.ListWorkflowsRequest(limit=-1)), "limit"),
        (orch.ListWorkflows(orchestrator_pb2.ListWorkflowsRequest(page_token="abc")), "page_token"),
        (orch.ListWorkflows(orchestrator_pb2.ListWorkflowsRequest(states=[42])), "states[0]"),
        (orch.CancelWorkflow(orchestrator_pb2.CancelWorkflowRequest(workflow_id="x", reason="r" * 2000)), "reason"),
        (orch.GetWorkflowStatus(orchestrator_pb2.GetWorkflowStatusRequest()), "workflow_id"),
        (orch.GetTaskLogs(orchestrator_pb2.GetTaskLogsRequest(task_id="t", stdout_offset=-1)), "stdout_offset"),
        (sched.GetNextTask(scheduler_pb2.GetNextTaskRequest(agent_types=["ext"])), "worker_id"),
        (sched.GetNextTask(scheduler_pb2.GetNextTaskRequest(worker_id="w")), "agent_types"),
        (sched.GetNextTask(scheduler_pb2.GetNextTaskRequest(worker_id="w", agent_types=["x"], wait_s=61)), "wait_s"),
        (sched.GetNextTask(scheduler_pb2.GetNextTaskRequest(worker_id="w" * 300, agent_types=["x"])), "worker_id"),
        (sched.CompleteTask(scheduler_pb2.CompleteTaskRequest(attempt_id="a")), "worker_id"),
        (sched.FailTask(scheduler_pb2.FailTaskRequest(attempt_id="a", worker_id="w", error="e" * 70_000)), "error"),
        (sched.ExplainTask(scheduler_pb2.ExplainTaskRequest()), "task_id"),
        (controller.cluster.DrainAgent(agent_pb2.DrainAgentRequest(agent_id="a", grace_s=-1)), "grace_s"),
        (controller.cluster.ListAgents(agent_pb2.ListAgentsRequest(states=[42])), "states[0]"),
    ]
    for call, field in cases:
        await assert_invalid(controller, call, field)


async def test_first_agent_message_must_be_a_hello(controller: Controller) -> None:
    call = controller.gateway.Connect()
    await call.write(agent_pb2.AgentMessage(heartbeat=agent_pb2.Heartbeat()))
    error = await rpc_error(call.read())
    assert error.code() is INVALID
    assert "hello" in (error.details() or "")
    call = controller.gateway.Connect()
    await call.write(agent_pb2.AgentMessage(hello=agent_pb2.Hello(agent_types=["shell"])))
    error = await rpc_error(call.read())
    assert error.code() is INVALID
    assert "hello.agent_id" in (error.details() or "")
    listing = await controller.cluster.ListAgents(agent_pb2.ListAgentsRequest())
    assert list(listing.agents) == []


def test_malformed_yaml_names_line_and_column() -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_workflow_text("name: wf\ntasks:\n  - name: a\n    payload: {shell: [unclosed\n", "flow.yaml")
    message = info.value.message
    assert message.startswith("flow.yaml: malformed YAML at line ")
    assert "column" in message
    with pytest.raises(InvalidArgument) as info:
        parse_workflow_text("- just\n- a list\n")
    assert "mapping" in info.value.message


# --- ids ----------------------------------------------------------------------------------------


async def _completed_workflow(controller: Controller) -> str:
    """A workflow run to completion by an external worker."""
    spec = _spec(shell_task("only", agent_type="ext", payload={"job": 1}))
    submitted = await controller.orchestrator.SubmitWorkflow(
        orchestrator_pb2.SubmitWorkflowRequest(spec=spec, start=True)
    )
    pulled = await controller.scheduler.GetNextTask(
        scheduler_pb2.GetNextTaskRequest(worker_id="w1", agent_types=["ext"])
    )
    assert pulled.found
    await controller.scheduler.CompleteTask(
        scheduler_pb2.CompleteTaskRequest(attempt_id=pulled.assignment.attempt_id, worker_id="w1", result_json=b"1")
    )
    status = await controller.orchestrator.GetWorkflowStatus(
        orchestrator_pb2.GetWorkflowStatusRequest(workflow_id=submitted.workflow_id)
    )
    assert status.status.state == pb.WORKFLOW_STATE_COMPLETED
    return submitted.workflow_id


async def test_unknown_ids_are_not_found(controller: Controller) -> None:
    orch, sched, cluster = controller.orchestrator, controller.scheduler, controller.cluster
    calls: list[Awaitable[Any]] = [
        orch.GetWorkflowStatus(orchestrator_pb2.GetWorkflowStatusRequest(workflow_id="wf-nope")),
        orch.ExecuteWorkflow(orchestrator_pb2.ExecuteWorkflowRequest(workflow_id="wf-nope")),
        orch.CancelWorkflow(orchestrator_pb2.CancelWorkflowRequest(workflow_id="wf-nope")),
        orch.PauseWorkflow(orchestrator_pb2.PauseWorkflowRequest(workflow_id="wf-nope")),
        orch.ResumeWorkflow(orchestrator_pb2.ResumeWorkflowRequest(workflow_id="wf-nope")),
        orch.GetExecutionPlan(orchestrator_pb2.GetExecutionPlanRequest(workflow_id="wf-nope")),
        orch.GetTaskLogs(orchestrator_pb2.GetTaskLogsRequest(task_id="t-nope")),
        sched.ExplainTask(scheduler_pb2.ExplainTaskRequest(task_id="t-nope")),
        sched.CompleteTask(scheduler_pb2.CompleteTaskRequest(attempt_id="nope", worker_id="w")),
        sched.FailTask(scheduler_pb2.FailTaskRequest(attempt_id="nope", worker_id="w")),
        cluster.GetAgent(agent_pb2.GetAgentRequest(agent_id="nobody")),
        cluster.DrainAgent(agent_pb2.DrainAgentRequest(agent_id="nobody")),
    ]
    for call in calls:
        error = await rpc_error(call)
        assert error.code() is grpc.StatusCode.NOT_FOUND, error.details()
        assert "not found" in (error.details() or "")
    watch = orch.WatchWorkflow(orchestrator_pb2.WatchWorkflowRequest(workflow_id="wf-nope"))
    error = await rpc_error(watch.read())
    assert error.code() is grpc.StatusCode.NOT_FOUND
    assert controller.stored() == (0, 0)


async def test_acting_on_a_finished_workflow_is_a_failed_precondition(controller: Controller) -> None:
    workflow_id = await _completed_workflow(controller)
    orch = controller.orchestrator
    calls: list[Awaitable[Any]] = [
        orch.CancelWorkflow(orchestrator_pb2.CancelWorkflowRequest(workflow_id=workflow_id)),
        orch.CancelWorkflow(orchestrator_pb2.CancelWorkflowRequest(workflow_id=workflow_id, force=True)),
        orch.PauseWorkflow(orchestrator_pb2.PauseWorkflowRequest(workflow_id=workflow_id)),
        orch.ResumeWorkflow(orchestrator_pb2.ResumeWorkflowRequest(workflow_id=workflow_id)),
        orch.ExecuteWorkflow(orchestrator_pb2.ExecuteWorkflowRequest(workflow_id=workflow_id)),
    ]
    for call in calls:
        error = await rpc_error(call)
        assert error.code() is grpc.StatusCode.FAILED_PRECONDITION, error.details()
        assert "completed" in (error.details() or "")
    status = await orch.GetWorkflowStatus(orchestrator_pb2.GetWorkflowStatusRequest(workflow_id=workflow_id))
    assert status.status.state == pb.WORKFLOW_STATE_COMPLETED


async def test_pausing_a_workflow_that_never_started_is_a_failed_precondition(controller: Controller) -> None:
    submitted = await controller.orchestrator.SubmitWorkflow(
        orchestrator_pb2.SubmitWorkflowRequest(spec=_spec(shell_task("a")))
    )
    error = await rpc_error(
        controller.orchestrator.PauseWorkflow(orchestrator_pb2.PauseWorkflowRequest(workflow_id=submitted.workflow_id))
    )
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION


async def test_ambiguous_id_prefix_is_invalid(controller: Controller) -> None:
    ids = []
    for name in ("one", "two"):
        response = await controller.orchestrator.SubmitWorkflow(
            orchestrator_pb2.SubmitWorkflowRequest(spec=workflow_spec(name, [shell_task("a")]))
        )
        ids.append(response.workflow_id)
    error = await rpc_error(
        controller.orchestrator.GetWorkflowStatus(orchestrator_pb2.GetWorkflowStatusRequest(workflow_id="wf-"))
    )
    assert error.code() is INVALID
    assert "ambiguous" in (error.details() or "")
    assert [name for name, _ in bad_request(error)] == ["workflow_id"]
    # A unique prefix resolves.
    unique = next(
        ids[0][:n] for n in range(4, len(ids[0]) + 1) if not ids[1].startswith(ids[0][:n])
    )  # the shortest prefix of the first id that the second does not share
    status = await controller.orchestrator.GetWorkflowStatus(
        orchestrator_pb2.GetWorkflowStatusRequest(workflow_id=unique)
    )
    assert status.status.workflow_id == ids[0]


async def test_result_over_the_limit_is_refused_and_the_attempt_goes_on(controller: Controller) -> None:
    spec = _spec(shell_task("only", agent_type="ext", payload={"job": 1}))
    submitted = await controller.orchestrator.SubmitWorkflow(
        orchestrator_pb2.SubmitWorkflowRequest(spec=spec, start=True)
    )
    pulled = await controller.scheduler.GetNextTask(
        scheduler_pb2.GetNextTaskRequest(worker_id="w1", agent_types=["ext"])
    )
    attempt_id = pulled.assignment.attempt_id
    huge = json.dumps("r" * Limits.max_result_bytes).encode()
    error = await rpc_error(
        controller.scheduler.CompleteTask(
            scheduler_pb2.CompleteTaskRequest(attempt_id=attempt_id, worker_id="w1", result_json=huge)
        )
    )
    assert error.code() is INVALID
    assert "max_result_bytes" in (error.details() or "")
    assert [name for name, _ in bad_request(error)] == ["result_json"]
    error = await rpc_error(
        controller.scheduler.CompleteTask(
            scheduler_pb2.CompleteTaskRequest(attempt_id=attempt_id, worker_id="w1", result_json=b"{nope")
        )
    )
    assert error.code() is INVALID
    status = await controller.orchestrator.GetWorkflowStatus(
        orchestrator_pb2.GetWorkflowStatusRequest(workflow_id=submitted.workflow_id)
    )
    assert status.status.state == pb.WORKFLOW_STATE_RUNNING
    await controller.scheduler.CompleteTask(
        scheduler_pb2.CompleteTaskRequest(attempt_id=attempt_id, worker_id="w1", result_json=b'"small"')
    )


# --- garbage on the wire ------------------------------------------------------------------------


async def test_garbage_bytes_never_crash_the_controller(controller: Controller) -> None:
    for method in ("/corral.v1.Orchestrator/SubmitWorkflow", "/corral.v1.Scheduler/CompleteTask"):
        raw = controller.channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        error = await rpc_error(raw(b"\xff\xff\xff"))
        # Undecodable bytes fail in gRPC's deserializer, before any handler: the status is gRPC's own.
        assert error.code() in (INVALID, grpc.StatusCode.UNKNOWN), error.code()
    stream = controller.channel.stream_stream(
        "/corral.v1.AgentGateway/Connect", request_serializer=None, response_deserializer=None
    )()
    await stream.write(b"\xff\xff\xff")
    error = await rpc_error(stream.read())
    assert error.code() is not grpc.StatusCode.OK
    response = await controller.orchestrator.SubmitWorkflow(
        orchestrator_pb2.SubmitWorkflowRequest(spec=_spec(shell_task("a")))
    )
    assert response.workflow_id.startswith("wf-")
    assert controller.runtime.failure is None
    assert controller.stored() == (1, 1)


# --- hardened fields of every other request ----------------------------------------------------


async def test_json_at_the_depth_limit_is_accepted(controller: Controller) -> None:
    depth = Limits.maxjson_depth - 1  # inside the payload object, which is one level itself
    payload = b'{"shell":"x","n":' + b"[" * depth + b"]" * depth + b"}"
    response = await _submit(controller, _spec(shell_task("a", payload=payload)))
    assert response.workflow_id.startswith("wf-")


def _pull(**fields: Any) -> scheduler_pb2.GetNextTaskRequest:
    fields.setdefault("worker_id", "w")
    fields.setdefault("agent_types", ["ext"])
    return scheduler_pb2.GetNextTaskRequest(**fields)


async def test_numbers_names_and_text_of_other_rpcs(controller: Controller) -> None:
    orch, sched, cluster = controller.orchestrator, controller.scheduler, controller.cluster
    o, s, a = orchestrator_pb2, scheduler_pb2, agent_pb2
    res = pb.ResourceRequirements
    cases: list[tuple[Awaitable[Any], str]] = [
        *[
            (
                orch.SubmitWorkflow(o.SubmitWorkflowRequest(spec=_spec(shell_task("a")), wait_timeout_s=v)),
                "wait_timeout_s",
            )
            for v in (-1.0, math.nan, math.inf, 1e12)
        ],
        *[
            (
                orch.ExecuteWorkflow(o.ExecuteWorkflowRequest(workflow_id="wf-x", wait=True, wait_timeout_s=v)),
                "wait_timeout_s",
            )
            for v in (-1.0, math.nan, math.inf)
        ],
        *[
            (cluster.DrainAgent(a.DrainAgentRequest(agent_id="a", grace_s=v)), "grace_s")
            for v in (math.nan, -1.0, math.inf, 1e9)
        ],
        *[(sched.GetNextTask(_pull(wait_s=v)), "wait_s") for v in (math.nan, math.inf, -0.5)],
        (sched.GetNextTask(_pull(capacity=res(cpu_cores=math.nan))), "capacity.cpu_cores"),
        (sched.GetNextTask(_pull(capacity=res(cpu_cores=-1))), "capacity.cpu_cores"),
        (sched.GetNextTask(_pull(capacity=res(memory_mb=-1))), "capacity.memory_mb"),
        (sched.GetNextTask(_pull(capacity=res(disk_mb=-1))), "capacity.disk_mb"),
        (sched.GetNextTask(_pull(capacity=res(gpu_count=5_000_000))), "capacity.gpu_count"),
        (sched.GetNextTask(_pull(capacity=res(custom_resources={"x": math.inf}))), "capacity.custom_resources['x']"),
        (sched.GetNextTask(_pull(labels={"zone": "a\x00"})), "labels['zone']"),
        (sched.GetNextTask(_pull(agent_types=["ext", "bad\n"])), "agent_types[1]"),
        (sched.GetNextTask(_pull(agent_types=["t"] * 100)), "agent_types"),
        (sched.GetNextTask(_pull(worker_id="w\x00")), "worker_id"),
        (sched.GetNextTask(_pull(worker_id=" w")), "worker_id"),
        (orch.ListWorkflows(o.ListWorkflowsRequest(page_token="-5")), "page_token"),
        (orch.ListWorkflows(o.ListWorkflowsRequest(page_token="9" * 5000)), "page_token"),
        (orch.ListWorkflows(o.ListWorkflowsRequest(name_prefix="a\x00")), "name_prefix"),
        (orch.GetTaskLogs(o.GetTaskLogsRequest(task_id="t", stderr_offset=-1)), "stderr_offset"),
        (orch.GetTaskLogs(o.GetTaskLogsRequest(task_id="t", stdout_offset=(1 << 63) - 1)), "stdout_offset"),
        (orch.CancelWorkflow(o.CancelWorkflowRequest(workflow_id="x", reason="r\x00")), "reason"),
        (
            orch.SubmitWorkflow(o.SubmitWorkflowRequest(spec=_spec(shell_task("a")), idempotency_key="k\x00")),
            "idempotency_key",
        ),
        (
            orch.SubmitWorkflow(o.SubmitWorkflowRequest(spec=_spec(shell_task("a")), idempotency_key="k\n")),
            "idempotency_key",
        ),
        (sched.ScheduleTask(s.ScheduleTaskRequest(task=shell_task("a"), idempotency_key="\x00")), "idempotency_key"),
        (sched.FailTask(s.FailTaskRequest(attempt_id="a", worker_id="w", error="boom\x00")), "error"),
        (sched.FailTask(s.FailTaskRequest(worker_id="w")), "attempt_id"),
        (sched.CompleteTask(s.CompleteTaskRequest(worker_id="w")), "attempt_id"),
        (sched.CompleteTask(s.CompleteTaskRequest(attempt_id="a", worker_id="w", result_json=b"NaN")), "result_json"),
        (
            sched.CompleteTask(s.CompleteTaskRequest(attempt_id="a", worker_id="w", result_json=b"[-Infinity]")),
            "result_json",
        ),
        (
            sched.CompleteTask(
                s.CompleteTaskRequest(attempt_id="a", worker_id="w", result_json=b"[" * 500 + b"]" * 500)
            ),
            "result_json",
        ),
        (orch.GetWorkflowStatus(o.GetWorkflowStatusRequest(workflow_id="wf\x00")), "workflow_id"),
        (sched.ExplainTask(s.ExplainTaskRequest(task_id="t" * 1000)), "task_id"),
        (cluster.GetAgent(a.GetAgentRequest(agent_id="a\n")), "agent_id"),
    ]
    for call, field in cases:
        await assert_invalid(controller, call, field)
    watch = orch.WatchWorkflow(o.WatchWorkflowRequest(workflow_id="wf-x", after_seq=-1))
    error = await rpc_error(watch.read())
    assert error.code() is INVALID
    assert [name for name, _ in bad_request(error)] == ["after_seq"]


async def test_an_error_text_may_span_lines(controller: Controller) -> None:
    call = controller.scheduler.FailTask(scheduler_pb2.FailTaskRequest(attempt_id="a", worker_id="w", error="a\n\tb"))
    error = await rpc_error(call)
    assert error.code() is grpc.StatusCode.NOT_FOUND  # past validation: only the attempt is unknown


async def test_echoed_ids_are_cut(controller: Controller) -> None:
    long_id = "wf-" + "x" * 250
    error = await rpc_error(
        controller.orchestrator.GetWorkflowStatus(orchestrator_pb2.GetWorkflowStatusRequest(workflow_id=long_id))
    )
    assert error.code() is grpc.StatusCode.NOT_FOUND
    assert long_id not in (error.details() or "")
    assert len(error.details() or "") < 200
    for call in (
        controller.scheduler.CompleteTask(scheduler_pb2.CompleteTaskRequest(attempt_id="a" * 250, worker_id="w")),
        controller.scheduler.FailTask(scheduler_pb2.FailTaskRequest(attempt_id="a" * 250, worker_id="w")),
    ):
        error = await rpc_error(call)
        assert error.code() is grpc.StatusCode.NOT_FOUND
        assert len(error.details() or "") < 200
    # A megabyte id is refused for its length, in a short message (never RESOURCE_EXHAUSTED).
    huge = "x" * 1_000_000
    for call in (
        controller.orchestrator.GetWorkflowStatus(orchestrator_pb2.GetWorkflowStatusRequest(workflow_id=huge)),
        controller.cluster.DrainAgent(agent_pb2.DrainAgentRequest(agent_id=huge)),
        controller.scheduler.CompleteTask(scheduler_pb2.CompleteTaskRequest(attempt_id=huge, worker_id="w")),
    ):
        error = await rpc_error(call)
        assert error.code() is INVALID, error.code()
        assert len(error.details() or "") < 200


async def test_thousands_of_violations_still_answer_invalid_argument(controller: Controller) -> None:
    tasks = [shell_task(f"bad name {i}") for i in range(5000)]
    error = await rpc_error(_submit(controller, workflow_spec("wf", tasks)))
    assert error.code() is INVALID  # not RESOURCE_EXHAUSTED for an oversized trailer
    violations = bad_request(error)
    assert violations[0][0] == "spec.tasks[0].name"
    assert violations[-1][1].startswith("... and ")
    labels = {"k" * 100_000: "v"}
    error = await rpc_error(_submit(controller, _spec(shell_task("a"), labels=labels)))
    assert error.code() is INVALID
    assert len(error.details() or "") < 1100
    assert controller.stored() == (0, 0)
