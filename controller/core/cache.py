"""The task result cache (issue 10): keys, a bounded LRU book, and the machine glue.

A task with a cache policy that becomes READY looks its key up; a live entry completes it at once
(COMPLETED with ``cache_source``, event-log kind ``cache_hit``), in any workflow of the namespace.
A success of its primary payload stores an entry holding its own copy of the result. Keys are
``sha256(namespace, agent type, canonical JSON of payload and inputs | the policy's key text,
version)``. The book is bounded by entries and bytes (least recently used evicted) and every
change is committed with the tick, so a restarted controller has the same cache.

Free functions over the machine state (like ``group_ops``): the shared handlers call them with one
line behind a ``task.cache is not None`` check, so tasks without a policy pay nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from corral.controller.core.model import Attempt, Task, TaskState, WorkflowState

if TYPE_CHECKING:
    from corral.controller.core.requests import Caller
    from corral.controller.core.workflow_ops import WorkflowOps as State

__all__ = [
    "CacheBook",
    "CacheChanges",
    "CacheEntry",
    "ClearCacheRequest",
    "cache_key",
    "clear_cache",
    "invalidate",
    "lookup",
    "store_result",
]


@dataclass(slots=True)
class CacheEntry:
    """One cached result: its own copy, where it came from, and its lifetime."""

    key: str  # hex sha256
    namespace: str
    result: bytes  # JSON
    source: str  # "workflow id/task id/attempt id" of the attempt that produced it
    created_at: float
    expires_at: float | None  # None: until evicted or cleared
    last_used: float

    @property
    def size(self) -> int:
        """Bytes it counts against the book's ``max_bytes`` (result plus a fixed overhead)."""
        return len(self.result) + 256


@dataclass(slots=True)
class CacheChanges:
    """A tick's changes to the book: entries to upsert and keys to delete (disjoint)."""

    upserts: dict[str, CacheEntry] = field(default_factory=dict)
    deletes: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.upserts or self.deletes)

    def size(self) -> int:
        return len(self.upserts) + len(self.deletes)


class CacheBook:
    """Entries in least-recently-used order, bounded by count and bytes; changes kept for the commit."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.entries: OrderedDict[str, CacheEntry] = OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.evictions = 0
        self._changes = CacheChanges()
        # Hits found while another hit is being applied: applied in a loop, not by recursion (a
        # chain of 10,000 cached tasks would otherwise nest 10,000 deep).
        self.pending: deque[tuple[Task, CacheEntry]] = deque()
        self.draining = False

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, key: str, now: float) -> CacheEntry | None:
        """The live entry of ``key`` (its use recorded), or None; an expired one is dropped."""
        entry = self.entries.get(key)
        if entry is None:
            return None
        if entry.expires_at is not None and entry.expires_at <= now:
            self.delete(key)
            return None
        self.entries.move_to_end(key)
        entry.last_used = now
        self._upsert(entry)
        return entry

    def put(self, entry: CacheEntry) -> None:
        """Store (or replace) an entry, then evict the least recently used ones over the bounds."""
        if entry.size > self.max_bytes:
            return  # could never fit: storing it would evict everything for nothing
        old = self.entries.pop(entry.key, None)
        if old is not None:
            self.bytes -= old.size
        self.entries[entry.key] = entry
        self.bytes += entry.size
        self._upsert(entry)
        while len(self.entries) > self.max_entries or self.bytes > self.max_bytes:
            oldest = next(iter(self.entries))
            self.delete(oldest)
            self.evictions += 1

    def delete(self, key: str) -> bool:
        entry = self.entries.pop(key, None)
        if entry is None:
            return False
        self.bytes -= entry.size
        self._changes.upserts.pop(key, None)
        self._changes.deletes.add(key)
        return True

    def _upsert(self, entry: CacheEntry) -> None:
        self._changes.deletes.discard(entry.key)
        self._changes.upserts[entry.key] = entry

    def restore(self, entries: Iterable[CacheEntry]) -> None:
        """Load stored entries (any order): kept least recently used first, bounds applied."""
        for entry in sorted(entries, key=lambda e: e.last_used):
            self.entries[entry.key] = entry
            self.bytes += entry.size
        while len(self.entries) > self.max_entries or self.bytes > self.max_bytes:
            self.delete(next(iter(self.entries)))  # bounds lowered since: trimmed with the next commit

    def take_changes(self) -> CacheChanges | None:
        if not self._changes:
            return None
        changes, self._changes = self._changes, CacheChanges()
        return changes


def _canonical(raw: bytes) -> object:
    return json.loads(raw) if raw else None


def cache_key(state: State, task: Task) -> str:
    """The key of a task's work now: namespace, agent type, payload and inputs (or the policy's
    key text), and version. Inputs are its dependencies' results by name."""
    policy = task.cache
    assert policy is not None
    if policy.key:
        work: object = {"key": policy.key}
    else:
        inputs = {state.tasks[d].name: _canonical(state.tasks[d].result or b"null") for d in task.dependencies}
        work = {"payload": _canonical(task.payload), "inputs": inputs}
    text = json.dumps(
        [task.namespace, task.agent_type, work, policy.version], sort_keys=True, separators=(",", ":"), allow_nan=False
    )
    return hashlib.sha256(text.encode()).hexdigest()


