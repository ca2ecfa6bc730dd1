"""What the dashboard shows, read through the controller's own RPC handlers, in process.

Each read or action runs the gRPC servicer method that serves it (ListWorkflows, GetWorkflowStatus,
ExplainTask, GetTaskLogs, CancelWorkflow, DrainAgent...) as the signed-in principal, after the
permission check of that very method (:mod:`corral.controller.web.session`). So the dashboard
validates, scopes namespaces and refuses exactly as the API does, and it adds no path into the
state machine: the servicers' events still go through ``Runtime.handle``. Actions are audited
like their RPCs. The answers are protobuf messages, turned here into small plain records for the
templates.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web
from google.protobuf.timestamp_pb2 import Timestamp

from corral.controller.core.access import AuditEntry
from corral.controller.core.machine import Machine
from corral.controller.core.model import Attempt, Workflow
from corral.controller.core.requests import WorkflowQuery
from corral.controller.errors import CorralError
from corral.controller.rpc import identity
from corral.controller.rpc.attempts import stored_attempts
from corral.controller.rpc.auth import current_caller, record_audit
from corral.controller.rpc.cluster import ClusterService
from corral.controller.rpc.errors import code_name
from corral.controller.rpc.orchestrator import OrchestratorService
from corral.controller.rpc.permissions import MUTATING
from corral.controller.rpc.scheduler import SchedulerService
from corral.controller.web.session import Sessions
from corral.v1 import agent_pb2, orchestrator_pb2, scheduler_pb2, types_pb2

__all__ = ["AgentRow", "Calls", "TaskRow", "WorkflowRow", "state_name"]

T = TypeVar("T")
_O = "/corral.v1.Orchestrator/"
_MAX_LOG_SHOWN = 64 * 1024  # bytes of each stream a task panel shows (its head; the CLI has the rest)
_MAX_RESULT_SHOWN = 16 * 1024


def state_name(value: int, enum: Any) -> str:
    """``TASK_STATE_RUNNING`` -> ``running`` for any of the proto state enums."""
    name: str = enum.Name(value)
    return name.split("_STATE_", 1)[-1].lower()


def _seconds(stamp: Timestamp) -> float:
    return stamp.seconds + stamp.nanos / 1e9 if stamp.seconds or stamp.nanos else 0.0


@dataclass(frozen=True, slots=True)
class WorkflowRow:
    workflow_id: str
    name: str
    namespace: str
    state: str
    counts: Mapping[str, int]
    total: int
    created: float
    started: float
    finished: float

    @property
    def done(self) -> int:
        return sum(self.counts.get(s, 0) for s in ("completed", "failed", "cancelled", "skipped"))


@dataclass(frozen=True, slots=True)
class TaskRow:
    task_id: str
    name: str
    state: str  # the display state: the stored one, or "unplaceable" (READY + a reason code)
    agent_id: str
    attempts: int
    started: float
    finished: float
    detail: str
    dependencies: tuple[str, ...]
    exit_code: int
    error: str


@dataclass(frozen=True, slots=True)
class AgentRow:
    agent_id: str
    name: str
    state: str
    types: tuple[str, ...]
    labels: Mapping[str, str]
    running: int
    slots: int
    cpu: tuple[float, float]  # (allocated, capacity) cores
    memory: tuple[int, int]  # (allocated, capacity) MiB
    gpus: tuple[int, int]
    cpu_percent: float  # measured: the agent's CPU busy, 0-100
    memory_used: int  # measured MiB in use on the machine
    cordoned: str  # "" or why (and until when)
    last_seen: float


@dataclass(slots=True)
class TaskPanel:
    """One task's details: explain, result, attempts and logs."""

    row: TaskRow
    reason: str = ""
    waiting_on: tuple[str, ...] = ()
    verdicts: tuple[tuple[str, str], ...] = ()
    result: str = ""
    attempts: list[dict[str, Any]] = field(default_factory=list)
    log_attempt: str = ""
    stdout: str = ""
    stderr: str = ""
    log_cut: bool = False


