"""Typed, frozen results of the client SDK.

Each type is built from its ``corral.v1`` message by ``from_proto`` and keeps that message as
``.raw``. Field names are snake_case, times are timezone-aware :class:`~datetime.datetime` (UTC) or
``None`` when unset, JSON fields (results, metadata, payloads) are decoded, and states are lowercase
strings (``"running"``, ``"completed"`` ...). ``to_dict()`` gives a JSON-ready mapping with RFC 3339
times; the CLI's ``-o json`` prints exactly that.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from corral.controller.sdk.cluster_types import (
    AgentInfo,
    AgentVerdict,
    Assignment,
    FailOutcome,
    Inventory,
    ScheduledTask,
    Usage,
)
from corral.controller.sdk.records import (
    TERMINAL_TASK_STATES,
    TERMINAL_WORKFLOW_STATES,
    Record,
    Resources,
    build,
    decode_json,
    optional_state,
    plain,
    state_name,
    timestamp,
)
from corral.v1 import orchestrator_pb2, scheduler_pb2
from corral.v1 import types_pb2 as pb

__all__ = [
    "TERMINAL_TASK_STATES",
    "TERMINAL_WORKFLOW_STATES",
    "AgentInfo",
    "AgentVerdict",
    "Assignment",
    "DependencyAnalysis",
    "ExecutionPlan",
    "Explanation",
    "FailOutcome",
    "Inventory",
    "LogChunk",
    "Resources",
    "ScheduledTask",
    "Stage",
    "Submission",
    "TaskStatus",
    "Usage",
    "WorkflowEvent",
    "WorkflowPage",
    "WorkflowResult",
    "WorkflowStatus",
    "WorkflowSummary",
]


@dataclasses.dataclass(frozen=True)
class TaskStatus(Record):
    """One task of a workflow and its current (or last) attempt."""

    task_id: str
    name: str
    workflow_id: str
    state: str
    agent_type: str
    priority: int
    attempts: int
    retries_used: int
    attempt_id: str
    agent_id: str
    result: Any
    error: str
    exit_code: int
    waiting_reason: str
    unschedulable: bool
    dependencies: tuple[str, ...]
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    agent_losses: int  # attempts that died with their agent (the poison counter)
    reruns_after_fence: int  # running attempts fenced and run again
    failure_reason: str  # why it FAILED, as a word: "poison", or ""
    # Measured by the agent for the current (or last) attempt once it ended; 0 when not measured.
    peak_rss_bytes: int
    cpu_s: float
    plan_reason: str  # READY: what the last scheduling pass recorded for it
    rank_s: float  # upward rank: expected seconds left on the longest path from it (0: not ranked yet)
    expected_duration_s: float  # its expected run time (0 with source "structural")
    duration_source: str  # "estimate", "learned", "fingerprint", "structural", or "" before its workflow starts
    preemptions: int  # times it was preempted (requeued for higher-priority work, no retry spent)
    last_preemption: str  # why, the last time ("preempted by NAME (priority P) of workflow W")
    raw: pb.TaskStatus = dataclasses.field(repr=False, compare=False)
    # Deadlines (None without one): the bound on its finish, its latest start, its slack then.
    deadline: datetime | None = None
    latest_start: datetime | None = None
    slack_s: float | None = None
    # Learned from earlier runs of this workflow and task name (unfinished tasks; 0: unknown).
    expected_peak_rss_bytes: int = 0
    expected_cpu_s: float = 0.0
    # Checkpoints (issue 10): when its last checkpoint was stored, and its size (0: none).
    checkpointed_at: datetime | None = None
    checkpoint_bytes: int = 0
    # Issue 10, on_failure: compensate: its compensation's state ("" none) and error.
    compensation_state: str = ""
    compensation_error: str = ""
    # Issue 10: its fallback replaced the payload; approval tasks: "waiting", "approved", "rejected",
    # "approval_timeout" ("" otherwise) and, while waiting, when it times out.
    fallback_used: bool = False
    approval_state: str = ""
    approval_deadline: datetime | None = None
    # Completed from the cache (issue 10): "workflow id/task id/attempt id" of the result's source.
    cache_source: str = ""
    # Issue 11: when it last entered READY (queued time counts from here); whether ``exit_code``
    # is one an attempt reported (False for a task that never ran: its 0 means nothing).
    ready_at: datetime | None = None
    exit_code_known: bool = False

    @property
    def cached(self) -> bool:
        """Whether it completed with a cached result (state "completed", nothing ran)."""
        return bool(self.cache_source)

    @classmethod
    def from_proto(cls, m: pb.TaskStatus) -> TaskStatus:
        return build(
            cls,
            task_id=m.task_id,
            name=m.name,
            workflow_id=m.workflow_id,
            state=state_name(pb.TaskState, m.state, "TASK_STATE_"),
            agent_type=m.agent_type,
            priority=m.priority,
            attempts=m.attempts,
            retries_used=m.retries_used,
            attempt_id=m.attempt_id,
            agent_id=m.agent_id,
            result=decode_json(m.result_json),
            error=m.error,
            exit_code=m.exit_code,
            waiting_reason=m.waiting_reason,
            unschedulable=m.unschedulable,
            dependencies=tuple(m.dependencies),
            created_at=timestamp(m, "created_at"),
            started_at=timestamp(m, "started_at"),
            finished_at=timestamp(m, "finished_at"),
            agent_losses=m.agent_losses,
            reruns_after_fence=m.reruns_after_fence,
            failure_reason=m.failure_reason,
            peak_rss_bytes=m.peak_rss_bytes,
            cpu_s=m.cpu_s,
            plan_reason=m.plan_reason,
            rank_s=m.rank_s,
            expected_duration_s=m.expected_duration_s,
            duration_source=m.duration_source,
            preemptions=m.preemptions,
            last_preemption=m.last_preemption,
            raw=m,
            deadline=timestamp(m, "deadline"),
            latest_start=timestamp(m, "latest_start"),
            slack_s=m.slack_s if m.HasField("slack_s") else None,
            expected_peak_rss_bytes=m.expected_peak_rss_bytes,
            expected_cpu_s=m.expected_cpu_s,
            checkpointed_at=timestamp(m, "checkpointed_at"),
            checkpoint_bytes=m.checkpoint_bytes,
            compensation_state=m.compensation_state,
            compensation_error=m.compensation_error,
            fallback_used=m.fallback_used,
            approval_state=m.approval_state,
            approval_deadline=timestamp(m, "approval_deadline"),
            cache_source="/".join((m.cache_source_workflow_id, m.cache_source_task_id, m.cache_source_attempt_id))
            if m.cache_source_workflow_id
            else "",
            ready_at=timestamp(m, "ready_at"),
            exit_code_known=m.exit_code_known,
        )

    @property
    def duration_s(self) -> float | None:
        """Run time of the last attempt, when it has started and finished."""
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


@dataclasses.dataclass(frozen=True)
class WorkflowStatus(Record):
    """A workflow's state, its per-state task counts and (when asked for) its tasks."""

    workflow_id: str
    name: str
    state: str
    task_total: int
    task_counts: Mapping[str, int]
    tasks: tuple[TaskStatus, ...]
    error: str
    metadata: Any
    labels: Mapping[str, str]
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    namespace: str
    raw: pb.WorkflowStatus = dataclasses.field(repr=False, compare=False)
    deadline: datetime | None = None
    deadline_verdict: str = ""  # at submit: feasible, at_risk, infeasible
    slack_s: float | None = None  # least slack over its unfinished tasks
    run: int = 1  # issue 10: the current run (retry and rerun start the next)
    on_failure: str = "fail"
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # issue 10: its parameter values
    scheduled_at: datetime | None = None  # its delayed start, or its schedule fire's nominal time
    schedule_id: str = ""  # the schedule that fired it

    @classmethod
    def from_proto(cls, m: pb.WorkflowStatus) -> WorkflowStatus:
        return cls(
            workflow_id=m.workflow_id,
            name=m.name,
            state=state_name(pb.WorkflowState, m.state, "WORKFLOW_STATE_"),
            task_total=m.task_total,
            task_counts={k.lower(): v for k, v in m.task_counts.items()},
            tasks=tuple(TaskStatus.from_proto(t) for t in m.tasks),
            error=m.error,
            metadata=decode_json(m.metadata_json),
            labels=dict(m.labels),
            created_at=timestamp(m, "created_at"),
            started_at=timestamp(m, "started_at"),
            finished_at=timestamp(m, "finished_at"),
            namespace=m.namespace or "default",
            raw=m,
            deadline=timestamp(m, "deadline"),
            deadline_verdict=m.deadline_verdict,
            slack_s=m.slack_s if m.HasField("slack_s") else None,
            run=m.run or 1,
            on_failure=m.on_failure or "fail",
            params=decode_json(m.params_json) or {},
            scheduled_at=timestamp(m, "scheduled_at"),
            schedule_id=m.schedule_id,
        )

    @property
    def done(self) -> bool:
        """True once the workflow is completed, failed or cancelled."""
        return self.state in TERMINAL_WORKFLOW_STATES


