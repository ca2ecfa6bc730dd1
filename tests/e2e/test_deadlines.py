"""End to end: deadlines at submit with a real controller and agent.

An infeasible deadline under ``deadline_policy: reject`` is refused with FAILED_PRECONDITION that
names the deadline and the estimate, and stores nothing; under ``warn`` the workflow is accepted
with the verdict in the response and the event log, and status and explain show its slack.
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from corral.controller.rpc.wire_spec import spec_to_proto
from corral.controller.spec import parse_workflow
from corral.v1 import orchestrator_pb2
from tests.e2e.conftest import Api, Cluster, WorkflowState, eventually

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]


def _spec(name: str, deadline: str, policy: str, estimate: float, shell: str = "echo 1") -> dict[str, Any]:
    return {
        "name": name,
        "deadline": deadline,
        "deadline_policy": policy,
        "tasks": [
            {"name": "work", "payload": {"shell": shell}, "estimated_duration": estimate},
            {"name": "after", "payload": {"shell": "echo 2"}, "dependencies": ["work"], "estimated_duration": 1},
        ],
    }


def _submit(api: Api, spec: dict[str, Any]) -> orchestrator_pb2.SubmitWorkflowResponse:
    request = orchestrator_pb2.SubmitWorkflowRequest(spec=spec_to_proto(parse_workflow(spec)), start=True)
    response: orchestrator_pb2.SubmitWorkflowResponse = api.orchestrator.SubmitWorkflow(request, timeout=10)
    return response


def _workflow_count(api: Api) -> int:
    listed = api.orchestrator.ListWorkflows(orchestrator_pb2.ListWorkflowsRequest(limit=1000), timeout=10)
    return len(listed.workflows)


def test_an_infeasible_deadline_is_rejected_and_changes_nothing(cluster: Cluster) -> None:
    cluster.start_controller()
    cluster.start_agent("a1", slots=1)
    api = cluster.api
    api.wait_agents(["a1"])
    assert _workflow_count(api) == 0

    # 10 minutes of expected work against a 1 minute deadline.
    with pytest.raises(grpc.RpcError) as caught:
        _submit(api, _spec("too-late", "1m", "reject", 600))
    error = caught.value
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    details = error.details() or ""
    assert "deadline" in details and "infeasible" in details and "critical path 601.0s" in details
    assert _workflow_count(api) == 0

    # The same deadline under warn is accepted: the verdict comes back and is logged.
    warned = _submit(api, _spec("warned", "1m", "warn", 600, shell="sleep 30"))
    assert warned.deadline_verdict == "infeasible" and "estimated finish" in warned.deadline_message
    assert _workflow_count(api) == 1
    kinds = [
        e.kind
        for e in api.orchestrator.GetWorkflowEvents(
            orchestrator_pb2.GetWorkflowEventsRequest(workflow_id=warned.workflow_id), timeout=10
        ).events
    ]
    assert "deadline_admission" in kinds

    # Status shows the deadline, the verdict and the (negative: behind) slack; explain its slack.
    def running() -> Any:
        status = api.status(warned.workflow_id)
        return status if status.state == WorkflowState.RUNNING and status.HasField("slack_s") else None

    status = eventually(running, 20, "the warned workflow to run")
    assert status.deadline_verdict == "infeasible" and status.HasField("deadline")
    assert status.slack_s < 0
    tasks = api.tasks(warned.workflow_id)
    work = api.explain(tasks["work"].task_id)
    assert work.slack_s < 0 and work.deadline_note.startswith("at risk")
    # "after" may start 1 s before the deadline: about 59 s of slack, at risk 6 s (10%) before that.
    after = api.explain(tasks["after"].task_id)
    assert 40 < after.slack_s <= 59 and "at risk in" in after.deadline_note
    api.cancel(warned.workflow_id, force=True)
    api.wait_done(warned.workflow_id, 20)
