"""SDK methods of issue 10's approval tasks (a mixin of :class:`~corral.controller.sdk.client.Client`)."""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message

from corral.controller.sdk.types import TaskStatus
from corral.v1 import orchestrator_pb2

__all__ = ["ApprovalsMixin"]


class ApprovalsMixin:
    """``approve`` / ``reject`` a waiting approval task of a workflow."""

    async def _call(self, service: str, method: str, request: Message, *, timeout: float | bool | None = True) -> Any:
        raise NotImplementedError  # Client's

    async def approve(self, workflow_id: str, task: str, *, reason: str = "") -> TaskStatus:
        """Approve a waiting approval task (by name or id): it completes, its dependents run.

        Its result says who approved and when. FailedPreconditionError when it is not waiting (its
        dependencies still run, or it was already answered or timed out).
        """
        return await self._resolve(workflow_id, task, True, reason)

    async def reject(self, workflow_id: str, task: str, *, reason: str = "") -> TaskStatus:
        """Reject a waiting approval task: it fails with the reason ``rejected``."""
        return await self._resolve(workflow_id, task, False, reason)

    async def _resolve(self, workflow_id: str, task: str, approve: bool, reason: str) -> TaskStatus:
        request = orchestrator_pb2.ResolveApprovalRequest(
            workflow_id=workflow_id, task=task, approve=approve, reason=reason
        )
        return TaskStatus.from_proto((await self._call("orchestrator", "ResolveApproval", request)).task)