@dataclasses.dataclass(frozen=True)
class WorkflowResult(Record):
    """The outcome of a finished workflow: task results by name, and the critical path as run.

    ``tasks`` (every task's :class:`TaskStatus`) is decoded from ``raw`` when first read, then
    kept: a caller that reads only ``results`` does not pay for decoding 20,000 statuses, which
    cost more than the controller's whole answer to build (about 15 us a task).
    """

    workflow_id: str
    state: str
    results: Mapping[str, Any]
    critical_path: tuple[str, ...]
    duration_s: float
    error: str
    raw: pb.WorkflowResult = dataclasses.field(repr=False, compare=False)

    @functools.cached_property
    def tasks(self) -> tuple[TaskStatus, ...]:
        """Every task's status, in the workflow's order (decoded on first use)."""
        return tuple(TaskStatus.from_proto(t) for t in self.raw.tasks)

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        ordered = {key: data[key] for key in ("workflow_id", "state", "results")}
        ordered["tasks"] = plain(self.tasks)
        ordered.update(data)
        return ordered

    @classmethod
    def from_proto(cls, m: pb.WorkflowResult) -> WorkflowResult:
        return cls(
            workflow_id=m.workflow_id,
            state=state_name(pb.WorkflowState, m.state, "WORKFLOW_STATE_"),
            results={name: decode_json(value) for name, value in m.results_json.items()},
            critical_path=tuple(m.critical_path),
            duration_s=m.duration_s,
            error=m.error,
            raw=m,
        )

    @classmethod
    def from_status(cls, status: WorkflowStatus) -> WorkflowResult:
        """The result of a finished workflow as far as its status tells (no executed critical path)."""
        duration = 0.0
        if status.started_at is not None and status.finished_at is not None:
            duration = (status.finished_at - status.started_at).total_seconds()
        message = pb.WorkflowResult(
            workflow_id=status.workflow_id,
            state=status.raw.state,
            results_json={t.name: t.raw.result_json for t in status.tasks if t.state == "completed"},
            tasks=[t.raw for t in status.tasks],
            duration_s=duration,
            error=status.error,
        )
        return cls.from_proto(message)

    @property
    def succeeded(self) -> bool:
        """True when the workflow completed."""
        return self.state == "completed"


