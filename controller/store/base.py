"""The storage contract: everything the controller must not lose, behind one narrow protocol.

The controller keeps its working state in memory (the core) and writes every change through a
:class:`Store` in one transaction per tick (group commit). At boot it loads a :class:`Snapshot`
and rebuilds memory from it. Nothing leaves the process before the commit that recorded it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from corral.controller.core.access import AccessChanges, AccessSnapshot, AuditEntry
from corral.controller.core.cache import CacheChanges, CacheEntry
from corral.controller.core.checkpoints import Checkpoint, CheckpointChanges
from corral.controller.core.durations import DurationChanges, GroupKey, LearnedDuration
from corral.controller.core.model import Agent, Attempt, Task, TaskState, Workflow, WorkflowEvent, WorkflowState
from corral.controller.core.run_record import Run
from corral.controller.core.schedules import Fire, Schedule, ScheduleChanges

__all__ = ["ChangeBatch", "LogChunk", "Snapshot", "Store", "WorkflowQuery", "WorkflowRecord"]


@dataclass(slots=True)
class LogChunk:
    """Captured output of an attempt, appended in order."""

    attempt_id: str
    stdout: bytes = b""
    stderr: bytes = b""
    truncated: bool = False


@dataclass(slots=True)
class ChangeBatch:
    """All changes of one tick. Records are full rows (upserts), latest state wins.

    ``deleted_agents`` are agent ids to remove (forgotten agents); an id is never both upserted and
    deleted in one batch.
    """

    workflows: dict[str, Workflow] = field(default_factory=dict)
    tasks: dict[str, Task] = field(default_factory=dict)
    # Tasks already stored whose changes since their last whole write are all progress (state,
    # attempt, agent, times, outcome: codec.PROGRESS_COLUMNS). A store may update only those
    # columns (SQLite) or write the rows whole (memory, PostgreSQL). Never also in ``tasks``.
    moved_tasks: dict[str, Task] = field(default_factory=dict)
    attempts: dict[str, Attempt] = field(default_factory=dict)
    agents: dict[str, Agent] = field(default_factory=dict)
    logs: list[LogChunk] = field(default_factory=list)
    meta: dict[str, str] = field(default_factory=dict)
    access: AccessChanges = field(default_factory=AccessChanges)
    deleted_agents: set[str] = field(default_factory=set)
    events: list[WorkflowEvent] = field(default_factory=list)  # appended to the event log
    # Learned durations (issue 9): changed groups with all their entries (empty: deleted).
    durations: DurationChanges = field(default_factory=lambda: DurationChanges({}))
    # Task checkpoints (issue 10): task id -> the record, or None to delete it.
    checkpoints: CheckpointChanges = field(default_factory=dict)
    runs: list[Run] = field(default_factory=list)  # issue 10: run rows, upserted
    cache: CacheChanges = field(default_factory=CacheChanges)  # issue 10: cache entries
    schedules: ScheduleChanges = field(default_factory=ScheduleChanges)  # issue 10: cron schedules, fires
    # Issue 12 (retention): workflow ids deleted with every row of theirs (tasks, attempts, logs,
    # events, runs, checkpoints), after this batch's upserts. Never upserted in the same batch.
    forgotten_workflows: set[str] = field(default_factory=set)

    def size(self) -> int:
        """Records and log chunks in the batch, a measure of its commit's cost.

        Event-log rows are short appends, about a quarter of an upserted record's cost, and
        weigh that much (a tick placing 20 tasks is not made a "large" commit by its 60 events).
        """
        return (
            len(self.workflows)
            + len(self.tasks)
            + len(self.moved_tasks)
            + len(self.attempts)
            + len(self.agents)
            + len(self.logs)
            + len(self.meta)
            + self.access.size()
            + len(self.deleted_agents)
            + len(self.events) // 4
            + len(self.durations.groups)
            + len(self.checkpoints)
            + len(self.runs)
            + self.cache.size()
            + self.schedules.size()
            + 100 * len(self.forgotten_workflows)  # a deletion touches every row of the workflow
        )

    def __bool__(self) -> bool:
        return bool(
            self.workflows
            or self.tasks
            or self.moved_tasks
            or self.attempts
            or self.agents
            or self.logs
            or self.meta
            or self.access
            or self.deleted_agents
            or self.events
            or self.durations
            or self.checkpoints
            or self.runs
            or self.cache
            or self.schedules
            or self.forgotten_workflows
        )


@dataclass(slots=True)
class Snapshot:
    """Everything needed to rebuild the controller's memory at boot."""

    workflows: list[Workflow] = field(default_factory=list)
    tasks: list[Task] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    agents: list[Agent] = field(default_factory=list)
    meta: dict[str, str] = field(default_factory=dict)
    access: AccessSnapshot = field(default_factory=AccessSnapshot)
    last_event_seq: int = 0  # the highest event-log seq stored (new events continue after it)
    # Learned durations (issue 9), each with its group, least recently updated first.
    durations: list[tuple[GroupKey, LearnedDuration]] = field(default_factory=list)
    checkpoints: list[Checkpoint] = field(default_factory=list)  # task checkpoints (issue 10)
    runs: list[Run] = field(default_factory=list)  # issue 10: runs of retried workflows
    cache_entries: list[CacheEntry] = field(default_factory=list)  # issue 10
    schedules: list[Schedule] = field(default_factory=list)  # issue 10
    schedule_fires: list[Fire] = field(default_factory=list)  # the last few of each schedule
    # A live load (issue 12): (id, namespace, idempotency key) of finished workflows left in the store.
    evicted_keys: list[tuple[str, str, str]] = field(default_factory=list)


