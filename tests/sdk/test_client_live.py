"""The SDK against a real controller and agent (processes on port 0)."""

from __future__ import annotations

import pytest

from corral.controller.sdk import (
    Client,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    SyncClient,
    Workflow,
    WorkflowEvent,
)
from corral.controller.spec import TaskSpec, WorkflowSpec
from tests.procs import Cluster

pytestmark = pytest.mark.e2e


def small_workflow(name: str = "small") -> Workflow:
    wf = Workflow(name)
    a = wf.shell("a", shell="echo '{\"n\": 1}'")
    b = wf.shell("b", ["sh", "-c", "echo hello from b; echo '{\"n\": 2}'"])
    a >> b
    return wf


async def test_execute_end_to_end(cluster_with_agent: Cluster) -> None:
    async with Client(cluster_with_agent.address) as client:
        result = await client.execute(small_workflow())
        assert result.state == "completed" and result.succeeded
        assert result.results == {"a": {"n": 1}, "b": {"n": 2}}
        assert {t.name: t.state for t in result.tasks} == {"a": "completed", "b": "completed"}
        status = await client.status(result.workflow_id[:8])  # a unique prefix is enough
        assert status.workflow_id == result.workflow_id and status.done
        assert status.finished_at is not None and status.finished_at.tzinfo is not None


async def test_watch_event_order(cluster_with_agent: Cluster) -> None:
    async with Client(cluster_with_agent.address) as client:
        submission = await client.submit(small_workflow("watched"), start=True)
        events: list[WorkflowEvent] = [e async for e in client.watch(submission.workflow_id)]
    assert [e.seq for e in events] == sorted(e.seq for e in events)
    first_running = next(i for i, e in enumerate(events) if not e.is_task_event and e.workflow_state == "running")
    first_task = next(i for i, e in enumerate(events) if e.is_task_event)
    assert first_running < first_task
    for name in ("a", "b"):
        states = [e.task_state for e in events if e.task_name == name]
        assert states.index("running") < states.index("completed")
    assert events[-1].is_final and events[-1].workflow_state == "completed"
    b_running = next(i for i, e in enumerate(events) if e.task_name == "b" and e.task_state == "running")
    a_completed = next(i for i, e in enumerate(events) if e.task_name == "a" and e.task_state == "completed")
    assert a_completed < b_running  # b depends on a


async def test_typed_errors_from_the_server(cluster: Cluster) -> None:
    async with Client(cluster.address) as client:
        with pytest.raises(NotFoundError):
            await client.status("does-not-exist")
        with pytest.raises(NotFoundError):
            await client.get_agent("nobody")
        # Skip client-side validation (model_construct) so the server's own check answers.
        bad = WorkflowSpec.model_construct(
            name="bad name!",
            tasks=[TaskSpec.model_construct(name="a", payload={"shell": "true"}, dependencies=["ghost"])],
            metadata={},
            labels={},
            priority=None,
        )
        with pytest.raises(InvalidArgumentError) as info:
            await client.submit(bad)
        fields = [v.field for v in info.value.violations]
        assert any(f.endswith("name") for f in fields), info.value.violations
        assert all(v.description for v in info.value.violations)


async def test_acting_on_a_finished_workflow_is_a_failed_precondition(cluster_with_agent: Cluster) -> None:
    async with Client(cluster_with_agent.address) as client:
        result = await client.execute(small_workflow())
        with pytest.raises(FailedPreconditionError):
            await client.pause(result.workflow_id)


def test_sync_client_covers_the_read_calls(cluster_with_agent: Cluster) -> None:
    with SyncClient(cluster_with_agent.address) as client:
        wf = small_workflow("sync")
        plan = client.plan(wf)
        assert [s.task_names for s in plan.stages] == [("a",), ("b",)] and plan.task_count == 2
        analysis = client.analyze_dependencies(wf)
        assert analysis.roots == ("a",) and analysis.leaves == ("b",) and analysis.depth == 2
        assert analysis.immediate_dominators == {"b": "a"} and analysis.redundant_edges == ()

        result = client.execute(wf)
        assert result.state == "completed"
        assert client.plan(result.workflow_id).task_count == 2
        events = list(client.watch(result.workflow_id))
        assert events[-1].workflow_state == "completed"

        page = client.list_workflows()
        assert result.workflow_id in [w.workflow_id for w in page.workflows]
        assert client.list_workflows(states=["running"]).workflows == ()

        agents = client.list_agents()
        assert [a.name for a in agents] == ["a1"] and agents[0].state == "connected"
        assert client.get_agent("a1").agent_id == agents[0].agent_id

        b = next(t for t in client.status(result.workflow_id).tasks if t.name == "b")
        logs = client.logs(b.task_id)
        assert b"hello from b" in logs.stdout and logs.finished
        explanation = client.explain_task(b.task_id)
        assert explanation.task.name == "b" and explanation.reason


async def test_external_worker_pulls_and_completes_a_standalone_task(cluster: Cluster) -> None:
    async with Client(cluster.address) as client:
        scheduled = await client.schedule_task({"name": "ext", "agent_type": "external", "payload": {"x": 1}})
        assignment = await client.get_next_task("worker-1", agent_types=["external"], wait=10)
        assert assignment is not None
        assert assignment.task_id == scheduled.task_id and assignment.payload == {"x": 1}
        assert await client.complete_task(assignment.attempt_id, worker_id="worker-1", result={"ok": True})
        result = await client.wait(scheduled.workflow_id, timeout=30)
        assert result.state == "completed" and result.results == {"ext": {"ok": True}}
        # a second report of the same attempt is stale: refused, never applied
        with pytest.raises(FailedPreconditionError):
            await client.fail_task(assignment.attempt_id, worker_id="worker-1", error="late")
        assert (await client.status(scheduled.workflow_id)).state == "completed"


async def test_cancel_and_drain(cluster_with_agent: Cluster) -> None:
    async with Client(cluster_with_agent.address) as client:
        wf = Workflow("slow")
        wf.shell("sleep", ["sleep", "60"])
        submission = await client.submit(wf, start=True)
        status = await client.cancel(submission.workflow_id, force=True)
        assert status.state in ("cancelling", "cancelled")
        final = await client.wait(submission.workflow_id, timeout=30)
        assert final.state == "cancelled"
        drained = await client.drain_agent("a1")
        assert drained.state == "draining"


async def test_results_larger_than_grpc_default_limit_arrive(cluster_with_agent: Cluster) -> None:
    # 24 results of ~200 KB each: the WorkflowResult is ~5 MB, over gRPC's default 4 MiB limit.
    wf = Workflow("big-results")
    blob = "x" * 200_000
    for i in range(24):
        write = "import json, os; open(os.environ['CORRAL_RESULT_FILE'], 'w').write(json.dumps('x' * 200000))"
        wf.shell(f"t{i}", ["python3", "-c", write])
    async with Client(cluster_with_agent.address) as client:
        result = await client.execute(wf)
    assert result.state == "completed"
    assert len(result.results) == 24 and all(value == blob for value in result.results.values())