@dataclasses.dataclass(frozen=True)
class Stage(Record):
    """One topological generation of a plan: tasks that may run side by side."""

    index: int
    task_names: tuple[str, ...]
    estimated_duration_s: float
    raw: pb.ExecutionStage = dataclasses.field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, m: pb.ExecutionStage) -> Stage:
        return cls(m.index, tuple(m.task_names), m.estimated_duration_s, raw=m)


@dataclasses.dataclass(frozen=True)
class ExecutionPlan(Record):
    """The shape of a workflow: stages, the critical path and how parallel it can run."""

    stages: tuple[Stage, ...]
    critical_path: tuple[str, ...]
    estimated_duration_s: float
    parallelism_factor: float
    task_count: int
    total_work_s: float
    raw: pb.ExecutionPlan = dataclasses.field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, m: pb.ExecutionPlan) -> ExecutionPlan:
        return cls(
            stages=tuple(Stage.from_proto(s) for s in m.stages),
            critical_path=tuple(m.critical_path),
            estimated_duration_s=m.estimated_duration_s,
            parallelism_factor=m.parallelism_factor,
            task_count=m.task_count,
            total_work_s=m.total_work_s,
            raw=m,
        )


@dataclasses.dataclass(frozen=True)
class DependencyAnalysis(Record):
    """AnalyzeDependencies: the plan plus roots, leaves, the widest stage and the depth, the
    redundant dependencies and each task's immediate dominator."""

    plan: ExecutionPlan
    roots: tuple[str, ...]
    leaves: tuple[str, ...]
    max_width: int
    depth: int
    #: (dependency, dependent) pairs already implied through another path (transitive reduction).
    redundant_edges: tuple[tuple[str, str], ...]
    #: task -> the nearest task every path from a root to it goes through (when there is one).
    immediate_dominators: Mapping[str, str]
    raw: scheduler_pb2.AnalyzeDependenciesResponse = dataclasses.field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, m: scheduler_pb2.AnalyzeDependenciesResponse) -> DependencyAnalysis:
        return cls(
            ExecutionPlan.from_proto(m.plan),
            tuple(m.roots),
            tuple(m.leaves),
            m.max_width,
            m.depth,
            tuple((getattr(e, "from"), e.to) for e in m.redundant_edges),
            dict(m.immediate_dominators),
            raw=m,
        )


