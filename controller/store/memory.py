"""An in-process store with the same contract as the SQLite one, for tests and ephemeral runs.

Records are kept as encoded rows (the codec shared with SQLite), not as the caller's objects:
that makes every stored record a deep copy for free, so mutating an object after committing it,
or a record returned by ``load``, never changes what is stored. It also means both backends
accept and refuse exactly the same values.
"""

from __future__ import annotations

import bisect
import itertools
import threading
from collections.abc import Sequence
from dataclasses import astuple
from typing import Any, Final

from corral.controller.core.access import AccessSnapshot, AuditEntry
from corral.controller.core.checkpoints import Checkpoint
from corral.controller.core.model import Attempt, TaskState, Workflow, WorkflowEvent
from corral.controller.store import (
    access_codec,
    cache_codec,
    codec,
    durations_codec,
    event_codec,
    live,
    log_codec,
    runs_codec,
    schedules_codec,
)
from corral.controller.store.base import ChangeBatch, LogChunk, Snapshot, WorkflowQuery, WorkflowRecord

__all__ = ["MemoryStore"]


_WORKFLOW_COLUMN: Final = {table: codec.COLUMNS[table].index("workflow_id") for table in ("tasks", "attempts")}
_TASK_STATE: Final = codec.COLUMNS["tasks"].index("state")
_COMPENSATES: Final = codec.COLUMNS["tasks"].index("compensates")


def _selected(workflow: Workflow, query: WorkflowQuery, holder: codec.Row | None) -> bool:
    """Whether a stored workflow passes every filter of ``query`` (as the SQLite WHERE clause)."""
    q = query
    if q.namespaces and workflow.namespace not in q.namespaces:
        return False
    if workflow.namespace in q.exclude_namespaces:
        return False
    if q.states and workflow.state not in q.states:
        return False
    if not workflow.name.startswith(q.name_prefix) or not workflow.id.startswith(q.id_prefix):
        return False
    if q.task_id and (holder is None or holder[1] != workflow.id):
        return False
    if q.finished_before is not None:
        finished = workflow.finished_at
        return workflow.state.terminal and finished is not None and finished < q.finished_before
    return True


class _Output:
    """Captured output of one attempt."""

    __slots__ = ("stderr", "stdout", "truncated")

    def __init__(self) -> None:
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.truncated = False


