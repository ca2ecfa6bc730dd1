"""Inputs (events) of the state machine and the actions it asks its shell to carry out.

Events are facts or requests handed to :meth:`Machine.handle`; actions are instructions the runtime
executes *after* the tick's changes are committed: messages to agents, watch notifications and
wake-ups of waiting callers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from corral.controller.core.dynamic import SpawnedTask
from corral.controller.core.model import AttemptState, Inventory, Resources, Task, Workflow, WorkflowEvent
from corral.controller.core.task_rare import RARE_DEFAULTS
from corral.controller.store.base import LogChunk

__all__ = [
    "Ack",
    "Action",
    "AgentGone",
    "AgentHeartbeat",
    "AgentHeartbeats",
    "AgentHello",
    "AgentReports",
    "Assign",
    "Assignment",
    "AttemptAccepted",
    "AttemptCheckpoint",
    "AttemptFinished",
    "AttemptReleased",
    "AttemptSpawn",
    "AttemptStarted",
    "CancelAttempts",
    "CancelWorkflow",
    "Disconnect",
    "DrainAgent",
    "DrainOrder",
    "Event",
    "HeartbeatAck",
    "PauseWorkflow",
    "Publish",
    "PullTask",
    "Report",
    "ResumeWorkflow",
    "StartWorkflow",
    "StorageResumed",
    "SubmitWorkflow",
    "Welcome",
    "WorkflowDone",
]


# --- events -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SubmitWorkflow:
    """A validated workflow with ids already assigned by the edge.

    Its records become the machine's own when it is applied. If the tick that applied it is then
    thrown away (see the runtime's recovery), :meth:`rewind` puts them back as submitted so the
    same event can be applied again to a machine rebuilt from the store.
    """

    workflow: Workflow
    tasks: list[Task]
    start: bool = False

    def rewind(self) -> None:
        """Reset every field a machine may have changed since submission to its default."""
        _reset(self.workflow, _WORKFLOW_LIFECYCLE)
        for task in self.tasks:
            _reset(task, _TASK_LIFECYCLE)


# Fields of a record that only the machine sets (the rest come from the submission).
_WORKFLOW_LIFECYCLE = ("state", "created_at", "started_at", "finished_at", "error")
_TASK_LIFECYCLE = (
    "state",
    "retries_used",
    "attempts",
    "current_attempt_id",
    "agent_id",
    "result",
    "error",
    "exit_code",
    "created_at",
    "ready_at",
    "not_before",
    "started_at",
    "finished_at",
    "agent_losses",
    "reruns_after_fence",
    "failure_reason",
)


def _reset(record: Workflow | Task, names: tuple[str, ...]) -> None:
    defaults = {f.name: f.default for f in fields(record)}
    for name in names:
        # A task's rarely set fields are properties over one record (core/task_rare.py), not fields.
        setattr(record, name, defaults[name] if name in defaults else getattr(RARE_DEFAULTS, name))


@dataclass(frozen=True, slots=True)
class StartWorkflow:
    workflow_id: str


@dataclass(frozen=True, slots=True)
class CancelWorkflow:
    workflow_id: str
    force: bool = False
    reason: str = ""


@dataclass(frozen=True, slots=True)
class PauseWorkflow:
    workflow_id: str


@dataclass(frozen=True, slots=True)
class ResumeWorkflow:
    workflow_id: str


@dataclass(frozen=True, slots=True)
class AgentHello:
    """An agent opened a stream. ``running_attempt_ids`` are the attempts it still runs."""

    agent_id: str
    name: str
    hostname: str = ""
    agent_types: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    inventory: Inventory = field(default_factory=Inventory)
    running_attempt_ids: tuple[str, ...] = ()
    version: str = ""
    draining: bool = False
    namespaces: tuple[str, ...] = ()  # from its credential; empty: every namespace
    # Random per agent process start; a new one means the process died (see FleetOps.hello).
    incarnation: str = ""
    # Attempts that ended there whose Finished report was not acknowledged yet (it follows).
    finished_attempt_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AgentHeartbeat:
    """The agent of that session is alive. ``seq`` is echoed in a :class:`HeartbeatAck` after the
    tick that applied it: only that echo renews the agent's supervisors' lease."""

    agent_id: str
    session_epoch: int
    draining: bool = False
    inventory: Inventory | None = None
    seq: int = 0


@dataclass(frozen=True, slots=True)
class AgentHeartbeats:
    """Heartbeats of many sessions applied in one tick (the gateway gathers them for a few
    milliseconds: 1,000 agents send 500 a second, and a tick each would be most of the cost).
    The answer is one bool per heartbeat, as :class:`AgentHeartbeat`'s."""

    READ = True

    beats: tuple[AgentHeartbeat, ...]


@dataclass(frozen=True, slots=True)
class AgentGone:
    """The stream of that session closed (cleanly or not); the lease decides what is lost."""

    agent_id: str
    session_epoch: int


@dataclass(frozen=True, slots=True)
class StorageResumed:
    """The store takes writes again after refusing them. Agents' acknowledgements of that time
    could not be recorded, so their assignment leases start again from now."""


@dataclass(frozen=True, slots=True)
class DrainAgent:
    agent_id: str
    grace_s: float = 30.0


# Not frozen (by convention read-only): one is built per attempt report or assignment, and a
# frozen dataclass's __init__ sets each field through object.__setattr__ (AttemptFinished: 2.2 us
# against 0.6, 3% of the controller's loop under the noop load).
@dataclass(slots=True)
class AttemptStarted:
    reporter: str  # the agent or worker id the report came from
    attempt_id: str
    at: float | None = None


# Not frozen, as AttemptStarted (built per report).
@dataclass(slots=True)
class AttemptAccepted:
    """The agent holds the assignment (queued or starting): it is not taken back after the lease."""

    reporter: str
    attempt_id: str


@dataclass(frozen=True, slots=True)
class AttemptReleased:
    """The agent gave a cancelled assignment back before it ever started: safe to place elsewhere."""

    reporter: str
    attempt_id: str


# Not frozen, as AttemptStarted (built per report).
@dataclass(slots=True)
class AttemptFinished:
    reporter: str
    attempt_id: str
    outcome: AttemptState  # SUCCEEDED, FAILED, TIMED_OUT or CANCELLED
    exit_code: int | None = None
    result: bytes | None = None
    error: str = ""
    retryable: bool = True
    session_epoch: int | None = None  # set for agent reports, which are acknowledged
    at: float | None = None  # when it ended, by the reporter's clock
    fenced: bool = False  # its supervisor killed it because the agent's lease ran out (outcome LOST)
    # Measured by the agent (Finished.peak_rss_bytes, Finished.cpu_s); 0 when not measured.
    peak_rss_bytes: int = 0
    cpu_s: float = 0.0
    oom_killed: bool = False  # its cgroup hit the memory limit (Finished.oom_killed): AIMD reacts


@dataclass(frozen=True, slots=True)
class AttemptCheckpoint:
    """A running attempt saved its state (JSON, checked at the edge): see core/checkpoints.py."""

    reporter: str
    attempt_id: str
    data: bytes


@dataclass(frozen=True, slots=True)
class AttemptSpawn:
    """A running attempt adds tasks to its workflow (validated at the edge; ``error`` says why not)."""

    reporter: str
    attempt_id: str
    tasks: tuple[SpawnedTask, ...] = ()
    error: str = ""


Report = (
    AttemptStarted | AttemptFinished | AttemptAccepted | AttemptReleased | LogChunk | AttemptCheckpoint | AttemptSpawn
)


@dataclass(frozen=True, slots=True)
class AgentReports:
    """One batch of reports from an agent's live session, decoded and checked at the edge.

    Applied in order; finished reports are acknowledged (an :class:`Ack`) after the tick commits.
    """

    agent_id: str
    session_epoch: int
    reports: tuple[Report, ...]


@dataclass(frozen=True, slots=True)
class PullTask:
    """An external worker asks for one task it can run (Scheduler.GetNextTask)."""

    worker_id: str
    agent_types: tuple[str, ...]
    labels: Mapping[str, str] = field(default_factory=dict)
    capacity: Resources | None = None  # None: anything
    principal: str = ""  # who asks (Principal.describe()); only it may report on the attempt
    namespaces: tuple[str, ...] = ()  # the caller's namespaces; empty: every namespace


Event = (
    SubmitWorkflow
    | StartWorkflow
    | CancelWorkflow
    | PauseWorkflow
    | ResumeWorkflow
    | AgentHello
    | AgentHeartbeat
    | AgentHeartbeats
    | AgentGone
    | AgentReports
    | DrainAgent
    | StorageResumed
    | AttemptStarted
    | AttemptAccepted
    | AttemptReleased
    | AttemptFinished
    | PullTask
)


# --- actions ------------------------------------------------------------------------------------


# Not frozen, as AttemptStarted (built per placement).
@dataclass(slots=True)
class Assignment:
    """One attempt handed out, with the results of its dependencies as inputs."""

    attempt_id: str
    attempt_number: int
    task: Task
    inputs: Mapping[str, bytes]
    gpu_ids: tuple[int, ...] = ()
    secrets: Mapping[str, str] = field(default_factory=dict)  # decrypted values its env refers to
    max_disconnect_s: float = 0.0  # a keep task's effective limit (its own, else the controller's)
    checkpoint: bytes | None = None  # the task's last checkpoint (JSON), for the attempt to resume from
    # The ready queue's order when placed (band, latest start, -score): an agent starts the attempts
    # queued on it for a slot in this order (a long task sent ahead of its slot must not hold back
    # a more critical one that became ready after it). Empty: placed outside the queue.
    order: tuple[float, ...] = ()


@dataclass(frozen=True, slots=True)
class Welcome:
    """The answer to AgentHello."""

    agent_id: str
    session_epoch: int
    kill_attempt_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Assign:
    agent_id: str
    assignments: list[Assignment]


@dataclass(frozen=True, slots=True)
class CancelAttempts:
    agent_id: str
    attempt_ids: list[str]
    force: bool
    grace_s: float
    # Give them back only if not started yet (Released); started ones keep running (a move).
    release_only: bool = False


@dataclass(frozen=True, slots=True)
class DrainOrder:
    agent_id: str
    grace_s: float


@dataclass(frozen=True, slots=True)
class Ack:
    """Finished reports durably applied (or rejected): the agent may forget them.

    ``ended_workflows``: workflows that ended which this agent ran python attempts of, so it lets go
    at once of what it keeps per workflow (its python workers' children; see core/holders.py).
    """

    agent_id: str
    session_epoch: int
    attempt_ids: list[str]
    ended_workflows: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class HeartbeatAck:
    """Echo of a heartbeat the state loop applied (sent after the tick's commit)."""

    agent_id: str
    session_epoch: int
    seq: int


@dataclass(frozen=True, slots=True)
class Disconnect:
    """Close that session's stream: the agent was declared lost and must say Hello again."""

    agent_id: str
    session_epoch: int


@dataclass(frozen=True, slots=True)
class Publish:
    event: WorkflowEvent


@dataclass(frozen=True, slots=True)
class WorkflowDone:
    workflow_id: str


Action = Assign | CancelAttempts | DrainOrder | Ack | HeartbeatAck | Disconnect | Publish | WorkflowDone
