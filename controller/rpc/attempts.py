"""The Orchestrator's ListAttempts RPC (issue 11): every attempt of one task.

A mixin of :class:`~corral.controller.rpc.orchestrator.OrchestratorService`; the core's handler
lives in :mod:`corral.controller.core.attempt_list`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from corral.controller.core.attempt_list import AttemptsAnswer, ListAttemptsQuery
from corral.controller.core.machine import Machine
from corral.controller.core.model import Attempt
from corral.controller.recovery import OPERATIONAL, storage_error
from corral.controller.rpc import fields, wire
from corral.controller.rpc.auth import current_caller
from corral.v1 import orchestrator_pb2 as pb

if TYPE_CHECKING:
    from corral.controller.runtime import Runtime

__all__ = ["AttemptsServicer", "attempt_info", "stored_attempts"]


async def stored_attempts(rt: Runtime, task_id: str) -> list[Attempt]:
    """A task's attempts as the store has them, read off the loop (some left memory once
    committed, core/settled.py); a lost database is UNAVAILABLE, not INTERNAL."""
    try:
        return await asyncio.to_thread(rt.store.task_attempts, task_id)
    except OPERATIONAL as exc:
        raise storage_error(exc) from exc


def attempt_info(attempt: Attempt, agent_names: Mapping[str, str]) -> pb.AttemptInfo:
    """One attempt as the API shows it (the agent's name when it is still known)."""
    message = pb.AttemptInfo(
        attempt_id=attempt.id,
        number=attempt.number,
        run=attempt.run,
        state=str(attempt.state),
        agent_id=attempt.agent_id,
        agent_name=agent_names.get(attempt.agent_id, ""),
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

        def render(machine: Machine, answer: AttemptsAnswer, now: float) -> tuple[AttemptsAnswer, dict[str, str]]:
            return answer, {agent.id: agent.name for agent in machine.agents.values()}

        query = ListAttemptsQuery(request.workflow_id, request.task, current_caller())
        answer, names = await self.rt.handle(query, render)
        attempts: Sequence[Attempt] = answer.attempts
        if answer.in_store:  # some attempts left memory (core/settled.py): the store has them all
            attempts = await stored_attempts(self.rt, answer.task.id)
        return pb.ListAttemptsResponse(
            workflow_id=answer.workflow.id,
            task_id=answer.task.id,
            task_name=answer.task.name,
            attempts=[attempt_info(a, names) for a in attempts],
        )
