"""Issue 10 in the client SDK: parameters and ``no_cache`` on submissions, ``clear_cache``, and the
design's executor conveniences ``execute_parallel``, ``execute_sequential`` and
``execute_with_timeout`` (thin helpers that build a workflow and run it with :meth:`Client.execute`).

::

    async with Client() as client:
        result = await client.execute_parallel([{"name": f"p{i}", "payload": {"shell": "..."}} for i in range(8)],
                                               max_workers=4)
        print(result.results)
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

from google.protobuf.message import Message
from pydantic import ValidationError

from corral.controller.errors import InvalidArgument
from corral.controller.sdk.builder import TaskHandle, WorkflowLike
from corral.controller.sdk.errors import InvalidArgumentError, Violation
from corral.controller.sdk.types import WorkflowResult
from corral.controller.spec import TaskSpec, WorkflowSpec, format_loc, parse_workflow
from corral.v1 import admin_pb2

__all__ = ["DurableMixin", "SubmitOptions", "SyncDurableMixin", "TaskInput", "submit_options", "task_spec_of"]

#: A task for the conveniences: a spec, a builder handle, or a mapping as in a workflow file.
TaskInput = TaskSpec | TaskHandle | Mapping[str, Any]


class SubmitOptions(TypedDict, total=False):
    """Options of :meth:`Client.submit` and :meth:`Client.execute` (issue 10).

    ``params``: parameter values (name -> value) for the workflow's declared ``params``.
    ``no_cache``: run every task; cached results are not used (its successes refresh them).
    """

    params: Mapping[str, Any] | None
    no_cache: bool


def submit_options(options: SubmitOptions) -> dict[str, Any]:
    """The SubmitWorkflowRequest fields for :class:`SubmitOptions`.

    Values go as text, the way ``corral run -p`` sends them: strings as they are, anything else as
    JSON (``7``, ``true``); the controller reads each as its declared default's type.
    """
    fields: dict[str, Any] = {}
    params = options.get("params")
    if params:
        fields["params"] = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in params.items()}
    if options.get("no_cache"):
        fields["no_cache"] = True
    return fields


def task_spec_of(task: TaskInput) -> TaskSpec:
    """One task as a validated spec, its dependencies dropped for a handle (a standalone task);
    InvalidArgumentError with paths ``task.<field>``."""
    if isinstance(task, TaskSpec):
        return task
    if isinstance(task, TaskHandle):
        return task.spec.model_copy(update={"dependencies": []})
    try:
        return TaskSpec.model_validate(dict(task))
    except ValidationError as exc:
        violations = [
            Violation(format_loc(("task", *err["loc"])), str(err["msg"]).removeprefix("Value error, "))
            for err in exc.errors(include_url=False)
        ]
        raise InvalidArgumentError(violations=violations) from None


def _task_dict(task: TaskInput) -> dict[str, Any]:
    if isinstance(task, TaskHandle):
        task = task.spec
    if isinstance(task, TaskSpec):
        return task.model_dump(exclude_defaults=True) | {"name": task.name}
    return dict(task)


def helper_spec(
    name: str, tasks: Sequence[TaskInput], *, chain: bool = False, max_workers: int | None = None
) -> WorkflowSpec:
    """A workflow of ``tasks``: independent (``max_parallel`` = ``max_workers``), or a chain.

    Dependencies the tasks carry are dropped: the helper decides the shape. InvalidArgumentError
    (paths ``tasks[i]...``) for a bad task, no task, or a bad ``max_workers``.
    """
    items = [_task_dict(t) for t in tasks]
    for i, item in enumerate(items):
        item["dependencies"] = [items[i - 1].get("name", "")] if chain and i else []
    data: dict[str, Any] = {"name": name, "tasks": items}
    if max_workers is not None:
        data["max_parallel"] = max_workers
    try:
        return parse_workflow(data)
    except InvalidArgument as exc:
        violations = [(v.field.replace("max_parallel", "max_workers"), v.description) for v in exc.violations]
        raise InvalidArgumentError(exc.message, violations) from None


class DurableMixin:
    """The issue-10 methods of :class:`~corral.controller.sdk.client.Client`."""

    if TYPE_CHECKING:

        async def _call(
            self, service: str, method: str, request: Message, *, timeout: float | bool | None = True
        ) -> Any: ...

        async def execute(
            self,
            workflow: WorkflowLike,
            *,
            idempotency_key: str = "",
            timeout: float | None = None,
            namespace: str = "",
            **options: Unpack[SubmitOptions],
        ) -> WorkflowResult: ...

    async def clear_cache(self, namespace: str = "") -> tuple[int, int]:
        """Drop cached task results of ``namespace`` ("" = every namespace the credential covers);
        returns ``(cleared, remaining)``. Tasks with ``cache`` then run again."""
        request = admin_pb2.ClearCacheRequest(namespace=namespace)
        response = await self._call("admin", "ClearCache", request)
        return int(response.cleared), int(response.remaining)

    async def execute_parallel(
        self,
        tasks: Sequence[TaskInput],
        *,
        max_workers: int | None = None,
        name: str = "parallel",
        timeout: float | None = None,
        namespace: str = "",
    ) -> WorkflowResult:
        """Run independent tasks in one workflow, at most ``max_workers`` at once (None: as many as
        the cluster takes); waits and returns the :class:`WorkflowResult` (``results`` by task name)."""
        spec = helper_spec(name, tasks, max_workers=max_workers)
        return await self.execute(spec, timeout=timeout, namespace=namespace)

    async def execute_sequential(
        self, tasks: Sequence[TaskInput], *, name: str = "sequential", timeout: float | None = None, namespace: str = ""
    ) -> WorkflowResult:
        """Run tasks one after another, each depending on the one before (so it receives that
        task's result as its input); a failure skips the rest."""
        return await self.execute(helper_spec(name, tasks, chain=True), timeout=timeout, namespace=namespace)

    async def execute_with_timeout(
        self, task: TaskInput, timeout: float, *, name: str = "", namespace: str = ""
    ) -> WorkflowResult:
        """Run one task with ``timeout`` seconds to finish: its agent stops it then (SIGTERM, the
        kill grace, SIGKILL) and the result says FAILED with the timeout. Waits for the result."""
        item = _task_dict(task)
        item["timeout"] = timeout
        spec = helper_spec(name or str(item.get("name", "task")), [item])
        # The agent enforces the timeout; the wait only needs room for the kill grace and the report.
        return await self.execute(spec, timeout=timeout + 120.0, namespace=namespace)


class SyncDurableMixin:
    """The same methods on :class:`~corral.controller.sdk.sync.SyncClient` (blocking)."""

    if TYPE_CHECKING:
        from collections.abc import Coroutine

        from corral.controller.sdk.client import Client

        _client: Client

        def _run(self, coroutine: Coroutine[Any, Any, Any]) -> Any: ...

    def clear_cache(self, namespace: str = "") -> tuple[int, int]:
        """See :meth:`Client.clear_cache`."""
        result: tuple[int, int] = self._run(self._client.clear_cache(namespace))
        return result

    def execute_parallel(self, tasks: Sequence[TaskInput], **options: Any) -> WorkflowResult:
        """See :meth:`Client.execute_parallel`."""
        result: WorkflowResult = self._run(self._client.execute_parallel(tasks, **options))
        return result

    def execute_sequential(self, tasks: Sequence[TaskInput], **options: Any) -> WorkflowResult:
        """See :meth:`Client.execute_sequential`."""
        result: WorkflowResult = self._run(self._client.execute_sequential(tasks, **options))
        return result

    def execute_with_timeout(self, task: TaskInput, timeout: float, **options: Any) -> WorkflowResult:
        """See :meth:`Client.execute_with_timeout`."""
        result: WorkflowResult = self._run(self._client.execute_with_timeout(task, timeout, **options))
        return result
