"""The domain model: workflows, tasks, attempts and agents as plain data.

Pure standard library. Times are float seconds since the epoch, always injected by the caller.
JSON values (payloads, results, metadata) are kept as the encoded ``bytes`` they arrived as, so
they are stored and forwarded without re-encoding.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from dataclasses import replace as dc_replace
from enum import StrEnum
from typing import TYPE_CHECKING

from corral.controller.core.task_rare import NO_LABELS, RARE_DEFAULTS, RareFields, TaskRare

if TYPE_CHECKING:
    from corral.controller.core.dynamic import Dynamic

__all__ = [
    "LABEL_OPS",
    "RESOURCE_NAMES",
    "Agent",
    "AgentState",
    "Attempt",
    "AttemptState",
    "FallbackRules",
    "Inventory",
    "LabelExpr",
    "Resources",
    "Task",
    "TaskCache",
    "TaskState",
    "TaskType",
    "Workflow",
    "WorkflowEvent",
    "WorkflowState",
    "shared_result",
]


class TaskType(StrEnum):
    COMPUTE = "compute"
    IO = "io"
    NETWORK = "network"
    HYBRID = "hybrid"


class TaskState(StrEnum):
    PENDING = "pending"  # waiting on dependencies, or its workflow has not started
    READY = "ready"  # queued for placement
    ASSIGNED = "assigned"  # an attempt was handed to an agent or worker
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"  # an upstream task failed

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL_TASK


_TERMINAL_TASK = frozenset({TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELLED, TaskState.SKIPPED})


class WorkflowState(StrEnum):
    PENDING = "pending"  # submitted, not started
    RUNNING = "running"
    PAUSED = "paused"
    CANCELLING = "cancelling"  # graceful cancel in progress
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    COMPENSATING = "compensating"  # on_failure: compensate: its completed tasks are undone (issue 10)

    @property
    def terminal(self) -> bool:
        return self in (WorkflowState.COMPLETED, WorkflowState.FAILED, WorkflowState.CANCELLED)


class AttemptState(StrEnum):
    ASSIGNED = "assigned"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    LOST = "lost"  # its agent went silent, was fenced, died or never re-reported it; the task was requeued

    @property
    def active(self) -> bool:
        return self in (AttemptState.ASSIGNED, AttemptState.RUNNING)


class AgentState(StrEnum):
    CONNECTED = "connected"
    DRAINING = "draining"
    LOST = "lost"
    DISCONNECTED = "disconnected"  # left cleanly
    DRAINED = "drained"  # issue 11: left after a drain (its final state until it connects again)


RESOURCE_NAMES = ("cpu_cores", "memory_mb", "disk_mb", "network_bandwidth_mbps", "gpu_count")


@dataclass(frozen=True, slots=True)
class Resources:
    """An amount of resources: a task's requirement, an agent's capacity or an allocation."""

    cpu_cores: float = 0.0
    memory_mb: int = 0
    disk_mb: int = 0
    network_bandwidth_mbps: int = 0
    gpu_count: int = 0
    custom: Mapping[str, float] = field(default_factory=dict)

    def __add__(self, other: Resources) -> Resources:
        custom = dict(self.custom)
        for key, value in other.custom.items():
            custom[key] = custom.get(key, 0.0) + value
        return Resources(
            self.cpu_cores + other.cpu_cores,
            self.memory_mb + other.memory_mb,
            self.disk_mb + other.disk_mb,
            self.network_bandwidth_mbps + other.network_bandwidth_mbps,
            self.gpu_count + other.gpu_count,
            custom,
        )

    def __sub__(self, other: Resources) -> Resources:
        custom = dict(self.custom)
        for key, value in other.custom.items():
            custom[key] = custom.get(key, 0.0) - value
        return Resources(
            self.cpu_cores - other.cpu_cores,
            self.memory_mb - other.memory_mb,
            self.disk_mb - other.disk_mb,
            self.network_bandwidth_mbps - other.network_bandwidth_mbps,
            self.gpu_count - other.gpu_count,
            custom,
        )

    def shortfall(self, available: Resources) -> list[str]:
        """Names of the resources of which ``available`` holds less than this requirement.

        Custom resources are named ``custom:NAME``. An empty list means the requirement fits.
        """
        missing = [
            name
            for name in RESOURCE_NAMES
            if getattr(self, name) > 0 and getattr(self, name) > getattr(available, name) + 1e-9
        ]
        for key, value in self.custom.items():
            if value > 0 and value > available.custom.get(key, 0.0) + 1e-9:
                missing.append(f"custom:{key}")
        return missing


# Label expression operators (Kubernetes node-affinity style): value in a set, not in it (an agent
# without the label passes), the label present, the label absent.
LABEL_OPS = ("in", "not_in", "exists", "does_not_exist")


@dataclass(frozen=True, slots=True)
class LabelExpr:
    """A placement constraint on one agent label: ``key op values``.

    ``in`` needs the label with one of ``values``; ``not_in`` refuses those values (an agent
    without the label passes); ``exists`` / ``does_not_exist`` test presence and take no values.
    """

    key: str
    op: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether an agent with these labels satisfies the expression."""
        have = labels.get(self.key)
        op = self.op
        if op == "in":
            return have is not None and have in self.values
        if op == "not_in":
            return have is None or have not in self.values
        if op == "exists":
            return have is not None
        return have is None

    def describe(self) -> str:
        """The expression as a user writes it, e.g. ``zone in (a, b)``."""
        if self.op in ("exists", "does_not_exist"):
            return f"{self.key} {self.op}"
        return f"{self.key} {self.op} ({', '.join(self.values)})"


