"""Tasks by name and their history in the SDK (issue 11): ``WF/TASK`` resolution, attempts, and
following a workflow's event log.

``WF/TASK`` names a task by its workflow (an id or a unique prefix) and its name (or its id, or a
unique id prefix within that workflow). The RPCs keep taking ids: the name is resolved here, at
the edge, with one ``GetWorkflowStatus`` call, so every command that takes a task resolves it the
same way (:meth:`HistoryMixin.resolve_task`). A target without ``/`` is passed through as a task id
(or unique id prefix), which the controller resolves as before.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
from collections.abc import AsyncIterator, Coroutine
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from google.protobuf.message import Message

from corral.controller.sdk.errors import InvalidArgumentError, NotFoundError
from corral.controller.sdk.records import Record, timestamp
from corral.controller.sdk.types import TaskStatus, WorkflowEvent, WorkflowStatus
from corral.v1 import orchestrator_pb2

if TYPE_CHECKING:
    from corral.controller.sdk.client import Client

__all__ = [
    "AttemptInfo",
    "HistoryMixin",
    "SyncHistoryMixin",
    "TaskRef",
    "exit_description",
    "split_target",
]

R = TypeVar("R")

_SHOWN_NAMES = 10  # task names listed in a "no such task" error


def split_target(target: str) -> tuple[str, str] | None:
    """``("wf", "task")`` for ``"wf/task"``; None for a bare task id. InvalidArgumentError for ``"wf/"``."""
    workflow, slash, task = target.partition("/")
    if not slash:
        return None
    if not workflow or not task:
        raise InvalidArgumentError(violations=[("task", f"{target!r}: expected WORKFLOW/TASK, e.g. 3fa9/extract")])
    return workflow, task


def exit_description(code: int) -> str:
    """An exit code for people: ``0``, ``1``, or ``SIGTERM (-15)`` for an attempt killed by a signal."""
    if code >= 0:
        return str(code)
    try:
        return f"{signal.Signals(-code).name} ({code})"
    except ValueError:
        return f"signal {-code} ({code})"


@dataclasses.dataclass(frozen=True)
class TaskRef:
    """A task resolved from ``WF/TASK`` (or an id passed through: ``workflow_id`` and ``name`` "")."""

    task_id: str
    workflow_id: str = ""
    name: str = ""
    status: TaskStatus | None = dataclasses.field(default=None, repr=False, compare=False)


def find_task(status: WorkflowStatus, typed: str) -> TaskStatus:
    """The task of ``status`` named ``typed``, else with that id or unique id prefix; NotFoundError."""
    for task in status.tasks:
        if task.name == typed:
            return task
    matches = [task for task in status.tasks if task.task_id.startswith(typed)]
    if len(matches) == 1:
        return matches[0]
    names = [task.name for task in status.tasks]
    shown = ", ".join(names[:_SHOWN_NAMES]) + (" ..." if len(names) > _SHOWN_NAMES else "")
    raise NotFoundError(f"workflow {status.workflow_id} has no task {typed[:128]!r} (its tasks: {shown or 'none'})")


@dataclasses.dataclass(frozen=True)
class AttemptInfo(Record):
    """One attempt of a task: where it ran, when, and how it ended.

    ``exit_code`` is None when the attempt reported no exit (never started, lost, still running);
    a negative one is the signal that killed it (``exit`` gives ``SIGTERM (-15)``).
    """

    attempt_id: str
    number: int
    run: int
    state: str
    agent_id: str
    agent_name: str
    assigned_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    exit_code: int | None
    error: str
    peak_rss_bytes: int
    cpu_s: float
    raw: orchestrator_pb2.AttemptInfo = dataclasses.field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, m: orchestrator_pb2.AttemptInfo) -> AttemptInfo:
        return cls(
            attempt_id=m.attempt_id,
            number=m.number,
            run=m.run,
            state=m.state,
            agent_id=m.agent_id,
            agent_name=m.agent_name,
            assigned_at=timestamp(m, "assigned_at"),
            started_at=timestamp(m, "started_at"),
            finished_at=timestamp(m, "finished_at"),
            exit_code=m.exit_code if m.exit_code_known else None,
            error=m.error,
            peak_rss_bytes=m.peak_rss_bytes,
            cpu_s=m.cpu_s,
            raw=m,
        )

    @property
    def exit(self) -> str:
        """The exit for people: ``-`` (none), ``0``, ``SIGTERM (-15)``."""
        return "-" if self.exit_code is None else exit_description(self.exit_code)

    @property
    def queued_s(self) -> float | None:
        """Seconds from its assignment to its start (None until it started)."""
        if self.assigned_at is None or self.started_at is None:
            return None
        return (self.started_at - self.assigned_at).total_seconds()

    @property
    def run_s(self) -> float | None:
        """Seconds from its start to its end (None until both happened)."""
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        data["exit"] = self.exit
        return data


class HistoryMixin:
    """``resolve_task``, ``attempts`` and ``follow_events`` of the asyncio client."""

    async def _call(self, service: str, method: str, request: Message, *, timeout: float | bool | None = True) -> Any:
        raise NotImplementedError  # the Client's

    async def status(self, workflow_id: str, *, include_tasks: bool = True) -> WorkflowStatus:
        raise NotImplementedError  # the Client's

    async def events(
        self, workflow_id: str, task: str | None = None, after_seq: int = 0, *, limit: int = 0
    ) -> list[WorkflowEvent]:
        raise NotImplementedError  # the Client's

    async def resolve_task(self, target: str) -> TaskRef:
        """The task ``target`` names: ``WF/TASK`` (a workflow id or unique prefix, then the task's
        name or id), or a bare task id / unique id prefix (passed through unresolved)."""
        split = split_target(target)
        if split is None:
            return TaskRef(task_id=target)
        workflow, name = split
        status = await self.status(workflow, include_tasks=True)
        task = find_task(status, name)
        return TaskRef(task.task_id, status.workflow_id, task.name, task)

    async def attempts(self, workflow_id: str, task: str) -> list[AttemptInfo]:
        """Every attempt of a task (its name or id in the workflow), oldest first."""
        request = orchestrator_pb2.ListAttemptsRequest(workflow_id=workflow_id, task=task)
        response = await self._call("orchestrator", "ListAttempts", request)
        return [AttemptInfo.from_proto(m) for m in response.attempts]

    async def follow_events(
        self, workflow_id: str, task: str | None = None, after_seq: int = 0, *, poll_interval: float = 0.5
    ) -> AsyncIterator[WorkflowEvent]:
        """Yield the event log, then each new event as it is recorded, until the workflow ends.

        It ends once the newest event is the workflow's move to a terminal state and the workflow
        is still ended (a retry starts a new run, whose events follow).
        """
        final = False
        while True:
            batch = await self.events(workflow_id, task, after_seq)
            for event in batch:
                yield event
                after_seq = event.seq
                final = event.is_final
            if not batch and task:
                final = True  # a task filter hides the workflow's own events: ask the workflow below
            if final and (await self.status(workflow_id, include_tasks=False)).done:
                return
            await asyncio.sleep(poll_interval)


class SyncHistoryMixin:
    """The blocking versions, for :class:`~corral.controller.sdk.sync.SyncClient`."""

    _client: Client

    def _run(self, coroutine: Coroutine[Any, Any, R]) -> R:
        raise NotImplementedError  # the SyncClient's

    def resolve_task(self, target: str) -> TaskRef:
        """See :meth:`Client.resolve_task`."""
        return self._run(self._client.resolve_task(target))

    def attempts(self, workflow_id: str, task: str) -> list[AttemptInfo]:
        """See :meth:`Client.attempts`."""
        return self._run(self._client.attempts(workflow_id, task))
