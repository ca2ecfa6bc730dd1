"""The asyncio client of a corral controller: every Orchestrator, Scheduler and Cluster call.

::

    async with Client("127.0.0.1:7070") as client:
        result = await client.execute(wf)          # submit, start, wait for the result
        print(result.state, result.results["load"])

Calls return the frozen types of :mod:`corral.controller.sdk.types` and raise the typed errors of
:mod:`corral.controller.sdk.errors`. The channel is opened on first use (so a ``Client`` may be
created outside a running event loop) and its readiness is checked with a short deadline: a
controller that is not running gives one :class:`UnavailableError` within ``connect_timeout``
instead of a call that hangs.

``address`` may list several controllers (``"a:7070,b:7070"``): calls go to the leader, following
a standby's ``corral-leader`` hint or the list order (:mod:`corral.controller.sdk.follow`). Every
call carries ``corral-protocol: N`` (:mod:`corral.protocol`).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Unpack

import grpc
import grpc.aio

from corral.controller.rpc.wire_spec import spec_header_to_proto, spec_to_proto, task_spec_to_proto
from corral.controller.sdk.admin_types import (
    AuditRecord,
    CreatedToken,
    Identity,
    NamespaceInfo,
    QuotaInfo,
    RevokedCertificate,
    SecretInfo,
    TokenInfo,
)
from corral.controller.sdk.approvals import ApprovalsMixin
from corral.controller.sdk.builder import TaskHandle, WorkflowLike, as_spec
from corral.controller.sdk.chunking import CHUNK_BYTES, CHUNK_TASKS, send_submission
from corral.controller.sdk.credentials import Credentials, PathLike
from corral.controller.sdk.durable import DurableMixin, SubmitOptions, submit_options
from corral.controller.sdk.durable import task_spec_of as _task_spec
from corral.controller.sdk.errors import (
    DeadlineExceededError,
    FailedPreconditionError,
    InvalidArgumentError,
    UnavailableError,
    error_from_rpc,
)
from corral.controller.sdk.fleet import FleetMixin
from corral.controller.sdk.follow import CHANNEL_OPTIONS, DEFAULT_FOLLOW_TIMEOUT_S, Following
from corral.controller.sdk.history import HistoryMixin
from corral.controller.sdk.pages import PagesMixin
from corral.controller.sdk.retention import RetentionMixin
from corral.controller.sdk.runs import RunsMixin
from corral.controller.sdk.schedules import ScheduleMethods
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
    WorkflowEvent,
    WorkflowPage,
    WorkflowResult,
    WorkflowStatus,
)
from corral.controller.spec import TaskSpec, WorkflowSpec
from corral.protocol import PROTOCOL_METADATA, PROTOCOL_VERSION, parse_addresses
from corral.v1 import (
    admin_pb2,
    agent_pb2,
    orchestrator_pb2,
    scheduler_pb2,
)
from corral.v1 import types_pb2 as pb

__all__ = ["CHANNEL_OPTIONS", "DEFAULT_ADDRESS", "Client", "TaskLike", "default_address"]

DEFAULT_ADDRESS = "127.0.0.1:7070"

TaskLike = TaskSpec | TaskHandle | Mapping[str, Any]

# Generous slack on top of a server-side wait, so the server (not the client) decides the timeout.
_WAIT_SLACK_S = 10.0
_PROTOCOL = (PROTOCOL_METADATA, str(PROTOCOL_VERSION))


def default_address() -> str:
    """``$CORRAL_ADDRESS``, else ``127.0.0.1:7070``."""
    return os.environ.get("CORRAL_ADDRESS") or DEFAULT_ADDRESS


def _enum_values(enum: Any, prefix: str, names: Iterable[str] | None, what: str) -> list[Any]:
    values: list[Any] = []
    for name in names or ():
        try:
            values.append(int(enum.Value(prefix + name.upper())))
        except ValueError:
            choices = ", ".join(n.removeprefix(prefix).lower() for n in enum.keys()[1:])
            raise InvalidArgumentError(violations=[(what, f"unknown state {name!r} (one of {choices})")]) from None
    return values


class Client(
    Following,
    RunsMixin,
    ApprovalsMixin,
    DurableMixin,
    ScheduleMethods,
    FleetMixin,
    HistoryMixin,
    RetentionMixin,
    PagesMixin,
):
    """An asyncio client of one controller. Use as ``async with Client(...)`` or call :meth:`close`.

    ``address`` defaults to ``$CORRAL_ADDRESS`` or ``127.0.0.1:7070``. ``timeout`` is the deadline of
    each unary call in seconds; ``channel`` lets you bring a configured ``grpc.aio.Channel`` (TLS,
    interceptors), which the client then does not close. ``metadata`` is sent with every call;
    ``token`` adds ``authorization: Bearer TOKEN`` to it. ``address`` may be a comma-separated list
    of controllers; ``follow_timeout`` bounds the search for the leader after a failure.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        timeout: float = 30.0,
        connect_timeout: float = 3.0,
        channel: grpc.aio.Channel | None = None,
        metadata: Sequence[tuple[str, str]] = (),
        ca: PathLike | None = None,
        cert: PathLike | None = None,
        key: PathLike | None = None,
        token: str | None = None,
        follow_timeout: float = DEFAULT_FOLLOW_TIMEOUT_S,
    ) -> None:
        try:
            self.addresses = parse_addresses(address or default_address())
        except ValueError as exc:
            raise InvalidArgumentError(violations=[("address", str(exc))]) from None
        self.address = self.addresses[0]  # the controller talked to now
        self._next_index = 1
        self.follow_timeout = follow_timeout
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.credentials = Credentials.resolve(ca=ca, cert=cert, key=key, token=token)
        self._metadata = (*self.credentials.metadata(), _PROTOCOL, *metadata)
        self._channel = channel
        self._owns_channel = channel is None
        self._ready = False
        self._stubs: dict[str, Any] = {}

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel (when the client opened it)."""
        if self._channel is not None and self._owns_channel:
            await self._channel.close(None)
            self._channel = None
            self._ready = False
            self._stubs.clear()

    def __repr__(self) -> str:
        return f"Client({self.address!r})"

    #: Issue 13: over this many tasks (or encoded bytes) submit/execute send the workflow in chunks.
    chunk_tasks = CHUNK_TASKS
    chunk_bytes = CHUNK_BYTES

    # -- Orchestrator --------------------------------------------------------------------------

    async def submit(
        self,
        workflow: WorkflowLike,
        *,
        start: bool = True,
        idempotency_key: str = "",
        namespace: str = "",
        **options: Unpack[SubmitOptions],
    ) -> Submission:
        """Submit a workflow (a :class:`Workflow` builder, a ``WorkflowSpec`` or a mapping).

        It starts at once, as ``corral submit`` does; ``start=False`` only stores it (start it later
        with :meth:`start`). Resubmitting with the same ``idempotency_key`` returns the
        first submission (``deduplicated`` is then true). ``params`` gives parameter values;
        ``no_cache`` runs every task (cached results are not used, successes refresh them).
        """
        spec = as_spec(workflow)
        request = orchestrator_pb2.SubmitWorkflowRequest(
            spec=_header(spec, namespace), idempotency_key=idempotency_key, start=start, **submit_options(options)
        )
        return Submission.from_proto(await send_submission(self, request, tasks=spec.tasks))

    async def start(self, workflow_id: str) -> WorkflowStatus:
        """Start a submitted workflow."""
        request = orchestrator_pb2.ExecuteWorkflowRequest(workflow_id=workflow_id)
        response = await self._call("orchestrator", "ExecuteWorkflow", request)
        return WorkflowStatus.from_proto(response.status)

    async def wait(self, workflow_id: str, *, timeout: float | None = None, summary: bool = False) -> WorkflowResult:
        """Wait until a started workflow finishes and return its result.

        Raises :class:`DeadlineExceededError` if it is still running after ``timeout`` seconds (the
        workflow itself goes on). ``summary``: only the state, duration and error, no tasks or
        results (for huge workflows whose results the caller reads with :meth:`task_pages`).
        """
        request = orchestrator_pb2.ExecuteWorkflowRequest(
            workflow_id=workflow_id, wait=True, wait_timeout_s=timeout or 0.0, summary_only=summary
        )
        deadline: float | bool = False if timeout is None else timeout + _WAIT_SLACK_S
        try:
            response = await self._call("orchestrator", "ExecuteWorkflow", request, timeout=deadline)
        except FailedPreconditionError:
            # The controller refuses to execute a workflow that already finished (it may finish
            # between submit and wait); its result is then rebuilt from its status.
            status = await self.status(workflow_id, include_tasks=True)
            if not status.done:
                raise
            return WorkflowResult.from_status(status)
        if not response.HasField("result"):
            raise DeadlineExceededError(f"workflow {workflow_id} is still running after {timeout:g} s")
        if not summary:
            await self._complete(response.result)
        response.result.next_page_token = ""
        return WorkflowResult.from_proto(response.result)

    async def execute(
        self,
        workflow: WorkflowLike,
        *,
        idempotency_key: str = "",
        timeout: float | None = None,
        namespace: str = "",
        **options: Unpack[SubmitOptions],
    ) -> WorkflowResult:
        """Submit, start and wait for a workflow in one round trip; returns its :class:`WorkflowResult`.

        Raises :class:`DeadlineExceededError` if it is still running after ``timeout`` seconds (the
        workflow itself goes on).
        """
        spec = as_spec(workflow)
        request = orchestrator_pb2.SubmitWorkflowRequest(
            spec=_header(spec, namespace),
            idempotency_key=idempotency_key,
            start=True,
            wait=True,
            wait_timeout_s=timeout or 0.0,
            **submit_options(options),
        )
        deadline: float | bool = False if timeout is None else timeout + _WAIT_SLACK_S
        response = await send_submission(self, request, tasks=spec.tasks, timeout=deadline)
        if not response.HasField("result"):
            raise DeadlineExceededError(f"workflow {response.workflow_id} is still running after {timeout:g} s")
        await self._complete(response.result)
        return WorkflowResult.from_proto(response.result)

    async def cancel(self, workflow_id: str, *, force: bool = False, reason: str = "") -> WorkflowStatus:
        """Cancel a workflow: running attempts get SIGTERM and a grace period, or SIGKILL with ``force``."""
        request = orchestrator_pb2.CancelWorkflowRequest(workflow_id=workflow_id, force=force, reason=reason)
        return WorkflowStatus.from_proto((await self._call("orchestrator", "CancelWorkflow", request)).status)

    async def status(self, workflow_id: str, *, include_tasks: bool = True) -> WorkflowStatus:
        """A workflow's state (``workflow_id`` may be a unique prefix), with its tasks by default."""
        request = orchestrator_pb2.GetWorkflowStatusRequest(workflow_id=workflow_id, include_tasks=include_tasks)
        status: pb.WorkflowStatus = (await self._call("orchestrator", "GetWorkflowStatus", request)).status
        await self._gather(status)
        return WorkflowStatus.from_proto(status)

    async def pause(self, workflow_id: str) -> WorkflowStatus:
        """Stop starting new tasks of a workflow; running ones finish."""
        request = orchestrator_pb2.PauseWorkflowRequest(workflow_id=workflow_id)
        return WorkflowStatus.from_proto((await self._call("orchestrator", "PauseWorkflow", request)).status)

    async def resume(self, workflow_id: str) -> WorkflowStatus:
        """Resume a paused workflow."""
        request = orchestrator_pb2.ResumeWorkflowRequest(workflow_id=workflow_id)
        return WorkflowStatus.from_proto((await self._call("orchestrator", "ResumeWorkflow", request)).status)

    async def list_workflows(
        self,
        *,
        states: Iterable[str] | None = None,
        name_prefix: str = "",
        limit: int = 100,
        page_token: str = "",
        namespace: str = "",
    ) -> WorkflowPage:
        """One page of workflows, newest first; filter by states (``"running"`` ...), name prefix and namespace."""
        request = orchestrator_pb2.ListWorkflowsRequest(
            states=_enum_values(pb.WorkflowState, "WORKFLOW_STATE_", states, "states"),
            name_prefix=name_prefix,
            limit=limit,
            page_token=page_token,
            namespace=namespace,
        )
        return WorkflowPage.from_proto(await self._call("orchestrator", "ListWorkflows", request))

    async def watch(self, workflow_id: str, *, after_seq: int = 0) -> AsyncIterator[WorkflowEvent]:
        """Stream a workflow's state changes, oldest first, after event ``after_seq``.

        The iteration ends after the workflow's own terminal event (completed, failed, cancelled).
        """
        pursuit = None  # the hunt for the leader after the stream broke (issue 12)
        while True:
            try:
                stub = await self._stub("orchestrator", one=pursuit is not None)
            except UnavailableError as exc:
                if pursuit is None:
                    raise  # not reachable at all: nothing to follow
                await self._reresolve(exc, pursuit)
                continue
            request = orchestrator_pb2.WatchWorkflowRequest(workflow_id=workflow_id, after_seq=after_seq)
            call = stub.WatchWorkflow(request, metadata=self._metadata)
            try:
                async for message in call:
                    pursuit = None
                    event = WorkflowEvent.from_proto(message)
                    after_seq = max(after_seq, event.seq)  # a new stream resumes after it
                    yield event
                    if event.is_final:
                        return
                return
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    raise error_from_rpc(exc, self.address) from exc
                pursuit = pursuit or self._pursuit()
                await self._reresolve(exc, pursuit)
            finally:
                call.cancel()

    async def events(
        self, workflow_id: str, task: str | None = None, after_seq: int = 0, *, limit: int = 0
    ) -> list[WorkflowEvent]:
        """A workflow's persisted event log (placed, started, finished, fenced, requeued, poison ...), oldest first.

        ``task``: only that task's events (its id, a unique prefix or its name). Only events with a
        sequence number above ``after_seq``; ``limit`` caps how many (0: all, fetched in pages of
        1000). Each event's ``raw`` message carries ``kind`` and ``reason``.
        """
        events: list[WorkflowEvent] = []
        page = 1000 if limit <= 0 else min(limit, 10_000)
        while True:
            request = orchestrator_pb2.GetWorkflowEventsRequest(
                workflow_id=workflow_id, after_seq=after_seq, limit=page, task=task or ""
            )
            response = await self._call("orchestrator", "GetWorkflowEvents", request)
            events.extend(WorkflowEvent.from_proto(m) for m in response.events)
            if len(response.events) < page or (limit > 0 and len(events) >= limit):
                return events[:limit] if limit > 0 else events
            after_seq = response.events[-1].seq

    async def plan(self, workflow: WorkflowLike | str) -> ExecutionPlan:
        """The execution plan of a submitted workflow (by id) or of a spec that is not submitted."""
        if isinstance(workflow, str):
            request = orchestrator_pb2.GetExecutionPlanRequest(workflow_id=workflow)
        else:
            request = orchestrator_pb2.GetExecutionPlanRequest(spec=spec_to_proto(as_spec(workflow)))
        return ExecutionPlan.from_proto((await self._call("orchestrator", "GetExecutionPlan", request)).plan)

    async def logs(
        self, task_id: str, *, attempt_id: str = "", stdout_offset: int = 0, stderr_offset: int = 0
    ) -> LogChunk:
        """Output of a task's latest (or the given) attempt after the given byte offsets."""
        request = orchestrator_pb2.GetTaskLogsRequest(
            task_id=task_id, attempt_id=attempt_id, stdout_offset=stdout_offset, stderr_offset=stderr_offset
        )
        return LogChunk.from_proto(await self._call("orchestrator", "GetTaskLogs", request))

    async def follow_logs(
        self, task_id: str, *, attempt_id: str = "", poll_interval: float = 0.5
    ) -> AsyncIterator[LogChunk]:
        """Yield new output of an attempt as it comes, until the attempt is over."""
        out = err = 0
        while True:
            chunk = await self.logs(task_id, attempt_id=attempt_id, stdout_offset=out, stderr_offset=err)
            attempt_id = attempt_id or chunk.attempt_id  # stick to one attempt once it is known
            out, err = chunk.stdout_offset, chunk.stderr_offset
            if chunk.stdout or chunk.stderr or chunk.finished:
                yield chunk
            if chunk.finished:
                return
            await asyncio.sleep(poll_interval)

    # -- Scheduler -----------------------------------------------------------------------------

    async def schedule_task(self, task: TaskLike, *, idempotency_key: str = "") -> ScheduledTask:
        """Run one standalone task (it gets a workflow of its own)."""
        request = scheduler_pb2.ScheduleTaskRequest(
            task=task_spec_to_proto(_task_spec(task)), idempotency_key=idempotency_key
        )
        return ScheduledTask.from_proto(await self._call("scheduler", "ScheduleTask", request))

    async def get_next_task(
        self,
        worker_id: str,
        *,
        agent_types: Sequence[str],
        labels: Mapping[str, str] | None = None,
        capacity: Mapping[str, Any] | None = None,
        wait: float = 0.0,
    ) -> Assignment | None:
        """Pull one attempt for an external worker, long-polling up to ``wait`` seconds; None if none."""
        request = scheduler_pb2.GetNextTaskRequest(
            worker_id=worker_id,
            agent_types=list(agent_types),
            labels=dict(labels or {}),
            capacity=pb.ResourceRequirements(**dict(capacity or {})),
            wait_s=wait,
        )
        response = await self._call("scheduler", "GetNextTask", request, timeout=self.timeout + wait)
        return Assignment.from_proto(response.assignment) if response.found else None

    async def complete_task(self, attempt_id: str, *, worker_id: str, result: Any = None) -> bool:
        """Report an attempt's success with a JSON-serialisable result; False if the report was stale."""
        request = scheduler_pb2.CompleteTaskRequest(
            attempt_id=attempt_id, worker_id=worker_id, result_json=json.dumps(result).encode()
        )
        return bool((await self._call("scheduler", "CompleteTask", request)).accepted)

    async def fail_task(self, attempt_id: str, *, worker_id: str, error: str, permanent: bool = False) -> FailOutcome:
        """Report an attempt's failure; ``permanent`` forbids retries."""
        request = scheduler_pb2.FailTaskRequest(
            attempt_id=attempt_id, worker_id=worker_id, error=error, permanent=permanent
        )
        response = await self._call("scheduler", "FailTask", request)
        return FailOutcome(response.accepted, response.will_retry, raw=response)

    async def analyze_dependencies(self, workflow: WorkflowLike) -> DependencyAnalysis:
        """Stages, critical path, roots, leaves, width and depth of a workflow (not submitted)."""
        request = scheduler_pb2.AnalyzeDependenciesRequest(spec=spec_to_proto(as_spec(workflow)))
        return DependencyAnalysis.from_proto(await self._call("scheduler", "AnalyzeDependencies", request))

    async def explain_task(self, task_id: str) -> Explanation:
        """Why a task is (not) running, with each agent's verdict."""
        request = scheduler_pb2.ExplainTaskRequest(task_id=task_id)
        return Explanation.from_proto(await self._call("scheduler", "ExplainTask", request))

    # -- Cluster -------------------------------------------------------------------------------

    async def list_agents(self, *, states: Iterable[str] | None = None) -> tuple[AgentInfo, ...]:
        """Agents known to the controller, optionally only those in ``states`` (``"connected"`` ...)."""
        request = agent_pb2.ListAgentsRequest(states=_enum_values(pb.AgentState, "AGENT_STATE_", states, "states"))
        response = await self._call("cluster", "ListAgents", request)
        return tuple(AgentInfo.from_proto(a) for a in response.agents)

    async def get_agent(self, agent_id: str) -> AgentInfo:
        """One agent by id, name or unique prefix."""
        response = await self._call("cluster", "GetAgent", agent_pb2.GetAgentRequest(agent_id=agent_id))
        return AgentInfo.from_proto(response.agent)

    async def drain_agent(self, agent_id: str, *, grace: float = 0.0) -> AgentInfo:
        """Stop assigning work to an agent; its running attempts get ``grace`` seconds (0: the default)."""
        request = agent_pb2.DrainAgentRequest(agent_id=agent_id, grace_s=grace)
        return AgentInfo.from_proto((await self._call("cluster", "DrainAgent", request)).agent)

    # -- Admin ---------------------------------------------------------------------------------

    async def whoami(self) -> Identity:
        """Who the controller says this client is."""
        return Identity.from_proto(await self._call("admin", "WhoAmI", admin_pb2.WhoAmIRequest()))

    async def create_token(
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
        """A new token (admin only). Role ``agent`` makes a join token (pattern, uses, labels, types)."""
        request = admin_pb2.CreateTokenRequest(
            role=role,
            namespaces=list(namespaces),
            ttl_s=ttl,
            description=description,
            name_pattern=name_pattern,
            uses=uses,
            labels=dict(labels or {}),
            agent_types=list(agent_types),
        )
        return CreatedToken.from_proto(await self._call("admin", "CreateToken", request))

    async def list_tokens(self, *, include_revoked: bool = False) -> tuple[TokenInfo, ...]:
        """Every token (never their secrets), oldest first."""
        request = admin_pb2.ListTokensRequest(include_revoked=include_revoked)
        return tuple(TokenInfo.from_proto(t) for t in (await self._call("admin", "ListTokens", request)).tokens)

    async def revoke_token(self, token_id: str) -> TokenInfo:
        """Revoke a token by id or unique prefix; it stops working at once."""
        request = admin_pb2.RevokeTokenRequest(token_id=token_id)
        return TokenInfo.from_proto((await self._call("admin", "RevokeToken", request)).info)

    async def create_namespace(self, name: str, *, description: str = "") -> NamespaceInfo:
        request = admin_pb2.CreateNamespaceRequest(name=name, description=description)
        return NamespaceInfo.from_proto((await self._call("admin", "CreateNamespace", request)).namespace)

    async def list_namespaces(self) -> tuple[NamespaceInfo, ...]:
        response = await self._call("admin", "ListNamespaces", admin_pb2.ListNamespacesRequest())
        return tuple(NamespaceInfo.from_proto(n) for n in response.namespaces)

    async def set_quota(
        self,
        namespace: str,
        *,
        weight: float = 1.0,
        max_cpu: float = 0.0,
        max_memory_mb: int = 0,
        max_gpu: int = 0,
        max_running: int = 0,
    ) -> None:
        """Set a namespace's fair-share weight and quotas on running work (0: no limit); admin only."""
        quota = admin_pb2.NamespaceQuota(
            weight=weight, max_cpu=max_cpu, max_memory_mb=max_memory_mb, max_gpu=max_gpu, max_running=max_running
        )
        await self._call("admin", "SetNamespaceQuota", admin_pb2.SetNamespaceQuotaRequest(name=namespace, quota=quota))

    async def list_quotas(self) -> tuple[QuotaInfo, ...]:
        """Every namespace you may see: usage vs quota, weight and dominant share."""
        response = await self._call("admin", "ListQuotas", admin_pb2.ListQuotasRequest())
        return tuple(QuotaInfo.from_proto(n) for n in response.namespaces)

    async def set_secret(self, namespace: str, name: str, value: str | bytes) -> bool:
        """Store a secret (encrypted at rest); True when it is new, False when replaced."""
        data = value.encode() if isinstance(value, str) else value
        request = admin_pb2.SetSecretRequest(namespace=namespace, name=name, value=data)
        return bool((await self._call("admin", "SetSecret", request)).created)

    async def delete_secret(self, namespace: str, name: str) -> None:
        await self._call("admin", "DeleteSecret", admin_pb2.DeleteSecretRequest(namespace=namespace, name=name))

    async def list_secrets(self, namespace: str = "") -> tuple[SecretInfo, ...]:
        """Secret names (never values) of one namespace, or of all."""
        response = await self._call("admin", "ListSecrets", admin_pb2.ListSecretsRequest(namespace=namespace))
        return tuple(SecretInfo.from_proto(s) for s in response.secrets)

    async def revoke_certificate(self, name: str, *, reason: str = "") -> None:
        """Refuse the certificate with this common name on every call from now on."""
        request = admin_pb2.RevokeCertificateRequest(name=name, reason=reason)
        await self._call("admin", "RevokeCertificate", request)

    async def list_revoked_certificates(self) -> tuple[RevokedCertificate, ...]:
        response = await self._call("admin", "ListRevokedCertificates", admin_pb2.ListRevokedCertificatesRequest())
        return tuple(RevokedCertificate.from_proto(c) for c in response.certificates)

    async def list_audit(
        self, *, since: datetime | None = None, principal: str = "", limit: int = 100
    ) -> tuple[AuditRecord, ...]:
        """The newest ``limit`` audit records at or after ``since`` (optionally of one principal), oldest first."""
        request = admin_pb2.ListAuditRequest(principal=principal, limit=limit)
        if since is not None:
            request.since.FromDatetime(since)
        response = await self._call("admin", "ListAudit", request)
        return tuple(AuditRecord.from_proto(r) for r in response.records)


def _header(spec: WorkflowSpec, namespace: str) -> pb.WorkflowSpec:
    """The workflow's message without its tasks (``send_submission`` encodes them, whole or in chunks)."""
    message = spec_header_to_proto(spec)
    if namespace:
        message.namespace = namespace
    return message