@dataclasses.dataclass(frozen=True)
class Submission(Record):
    """A submitted workflow: its id, its plan, and whether an idempotency key matched an earlier one."""

    workflow_id: str
    plan: ExecutionPlan
    deduplicated: bool
    raw: orchestrator_pb2.SubmitWorkflowResponse = dataclasses.field(repr=False, compare=False)
    deadline_verdict: str = ""  # feasible, at_risk, infeasible; "" without a deadline or with best_effort
    deadline_message: str = ""  # the estimate behind the verdict

    @classmethod
    def from_proto(cls, m: orchestrator_pb2.SubmitWorkflowResponse) -> Submission:
        return cls(
            m.workflow_id,
            ExecutionPlan.from_proto(m.plan),
            m.deduplicated,
            raw=m,
            deadline_verdict=m.deadline_verdict,
            deadline_message=m.deadline_message,
        )

    def deadline_line(self) -> str:
        """The admission verdict as a line for the user ("warning: ..." when at risk or infeasible), or ""."""
        if not self.deadline_verdict:
            return ""
        risky = self.deadline_verdict in ("at_risk", "infeasible")
        return ("warning: " if risky else "") + (self.deadline_message or f"deadline: {self.deadline_verdict}")


@dataclasses.dataclass(frozen=True)
class WorkflowSummary(Record):
    """One row of ListWorkflows."""

    workflow_id: str
    name: str
    state: str
    task_total: int
    task_counts: Mapping[str, int]
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    namespace: str
    raw: pb.WorkflowSummary = dataclasses.field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, m: pb.WorkflowSummary) -> WorkflowSummary:
        return cls(
            workflow_id=m.workflow_id,
            name=m.name,
            state=state_name(pb.WorkflowState, m.state, "WORKFLOW_STATE_"),
            task_total=m.task_total,
            task_counts={k.lower(): v for k, v in m.task_counts.items()},
            created_at=timestamp(m, "created_at"),
            started_at=timestamp(m, "started_at"),
            finished_at=timestamp(m, "finished_at"),
            namespace=m.namespace or "default",
            raw=m,
        )


@dataclasses.dataclass(frozen=True)
class WorkflowPage(Record):
    """A page of workflows; pass ``next_page_token`` back for the next page ("" when this is the last)."""

    workflows: tuple[WorkflowSummary, ...]
    next_page_token: str
    raw: orchestrator_pb2.ListWorkflowsResponse = dataclasses.field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, m: orchestrator_pb2.ListWorkflowsResponse) -> WorkflowPage:
        return cls(tuple(WorkflowSummary.from_proto(w) for w in m.workflows), m.next_page_token, raw=m)


