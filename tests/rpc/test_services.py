"""The happy path of every RPC against an in-process controller (real gRPC server, real SQLite file)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from corral.controller.server import SERVICE_NAMES
from corral.v1 import agent_pb2, orchestrator_pb2, scheduler_pb2
from corral.v1 import types_pb2 as pb
from tests.rpc.conftest import Controller, shell_task, workflow_spec

OR = orchestrator_pb2
S = scheduler_pb2


def ext_task(name: str, *deps: str, **fields: Any) -> pb.TaskSpec:
    """A task for external workers (agent type ``ext``), which no agent runs."""
    return shell_task(name, *deps, agent_type="ext", payload={"job": name}, **fields)


def diamond() -> pb.WorkflowSpec:
    return workflow_spec(
        "diamond",
        [
            shell_task("a", estimated_duration_s=2),
            shell_task("b", "a", estimated_duration_s=3),
            shell_task("c", "a", estimated_duration_s=1),
            shell_task("d", "b", "c", estimated_duration_s=1),
        ],
    )


def check_diamond_plan(plan: pb.ExecutionPlan) -> None:
    assert [list(stage.task_names) for stage in plan.stages] == [["a"], ["b", "c"], ["d"]]
    assert [stage.estimated_duration_s for stage in plan.stages] == [2, 3, 1]
    assert list(plan.critical_path) == ["a", "b", "d"]
    assert plan.estimated_duration_s == 6
    assert plan.total_work_s == 7
    assert plan.parallelism_factor == pytest.approx(7 / 6)
    assert plan.task_count == 4


async def status_of(controller: Controller, workflow_id: str, tasks: bool = False) -> pb.WorkflowStatus:
    response = await controller.orchestrator.GetWorkflowStatus(
        OR.GetWorkflowStatusRequest(workflow_id=workflow_id, include_tasks=tasks)
    )
    return response.status


async def pull(controller: Controller, worker: str = "w1", wait_s: float = 0.0) -> pb.TaskAssignment:
    response = await controller.scheduler.GetNextTask(
        S.GetNextTaskRequest(worker_id=worker, agent_types=["ext"], wait_s=wait_s)
    )
    assert response.found
    return response.assignment


async def complete(controller: Controller, assignment: pb.TaskAssignment, result: bytes, worker: str = "w1") -> None:
    response = await controller.scheduler.CompleteTask(
        S.CompleteTaskRequest(attempt_id=assignment.attempt_id, worker_id=worker, result_json=result)
    )
    assert response.accepted


# --- Orchestrator -------------------------------------------------------------------------------


async def test_submit_returns_the_plan_and_stores_a_pending_workflow(controller: Controller) -> None:
    response = await controller.orchestrator.SubmitWorkflow(
        OR.SubmitWorkflowRequest(spec=diamond(), idempotency_key="k1")
    )
    assert response.workflow_id.startswith("wf-") and not response.deduplicated
    check_diamond_plan(response.plan)
    status = await status_of(controller, response.workflow_id, tasks=True)
    assert status.name == "diamond" and status.state == pb.WORKFLOW_STATE_PENDING
    assert status.task_total == 4 and dict(status.task_counts) == {"pending": 4}
    assert [t.name for t in status.tasks] == ["a", "b", "c", "d"]
    assert list(status.tasks[3].dependencies) == ["b", "c"]
    assert controller.stored() == (1, 4)
    again = await controller.orchestrator.SubmitWorkflow(OR.SubmitWorkflowRequest(spec=diamond(), idempotency_key="k1"))
    assert again.workflow_id == response.workflow_id and again.deduplicated
    assert controller.stored() == (1, 4)


async def test_execution_plan_by_id_and_by_spec(controller: Controller) -> None:
    submitted = await controller.orchestrator.SubmitWorkflow(OR.SubmitWorkflowRequest(spec=diamond()))
    by_id = await controller.orchestrator.GetExecutionPlan(
        OR.GetExecutionPlanRequest(workflow_id=submitted.workflow_id)
    )
    by_spec = await controller.orchestrator.GetExecutionPlan(OR.GetExecutionPlanRequest(spec=diamond()))
    check_diamond_plan(by_id.plan)
    assert by_spec.plan == by_id.plan
    assert controller.stored() == (1, 4)  # planning a spec stores nothing


async def test_analyze_dependencies(controller: Controller) -> None:
    spec = workflow_spec(
        "fan",
        [
            shell_task("src"),
            *[shell_task(f"m{i}", "src") for i in range(3)],
            shell_task("sink", "m0", "m1"),
            shell_task("x"),
        ],
    )
    response = await controller.scheduler.AnalyzeDependencies(S.AnalyzeDependenciesRequest(spec=spec))
    assert list(response.roots) == ["src", "x"]
    assert list(response.leaves) == ["m2", "sink", "x"]
    assert response.depth == 3 and response.max_width == 3
    assert list(response.plan.critical_path) == ["src", "m0", "sink"]
    assert controller.stored() == (0, 0)


async def test_list_workflows_filters_and_pages(controller: Controller) -> None:
    ids: dict[str, str] = {}
    for name, start in (("etl-0", False), ("etl-1", False), ("ml-0", True), ("etl-2", False), ("ml-1", True)):
        response = await controller.orchestrator.SubmitWorkflow(
            OR.SubmitWorkflowRequest(spec=workflow_spec(name, [ext_task("t")]), start=start)
        )
        ids[name] = response.workflow_id
    orch = controller.orchestrator
    everything = await orch.ListWorkflows(OR.ListWorkflowsRequest())
    assert len(everything.workflows) == 5 and everything.next_page_token == ""
    created = [w.created_at.ToNanoseconds() for w in everything.workflows]
    assert created == sorted(created, reverse=True)  # newest first
    running = await orch.ListWorkflows(OR.ListWorkflowsRequest(states=[pb.WORKFLOW_STATE_RUNNING]))
    assert {w.name for w in running.workflows} == {"ml-0", "ml-1"}
    etl = await orch.ListWorkflows(OR.ListWorkflowsRequest(name_prefix="etl-"))
    assert {w.workflow_id for w in etl.workflows} == {ids["etl-0"], ids["etl-1"], ids["etl-2"]}
    assert all(w.task_total == 1 for w in etl.workflows)
    both = await orch.ListWorkflows(OR.ListWorkflowsRequest(name_prefix="ml-", states=[pb.WORKFLOW_STATE_PENDING]))
    assert list(both.workflows) == []

    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await orch.ListWorkflows(OR.ListWorkflowsRequest(limit=2, page_token=token))
        assert len(page.workflows) <= 2
        seen.extend(w.workflow_id for w in page.workflows)
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert pages == 3
    assert seen == [w.workflow_id for w in everything.workflows]


async def test_watch_streams_every_change_in_order(controller: Controller) -> None:
    orch = controller.orchestrator
    submitted = await orch.SubmitWorkflow(
        OR.SubmitWorkflowRequest(spec=workflow_spec("watched", [ext_task("a"), ext_task("b", "a")]))
    )
    workflow_id = submitted.workflow_id
    watch = orch.WatchWorkflow(OR.WatchWorkflowRequest(workflow_id=workflow_id))
    first = await watch.read()
    assert first.seq == 0 and first.workflow_state == pb.WORKFLOW_STATE_PENDING and first.message == "current state"

    await orch.ExecuteWorkflow(OR.ExecuteWorkflowRequest(workflow_id=workflow_id))
    a = await pull(controller)
    await complete(controller, a, b'"A"')
    b = await pull(controller)
    assert dict(b.inputs_json) == {"a": b'"A"'}
    await complete(controller, b, b'"B"')

    events = []
    while (event := await watch.read()) is not grpc.aio.EOF:
        events.append(event)
    seqs = [e.seq for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs) and seqs[0] > 0
    assert all(e.workflow_id == workflow_id for e in events)
    trace = [(e.task_name, pb.TaskState.Name(e.task_state) if e.task_name else "", e.workflow_state) for e in events]
    running = pb.WORKFLOW_STATE_RUNNING
    assert trace == [
        ("", "", running),
        ("a", "TASK_STATE_READY", running),
        ("a", "TASK_STATE_ASSIGNED", running),
        ("a", "TASK_STATE_RUNNING", running),
        ("a", "TASK_STATE_COMPLETED", running),
        ("b", "TASK_STATE_READY", running),
        ("b", "TASK_STATE_ASSIGNED", running),
        ("b", "TASK_STATE_RUNNING", running),
        ("b", "TASK_STATE_COMPLETED", running),
        ("", "", pb.WORKFLOW_STATE_COMPLETED),
    ]
    assigned = next(e for e in events if e.task_name == "a" and e.task_state == pb.TASK_STATE_ASSIGNED)
    assert assigned.attempt_id == a.attempt_id and assigned.agent_id == "w1"
    # A watcher arriving after the end gets the final picture and the stream closes.
    late = [e async for e in orch.WatchWorkflow(OR.WatchWorkflowRequest(workflow_id=workflow_id))]
    assert late[0].workflow_state == pb.WORKFLOW_STATE_COMPLETED
    assert {(e.task_name, e.task_state) for e in late[1:]} == {
        ("a", pb.TASK_STATE_COMPLETED),
        ("b", pb.TASK_STATE_COMPLETED),
    }


async def test_execute_and_wait_returns_the_result(controller: Controller) -> None:
    orch = controller.orchestrator
    submitted = await orch.SubmitWorkflow(OR.SubmitWorkflowRequest(spec=workflow_spec("w", [ext_task("only")])))
    waiting = asyncio.ensure_future(
        orch.ExecuteWorkflow(OR.ExecuteWorkflowRequest(workflow_id=submitted.workflow_id, wait=True))
    )
    assignment = await pull(controller, wait_s=30)
    await complete(controller, assignment, b'{"answer": 42}')
    response = await waiting
    assert response.status.state == pb.WORKFLOW_STATE_COMPLETED
    result = response.result
    assert result.state == pb.WORKFLOW_STATE_COMPLETED and result.workflow_id == submitted.workflow_id
    assert dict(result.results_json) == {"only": b'{"answer": 42}'}
    assert list(result.critical_path) == ["only"]
    assert [t.state for t in result.tasks] == [pb.TASK_STATE_COMPLETED]


async def test_pause_resume_and_cancel(controller: Controller) -> None:
    orch = controller.orchestrator
    submitted = await orch.SubmitWorkflow(
        OR.SubmitWorkflowRequest(spec=workflow_spec("w", [ext_task("a"), ext_task("b")]), start=True)
    )
    workflow_id = submitted.workflow_id
    paused = await orch.PauseWorkflow(OR.PauseWorkflowRequest(workflow_id=workflow_id))
    assert paused.status.state == pb.WORKFLOW_STATE_PAUSED
    nothing = await controller.scheduler.GetNextTask(S.GetNextTaskRequest(worker_id="w1", agent_types=["ext"]))
    assert not nothing.found
    resumed = await orch.ResumeWorkflow(OR.ResumeWorkflowRequest(workflow_id=workflow_id))
    assert resumed.status.state == pb.WORKFLOW_STATE_RUNNING
    assignment = await pull(controller)
    cancelled = await orch.CancelWorkflow(OR.CancelWorkflowRequest(workflow_id=workflow_id, reason="enough"))
    # Pulled attempts cannot be told to stop: they end at once, so the workflow does too.
    assert cancelled.status.state == pb.WORKFLOW_STATE_CANCELLED
    assert cancelled.status.error == "enough"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await complete(controller, assignment, b"1")
    assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION


async def test_status_with_tasks_explains_waiting_tasks(controller: Controller) -> None:
    submitted = await controller.orchestrator.SubmitWorkflow(
        OR.SubmitWorkflowRequest(spec=workflow_spec("w", [ext_task("a")]), start=True)
    )
    status = await status_of(controller, submitted.workflow_id, tasks=True)
    (task,) = status.tasks
    assert task.state == pb.TASK_STATE_READY
    assert task.waiting_reason == "no agents connected" and task.unschedulable
    # The scheduler's own record: no agent had room, so the pass never walked the queue.
    assert task.plan_reason == "no agent running agent_type 'ext' had room for new work"


# --- Scheduler: external workers ----------------------------------------------------------------


async def test_standalone_task_pulled_completed_and_fenced(controller: Controller) -> None:
    sched = controller.scheduler
    scheduled = await sched.ScheduleTask(
        S.ScheduleTaskRequest(task=ext_task("job", resources=pb.ResourceRequirements(cpu_cores=2)))
    )
    assert scheduled.task_id.startswith("t-") and scheduled.workflow_id.startswith("wf-")
    explained = await sched.ExplainTask(S.ExplainTaskRequest(task_id=scheduled.task_id))
    assert explained.task.state == pb.TASK_STATE_READY
    assert explained.reason == "no agents connected" and explained.task.unschedulable
    assert explained.last_plan_reason == explained.task.plan_reason != ""
    assert explained.demand_class == "ext cpu_cores=2" and explained.last_plan_age_s >= 0.0

    too_small = await sched.GetNextTask(
        S.GetNextTaskRequest(worker_id="w1", agent_types=["ext"], capacity=pb.ResourceRequirements(cpu_cores=1))
    )
    assert not too_small.found
    assignment = await pull(controller)
    assert assignment.task_id == scheduled.task_id and assignment.workflow_id == scheduled.workflow_id
    assert assignment.task_name == "job" and assignment.attempt_number == 1
    assert json.loads(assignment.payload_json) == {"job": "job"}
    assert assignment.resources.cpu_cores == 2

    explained = await sched.ExplainTask(S.ExplainTaskRequest(task_id=scheduled.task_id))
    assert explained.task.state == pb.TASK_STATE_RUNNING and explained.task.agent_id == "w1"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await complete(controller, assignment, b"1", worker="intruder")
    assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
    await complete(controller, assignment, b'{"ok": true}')
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await complete(controller, assignment, b"2")
    assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    status = await status_of(controller, scheduled.workflow_id)
    assert status.state == pb.WORKFLOW_STATE_COMPLETED
    explained = await sched.ExplainTask(S.ExplainTaskRequest(task_id=scheduled.task_id))
    assert explained.task.result_json == b'{"ok": true}'


async def test_fail_task_retries_then_fails(controller: Controller) -> None:
    sched = controller.scheduler
    scheduled = await sched.ScheduleTask(S.ScheduleTaskRequest(task=ext_task("flaky", retries=1, retry_backoff_s=0)))
    first = await pull(controller)
    failed = await sched.FailTask(S.FailTaskRequest(attempt_id=first.attempt_id, worker_id="w1", error="disk full"))
    assert failed.accepted and failed.will_retry
    # The backoff (0 s) ends while no worker waits; the controller must keep serving and hand the
    # task out on the next pull.
    second = await pull(controller, wait_s=30)
    assert second.attempt_number == 2 and second.attempt_id != first.attempt_id
    with pytest.raises(grpc.aio.AioRpcError) as info:  # the old attempt is fenced off
        await complete(controller, first, b"1")
    assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    failed = await sched.FailTask(S.FailTaskRequest(attempt_id=second.attempt_id, worker_id="w1", error="again"))
    assert failed.accepted and not failed.will_retry
    status = await status_of(controller, scheduled.workflow_id)
    assert status.state == pb.WORKFLOW_STATE_FAILED
    assert "again" in status.error


async def test_permanent_failure_is_not_retried(controller: Controller) -> None:
    await controller.scheduler.ScheduleTask(S.ScheduleTaskRequest(task=ext_task("t", retries=5)))
    assignment = await pull(controller)
    failed = await controller.scheduler.FailTask(
        S.FailTaskRequest(attempt_id=assignment.attempt_id, worker_id="w1", error="bad input", permanent=True)
    )
    assert not failed.will_retry


async def test_get_next_task_long_poll(controller: Controller) -> None:
    sched = controller.scheduler
    empty = await sched.GetNextTask(S.GetNextTaskRequest(worker_id="w1", agent_types=["ext"], wait_s=0.2))
    assert not empty.found and not empty.HasField("assignment")
    waiting = asyncio.ensure_future(
        sched.GetNextTask(S.GetNextTaskRequest(worker_id="w1", agent_types=["ext"], wait_s=30))
    )
    scheduled = await sched.ScheduleTask(S.ScheduleTaskRequest(task=ext_task("arrives")))
    response = await waiting
    assert response.found and response.assignment.task_id == scheduled.task_id


# --- agents: the gateway stream and the Cluster API -----------------------------------------------


async def _read_kind(call: Any, kind: str) -> agent_pb2.ControllerMessage:
    message = await call.read()
    assert message is not grpc.aio.EOF
    assert message.WhichOneof("kind") == kind, message
    return message


async def test_fake_agent_runs_a_workflow_and_the_cluster_api_sees_it(controller: Controller) -> None:
    call = controller.gateway.Connect()
    await call.write(
        agent_pb2.AgentMessage(
            hello=agent_pb2.Hello(
                agent_id="agent-1",
                name="node1",
                hostname="host-1",
                agent_types=["shell"],
                labels={"zone": "a"},
                inventory=pb.Inventory(cpu_cores=4, memory_mb=4096, slots=2),
                version="9.9",
            )
        )
    )
    welcome = (await _read_kind(call, "welcome")).welcome
    assert welcome.agent_id == "agent-1" and welcome.session_epoch >= 1
    assert welcome.heartbeat_interval_s == 2.0 and welcome.lease_s == 15.0
    assert list(welcome.kill_attempt_ids) == []

    spec = workflow_spec(
        "on-agent", [shell_task("a", resources=pb.ResourceRequirements(cpu_cores=1)), shell_task("b", "a")]
    )
    submitted = await controller.orchestrator.SubmitWorkflow(OR.SubmitWorkflowRequest(spec=spec, start=True))
    (a,) = (await _read_kind(call, "assign")).assign.assignments
    assert a.task_name == "a" and a.workflow_id == submitted.workflow_id and a.resources.cpu_cores == 1

    agents = await controller.cluster.ListAgents(agent_pb2.ListAgentsRequest())
    (info,) = agents.agents
    assert info.agent_id == "agent-1" and info.name == "node1" and info.hostname == "host-1"
    assert info.state == pb.AGENT_STATE_CONNECTED and info.version == "9.9"
    assert dict(info.labels) == {"zone": "a"} and list(info.agent_types) == ["shell"]
    assert info.inventory.cpu_cores == 4 and info.inventory.slots == 2
    assert info.running_attempts == 1 and info.allocated.cpu_cores == 1

    await call.write(
        agent_pb2.AgentMessage(
            events=agent_pb2.TaskEvents(
                events=[
                    agent_pb2.TaskEvent(attempt_id=a.attempt_id, started=agent_pb2.Started(pid=123)),
                    agent_pb2.TaskEvent(attempt_id=a.attempt_id, output=agent_pb2.Output(stdout=b"hello\n")),
                    agent_pb2.TaskEvent(
                        attempt_id=a.attempt_id,
                        finished=agent_pb2.Finished(outcome=pb.ATTEMPT_OUTCOME_SUCCEEDED, result_json=b'{"v": 1}'),
                    ),
                ]
            )
        )
    )
    replies = {}
    for _ in range(2):  # the next assignment and the ack of the finished report
        message = await call.read()
        replies[message.WhichOneof("kind")] = message
    assert list(replies["ack"].ack.attempt_ids) == [a.attempt_id]
    (b,) = replies["assign"].assign.assignments
    assert b.task_name == "b" and dict(b.inputs_json) == {"a": b'{"v": 1}'}

    logs = await controller.orchestrator.GetTaskLogs(OR.GetTaskLogsRequest(task_id=a.task_id))
    assert logs.attempt_id == a.attempt_id and logs.stdout == b"hello\n" and logs.finished
    assert logs.stdout_offset == len(b"hello\n")

    got = await controller.cluster.GetAgent(agent_pb2.GetAgentRequest(agent_id="node1"))  # by name
    assert got.agent.agent_id == "agent-1"
    got = await controller.cluster.GetAgent(agent_pb2.GetAgentRequest(agent_id="agent-"))  # by prefix
    assert got.agent.name == "node1"

    drained = await controller.cluster.DrainAgent(agent_pb2.DrainAgentRequest(agent_id="node1", grace_s=5))
    assert drained.agent.state == pb.AGENT_STATE_DRAINING
    assert (await _read_kind(call, "drain")).drain.grace_s == 5
    draining = await controller.cluster.ListAgents(agent_pb2.ListAgentsRequest(states=[pb.AGENT_STATE_DRAINING]))
    assert [x.name for x in draining.agents] == ["node1"]

    await call.write(
        agent_pb2.AgentMessage(
            events=agent_pb2.TaskEvents(
                events=[
                    agent_pb2.TaskEvent(
                        attempt_id=b.attempt_id, finished=agent_pb2.Finished(outcome=pb.ATTEMPT_OUTCOME_SUCCEEDED)
                    )
                ]
            )
        )
    )
    assert list((await _read_kind(call, "ack")).ack.attempt_ids) == [b.attempt_id]
    status = await status_of(controller, submitted.workflow_id, tasks=True)
    assert status.state == pb.WORKFLOW_STATE_COMPLETED
    assert [t.agent_id for t in status.tasks] == ["agent-1", "agent-1"]
    # The completed attempts left the controller's memory (core/settled.py): read from the store.
    listed = await controller.orchestrator.ListAttempts(
        OR.ListAttemptsRequest(workflow_id=submitted.workflow_id, task="a")
    )
    assert [(x.attempt_id, x.agent_name, x.state) for x in listed.attempts] == [(a.attempt_id, "node1", "succeeded")]
    with pytest.raises(grpc.aio.AioRpcError) as info:  # another task's attempt: the store says no
        await controller.orchestrator.GetTaskLogs(OR.GetTaskLogsRequest(task_id=a.task_id, attempt_id=b.attempt_id))
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "attempt_id" in str(info.value.details())
    again = await controller.orchestrator.GetTaskLogs(OR.GetTaskLogsRequest(task_id=a.task_id, attempt_id=a.attempt_id))
    assert again.stdout == b"hello\n" and again.finished

    await call.done_writing()
    assert await call.read() is grpc.aio.EOF
    assert await call.code() is grpc.StatusCode.OK
    gone = await controller.cluster.GetAgent(agent_pb2.GetAgentRequest(agent_id="agent-1"))
    assert gone.agent.state == pb.AGENT_STATE_DRAINED and gone.agent.running_attempts == 0  # left after a drain


# --- standard services --------------------------------------------------------------------------


async def test_health_reports_serving(controller: Controller) -> None:
    stub = health_pb2_grpc.HealthStub(controller.channel)
    for service in ("", *SERVICE_NAMES):
        response = await stub.Check(health_pb2.HealthCheckRequest(service=service))
        assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_the_corral_services(controller: Controller) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(controller.channel)
    call = stub.ServerReflectionInfo()
    await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    response = await call.read()
    await call.done_writing()
    assert await call.read() is grpc.aio.EOF
    names = {service.name for service in response.list_services_response.service}
    assert {
        "corral.v1.Orchestrator",
        "corral.v1.Scheduler",
        "corral.v1.AgentGateway",
        "corral.v1.Cluster",
        "grpc.health.v1.Health",
    } <= names


async def test_methods_are_served_without_a_pending_request_each(controller: Controller) -> None:
    # Registered methods would each keep a pending request that grpc.aio waits on again at every
    # call's arrival; the generic handlers serve them all through one (see server.GenericOnly).
    await controller.orchestrator.ListWorkflows(OR.ListWorkflowsRequest())
    pending = [t for t in asyncio.all_tasks() if "_request_registered_call" in repr(t)]
    assert len(pending) <= 2, f"{len(pending)} per-method requests pending"  # reflection's own