class Store(Protocol):
    """Durable state. Implementations: ``sqlite.SqliteStore`` (the truth) and ``memory.MemoryStore``.

    ``commit`` is atomic: after it returns every record of the batch is durable (for SQLite: WAL,
    synchronous=FULL); if it raises, none is. Calls come from one writer at a time.
    """

    def load(self, *, live_only: bool = False) -> Snapshot:
        """Every workflow, task, attempt and agent, the access records, plus the meta key/values.

        ``live_only``: finished workflows only by their idempotency keys (see :mod:`.live`)."""
        ...

    def commit(self, batch: ChangeBatch) -> None:
        """Apply one batch of upserts, agent deletions and log appends in a single transaction."""
        ...

    def read_logs(self, attempt_id: str, stdout_offset: int = 0, stderr_offset: int = 0) -> LogChunk:
        """Output of an attempt after the given byte offsets (``truncated`` if capture was cut)."""
        ...

    def read_audit(self, since: float, principal: str = "", limit: int = 100) -> list[AuditEntry]:
        """The newest ``limit`` audit entries at or after ``since`` (optionally of one principal), oldest first."""
        ...

    def workflow_events(
        self, workflow_id: str, after_seq: int = 0, limit: int = 1000, task_id: str | None = None
    ) -> list[WorkflowEvent]:
        """Up to ``limit`` event-log entries of a workflow with a seq above ``after_seq``, oldest
        first; only those of ``task_id`` when given."""
        ...

    def load_workflow(self, workflow_id: str) -> WorkflowRecord | None:
        """One workflow with its tasks, attempts, runs and checkpoints (None: not stored).

        Reads committed rows only (a reader connection), so it may run off the state loop.
        """
        ...

    def list_workflows(self, query: WorkflowQuery) -> list[Workflow]:
        """The stored workflows ``query`` selects, newest first (``created_at`` descending, then id)."""
        ...

    def task_attempts(self, task_id: str) -> list[Attempt]:
        """Every stored attempt of one task, by number (committed rows; may run off the state loop).

        A live workflow's completed attempts are read here once they left memory (core/settled.py)."""
        ...

    def task_counts(self, workflow_ids: Sequence[str]) -> dict[str, dict[TaskState, int]]:
        """Tasks per state of each given stored workflow (for listings of evicted workflows)."""
        ...

    def close(self) -> None: ...


@dataclass(slots=True)
class WorkflowRecord:
    """Everything stored about one workflow (issue 12): what the controller needs to take an
    evicted workflow back into memory. Tasks in index order (compensation records included),
    attempts by task and number, runs by number."""

    workflow: Workflow
    tasks: list[Task] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)
    checkpoints: list[Checkpoint] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class WorkflowQuery:
    """Which stored workflows :meth:`Store.list_workflows` returns; every given filter must hold.

    ``namespaces`` empty: every namespace (less ``exclude_namespaces``). ``finished_before``: only
    terminal workflows whose ``finished_at`` is before it (retention). ``task_id``: the workflow
    holding that task. ``id_prefix``/``name_prefix``: ids/names starting so.
    """

    namespaces: tuple[str, ...] = ()
    exclude_namespaces: tuple[str, ...] = ()
    states: frozenset[WorkflowState] = frozenset()
    name_prefix: str = ""
    id_prefix: str = ""
    task_id: str = ""
    finished_before: float | None = None
    offset: int = 0
    limit: int = 100
