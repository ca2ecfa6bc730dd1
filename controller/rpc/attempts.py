"""The Orchestrator's ListAttempts RPC (issue 11): every attempt of one task.

A mixin of :class:`~corral.controller.rpc.orchestrator.OrchestratorService`; the core's handler
lives in :mod:`corral.controller.core.attempt_list`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from corral.controller.core.attempt_list import AttemptsAnswer, ListAttemptsQuery
from corral.controller.core.machine import Machine
from corral.controller.core.model import Attempt
from corral.controller.rpc import fields, wire
from corral.controller.rpc.auth import current_caller
from corral.v1 import orchestrator_pb2 as pb

if TYPE_CHECKING:
    from corral.controller.runtime import Runtime

__all__ = ["AttemptsServicer", "attempt_info"]


def attempt_info(machine: Machine, attempt: Attempt) -> pb.AttemptInfo:
    """One attempt as the API shows it (the agent's name when it is still known)."""
    agent = machine.agents.get(attempt.agent_id)
    message = pb.AttemptInfo(
        attempt_id=attempt.id,
        number=attempt.number,
        run=attempt.run,
        state=str(attempt.state),
        agent_id=attempt.agent_id,
        agent_name=agent.name if agent is not None else "",
        assigned_at=wire.timestamp(attempt.assigned_at),
        started_at=wire.timestamp(attempt.started_at),
        finished_at=wire.timestamp(attempt.finished_at),
        error=attempt.error,
        peak_rss_bytes=attempt.peak_rss_bytes,
        cpu_s=attempt.cpu_s,
    )
    if attempt.exit_code is not None:
        message.exit_code_known = True
        message.exit_code = attempt.exit_code
    return message


class AttemptsServicer:
    """ListAttempts over the runtime ``self.rt``."""

    rt: Runtime

    async def ListAttempts(self, request: pb.ListAttemptsRequest, context: Any) -> pb.ListAttemptsResponse:
        fields.identifier(request.workflow_id, "workflow_id", "workflow id")
        fields.identifier(request.task, "task", "task name or id")

        def render(machine: Machine, answer: AttemptsAnswer, now: float) -> pb.ListAttemptsResponse:
            return pb.ListAttemptsResponse(
                workflow_id=answer.workflow.id,
                task_id=answer.task.id,
                task_name=answer.task.name,
                attempts=[attempt_info(machine, a) for a in answer.attempts],
            )

        query = ListAttemptsQuery(request.workflow_id, request.task, current_caller())
        response: pb.ListAttemptsResponse = await self.rt.handle(query, render)
        return response
