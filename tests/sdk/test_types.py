"""Conversion of wire messages to the SDK's frozen types."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from corral.controller.sdk import (
    AgentInfo,
    ExecutionPlan,
    LogChunk,
    WorkflowEvent,
    WorkflowResult,
    WorkflowStatus,
)
from corral.v1 import orchestrator_pb2
from corral.v1 import types_pb2 as pb

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def stamp(moment: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(moment)
    return ts


def test_workflow_status_from_proto() -> None:
    message = pb.WorkflowStatus(
        workflow_id="wf-1",
        name="etl",
        state=pb.WORKFLOW_STATE_RUNNING,
        task_counts={"RUNNING": 1, "completed": 2},
        created_at=stamp(T0),
        metadata_json=b'{"owner": "me"}',
        task_total=3,
        tasks=[
            pb.TaskStatus(
                task_id="t-1",
                name="a",
                state=pb.TASK_STATE_COMPLETED,
                result_json=b'{"rows": 3}',
                started_at=stamp(T0),
                finished_at=stamp(T0.replace(second=5)),
                dependencies=["x"],
                unschedulable=True,
            )
        ],
    )
    status = WorkflowStatus.from_proto(message)
    assert status.state == "running" and not status.done
    assert status.task_counts == {"running": 1, "completed": 2}
    assert status.created_at == T0 and status.created_at.tzinfo is not None
    assert status.started_at is None
    assert status.metadata == {"owner": "me"}
    task = status.tasks[0]
    assert (task.state, task.result, task.duration_s, task.dependencies) == ("completed", {"rows": 3}, 5.0, ("x",))
    assert task.unschedulable
    assert status.raw is message
    with pytest.raises(dataclasses.FrozenInstanceError):
        status.state = "x"  # type: ignore[misc]


def test_to_dict_is_json_with_rfc3339_times_and_no_raw() -> None:
    status = WorkflowStatus.from_proto(
        pb.WorkflowStatus(workflow_id="w", state=pb.WORKFLOW_STATE_COMPLETED, created_at=stamp(T0))
    )
    data = json.loads(json.dumps(status.to_dict()))
    assert data["created_at"] == "2024-05-01T12:00:00Z"
    assert data["finished_at"] is None and data["state"] == "completed"
    assert "raw" not in data
    assert datetime.fromisoformat(data["created_at"]) == T0


def test_result_plan_event_agent_and_logs() -> None:
    result = WorkflowResult.from_proto(
        pb.WorkflowResult(workflow_id="w", state=pb.WORKFLOW_STATE_FAILED, results_json={"a": b"1", "b": b"not json"})
    )
    assert result.results == {"a": 1, "b": "not json"} and not result.succeeded

    plan = ExecutionPlan.from_proto(
        pb.ExecutionPlan(
            stages=[pb.ExecutionStage(index=0, task_names=["a", "b"], estimated_duration_s=2)],
            critical_path=["a"],
            estimated_duration_s=2,
            parallelism_factor=1.5,
            task_count=2,
            total_work_s=3,
        )
    )
    assert plan.stages[0].task_names == ("a", "b") and plan.to_dict()["stages"][0]["index"] == 0

    workflow_event = WorkflowEvent.from_proto(
        orchestrator_pb2.WorkflowEvent(seq=3, workflow_id="w", workflow_state=pb.WORKFLOW_STATE_COMPLETED)
    )
    assert workflow_event.is_final and not workflow_event.is_task_event and workflow_event.task_state is None
    task_event = WorkflowEvent.from_proto(
        orchestrator_pb2.WorkflowEvent(seq=2, workflow_id="w", task_id="t", task_state=pb.TASK_STATE_RUNNING)
    )
    assert task_event.is_task_event and task_event.task_state == "running" and task_event.workflow_state is None

    agent = AgentInfo.from_proto(
        pb.AgentInfo(
            agent_id="ag",
            name="a1",
            state=pb.AGENT_STATE_DRAINING,
            inventory=pb.Inventory(cpu_cores=4, slots=2, gpus=[pb.GpuInfo(index=0, name="T4")]),
        )
    )
    assert agent.state == "draining" and agent.inventory.slots == 2
    assert agent.to_dict()["inventory"]["gpus"][0]["name"] == "T4"

    chunk = LogChunk.from_proto(orchestrator_pb2.GetTaskLogsResponse(stdout=b"hi\n", stdout_offset=3))
    assert chunk.to_dict()["stdout"] == "hi\n"


def test_a_results_tasks_are_decoded_once_when_first_read_and_kept_in_its_dict() -> None:
    message = pb.WorkflowResult(
        workflow_id="w",
        state=pb.WORKFLOW_STATE_COMPLETED,
        results_json={"a": b'{"x": 1}'},
        tasks=[pb.TaskStatus(task_id="t1", name="a", state=pb.TASK_STATE_COMPLETED, result_json=b'{"x": 1}')],
        critical_path=["a"],
    )
    result = WorkflowResult.from_proto(message)
    assert "tasks" not in vars(result)  # nothing decoded yet: reading results alone is cheap
    assert result.results == {"a": {"x": 1}}
    first = result.tasks
    assert [(t.name, t.state, t.result) for t in first] == [("a", "completed", {"x": 1})]
    assert result.tasks is first  # kept, not decoded again
    data = result.to_dict()
    assert list(data)[:4] == ["workflow_id", "state", "results", "tasks"]
    assert data["tasks"][0]["task_id"] == "t1" and data["critical_path"] == ["a"]
    json.dumps(data)