@dataclasses.dataclass(frozen=True)
class WorkflowEvent(Record):
    """A state change of a workflow (``task_*`` fields empty) or of one of its tasks."""

    seq: int
    at: datetime | None
    workflow_id: str
    workflow_state: str | None
    task_id: str
    task_name: str
    task_state: str | None
    attempt_id: str
    agent_id: str
    message: str
    kind: str  # what happened: "placed", "fenced", "poison", ...
    reason: str  # why, in words
    raw: orchestrator_pb2.WorkflowEvent = dataclasses.field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, m: orchestrator_pb2.WorkflowEvent) -> WorkflowEvent:
        return cls(
            seq=m.seq,
            at=timestamp(m, "at"),
            workflow_id=m.workflow_id,
            workflow_state=optional_state(pb.WorkflowState, m.workflow_state, "WORKFLOW_STATE_"),
            task_id=m.task_id,
            task_name=m.task_name,
            task_state=optional_state(pb.TaskState, m.task_state, "TASK_STATE_"),
            attempt_id=m.attempt_id,
            agent_id=m.agent_id,
            message=m.message,
            kind=m.kind,
            reason=m.reason,
            raw=m,
        )

    @property
    def is_task_event(self) -> bool:
        """True for a task's state change, False for the workflow's own."""
        return bool(self.task_id)

    @property
    def is_final(self) -> bool:
        """True for the workflow's own move to a terminal state: nothing follows it."""
        return not self.task_id and self.workflow_state in TERMINAL_WORKFLOW_STATES


@dataclasses.dataclass(frozen=True)
class Explanation(Record):
    """ExplainTask: the task, one line on why it is (not) running, and every agent's verdict.

    ``reason`` and ``agents`` are a fresh evaluation; ``last_plan_reason`` is what the last
    scheduling pass recorded for the task's ``demand_class``, ``last_plan_age_s`` ago (-1: none).
    """

    task: TaskStatus
    reason: str
    waiting_on: tuple[str, ...]
    agents: tuple[AgentVerdict, ...]
    last_plan_reason: str
    last_plan_age_s: float
    demand_class: str
    preemption: str  # "preempting N tasks on agent X" / "preempted by ...", or ""
    raw: scheduler_pb2.ExplainTaskResponse = dataclasses.field(repr=False, compare=False)
    slack_s: float | None = None  # deadlines: latest start - now
    deadline_note: str = ""
    checkpoint: str = ""  # "resumes from the checkpoint attempt N saved at ..." (issue 10), or ""
    on_failure_note: str = ""  # issue 10: paused on a failure, compensating, a compensation

    @classmethod
    def from_proto(cls, m: scheduler_pb2.ExplainTaskResponse) -> Explanation:
        return cls(
            TaskStatus.from_proto(m.task),
            m.reason,
            tuple(m.waiting_on),
            tuple(AgentVerdict.from_proto(a) for a in m.agents),
            m.last_plan_reason,
            m.last_plan_age_s,
            m.demand_class,
            m.preemption,
            raw=m,
            slack_s=m.slack_s if m.HasField("slack_s") else None,
            deadline_note=m.deadline_note,
            checkpoint=m.checkpoint,
            on_failure_note=m.on_failure_note,
        )


@dataclasses.dataclass(frozen=True)
class LogChunk(Record):
    """Output of one attempt after the requested offsets; pass the offsets back to continue."""

    attempt_id: str
    stdout: bytes
    stderr: bytes
    stdout_offset: int
    stderr_offset: int
    finished: bool
    truncated: bool
    raw: orchestrator_pb2.GetTaskLogsResponse = dataclasses.field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, m: orchestrator_pb2.GetTaskLogsResponse) -> LogChunk:
        return cls(
            m.attempt_id,
            m.stdout,
            m.stderr,
            m.stdout_offset,
            m.stderr_offset,
            m.finished,
            m.truncated,
            raw=m,
        )
