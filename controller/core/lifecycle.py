"""Finished workflows leave memory (eviction) and, past their retention, the store (issue 12).

Eviction: a terminal workflow that no command touched for ``evict_after_s`` is dropped from the
machine with its tasks, attempts and every index entry; the store keeps it. Its idempotency key
stays indexed (two short strings), so a resubmission with that key still finds it: the submit then
raises :class:`Evicted`, the runtime reads the record from the store off the loop and takes it back
in (:class:`ReadmitWorkflow`), and the submit runs again. Every other request naming a workflow that
is not in memory takes the same way back (the runtime's NotFound path), so the core's read and
write handlers never see an evicted workflow.

Retention: :func:`retention_queries` says which stored workflows are past their namespace's
retention; the runtime reads a small batch of them off the loop and applies
:class:`ForgetWorkflows`, whose rows the same tick's commit deletes (``forgotten_workflows``).

Pure: time comes in as ``now``; no store access here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from corral.controller.core.model import AttemptState
from corral.controller.errors import NotFound, clip
from corral.controller.store.base import WorkflowQuery, WorkflowRecord

if TYPE_CHECKING:
    from corral.controller.core.state import MachineState

__all__ = [
    "Evicted",
    "ForgetWorkflows",
    "LifecycleBook",
    "ReadmitWorkflow",
    "SetNamespaceRetention",
    "drop_workflows",
    "evict_idle",
    "lifecycle_handlers",
    "readmit",
    "retention_queries",
]

_CHECK_EVERY_S = 1.0


class Evicted(NotFound):
    """The request needs a workflow that left memory; the runtime takes it back in and retries."""

    def __init__(self, workflow_id: str) -> None:
        super().__init__(f"workflow {clip(workflow_id)!r} is not in memory")
        self.workflow_id = workflow_id


@dataclass(slots=True)
class LifecycleBook:
    """The machine's memory for this module."""

    # Terminal workflows in memory -> since when they are idle. Insertion order is time order
    # (a workflow is re-inserted whenever it becomes idle again), so the due ones are in front.
    idle: dict[str, float] = field(default_factory=dict)
    evicted: int = 0  # workflows evicted since boot: listings merge the store's rows once > 0
    forgets: int = 0  # bumped by every forget: a readmission read before one is refused
    forgotten: set[str] = field(default_factory=set)  # this tick's, for the commit
    next_check: float = 0.0
    # Largest size seen (at an eviction) of each per-task dict, by id(): when to compact it.
    sizes: dict[int, int] = field(default_factory=dict)

    def moved(self, workflow_id: str, terminal: bool, now: float) -> None:
        """A workflow changed state: idle from now if it ended, else not idle."""
        self.idle.pop(workflow_id, None)
        if terminal:
            self.idle[workflow_id] = now

    def take(self) -> set[str]:
        forgotten, self.forgotten = self.forgotten, set()
        return forgotten


@dataclass(frozen=True, slots=True)
class ReadmitWorkflow:
    """Take a workflow read from the store back into memory. ``forgets``: the book's counter
    when the read began (a forget since then may have deleted what was read). Answers whether
    the workflow is in memory afterwards. Changes nothing stored."""

    READ: ClassVar[bool] = True
    record: WorkflowRecord
    forgets: int


@dataclass(frozen=True, slots=True)
class ForgetWorkflows:
    """Retention (or ``corral gc``): delete these stored workflows, given as
    ``(id, namespace, idempotency key or "")``. Answers the ids forgotten; a workflow in memory
    and not terminal (retried meanwhile) is kept."""

    workflows: tuple[tuple[str, str, str], ...]


@dataclass(frozen=True, slots=True)
class SetNamespaceRetention:
    """``corral namespace retain NS DURATION``: a namespace's own retention (None: the default's).
    Answers the namespace."""

    name: str
    retain_s: float | None


def evict_idle(m: MachineState, now: float) -> list[str]:
    """Evict the terminal workflows idle for ``evict_after_s`` (checked once a second, bounded per tick)."""
    book, after = m.lifecycle, m.config.evict_after_s
    if after <= 0 or now < book.next_check or not book.idle:
        return []
    book.next_check = now + min(_CHECK_EVERY_S, after / 4)
    budget = m.config.evict_tasks_per_tick
    chosen: list[str] = []
    for workflow_id, since in book.idle.items():
        if now - since < after or budget <= 0:
            break
        if workflow_id in m.watched:
            continue  # a watcher still reads it from memory
        chosen.append(workflow_id)
        budget -= len(m.workflows[workflow_id].task_ids)
    if chosen:
        drop_workflows(m, chosen)
        book.evicted += len(chosen)
    return chosen