@dataclass(frozen=True, slots=True)
class Inventory:
    """What an agent offers: total capacity, concurrent attempt slots and GPU indexes."""

    capacity: Resources = field(default_factory=Resources)
    slots: int = 1
    gpu_ids: tuple[int, ...] = ()


@dataclass(slots=True, init=False)
class Task(RareFields):
    """A task of a workflow. Twenty-five rarely set fields live in ``_rare`` (:mod:`task_rare`) and
    read and write like the others; the constructor takes every field, in the order below."""

    id: str
    workflow_id: str
    name: str
    index: int  # position in its workflow, for a stable order
    agent_type: str
    payload: bytes  # JSON
    type: TaskType = TaskType.COMPUTE
    resources: Resources = field(default_factory=Resources)
    priority: int = 50
    timeout_s: float | None = None
    max_retries: int = 0
    retry_backoff_s: float = 1.0
    dependencies: tuple[str, ...] = ()  # task ids in the same workflow
    estimated_duration_s: float = 0.0
    namespace: str = "default"  # the namespace of its workflow
    state: TaskState = TaskState.PENDING
    retries_used: int = 0  # failed attempts that spent a retry
    attempts: int = 0  # attempts made, lost ones included
    current_attempt_id: str | None = None
    agent_id: str | None = None
    result: bytes | None = None  # JSON
    error: str = ""
    exit_code: int | None = None
    created_at: float = 0.0
    ready_at: float | None = None  # when it last entered READY (priority ageing counts from here)
    started_at: float | None = None
    finished_at: float | None = None
    # The rare fields (in ``_rare``, see core/task_rare.py), by constructor keyword:
    # - constraints: label equalities an agent must have.
    # - not_before: retry backoff, not placed before this time.
    # - on_disconnect (issue 8): what happens to a running attempt when its agent goes silent:
    #   "stop" (fenced and requeued after fence-after) or "keep" (runs through; requeued only when
    #   its agent returns without it or ``max_disconnect_s`` passes). None limits fall back to the
    #   workflow / config: max_disconnect_s, max_agent_losses.
    # - agent_losses (attempts that died with their agent's process: poison count),
    #   reruns_after_fence (running attempts fenced and run again), failure_reason (why it FAILED,
    #   as a word: "poison", "" otherwise).
    # - Placement preferences (issue 9): constraint_exprs (label expressions that must hold),
    #   spread (a label whose values the workflow's tasks are spread over; "agent": over agents),
    #   affinity (labels preferred but not required).
    # - Deadlines (issue 9, core/deadlines.py): deadline, epoch seconds; deadline_relative (seconds
    #   after submit) until the submit resolves it.
    # - Preemption (issue 9): preemptible (may be stopped for higher base-priority work), at most
    #   max_preemptions times (None: the controller's ``max_preemptions``); preemptions (how often it
    #   was) and last_preemption (why the last time).
    # - gang: placed all at once with the workflow's other tasks of this gang (issue 9).
    # - dynamic: spawned / map / "X/*" fan-in (issue 10, core/dynamic.py); None: none.
    # - Sagas (issue 10, core/sagas.py): compensate (its compensation spec, JSON, b"" none);
    #   compensates (on a compensation's own record, the id of the task it undoes; such records are
    #   not in their workflow's task_ids).
    # - rules (issue 10, core/fallbacks.py): fallback payload, allow_failure, min_success, approval;
    #   fallback_used (the fallback payload replaced the primary one, never cached).
    # - cache (issue 10, core/cache.py): its cache policy (None: never cached), and cache_source,
    #   where the result it completed with came from ("workflow id/task id/attempt id"; "": it ran).
    _rare: TaskRare | None = None  # the rare fields, None while all are at their defaults

    def __init__(
        self,
        id: str,
        workflow_id: str,
        name: str,
        index: int,
        agent_type: str,
        payload: bytes,
        type: TaskType = TaskType.COMPUTE,
        resources: Resources | None = None,
        priority: int = 50,
        timeout_s: float | None = None,
        max_retries: int = 0,
        retry_backoff_s: float = 1.0,
        dependencies: tuple[str, ...] = (),
        constraints: Mapping[str, str] | None = None,
        estimated_duration_s: float = 0.0,
        namespace: str = "default",
        state: TaskState = TaskState.PENDING,
        retries_used: int = 0,
        attempts: int = 0,
        current_attempt_id: str | None = None,
        agent_id: str | None = None,
        result: bytes | None = None,
        error: str = "",
        exit_code: int | None = None,
        created_at: float = 0.0,
        ready_at: float | None = None,
        not_before: float | None = None,
        started_at: float | None = None,
        finished_at: float | None = None,
        on_disconnect: str = "stop",
        max_disconnect_s: float | None = None,
        max_agent_losses: int | None = None,
        agent_losses: int = 0,
        reruns_after_fence: int = 0,
        failure_reason: str = "",
        constraint_exprs: tuple[LabelExpr, ...] = (),
        spread: str = "",
        affinity: Mapping[str, str] | None = None,
        deadline: float | None = None,
        deadline_relative: bool = False,
        preemptible: bool = False,
        max_preemptions: int | None = None,
        preemptions: int = 0,
        last_preemption: str = "",
        gang: str = "",
        dynamic: Dynamic | None = None,
        compensate: bytes = b"",
        compensates: str = "",
        rules: FallbackRules | None = None,
        fallback_used: bool = False,
        cache: TaskCache | None = None,
        cache_source: str = "",
        _rare: TaskRare | None = None,  # dataclasses.replace hands the original's over: copied
    ) -> None:
        self.id = id
        self.workflow_id = workflow_id
        self.name = name
        self.index = index
        self.agent_type = agent_type
        self.payload = payload
        self.type = type
        self.resources = Resources() if resources is None else resources
        self.priority = priority
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.retry_backoff_s = retry_backoff_s
        self.dependencies = dependencies
        self.estimated_duration_s = estimated_duration_s
        self.namespace = namespace
        self.state = state
        self.retries_used = retries_used
        self.attempts = attempts
        self.current_attempt_id = current_attempt_id
        self.agent_id = agent_id
        self.result = result
        self.error = error
        self.exit_code = exit_code
        self.created_at = created_at
        self.ready_at = ready_at
        self.started_at = started_at
        self.finished_at = finished_at
        self._rare = None if _rare is None else dc_replace(_rare)
        # One test of them all, not a descriptor call per rare field: most tasks set none.
        if (
            constraints
            or not_before is not None
            or on_disconnect != "stop"
            or max_disconnect_s is not None
            or max_agent_losses is not None
            or agent_losses
            or reruns_after_fence
            or failure_reason
            or constraint_exprs
            or spread
            or affinity
            or deadline is not None
            or deadline_relative
            or preemptible
            or max_preemptions is not None
            or preemptions
            or last_preemption
            or gang
            or dynamic is not None
            or compensate
            or compensates
            or rules is not None
            or fallback_used
            or cache is not None
            or cache_source
        ):
            # One record per task that sets any (a keyword at its default leaves a handed-over value).
            rare = self._rare if self._rare is not None else TaskRare()
            for key, value, default in (
                ("constraints", constraints or NO_LABELS, NO_LABELS),
                ("not_before", not_before, None),
                ("on_disconnect", on_disconnect, "stop"),
                ("max_disconnect_s", max_disconnect_s, None),
                ("max_agent_losses", max_agent_losses, None),
                ("agent_losses", agent_losses, 0),
                ("reruns_after_fence", reruns_after_fence, 0),
                ("failure_reason", failure_reason, ""),
                ("constraint_exprs", constraint_exprs, ()),
                ("spread", spread, ""),
                ("affinity", affinity or NO_LABELS, NO_LABELS),
                ("deadline", deadline, None),
                ("deadline_relative", deadline_relative, False),
                ("preemptible", preemptible, False),
                ("max_preemptions", max_preemptions, None),
                ("preemptions", preemptions, 0),
                ("last_preemption", last_preemption, ""),
                ("gang", gang, ""),
                ("dynamic", dynamic, None),
                ("compensate", compensate, b""),
                ("compensates", compensates, ""),
                ("rules", rules, None),
                ("fallback_used", fallback_used, False),
                ("cache", cache, None),
                ("cache_source", cache_source, ""),
            ):
                if value != default:
                    setattr(rare, key, value)
            self._rare = None if rare == RARE_DEFAULTS else rare

    @property
    def run_payload(self) -> bytes:
        """The payload its next attempt runs: the fallback once it replaced the primary one."""
        rules = self.rules
        if rules is not None and rules.fallback is not None and self.fallback_used:
            return rules.fallback
        return self.payload