class MemoryStore:
    """The :class:`~corral.controller.store.base.Store` in dictionaries. Not durable."""

    MAX_LOG_BYTES_PER_STREAM: Final = log_codec.MAX_LOG_BYTES_PER_STREAM

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: dict[str, dict[str, codec.Row]] = {table: {} for table in codec.COLUMNS}
        self._logs: dict[str, _Output] = {}
        self._meta: dict[str, str] = {}
        self._access: dict[str, dict[Any, codec.Row]] = {
            table: {} for table in access_codec.ACCESS_COLUMNS if table != "audit"
        }
        self._audit: list[codec.Row] = []
        self._audit_seq = 0  # numbers never reused, as SQLite's AUTOINCREMENT
        self._events: dict[str, list[codec.Row]] = {}  # workflow id -> event rows in seq order
        self._last_event_seq = 0
        self._durations: dict[tuple[str, str, str], codec.Row] = {}
        self._checkpoints: dict[str, Checkpoint] = {}
        self._runs: dict[tuple[str, int], codec.Row] = {}  # issue 10
        self._cache: dict[str, codec.Row] = {}  # issue 10: cache entries by key
        self._schedules: dict[str, tuple[Any, ...]] = {}
        self._fires: dict[tuple[str, float], tuple[Any, ...]] = {}  # unique, as SQLite's primary key
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the store is closed")

    def load(self, *, live_only: bool = False) -> Snapshot:
        """Every record, decoded afresh; tasks ordered by (workflow_id, index), the rest by id.

        ``live_only``: finished workflows only by their idempotency keys (as the SQL stores)."""
        with self._lock:
            self._check_open()
            rows = {table: list(table_rows.values()) for table, table_rows in self._rows.items()}
            meta = dict(self._meta)
            last_event_seq = self._last_event_seq
            duration_rows = list(self._durations.values())
            checkpoints = [Checkpoint(*astuple(c)) for c in self._checkpoints.values()]
            run_rows = sorted(self._runs.values())
            cache_rows = list(self._cache.values())
            schedule_rows = sorted(self._schedules.values())
            fire_rows = sorted(self._fires.values(), key=lambda r: r[1])
            access = {table: sorted(table_rows.values()) for table, table_rows in self._access.items()}
        tasks = sorted(rows["tasks"], key=lambda r: (r[1], r[3]))
        attempts = sorted(rows["attempts"], key=lambda r: (r[1], r[4], r[0]))
        snapshot = Snapshot(
            workflows=[codec.decode_workflow(r) for r in sorted(rows["workflows"])],
            tasks=[codec.decode_task(r) for r in tasks],
            attempts=[codec.decode_attempt(r) for r in attempts],
            agents=[codec.decode_agent(r) for r in sorted(rows["agents"])],
            meta=meta,
            access=AccessSnapshot(
                namespaces=[access_codec.decode_namespace(r) for r in access["namespaces"]],
                tokens=[access_codec.decode_token(r) for r in access["tokens"]],
                secrets=[access_codec.decode_secret(r) for r in access["secrets"]],
                revoked_certs=[access_codec.decode_revoked(r) for r in access["revoked_certs"]],
            ),
            last_event_seq=last_event_seq,
            durations=durations_codec.decode_all(duration_rows),
            checkpoints=checkpoints,
            runs=[runs_codec.decode_run(r) for r in run_rows],
            cache_entries=[cache_codec.decode_entry(r) for r in cache_rows],
            schedules=[schedules_codec.decode_schedule(r) for r in schedule_rows],
            schedule_fires=[
                schedules_codec.decode_fire(r)
                for schedule in schedule_rows
                for r in [f for f in fire_rows if f[0] == schedule[0]][-20:]  # as SQLite: the last 20 of each
            ],
        )
        if live_only:
            live.live_only(snapshot)
        return snapshot

    def commit(self, batch: ChangeBatch) -> None:
        """Apply the batch; everything is encoded first, so a bad value changes nothing."""
        if not batch:
            return
        encoded = {
            "workflows": [codec.encode_workflow(w) for w in batch.workflows.values()],
            # Moved tasks are written whole: the row is the same as updating its progress columns.
            "tasks": [codec.encode_task(t) for t in (*batch.tasks.values(), *batch.moved_tasks.values())],
            "attempts": [codec.encode_attempt(a) for a in batch.attempts.values()],
            "agents": [codec.encode_agent(a) for a in batch.agents.values()],
        }
        logs = log_codec.merge_log_chunks(batch.logs)
        meta = {str(k): str(v) for k, v in batch.meta.items()}
        changes = batch.access
        access: dict[str, list[tuple[Any, codec.Row]]] = {
            "namespaces": [(n.name, access_codec.encode_namespace(n)) for n in changes.namespaces.values()],
            "tokens": [(t.id, access_codec.encode_token(t)) for t in changes.tokens.values()],
            "secrets": [(key, access_codec.encode_secret(s)) for key, s in changes.secrets.items()],
            "revoked_certs": [(c.name, access_codec.encode_revoked(c)) for c in changes.revoked_certs.values()],
        }
        audit = [access_codec.encode_audit(a) for a in changes.audit]
        events = [event_codec.encode_event(e) for e in batch.events]
        groups = batch.durations.groups
        duration_rows = [durations_codec.encode_group(g, entries) for g, entries in groups.items() if entries]
        duration_deletes = [durations_codec.encode_group_key(g) for g, entries in groups.items() if not entries]
        runs = [runs_codec.encode_run(r) for r in batch.runs]
        cache_rows = [cache_codec.encode_entry(e) for e in batch.cache.upserts.values()]
        schedule_rows = [schedules_codec.encode_schedule(s) for s in batch.schedules.schedules.values()]
        fire_rows = [schedules_codec.encode_fire(f) for f in batch.schedules.fires]
        with self._lock:
            self._check_open()
            if any((row[0], row[1]) in self._fires for row in fire_rows) or len(
                {(row[0], row[1]) for row in fire_rows}
            ) != len(fire_rows):
                raise ValueError("a schedule fire is stored twice (as SQLite's primary key refuses)")
            if events and (
                events[0][0] <= self._last_event_seq or any(a[0] >= b[0] for a, b in itertools.pairwise(events))
            ):
                # As SQLite's PRIMARY KEY: a seq is never stored twice. Checked before any change.
                raise ValueError(f"event seq {events[0][0]} is not above the last stored {self._last_event_seq}")
            for table, rows in encoded.items():
                self._rows[table].update((row[0], row) for row in rows)
            for schedule_id in batch.schedules.deleted:
                self._schedules.pop(schedule_id, None)
                for fire in [k for k in self._fires if k[0] == schedule_id]:
                    del self._fires[fire]
            self._schedules.update((row[0], row) for row in schedule_rows)
            self._fires.update(((row[0], row[1]), row) for row in fire_rows)
            for attempt_id, (out, err, truncated) in logs.items():
                output = self._logs.get(attempt_id)
                if output is None:
                    output = self._logs[attempt_id] = _Output()
                for buffer, data in ((output.stdout, out), (output.stderr, err)):
                    kept, cut = log_codec.fit_log(data, len(buffer))
                    buffer.extend(kept)
                    truncated = truncated or cut
                output.truncated = output.truncated or truncated
            self._meta.update(meta)
            for agent_id in batch.deleted_agents:
                self._rows["agents"].pop(agent_id, None)
            for duration_key in duration_deletes:
                self._durations.pop(duration_key, None)
            for row in duration_rows:
                self._durations[row[:3]] = row
            for task_id, record in batch.checkpoints.items():
                if record is None:
                    self._checkpoints.pop(task_id, None)
                else:  # a copy: the machine's record is live
                    self._checkpoints[task_id] = Checkpoint(*astuple(record))
            for row in runs:
                self._runs[(row[0], row[1])] = row
            for cache_key in batch.cache.deletes:
                self._cache.pop(cache_key, None)
            self._cache.update((row[0], row) for row in cache_rows)
            for table, keyed in access.items():
                self._access[table].update(keyed)
            for key in changes.deleted_secrets:
                self._access["secrets"].pop(key, None)
            for row in audit:
                self._audit_seq += 1
                self._audit.append((self._audit_seq, *row))
            if changes.audit_prune_before is not None:
                cutoff = changes.audit_prune_before
                self._audit = [row for row in self._audit if row[1] >= cutoff]
            for row in events:
                self._events.setdefault(row[1], []).append(row)
            if events:
                self._last_event_seq = events[-1][0]
            if batch.forgotten_workflows:
                self._forget(batch.forgotten_workflows)

    def _forget(self, workflow_ids: set[str]) -> None:
        """Delete workflows with every row of theirs (as SQLite's deletes; lock held)."""
        for table in ("tasks", "attempts"):
            rows = self._rows[table]
            for key in [k for k, row in rows.items() if row[_WORKFLOW_COLUMN[table]] in workflow_ids]:
                if table == "attempts":
                    self._logs.pop(key, None)
                del rows[key]
        for workflow_id in workflow_ids:
            self._rows["workflows"].pop(workflow_id, None)
            self._events.pop(workflow_id, None)
        for task_id in [k for k, c in self._checkpoints.items() if c.workflow_id in workflow_ids]:
            del self._checkpoints[task_id]
        for run_key in [k for k in self._runs if k[0] in workflow_ids]:
            del self._runs[run_key]

    def load_workflow(self, workflow_id: str) -> WorkflowRecord | None:
        """One stored workflow with its tasks, attempts, runs and checkpoints, decoded afresh."""
        with self._lock:
            self._check_open()
            row = self._rows["workflows"].get(workflow_id)
            if row is None:
                return None
            tasks = sorted((r for r in self._rows["tasks"].values() if r[1] == workflow_id), key=lambda r: r[3])
            attempts = sorted(
                (r for r in self._rows["attempts"].values() if r[2] == workflow_id), key=lambda r: (r[1], r[4], r[0])
            )
            runs = sorted(r for k, r in self._runs.items() if k[0] == workflow_id)
            checkpoints = [Checkpoint(*astuple(c)) for c in self._checkpoints.values() if c.workflow_id == workflow_id]
        return WorkflowRecord(
            codec.decode_workflow(row),
            [codec.decode_task(r) for r in tasks],
            [codec.decode_attempt(r) for r in attempts],
            [runs_codec.decode_run(r) for r in runs],
            checkpoints,
        )

    def list_workflows(self, query: WorkflowQuery) -> list[Workflow]:
        """The stored workflows ``query`` selects, newest first."""
        if query.limit <= 0:
            return []
        with self._lock:
            self._check_open()
            rows = list(self._rows["workflows"].values())
            holder = self._rows["tasks"].get(query.task_id) if query.task_id else None
        chosen = [w for w in map(codec.decode_workflow, rows) if _selected(w, query, holder)]
        chosen.sort(key=lambda w: (-w.created_at, w.id))
        return chosen[query.offset : query.offset + query.limit]

    def task_attempts(self, task_id: str) -> list[Attempt]:
        """Every stored attempt of one task, by number, decoded afresh."""
        with self._lock:
            self._check_open()
            rows = sorted((r for r in self._rows["attempts"].values() if r[1] == task_id), key=lambda r: (r[4], r[0]))
            return [codec.decode_attempt(r) for r in rows]

    def task_counts(self, workflow_ids: Sequence[str]) -> dict[str, dict[TaskState, int]]:
        """Tasks per state of each given workflow (compensation records not counted)."""
        wanted = set(workflow_ids)
        counts: dict[str, dict[TaskState, int]] = {workflow_id: {} for workflow_id in workflow_ids}
        with self._lock:
            self._check_open()
            for row in self._rows["tasks"].values():
                if row[1] in wanted and not row[_COMPENSATES]:
                    state = TaskState(row[_TASK_STATE])
                    counts[row[1]][state] = counts[row[1]].get(state, 0) + 1
        return counts

    def read_audit(self, since: float, principal: str = "", limit: int = 100) -> list[AuditEntry]:
        """The newest ``limit`` audit entries at or after ``since``, returned oldest first."""
        with self._lock:
            self._check_open()
            rows = [r for r in self._audit if r[1] >= since and (not principal or r[2] == principal)]
        return [access_codec.decode_audit(r) for r in rows[-limit:]] if limit > 0 else []

    def workflow_events(
        self, workflow_id: str, after_seq: int = 0, limit: int = 1000, task_id: str | None = None
    ) -> list[WorkflowEvent]:
        """Event-log entries of a workflow after ``after_seq``, oldest first."""
        if limit <= 0:
            return []
        with self._lock:
            self._check_open()
            rows = self._events.get(workflow_id, [])
            start = bisect.bisect_right(rows, after_seq, key=lambda r: r[0])
            picked: list[codec.Row] = []
            for row in rows[start:]:
                if task_id is None or row[4] == task_id:
                    picked.append(row)
                    if len(picked) >= limit:
                        break
        return [event_codec.decode_event(r) for r in picked]

    def read_logs(self, attempt_id: str, stdout_offset: int = 0, stderr_offset: int = 0) -> LogChunk:
        """Output of an attempt after the given byte offsets; empty for an unknown attempt."""
        if stdout_offset < 0 or stderr_offset < 0:
            raise ValueError("log offsets must not be negative")
        with self._lock:
            self._check_open()
            output = self._logs.get(attempt_id)
            if output is None:
                return LogChunk(attempt_id)
            return LogChunk(
                attempt_id,
                bytes(output.stdout[stdout_offset:]),
                bytes(output.stderr[stderr_offset:]),
                output.truncated,
            )

    def close(self) -> None:
        """Mark the store closed; further calls raise."""
        with self._lock:
            self._closed = True