def drop_workflows(m: MachineState, workflow_ids: Iterable[str]) -> None:
    """Remove workflows from memory with their tasks, attempts and index entries (the store keeps them).

    The idempotency index keeps their keys (see the module docstring).
    """
    dropped = set(workflow_ids)
    _note_sizes(m)
    for workflow_id in dropped:
        m.lifecycle.idle.pop(workflow_id, None)
        workflow = m.workflows.pop(workflow_id)
        records = m.sagas.of_workflow.pop(workflow_id, [])
        for task_id in [*workflow.task_ids, *records]:
            task = m.tasks.pop(task_id, None)
            if task is None:
                continue
            m.by_name.pop((workflow_id, task.name), None)
            m.dependents.pop(task_id, None)
            m.unfinished_deps.pop(task_id, None)
            checkpoint = m.checkpoints.records.pop(task_id, None)
            if checkpoint is not None:
                m.checkpoints.total_bytes -= len(checkpoint.data)
            m.dynamic.waiters.pop(task_id, None)
            m.dynamic.children.pop(task_id, None)
            m.fallbacks.approvals.pop(task_id, None)
            m.fallbacks.failed_deps.pop(task_id, None)
            m.sagas.of_task.pop(task_id, None)
        m.counts.pop(workflow_id, None)
        m.ordering.forget(workflow_id)
        m.workflow_seconds.pop(workflow_id, None)
        m.gangs.pop(workflow_id, None)
        m.parallelism.forget(workflow_id)
        m.run_book.runs.pop(workflow_id, None)
        m.deadline_book.admissions.pop(workflow_id, None)
        m.settled.forget(workflow_id)
    # One pass over the attempts for the whole batch: attempts have no per-workflow index.
    for attempt_id in [a.id for a in m.attempts.values() if a.workflow_id in dropped]:
        del m.attempts[attempt_id]
    _compact(m)


# A dict keeps its table after deletions: once most entries left, copy it into a fitting one.
_COMPACT_MIN = 4096


def _tables(m: MachineState) -> list[dict[Any, Any]]:
    # by_name is a NameIndex: its per-workflow dict goes with the workflow's last name, so it never needs this.
    return [m.tasks, m.attempts, m.dependents, m.unfinished_deps, m.ordering.ranks, m.counts]


def _note_sizes(m: MachineState) -> None:
    """Remember the largest size of each per-task dict (their tables never shrink by themselves)."""
    sizes = m.lifecycle.sizes
    for table in _tables(m):
        sizes[id(table)] = max(sizes.get(id(table), 0), len(table))


def _compact(m: MachineState) -> None:
    """Shrink the per-task dicts most of whose entries left, in place (others may hold them)."""
    sizes = m.lifecycle.sizes
    for table in _tables(m):
        peak = sizes.get(id(table), 0)
        if peak >= _COMPACT_MIN and len(table) * 4 < peak:
            kept = dict(table)
            table.clear()  # frees the old table; the update below sizes one for what is left
            table.update(kept)
            sizes[id(table)] = len(table)


def readmit(m: MachineState, event: ReadmitWorkflow, now: float) -> bool:
    """Index a workflow read from the store again, as a restore would; idle from now."""
    record = event.record
    workflow = record.workflow
    if workflow.id in m.workflows:
        return True  # another request took it back first
    if event.forgets != m.lifecycle.forgets or not workflow.state.terminal:
        # Deleted meanwhile (the record may be partial), or not a workflow eviction made: the
        # caller gets NotFound rather than a record memory would hold wrongly.
        return False
    m.workflows[workflow.id] = workflow
    if workflow.idempotency_key:
        m.idempotency[(workflow.namespace, workflow.idempotency_key)] = workflow.id
    for task in record.tasks:
        m.track_task(task)
        if task.compensates:
            m.sagas.track(task)
    m.count_unfinished(t.id for t in record.tasks)
    for attempt in record.attempts:
        if attempt.state is AttemptState.RUNNING or attempt.state is AttemptState.ASSIGNED:
            attempt.state = AttemptState.LOST  # cannot be: the workflow ended (defensive, never stored)
        m.attempts[attempt.id] = attempt
    m.settled.settle_all(record.tasks, m.attempts, m.tasks)  # as a restore: completed tasks' stay stored
    if record.runs:
        m.run_book.runs[workflow.id] = sorted(record.runs, key=lambda r: r.number)
    m.checkpoints.restore(record.checkpoints)
    m.lifecycle.moved(workflow.id, True, now)
    return True


def forget(m: MachineState, event: ForgetWorkflows, now: float) -> list[str]:
    """Delete workflows past retention: from memory if there, and (with this tick) from the store."""
    done: list[str] = []
    in_memory: list[str] = []
    for workflow_id, namespace, key in event.workflows:
        workflow = m.workflows.get(workflow_id)
        if workflow is not None:
            if not workflow.state.terminal or workflow_id in m.watched:
                continue
            in_memory.append(workflow_id)
        if key and m.idempotency.get((namespace, key)) == workflow_id:
            del m.idempotency[(namespace, key)]
        done.append(workflow_id)
    if in_memory:
        drop_workflows(m, in_memory)
    if done:
        m.lifecycle.forgets += 1
        m.lifecycle.forgotten.update(done)
    return done


def retention_queries(default_s: float, overrides: Mapping[str, float], now: float, limit: int) -> list[WorkflowQuery]:
    """The store queries that find workflows past retention: one per namespace with its own
    retention (``0``: keep forever), one for every other namespace (``default_s``; 0: none)."""
    queries = [
        WorkflowQuery(namespaces=(name,), finished_before=now - seconds, limit=limit)
        for name, seconds in sorted(overrides.items())
        if seconds > 0
    ]
    if default_s > 0:
        queries.append(
            WorkflowQuery(exclude_namespaces=tuple(sorted(overrides)), finished_before=now - default_s, limit=limit)
        )
    return queries


def lifecycle_handlers(m: MachineState) -> dict[type, Callable[[Any, float], Any]]:
    """The handlers of this module's events, for the machine's handler table."""
    return {
        ReadmitWorkflow: lambda event, now: readmit(m, event, now),
        ForgetWorkflows: lambda event, now: forget(m, event, now),
        SetNamespaceRetention: lambda event, now: m.access.set_retention(event.name, event.retain_s),
    }