# Results of a few bytes ("null", "0", "true"...) are shared: one object per distinct value, not a
# bytes object (33 B + its length) per finished task. Bounded, so odd small results cannot grow it.
_SMALL_RESULT = 16
_SMALL_RESULTS_MAX = 1024
_small_results: dict[bytes, bytes] = {b"null": b"null"}


def shared_result(result: bytes | None) -> bytes:
    """A reported result as kept on its task (None: ``null``), shared when it is small."""
    if result is None:
        return b"null"
    if len(result) <= _SMALL_RESULT:
        shared = _small_results.get(result)
        if shared is not None:
            return shared
        if len(_small_results) < _SMALL_RESULTS_MAX:
            _small_results[result] = result
    return result


@dataclass(slots=True)
class Workflow:
    id: str
    name: str
    task_ids: list[str]  # in submission order
    state: WorkflowState = WorkflowState.PENDING
    metadata: bytes = b"{}"  # JSON
    labels: Mapping[str, str] = field(default_factory=dict)
    idempotency_key: str | None = None
    standalone: bool = False  # created by Scheduler.ScheduleTask
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    error: str = ""
    namespace: str = "default"
    max_agent_losses: int | None = None  # the default of its tasks (None: the controller's)
    # Deadlines (issue 9, core/deadlines.py): as on Task; the policy at submit and its verdict.
    deadline: float | None = None
    deadline_relative: bool = False
    deadline_policy: str = "warn"  # reject | warn | best_effort
    deadline_verdict: str = ""  # "", feasible, at_risk, infeasible
    max_parallel: int | None = None  # at most this many of its tasks ASSIGNED/RUNNING at once
    # Issue 10 (core/runs.py): what a failure does (fail | compensate | pause), and the current run
    # (1-based; retry and rerun start the next one, the earlier ones are rows of the runs table).
    on_failure: str = "fail"
    run: int = 1
    compensation: str = ""  # the end state ("failed", "cancelled") its compensation leads to; "" none
    params: bytes = b"{}"  # issue 10: the parameter values it was submitted with (JSON object)
    no_cache: bool = False  # issue 10: its tasks never read the cache (their successes refresh it)
    # Issue 10: no task starts before this (epoch s; relative until submit makes it absolute).
    scheduled_at: float | None = None
    scheduled_relative: bool = False