def task_row(t: types_pb2.TaskStatus) -> TaskRow:
    state = state_name(t.state, types_pb2.TaskState)
    if state == "ready" and t.unschedulable:
        state = "unplaceable"
    terminal = state in ("completed", "failed", "cancelled", "skipped")
    detail = "" if terminal else (t.waiting_reason or t.plan_reason)
    return TaskRow(
        t.task_id,
        t.name,
        state,
        t.agent_id,
        t.attempts,
        _seconds(t.started_at),
        _seconds(t.finished_at),
        detail,
        tuple(t.dependencies),
        t.exit_code,
        t.error,
    )


def agent_row(a: types_pb2.AgentInfo) -> AgentRow:
    # A cordon on failures (issue 10) has an end; a manual one (issue 11's fleet RPCs, where this
    # controller has them: ``cordoned``, ``cordoned_by``) lasts until uncordoned.
    cordon = ""
    until = _seconds(a.cordoned_until) if a.HasField("cordoned_until") else 0.0
    if getattr(a, "cordoned", False) or until > time.time():
        by = getattr(a, "cordoned_by", "")
        cordon = (a.cordon_reason or "cordoned") + (f" by {by}" if by else "")
        if until:
            cordon += f" (until {time.strftime('%H:%M:%S', time.localtime(until))})"
    return AgentRow(
        a.agent_id,
        a.name,
        state_name(a.state, types_pb2.AgentState),
        tuple(a.agent_types),
        dict(a.labels),
        a.running_attempts,
        a.inventory.slots,
        (a.allocated.cpu_cores, a.inventory.cpu_cores),
        (a.allocated.memory_mb, a.inventory.memory_mb),
        (a.allocated.gpu_count, a.inventory.gpu_count),
        a.usage.cpu_percent,
        a.usage.memory_used_mb,
        cordon,
        _seconds(a.last_heartbeat),
    )


def _attempts_in_memory(
    machine: Machine, workflow: Workflow, task_id: str
) -> tuple[list[Attempt] | None, dict[str, str]]:
    """Every attempt of one task, or None once some of its workflow's are in the store only
    (core/settled.py); and the agents' names. No index by task: a scan, on a click, never on a refresh."""
    names = {a.id: a.name for a in machine.agents.values()}
    if machine.settled.away(workflow.id):
        return None, names
    found = [a for a in machine.attempts.values() if a.task_id == task_id]
    found.sort(key=lambda a: (a.number, a.assigned_at))
    return found, names


def _attempt_dicts(found: list[Attempt], names: Mapping[str, str]) -> list[dict[str, Any]]:
    return [
        {
            "id": a.id,
            "number": a.number,
            "run": a.run,
            "state": a.state.value,
            "agent": names.get(a.agent_id, a.agent_id),
            "queued": max(0.0, (a.started_at or a.finished_at or a.assigned_at) - a.assigned_at),
            "ran": ((a.finished_at or 0.0) - a.started_at) if a.started_at and a.finished_at else None,
            "exit": a.exit_code,
            "error": a.error,
        }
        for a in found
    ]


def _by_dashboard(what: str) -> str:
    """The reason an action records: "cancelled from the dashboard by token:3f2a..." (the current principal)."""
    return f"{what} from the dashboard by {identity.current_principal().describe()}"


