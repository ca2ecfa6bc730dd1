"""The Orchestrator's run RPCs (issue 10): RetryWorkflow, RerunWorkflow, ListRuns.

A mixin of :class:`~corral.controller.rpc.orchestrator.OrchestratorService`; the core's handlers
live in :mod:`corral.controller.core.runs`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from corral.controller.core.machine import Machine
from corral.controller.core.model import Workflow
from corral.controller.core.runs import ListRunsQuery, RerunRequest, RetryRequest, RunView
from corral.controller.rpc import fields, wire
from corral.controller.rpc.auth import current_caller
from corral.v1 import orchestrator_pb2 as pb
from corral.v1 import types_pb2

if TYPE_CHECKING:
    from corral.controller.runtime import Runtime

__all__ = ["RunsServicer", "run_info"]


def _status(machine: Machine, workflow: Workflow, now: float) -> types_pb2.WorkflowStatus:
    return wire.workflow_status(machine, workflow, False, now)


def run_info(view: RunView) -> pb.RunInfo:
    """One run as the API shows it."""
    run = view.run
    return pb.RunInfo(
        number=run.number,
        kind=run.kind,
        from_task=run.from_task,
        fresh=run.fresh,
        started_at=wire.timestamp(run.started_at),
        finished_at=wire.timestamp(run.finished_at),
        state=wire.WORKFLOW_STATE_TO_PB[view.state],
        error=run.error,
        attempts=view.attempts,
        failed_attempts=view.failed_attempts,
        tasks_run=view.tasks_run,
    )


class RunsServicer:
    """RetryWorkflow, RerunWorkflow and ListRuns over the runtime ``self.rt``."""

    rt: Runtime

    async def RetryWorkflow(self, request: pb.RetryWorkflowRequest, context: Any) -> pb.RetryWorkflowResponse:
        fields.identifier(request.workflow_id, "workflow_id", "workflow id")
        fields.optional_id(request.from_task, "from_task", "task name or id")
        event = RetryRequest(request.workflow_id, current_caller(), request.from_task, request.fresh)
        return pb.RetryWorkflowResponse(status=await self.rt.handle(event, _status))

    async def RerunWorkflow(self, request: pb.RerunWorkflowRequest, context: Any) -> pb.RerunWorkflowResponse:
        fields.identifier(request.workflow_id, "workflow_id", "workflow id")
        event = RerunRequest(request.workflow_id, current_caller())
        return pb.RerunWorkflowResponse(status=await self.rt.handle(event, _status))

    async def ListRuns(self, request: pb.ListRunsRequest, context: Any) -> pb.ListRunsResponse:
        fields.identifier(request.workflow_id, "workflow_id", "workflow id")

        def render(machine: Machine, answer: tuple[Workflow, list[RunView]], now: float) -> pb.ListRunsResponse:
            workflow, views = answer
            return pb.ListRunsResponse(workflow_id=workflow.id, runs=[run_info(v) for v in views])

        response: pb.ListRunsResponse = await self.rt.handle(
            ListRunsQuery(request.workflow_id, current_caller()), render
        )
        return response