@dataclass(slots=True)
class Attempt:
    id: str
    task_id: str
    workflow_id: str
    agent_id: str  # an agent id, or an external worker id for pulled attempts
    number: int  # 1-based, per task
    state: AttemptState = AttemptState.ASSIGNED
    resources: Resources = field(default_factory=Resources)
    gpu_ids: tuple[int, ...] = ()
    pulled: bool = False  # handed out through Scheduler.GetNextTask
    assigned_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    deadline: float | None = None  # controller-side timeout backstop
    exit_code: int | None = None
    error: str = ""
    # Who pulled it (Scheduler.GetNextTask): the caller's principal, so only the same credential
    # (with the same worker_id) may complete or fail it. Memory only: "" after a restart.
    principal: str = ""
    # Measured usage, as its agent reported it when it ended (0: not measured, or not ended yet).
    peak_rss_bytes: int = 0
    cpu_s: float = 0.0
    run: int = 1  # the workflow run it belongs to (issue 10)

    def usage_note(self) -> str:
        """The measured usage in words for the event log ("peak RSS 52.3 MiB, CPU 0.41 s"), or ""."""
        if not self.peak_rss_bytes and not self.cpu_s:
            return ""
        return f"peak RSS {self.peak_rss_bytes / 1048576:.1f} MiB, CPU {self.cpu_s:.2f} s"


