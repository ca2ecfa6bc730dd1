"""Runs of a workflow in the SDK (issue 10): ``retry``, ``rerun`` and ``runs``.

Mixins of :class:`~corral.controller.sdk.client.Client` and
:class:`~corral.controller.sdk.sync.SyncClient`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Coroutine
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from google.protobuf.message import Message

from corral.controller.sdk.records import Record, state_name, timestamp
from corral.controller.sdk.types import WorkflowStatus
from corral.v1 import orchestrator_pb2
from corral.v1 import types_pb2 as pb

if TYPE_CHECKING:
    from corral.controller.sdk.client import Client

__all__ = ["RunInfo", "RunsMixin", "SyncRunsMixin"]

R = TypeVar("R")


@dataclasses.dataclass(frozen=True)
class RunInfo(Record):
    """One run of a workflow: how it started (``submit``, ``retry``, ``rerun``) and how it ended."""

    number: int
    kind: str
    from_task: str
    fresh: bool
    started_at: datetime | None
    finished_at: datetime | None
    state: str
    error: str
    attempts: int
    failed_attempts: int
    tasks_run: tuple[str, ...]

    @classmethod
    def from_proto(cls, m: orchestrator_pb2.RunInfo) -> RunInfo:
        return cls(
            number=m.number,
            kind=m.kind,
            from_task=m.from_task,
            fresh=m.fresh,
            started_at=timestamp(m, "started_at"),
            finished_at=timestamp(m, "finished_at"),
            state=state_name(pb.WorkflowState, m.state, "WORKFLOW_STATE_"),
            error=m.error,
            attempts=m.attempts,
            failed_attempts=m.failed_attempts,
            tasks_run=tuple(m.tasks_run),
        )


class RunsMixin:
    """``retry``, ``rerun`` and ``runs`` of the asyncio client."""

    async def _call(self, service: str, method: str, request: Message, *, timeout: float | bool | None = True) -> Any:
        raise NotImplementedError  # the Client's

    async def retry(self, workflow_id: str, *, from_task: str = "", fresh: bool = False) -> WorkflowStatus:
        """Start a new run of an ended (or paused-on-failure) workflow: its failed, skipped and
        cancelled tasks run again, or ``from_task`` (a name or id) and its descendants; completed
        tasks keep their results. ``fresh`` discards the retried tasks' checkpoints."""
        request = orchestrator_pb2.RetryWorkflowRequest(workflow_id=workflow_id, from_task=from_task, fresh=fresh)
        return WorkflowStatus.from_proto((await self._call("orchestrator", "RetryWorkflow", request)).status)

    async def rerun(self, workflow_id: str) -> WorkflowStatus:
        """Start a new run of an ended workflow in which every task runs again (same inputs)."""
        request = orchestrator_pb2.RerunWorkflowRequest(workflow_id=workflow_id)
        return WorkflowStatus.from_proto((await self._call("orchestrator", "RerunWorkflow", request)).status)

    async def runs(self, workflow_id: str) -> list[RunInfo]:
        """The numbered runs of a workflow, oldest first."""
        request = orchestrator_pb2.ListRunsRequest(workflow_id=workflow_id)
        response = await self._call("orchestrator", "ListRuns", request)
        return [RunInfo.from_proto(run) for run in response.runs]


class SyncRunsMixin:
    """The blocking versions, for :class:`~corral.controller.sdk.sync.SyncClient`."""

    _client: Client

    def _run(self, coroutine: Coroutine[Any, Any, R]) -> R:
        raise NotImplementedError  # the SyncClient's

    def retry(self, workflow_id: str, *, from_task: str = "", fresh: bool = False) -> WorkflowStatus:
        """See :meth:`Client.retry`."""
        return self._run(self._client.retry(workflow_id, from_task=from_task, fresh=fresh))

    def rerun(self, workflow_id: str) -> WorkflowStatus:
        """See :meth:`Client.rerun`."""
        return self._run(self._client.rerun(workflow_id))

    def runs(self, workflow_id: str) -> list[RunInfo]:
        """See :meth:`Client.runs`."""
        return self._run(self._client.runs(workflow_id))