class Calls:
    """The dashboard's reads and actions, each as the RPC it stands for."""

    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions
        runtime = sessions.context.runtime
        self.rt = runtime
        self.orchestrator = OrchestratorService(runtime)
        self.scheduler = SchedulerService(runtime)
        self.cluster = ClusterService(runtime)
        # Manual cordons come with the fleet RPCs; without them the page offers drain only.
        self.can_cordon = hasattr(self.cluster, "CordonAgent") and hasattr(agent_pb2, "CordonAgentRequest")

    async def as_caller(self, request: web.Request, method: str, call: Callable[[], Awaitable[T]]) -> T:
        """Run ``call`` as the request's principal once it may call ``method``; audit what changes state."""
        principal = self.sessions.principal(request, method)
        with identity.acting_as(principal):
            if method not in MUTATING:
                return await call()
            target = request.match_info.get("workflow_id") or request.match_info.get("agent_id", "")
            try:
                answer = await call()
            except CorralError as exc:
                self._audit(principal, method, target, code_name(exc))
                raise
            self._audit(principal, method, target, "OK")
            return answer

    def _audit(self, principal: identity.Principal, method: str, target: str, code: str) -> None:
        # The namespace of the workflow or agent named, as the interceptor records it (a lookup only).
        found = self.rt.machine.workflows.get(target)
        namespace = found.namespace if found is not None else ""
        entry = AuditEntry(self.rt.clock(), principal.describe(), principal.role, method, target[:128], namespace, code)
        record_audit(self.rt, entry)

    # --- reads ----------------------------------------------------------------------------------

    async def workflows(
        self,
        request: web.Request,
        states: list[types_pb2.WorkflowState],
        prefix: str,
        namespace: str,
        page: str,
    ) -> tuple[list[WorkflowRow], str]:
        ask = orchestrator_pb2.ListWorkflowsRequest(
            states=states, name_prefix=prefix, namespace=namespace, limit=100, page_token=page
        )
        answer = await self.as_caller(request, _O + "ListWorkflows", lambda: self.orchestrator.ListWorkflows(ask, None))
        rows = [
            WorkflowRow(
                w.workflow_id,
                w.name,
                w.namespace,
                state_name(w.state, types_pb2.WorkflowState),
                dict(w.task_counts),
                w.task_total,
                _seconds(w.created_at),
                _seconds(w.started_at),
                _seconds(w.finished_at),
            )
            for w in answer.workflows
        ]
        return rows, answer.next_page_token

    async def workflow(self, request: web.Request, workflow_id: str, tasks: bool) -> types_pb2.WorkflowStatus:
        ask = orchestrator_pb2.GetWorkflowStatusRequest(workflow_id=workflow_id, include_tasks=tasks)
        answer = await self.as_caller(
            request, _O + "GetWorkflowStatus", lambda: self.orchestrator.GetWorkflowStatus(ask, None)
        )
        return answer.status

    async def agents(self, request: web.Request) -> list[AgentRow]:
        answer = await self.as_caller(
            request,
            "/corral.v1.Cluster/ListAgents",
            lambda: self.cluster.ListAgents(agent_pb2.ListAgentsRequest(), None),
        )
        return sorted((agent_row(a) for a in answer.agents), key=lambda a: (a.state != "connected", a.name))

    async def agent_names(self, request: web.Request) -> dict[str, str]:
        return {a.agent_id: a.name for a in await self.agents(request)}

    async def task_panel(self, request: web.Request, workflow_id: str, task_id: str) -> TaskPanel:
        """Explain, result, attempts and the latest attempt's logs of one task of a workflow."""
        explain = await self.as_caller(
            request,
            "/corral.v1.Scheduler/ExplainTask",
            lambda: self.scheduler.ExplainTask(scheduler_pb2.ExplainTaskRequest(task_id=task_id), None),
        )
        if explain.task.workflow_id != workflow_id:
            raise web.HTTPNotFound(text=f"task {task_id[:64]!r} is not in workflow {workflow_id[:64]!r}")
        panel = TaskPanel(task_row(explain.task), explain.reason, tuple(explain.waiting_on))
        panel.verdicts = tuple((v.agent_name or v.agent_id, v.reason) for v in explain.agents)
        if explain.task.result_json:
            text = explain.task.result_json[:_MAX_RESULT_SHOWN].decode("utf-8", "replace")
            with contextlib.suppress(ValueError):
                text = json.dumps(json.loads(explain.task.result_json), indent=2)[:_MAX_RESULT_SHOWN]
            panel.result = text

        def attempts(machine: Machine, workflow: Workflow, now: float) -> tuple[list[Attempt] | None, dict[str, str]]:
            return _attempts_in_memory(machine, workflow, explain.task.task_id)

        async def read_attempts() -> list[dict[str, Any]]:
            query = WorkflowQuery(workflow_id, current_caller())  # as_caller made the principal current
            found, names = await self.rt.handle(query, attempts)
            if found is None:
                found = await stored_attempts(self.rt, explain.task.task_id)
            return _attempt_dicts(found, names)

        panel.attempts = await self.as_caller(request, _O + "GetWorkflowStatus", read_attempts)
        logs = await self.as_caller(
            request,
            _O + "GetTaskLogs",
            lambda: self.orchestrator.GetTaskLogs(orchestrator_pb2.GetTaskLogsRequest(task_id=task_id), None),
        )
        panel.log_attempt = logs.attempt_id
        panel.stdout = logs.stdout[:_MAX_LOG_SHOWN].decode("utf-8", "replace")
        panel.stderr = logs.stderr[:_MAX_LOG_SHOWN].decode("utf-8", "replace")
        panel.log_cut = logs.truncated or len(logs.stdout) > _MAX_LOG_SHOWN or len(logs.stderr) > _MAX_LOG_SHOWN
        return panel

    # --- actions --------------------------------------------------------------------------------

    async def workflow_action(self, request: web.Request, action: str, workflow_id: str) -> None:
        """cancel, pause, resume or retry a workflow (as CancelWorkflow, PauseWorkflow...)."""
        o = self.orchestrator
        calls: dict[str, tuple[str, Callable[[], Awaitable[Any]]]] = {
            "cancel": (
                "CancelWorkflow",
                lambda: o.CancelWorkflow(
                    orchestrator_pb2.CancelWorkflowRequest(workflow_id=workflow_id, reason=_by_dashboard("cancelled")),
                    None,
                ),
            ),
            "pause": (
                "PauseWorkflow",
                lambda: o.PauseWorkflow(orchestrator_pb2.PauseWorkflowRequest(workflow_id=workflow_id), None),
            ),
            "resume": (
                "ResumeWorkflow",
                lambda: o.ResumeWorkflow(orchestrator_pb2.ResumeWorkflowRequest(workflow_id=workflow_id), None),
            ),
            "retry": (
                "RetryWorkflow",
                lambda: o.RetryWorkflow(orchestrator_pb2.RetryWorkflowRequest(workflow_id=workflow_id), None),
            ),
        }
        if action not in calls:
            raise web.HTTPNotFound(text=f"no workflow action {action[:32]!r}")
        method, call = calls[action]
        await self.as_caller(request, _O + method, call)

    async def agent_action(self, request: web.Request, action: str, agent_id: str) -> None:
        """drain (DrainAgent), cordon or uncordon (the fleet RPCs, where this controller has them)."""
        cluster: Any = self.cluster
        if action == "drain":
            ask = agent_pb2.DrainAgentRequest(agent_id=agent_id)
            await self.as_caller(request, "/corral.v1.Cluster/DrainAgent", lambda: cluster.DrainAgent(ask, None))
            return
        rpc = {"cordon": "CordonAgent", "uncordon": "UncordonAgent"}.get(action)
        message = getattr(agent_pb2, f"{rpc}Request", None) if rpc else None
        if rpc is None or message is None or not hasattr(cluster, rpc):
            raise web.HTTPNotFound(text=f"this controller has no agent action {action[:32]!r}")
        method = getattr(cluster, rpc)
        fields = message.DESCRIPTOR.fields_by_name
        ask = message(agent_id=agent_id, **({"reason": _by_dashboard("cordoned")} if "reason" in fields else {}))
        await self.as_caller(request, f"/corral.v1.Cluster/{rpc}", lambda: method(ask, None))