@dataclass(slots=True)
class Agent:
    id: str
    name: str
    hostname: str = ""
    agent_types: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    inventory: Inventory = field(default_factory=Inventory)
    state: AgentState = AgentState.CONNECTED
    session_epoch: int = 0
    connected_at: float = 0.0
    last_seen: float = 0.0
    version: str = ""
    # The namespaces whose tasks it may run (from its credential); empty: every namespace.
    # Memory only: a restarted controller learns them again from the agent's next Hello.
    namespaces: tuple[str, ...] = ()
    # Random per agent process start (its Hello says it): a new one means the process died.
    incarnation: str = ""
    # Issue 10 (core/cordon.py): no new work before this time, and why (its tasks kept failing).
    cordoned_until: float | None = None
    cordon_reason: str = ""
    # Issue 11 (core/fleet_admin.py): who cordoned it by hand (its cordoned_until is None: until
    # uncordoned); "" for the automatic cordon or none.
    cordoned_by: str = ""


@dataclass(frozen=True, slots=True)
class TaskCache:
    """A task's cache policy (issue 10): its own key text ("": hash of the payload and inputs),
    how long an entry lives (None: until evicted) and a version that invalidates older entries."""

    key: str = ""
    ttl_s: float | None = None
    version: str = ""


# Not frozen: one is made per transition of every workflow (the event log), and a frozen
# dataclass's __init__ costs 2.5x more. Treat it as immutable all the same.
@dataclass(slots=True)
class WorkflowEvent:
    """A state change, persisted in the workflow's event log and published to watchers.

    Task fields are empty for workflow-level changes. ``kind`` says what happened ("placed",
    "fenced", "poison", ...) and ``reason`` why, in words.
    """

    seq: int
    at: float
    workflow_id: str
    workflow_state: WorkflowState
    task_id: str = ""
    task_name: str = ""
    task_state: TaskState | None = None
    attempt_id: str = ""
    agent_id: str = ""
    message: str = ""
    kind: str = ""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class FallbackRules:
    """What a task does about failure (issue 10, ``core/fallbacks.py``); set at submit, never changed.

    ``fallback``: the alternative payload (JSON) run when every retry of the primary one failed.
    ``allow_failure``: its dependents run anyway (receiving ``null`` and the error).
    ``min_success``: a fan-in that runs once its dependencies ended with at least this many completed.
    ``approval``: no payload to run; it waits for ``corral approve``/``reject`` (or its timeout).
    """

    fallback: bytes | None = None
    allow_failure: bool = False
    min_success: int | None = None
    approval: bool = False
    approval_timeout_s: float | None = None
    approval_message: str = ""
