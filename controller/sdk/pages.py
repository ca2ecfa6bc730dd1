"""Big workflows' tasks a page at a time (a mixin of :class:`~corral.controller.sdk.client.Client`).

A result or status answer carries ``page_tasks`` tasks unless the caller asks for a ``page_size``
of up to ``max_result_tasks`` (fewer past ``max_page_bytes`` of results); the rest is read with
GetWorkflowStatus page tokens. ``wait``,
``execute`` and ``status`` gather every page, so callers see whole workflows as before;
:meth:`PagesMixin.task_pages` streams them instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from google.protobuf.message import Message

from corral.controller.sdk.types import TaskStatus
from corral.v1 import orchestrator_pb2
from corral.v1 import types_pb2 as pb

__all__ = ["PagesMixin"]


class PagesMixin:
    """``task_pages``, and the page gathering behind ``wait``, ``execute`` and ``status``."""

    async def _call(self, service: str, method: str, request: Message, *, timeout: float | bool | None = True) -> Any:
        raise NotImplementedError  # Client's

    async def _complete(self, result: pb.WorkflowResult) -> None:
        """Fetch the pages a big workflow's result left out (past its first page) into it."""
        async for page in self._pages_after(result.workflow_id, result.next_page_token):
            for task in page.tasks:
                if task.state == pb.TASK_STATE_COMPLETED and task.result_json:
                    result.results_json[task.name] = task.result_json
            result.tasks.extend(page.tasks)
        result.next_page_token = ""

    async def _gather(self, status: pb.WorkflowStatus) -> None:
        """Append the pages of tasks after the first to ``status``."""
        async for page in self._pages_after(status.workflow_id, status.next_page_token):
            status.tasks.extend(page.tasks)
        status.next_page_token = ""

    async def task_pages(self, workflow_id: str, *, page_size: int = 0) -> AsyncIterator[tuple[TaskStatus, ...]]:
        """A workflow's tasks (statuses with their results), a page at a time, in submission order.

        ``page_size`` 0 is the controller's default (``page_tasks``, 2,000), at most
        ``max_result_tasks`` (10,000); pages are also cut at ``max_page_bytes`` of results. For
        workflows too big to hold as one result.
        """
        first = await self._status_page(workflow_id, page_size, "")
        yield tuple(TaskStatus.from_proto(task) for task in first.tasks)
        async for page in self._pages_after(workflow_id, first.next_page_token, page_size):
            yield tuple(TaskStatus.from_proto(task) for task in page.tasks)

    async def _pages_after(self, workflow_id: str, token: str, page_size: int = 0) -> AsyncIterator[pb.WorkflowStatus]:
        """The pages from ``token`` ("" : none) to the last."""
        while token:
            page = await self._status_page(workflow_id, page_size, token)
            yield page
            token = page.next_page_token

    async def _status_page(self, workflow_id: str, page_size: int, token: str) -> pb.WorkflowStatus:
        request = orchestrator_pb2.GetWorkflowStatusRequest(
            workflow_id=workflow_id, include_tasks=True, page_size=page_size, page_token=token
        )
        status: pb.WorkflowStatus = (await self._call("orchestrator", "GetWorkflowStatus", request)).status
        return status