def lookup(state: State, task: Task, now: float) -> bool:
    """A task with a cache policy just became READY: complete it from a live entry if there is one.

    Returns True when it was (or is about to be, in this same call chain) completed from the
    cache; the caller then leaves it off the ready queue.
    """
    workflow = state.workflows[task.workflow_id]
    if workflow.no_cache or workflow.state not in (WorkflowState.RUNNING, WorkflowState.PAUSED):
        return False
    if task.gang:
        return False  # a gang is placed all at once: a member completed alone would leave it waiting
    book = state.cache
    entry = book.get(cache_key(state, task), now)
    if entry is None:
        return False
    book.pending.append((task, entry))
    if book.draining:
        return True
    book.draining = True
    try:
        while book.pending:
            _complete(state, *book.pending.popleft(), now)
    finally:
        book.draining = False
        book.pending.clear()  # only left over when a hit raised: that tick is thrown away whole
    return True


def _complete(state: State, task: Task, entry: CacheEntry, now: float) -> None:
    workflow = state.workflows[task.workflow_id]
    state.cache.hits += 1
    task.result = entry.result
    task.error = ""
    task.cache_source = entry.source
    task.started_at = task.finished_at = now
    state.set_task_state(task, TaskState.COMPLETED, now, kind="cache_hit", reason=f"cached result of {entry.source}")
    state.release_dependents(task, now)
    state.finish_if_done(workflow, now)


def store_result(state: State, task: Task, attempt: Attempt, now: float) -> None:
    """A cache-policy task completed by running its primary payload: keep a copy of its result.

    Not for results taken from the cache (nothing new), nor for a fallback payload's success: the
    fallback glue must not call this.
    """
    policy = task.cache
    if policy is None or task.cache_source or task.result is None or task.fallback_used:
        return  # a fallback's success is not the work the key names
    key = cache_key(state, task)
    expires = None if policy.ttl_s is None else now + policy.ttl_s
    source = f"{task.workflow_id}/{task.id}/{attempt.id}"
    state.cache.put(CacheEntry(key, task.namespace, bytes(task.result), source, now, expires, now))


def invalidate(state: State, task: Task) -> int:
    """Drop the cache entries a task produced or would use (a compensated task must run again).

    For the compensation glue: call it when the task's effects are undone. Returns how many went.
    """
    book = state.cache
    if not book.entries:
        return 0
    dropped = 0
    if task.cache is not None and book.delete(cache_key(state, task)):
        dropped += 1
    prefix = f"{task.workflow_id}/{task.id}/"
    for key in [k for k, e in book.entries.items() if e.source.startswith(prefix)]:
        dropped += book.delete(key)
    return dropped


def clear_cache(state: State, namespaces: frozenset[str] | None) -> tuple[int, int]:
    """Drop every entry (of these namespaces; None: all); ``(cleared, remaining)``."""
    book = state.cache
    doomed = [k for k, e in book.entries.items() if namespaces is None or e.namespace in namespaces]
    for key in doomed:
        book.delete(key)
    return len(doomed), len(book.entries)


@dataclass(frozen=True, slots=True)
class ClearCacheRequest:
    """Admin.ClearCache as a request event: drop the entries of ``namespace`` ("" = every namespace
    the caller covers); answers ``(cleared, remaining)``."""

    READ: ClassVar[bool] = False
    caller: Caller
    namespace: str = ""

    def handle(self, state: State, now: float) -> tuple[int, int]:
        """The handler (registered in the machine's table by ``queries.request_handlers``)."""
        if self.namespace:
            state.access.namespace(self.namespace)  # NotFound for one that does not exist
            return clear_cache(state, frozenset({self.namespace}))
        covered = self.caller.namespaces
        return clear_cache(state, frozenset(covered) if covered else None)
