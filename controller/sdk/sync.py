"""A blocking client with the same methods as :class:`~corral.controller.sdk.client.Client`.

::

    with SyncClient() as client:
        result = client.execute(wf)
        for event in client.watch(result.workflow_id):
            ...

It runs one :class:`Client` on a private event loop in a background thread, so the two clients
share every line of behaviour (conversion, errors, connect checks) and the caller's thread may or
may not have an event loop of its own. Do not call it from inside a coroutine: use ``Client``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar, Unpack

from corral.controller.sdk.admin_types import (
    AuditRecord,
    CreatedToken,
    Identity,
    NamespaceInfo,
    RevokedCertificate,
    SecretInfo,
    TokenInfo,
)
from corral.controller.sdk.builder import WorkflowLike
from corral.controller.sdk.client import Client, TaskLike
from corral.controller.sdk.credentials import PathLike
from corral.controller.sdk.durable import SubmitOptions, SyncDurableMixin
from corral.controller.sdk.fleet import SyncFleetMixin
from corral.controller.sdk.follow import DEFAULT_FOLLOW_TIMEOUT_S
from corral.controller.sdk.history import SyncHistoryMixin
from corral.controller.sdk.runs import SyncRunsMixin
from corral.controller.sdk.schedules import SyncScheduleMethods
from corral.controller.sdk.types import (
    AgentInfo,
    Assignment,
    DependencyAnalysis,
    ExecutionPlan,
    Explanation,
    FailOutcome,
    LogChunk,
    ScheduledTask,
    Submission,
    TaskStatus,
    WorkflowEvent,
    WorkflowPage,
    WorkflowResult,
    WorkflowStatus,
)

__all__ = ["SyncClient"]

T = TypeVar("T")


class SyncClient(SyncRunsMixin, SyncDurableMixin, SyncScheduleMethods, SyncFleetMixin, SyncHistoryMixin):
    """A blocking client of one controller; arguments as for :class:`Client`. Close it when done."""

    def __init__(
        self,
        address: str | None = None,
        *,
        timeout: float = 30.0,
        connect_timeout: float = 3.0,
        metadata: Sequence[tuple[str, str]] = (),
        ca: PathLike | None = None,
        cert: PathLike | None = None,
        key: PathLike | None = None,
        token: str | None = None,
        follow_timeout: float = DEFAULT_FOLLOW_TIMEOUT_S,
    ) -> None:
        self._client = Client(
            address,
            timeout=timeout,
            connect_timeout=connect_timeout,
            metadata=metadata,
            ca=ca,
            cert=cert,
            key=key,
            token=token,
            follow_timeout=follow_timeout,
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="corral-sync-client", daemon=True)
        self._thread.start()
        self._closed = False

    @property
    def address(self) -> str:
        return self._client.address

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel and stop the background loop. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            self._run(self._client.close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    def __repr__(self) -> str:
        return f"SyncClient({self.address!r})"

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def _iterate(self, iterator: AsyncIterator[T]) -> Iterator[T]:
        async def step() -> T:
            return await anext(iterator)

        async def close() -> None:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                await aclose()

        try:
            while True:
                try:
                    yield self._run(step())
                except StopAsyncIteration:
                    return
        finally:
            if not self._closed:
                self._run(close())

    def connect(self) -> None:
        """See :meth:`Client.connect`."""
        self._run(self._client.connect())

    # -- Orchestrator --------------------------------------------------------------------------

    def submit(
        self,
        workflow: WorkflowLike,
        *,
        start: bool = True,
        idempotency_key: str = "",
        namespace: str = "",
        **options: Unpack[SubmitOptions],
    ) -> Submission:
        """See :meth:`Client.submit`."""
        return self._run(
            self._client.submit(workflow, start=start, idempotency_key=idempotency_key, namespace=namespace, **options)
        )

    def start(self, workflow_id: str) -> WorkflowStatus:
        """See :meth:`Client.start`."""
        return self._run(self._client.start(workflow_id))

    def wait(self, workflow_id: str, *, timeout: float | None = None) -> WorkflowResult:
        """See :meth:`Client.wait`."""
        return self._run(self._client.wait(workflow_id, timeout=timeout))

    def execute(
        self,
        workflow: WorkflowLike,
        *,
        idempotency_key: str = "",
        timeout: float | None = None,
        namespace: str = "",
        **options: Unpack[SubmitOptions],
    ) -> WorkflowResult:
        """See :meth:`Client.execute`."""
        return self._run(
            self._client.execute(
                workflow, idempotency_key=idempotency_key, timeout=timeout, namespace=namespace, **options
            )
        )

    def cancel(self, workflow_id: str, *, force: bool = False, reason: str = "") -> WorkflowStatus:
        """See :meth:`Client.cancel`."""
        return self._run(self._client.cancel(workflow_id, force=force, reason=reason))

    def approve(self, workflow_id: str, task: str, *, reason: str = "") -> TaskStatus:
        """See :meth:`Client.approve`."""
        return self._run(self._client.approve(workflow_id, task, reason=reason))

    def reject(self, workflow_id: str, task: str, *, reason: str = "") -> TaskStatus:
        """See :meth:`Client.reject`."""
        return self._run(self._client.reject(workflow_id, task, reason=reason))

    def status(self, workflow_id: str, *, include_tasks: bool = True) -> WorkflowStatus:
        """See :meth:`Client.status`."""
        return self._run(self._client.status(workflow_id, include_tasks=include_tasks))

    def pause(self, workflow_id: str) -> WorkflowStatus:
        """See :meth:`Client.pause`."""
        return self._run(self._client.pause(workflow_id))

    def resume(self, workflow_id: str) -> WorkflowStatus:
        """See :meth:`Client.resume`."""
        return self._run(self._client.resume(workflow_id))

    def list_workflows(
        self,
        *,
        states: Iterable[str] | None = None,
        name_prefix: str = "",
        limit: int = 100,
        page_token: str = "",
        namespace: str = "",
    ) -> WorkflowPage:
        """See :meth:`Client.list_workflows`."""
        return self._run(
            self._client.list_workflows(
                states=states, name_prefix=name_prefix, limit=limit, page_token=page_token, namespace=namespace
            )
        )

    def watch(self, workflow_id: str, *, after_seq: int = 0) -> Iterator[WorkflowEvent]:
        """See :meth:`Client.watch`; a plain iterator that ends after the workflow's terminal event."""
        return self._iterate(self._client.watch(workflow_id, after_seq=after_seq))

    def events(
        self, workflow_id: str, task: str | None = None, after_seq: int = 0, *, limit: int = 0
    ) -> list[WorkflowEvent]:
        """See :meth:`Client.events`."""
        return self._run(self._client.events(workflow_id, task, after_seq, limit=limit))

    def plan(self, workflow: WorkflowLike | str) -> ExecutionPlan:
        """See :meth:`Client.plan`."""
        return self._run(self._client.plan(workflow))

    def logs(self, task_id: str, *, attempt_id: str = "", stdout_offset: int = 0, stderr_offset: int = 0) -> LogChunk:
        """See :meth:`Client.logs`."""
        return self._run(
            self._client.logs(task_id, attempt_id=attempt_id, stdout_offset=stdout_offset, stderr_offset=stderr_offset)
        )

    def follow_logs(self, task_id: str, *, attempt_id: str = "", poll_interval: float = 0.5) -> Iterator[LogChunk]:
        """See :meth:`Client.follow_logs`."""
        return self._iterate(self._client.follow_logs(task_id, attempt_id=attempt_id, poll_interval=poll_interval))

    # -- Scheduler -----------------------------------------------------------------------------

    def schedule_task(self, task: TaskLike, *, idempotency_key: str = "") -> ScheduledTask:
        """See :meth:`Client.schedule_task`."""
        return self._run(self._client.schedule_task(task, idempotency_key=idempotency_key))

    def get_next_task(
        self,
        worker_id: str,
        *,
        agent_types: Sequence[str],
        labels: Mapping[str, str] | None = None,
        capacity: Mapping[str, Any] | None = None,
        wait: float = 0.0,
    ) -> Assignment | None:
        """See :meth:`Client.get_next_task`."""
        return self._run(
            self._client.get_next_task(worker_id, agent_types=agent_types, labels=labels, capacity=capacity, wait=wait)
        )

    def complete_task(self, attempt_id: str, *, worker_id: str, result: Any = None) -> bool:
        """See :meth:`Client.complete_task`."""
        return self._run(self._client.complete_task(attempt_id, worker_id=worker_id, result=result))

    def fail_task(self, attempt_id: str, *, worker_id: str, error: str, permanent: bool = False) -> FailOutcome:
        """See :meth:`Client.fail_task`."""
        return self._run(self._client.fail_task(attempt_id, worker_id=worker_id, error=error, permanent=permanent))

    def analyze_dependencies(self, workflow: WorkflowLike) -> DependencyAnalysis:
        """See :meth:`Client.analyze_dependencies`."""
        return self._run(self._client.analyze_dependencies(workflow))

    def explain_task(self, task_id: str) -> Explanation:
        """See :meth:`Client.explain_task`."""
        return self._run(self._client.explain_task(task_id))

    # -- Cluster -------------------------------------------------------------------------------

    def list_agents(self, *, states: Iterable[str] | None = None) -> tuple[AgentInfo, ...]:
        """See :meth:`Client.list_agents`."""
        return self._run(self._client.list_agents(states=states))

    def get_agent(self, agent_id: str) -> AgentInfo:
        """See :meth:`Client.get_agent`."""
        return self._run(self._client.get_agent(agent_id))

    def drain_agent(self, agent_id: str, *, grace: float = 0.0) -> AgentInfo:
        """See :meth:`Client.drain_agent`."""
        return self._run(self._client.drain_agent(agent_id, grace=grace))

    # -- Admin ---------------------------------------------------------------------------------

    def whoami(self) -> Identity:
        """See :meth:`Client.whoami`."""
        return self._run(self._client.whoami())

    def create_token(
        self,
        role: str,
        *,
        namespaces: Sequence[str] = (),
        ttl: float = 0.0,
        description: str = "",
        name_pattern: str = "",
        uses: int = 0,
        labels: Mapping[str, str] | None = None,
        agent_types: Sequence[str] = (),
    ) -> CreatedToken:
        """See :meth:`Client.create_token`."""
        return self._run(
            self._client.create_token(
                role,
                namespaces=namespaces,
                ttl=ttl,
                description=description,
                name_pattern=name_pattern,
                uses=uses,
                labels=labels,
                agent_types=agent_types,
            )
        )

    def list_tokens(self, *, include_revoked: bool = False) -> tuple[TokenInfo, ...]:
        """See :meth:`Client.list_tokens`."""
        return self._run(self._client.list_tokens(include_revoked=include_revoked))

    def revoke_token(self, token_id: str) -> TokenInfo:
        """See :meth:`Client.revoke_token`."""
        return self._run(self._client.revoke_token(token_id))

    def create_namespace(self, name: str, *, description: str = "") -> NamespaceInfo:
        """See :meth:`Client.create_namespace`."""
        return self._run(self._client.create_namespace(name, description=description))

    def list_namespaces(self) -> tuple[NamespaceInfo, ...]:
        """See :meth:`Client.list_namespaces`."""
        return self._run(self._client.list_namespaces())

    def set_secret(self, namespace: str, name: str, value: str | bytes) -> bool:
        """See :meth:`Client.set_secret`."""
        return self._run(self._client.set_secret(namespace, name, value))

    def delete_secret(self, namespace: str, name: str) -> None:
        """See :meth:`Client.delete_secret`."""
        self._run(self._client.delete_secret(namespace, name))

    def list_secrets(self, namespace: str = "") -> tuple[SecretInfo, ...]:
        """See :meth:`Client.list_secrets`."""
        return self._run(self._client.list_secrets(namespace))

    def revoke_certificate(self, name: str, *, reason: str = "") -> None:
        """See :meth:`Client.revoke_certificate`."""
        self._run(self._client.revoke_certificate(name, reason=reason))

    def list_revoked_certificates(self) -> tuple[RevokedCertificate, ...]:
        """See :meth:`Client.list_revoked_certificates`."""
        return self._run(self._client.list_revoked_certificates())

    def list_audit(
        self, *, since: datetime | None = None, principal: str = "", limit: int = 100
    ) -> tuple[AuditRecord, ...]:
        """See :meth:`Client.list_audit`."""
        return self._run(self._client.list_audit(since=since, principal=principal, limit=limit))
