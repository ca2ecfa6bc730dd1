"""The durable store: one SQLite file in WAL mode, one writer, one transaction per commit.

Schema and migrations go through sqlite-utils (imported only when a migration runs, so a restart
on an up-to-date file never loads it); the hot path (``commit``) uses the raw ``sqlite3``
connection with ``executemany`` upserts, which is an order of magnitude faster than
``Table.upsert_all`` for the tens of thousands of rows a large submission produces.

Migrations (:mod:`sqlite_schema`) are plain functions applied in order; ``PRAGMA user_version``
records how many ran.
"""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
import stat
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Final

from corral.controller.core.access import AccessChanges, AccessSnapshot, AuditEntry
from corral.controller.core.checkpoints import Checkpoint, CheckpointChanges
from corral.controller.core.model import Attempt, TaskState, Workflow, WorkflowEvent
from corral.controller.store import (
    access_codec,
    cache_codec,
    codec,
    durations_codec,
    event_codec,
    live,
    log_codec,
    retention_sql,
    runs_codec,
    schedules_codec,
)
from corral.controller.store.base import ChangeBatch, LogChunk, Snapshot, WorkflowQuery, WorkflowRecord
from corral.controller.store.sqlite_schema import MIGRATIONS, Migration, SchemaVersionError
from corral.controller.store.sqlite_schema import quote_name as _quote

__all__ = ["MIGRATIONS", "Migration", "SchemaVersionError", "SqliteStore"]

_SYNCHRONOUS_MODES: Final = frozenset({"OFF", "NORMAL", "FULL", "EXTRA"})
_BUSY_TIMEOUT_MS: Final = 10_000

# Stream numbers of the ``logs`` table. A row of stream 0 (empty data) marks the attempt's output
# as truncated, so the flag needs no table of its own and survives with the chunks.
_TRUNCATED: Final = 0
_STDOUT: Final = 1
_STDERR: Final = 2


def _access_upsert(table: str, keys: Sequence[str]) -> str:
    columns = access_codec.ACCESS_COLUMNS[table]
    names = ", ".join(_quote(c) for c in columns)
    marks = ", ".join("?" for _ in columns)
    updates = ", ".join(f"{_quote(c)} = excluded.{_quote(c)}" for c in columns if c not in keys)
    return f"INSERT INTO {table} ({names}) VALUES ({marks}) ON CONFLICT({', '.join(keys)}) DO UPDATE SET {updates}"


_ACCESS_UPSERT: Final = {
    "namespaces": _access_upsert("namespaces", ["name"]),
    "tokens": _access_upsert("tokens", ["id"]),
    "secrets": _access_upsert("secrets", ["namespace", "name"]),
    "revoked_certs": _access_upsert("revoked_certs", ["name"]),
}
_ACCESS_SELECT: Final = {
    table: f"SELECT {', '.join(_quote(c) for c in cols)} FROM {table} ORDER BY 1"
    for table, cols in access_codec.ACCESS_COLUMNS.items()
    if table != "audit"
}
_AUDIT_INSERT: Final = (
    "INSERT INTO audit (at, principal, role, method, target, namespace, code, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_AUDIT_READ: Final = (
    "SELECT seq, at, principal, role, method, target, namespace, code, detail FROM audit "
    "WHERE at >= ? AND (? = '' OR principal = ?) ORDER BY seq DESC LIMIT ?"
)


# Identity columns no update changes: left out of DO UPDATE SET, so rewriting a task or attempt
# row on each state change does not also rewrite its entries in the indexes over them.
_IMMUTABLE: Final = {
    "tasks": frozenset({"workflow_id", "index", "name", "namespace"}),
    "attempts": frozenset({"task_id", "workflow_id", "number"}),
}


def _upsert_sql(table: str, columns: Sequence[str], values: Sequence[str] = ()) -> str:
    """An upsert of ``columns`` (``values``: their SQL, by default a parameter each); on conflict it
    sets every column of the table but the id and the immutable ones from ``excluded``."""
    names = ", ".join(_quote(c) for c in columns)
    marks = ", ".join(values or ["?"] * len(columns))
    fixed = _IMMUTABLE.get(table, frozenset())
    updates = ", ".join(f"{_quote(c)} = excluded.{_quote(c)}" for c in columns[1:] if c not in fixed)
    return f"INSERT INTO {table} ({names}) VALUES ({marks}) ON CONFLICT(id) DO UPDATE SET {updates}"


def _select_sql(table: str, columns: Sequence[str], order: str) -> str:
    return f"SELECT {', '.join(_quote(c) for c in columns)} FROM {table} ORDER BY {order}"


_UPSERT: Final = {table: _upsert_sql(table, cols) for table, cols in codec.COLUMNS.items()}


def _literal(value: object) -> str:
    """A constant of :data:`codec.PLAIN_TASK_DEFAULTS` as SQL text."""
    if value is None:
        return "NULL"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, bytes):
        return f"X'{value.hex()}'"
    if type(value) is int or type(value) is float:
        return repr(value)
    raise TypeError(f"no SQL literal for {value!r}")


def _plain_task_upsert() -> str:
    # The upsert of a task without rare fields: its rare columns are constants in the statement,
    # not parameters (27 bound instead of 50, ~30% less per row). On conflict it sets every
    # column, the constants included (``excluded`` holds them), so it is the whole upsert's twin.
    columns = (*codec.PLAIN_TASK_COLUMNS, *codec.PLAIN_TASK_DEFAULTS)
    values = ["?"] * len(codec.PLAIN_TASK_COLUMNS) + [_literal(v) for v in codec.PLAIN_TASK_DEFAULTS.values()]
    return _upsert_sql("tasks", columns, values)


_UPSERT_PLAIN_TASK: Final = _plain_task_upsert()
# A moved task (ChangeBatch.moved_tasks): its progress columns only, a quarter of the row's
# parameters to bind (8.8 -> ~4 us a row in SQLite, two such writes per task).
_UPDATE_PROGRESS: Final = (
    f"UPDATE tasks SET {', '.join(f'{_quote(c)} = ?' for c in codec.PROGRESS_COLUMNS)} WHERE id = ?"
)
_SELECT: Final = {
    "workflows": _select_sql("workflows", codec.COLUMNS["workflows"], "id"),
    "tasks": _select_sql("tasks", codec.COLUMNS["tasks"], 'workflow_id, "index"'),
    "attempts": _select_sql("attempts", codec.COLUMNS["attempts"], "task_id, number, id"),
    "agents": _select_sql("agents", codec.COLUMNS["agents"], "id"),
    "runs": runs_codec.RUN_SELECT,
}
_SELECT_LIVE: Final = {
    table: live.live_select(sql, table) if table != "agents" else sql for table, sql in _SELECT.items()
}
_UPSERT_META: Final = (
    "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value"
)
_DELETE_AGENT: Final = "DELETE FROM agents WHERE id = ?"
_UPSERT_DURATIONS: Final = (
    "INSERT INTO durations (kind, namespace, workflow, data, updated_at) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT(kind, namespace, workflow) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at"
)
_DELETE_DURATIONS: Final = "DELETE FROM durations WHERE kind = ? AND namespace = ? AND workflow = ?"
_SELECT_DURATIONS: Final = "SELECT kind, namespace, workflow, data, updated_at FROM durations"
_UPSERT_CHECKPOINT: Final = (
    "INSERT OR REPLACE INTO checkpoints (task_id, workflow_id, attempt_id, at, data) VALUES (?, ?, ?, ?, ?)"
)
_DELETE_CHECKPOINT: Final = "DELETE FROM checkpoints WHERE task_id = ?"
_SELECT_CHECKPOINTS: Final = "SELECT task_id, workflow_id, attempt_id, at, data FROM checkpoints"
_UPSERT_CACHE: Final = (
    f"INSERT OR REPLACE INTO cache_entries ({', '.join(cache_codec.CACHE_COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_DELETE_CACHE: Final = "DELETE FROM cache_entries WHERE key = ?"
_SELECT_CACHE: Final = f"SELECT {', '.join(cache_codec.CACHE_COLUMNS)} FROM cache_entries"
_EVENT_BATCH_INSERT: Final = "INSERT INTO event_batches (last_seq, workflow_id, first_seq, data) VALUES (?, ?, ?, ?)"
# Every batch holding a seq above ``after``: a range of the (workflow_id, last_seq) index.
_EVENT_BATCHES_OF_WORKFLOW: Final = (
    "SELECT data FROM event_batches WHERE workflow_id = ? AND last_seq > ? ORDER BY last_seq"
)
_LOG_SIZE: Final = (
    'SELECT "offset" + length(data) FROM logs WHERE attempt_id = ? AND stream = ? ORDER BY "offset" DESC LIMIT 1'
)
_LOG_INSERT: Final = 'INSERT INTO logs (attempt_id, stream, "offset", data) VALUES (?, ?, ?, ?)'
_LOG_MARK_TRUNCATED: Final = "INSERT OR IGNORE INTO logs (attempt_id, stream, \"offset\", data) VALUES (?, 0, 0, X'')"
_LOG_READ: Final = (
    'SELECT "offset", data FROM logs WHERE attempt_id = ? AND stream = ? AND "offset" + length(data) > ? '
    'ORDER BY "offset"'
)
_LOG_IS_TRUNCATED: Final = "SELECT 1 FROM logs WHERE attempt_id = ? AND stream = 0 LIMIT 1"


def _private_file(path: str) -> None:
    """Create the database file mode 0600 (or tighten an existing one): it holds every payload and result.

    SQLite gives the -wal and -shm files the mode of the database file, so they follow.
    """
    if path == ":memory:" or path.startswith("file:"):
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = os.stat(path).st_mode
        if mode & 0o077:
            os.chmod(path, stat.S_IMODE(mode) & 0o700)
        return
    os.close(fd)


def _connect(path: str) -> sqlite3.Connection:
    # isolation_level=None: no implicit BEGIN from the sqlite3 module; every transaction here is
    # explicit. check_same_thread=False: the runtime commits from a worker thread (to_thread).
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=_BUSY_TIMEOUT_MS / 1000)
    conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
    return conn


def _user_version(conn: sqlite3.Connection) -> int:
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    return version


class SqliteStore:
    """The :class:`~corral.controller.store.base.Store` over one SQLite file.

    ``synchronous`` is the SQLite ``synchronous`` pragma; the default ``FULL`` makes a returned
    ``commit`` survive power loss. ``migrations`` exists for tests of the migration machinery.
    Writes are serialised on one connection; ``load`` and ``read_logs`` use a second one, so they
    see committed state only and never wait behind a running commit.
    """

    MAX_LOG_BYTES_PER_STREAM: Final = log_codec.MAX_LOG_BYTES_PER_STREAM

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: str = "FULL",
        migrations: Sequence[Migration] = MIGRATIONS,
    ) -> None:
        mode = synchronous.upper()
        if mode not in _SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be one of {sorted(_SYNCHRONOUS_MODES)}, got {synchronous!r}")
        self.path = str(path)
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        # The highest event seq this process committed (None: read from the file at the first need).
        self._stored_event_seq: int | None = None
        _private_file(self.path)
        self._conn = _connect(self.path)
        try:
            # Refuse a newer file before changing anything in it (even its journal mode).
            self._check_version(_user_version(self._conn), len(migrations))
            in_memory = self.path == ":memory:"
            if _user_version(self._conn) == 0 and not in_memory:
                # Issue 12: only a file without tables can switch (an existing one would need a
                # full VACUUM, which this constructor never runs: see docs/DECISIONS.md).
                self._conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
            journal = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if journal != "wal" and not in_memory:
                # Without WAL, readers block the writer and group commit loses its point; some
                # network file systems cannot do WAL at all. Better to refuse than to limp.
                raise RuntimeError(f"{self.path}: SQLite could not enable WAL (journal_mode={journal})")
            self._conn.execute(f"PRAGMA synchronous = {mode}")
            self._migrate(migrations)
            if in_memory:
                # A second connection to ":memory:" would open another, empty, database.
                self._reader, self._read_lock = self._conn, self._write_lock
            else:
                self._reader = _connect(self.path)
        except BaseException:
            self._conn.close()
            raise

    @property
    def schema_version(self) -> int:
        """The ``user_version`` of the open database."""
        with self._write_lock:
            return _user_version(self._conn)

    def _check_version(self, version: int, known: int) -> None:
        if version > known:
            raise SchemaVersionError(
                f"{self.path} has schema version {version}, newer than the {known} this corral knows; "
                "upgrade corral to open it"
            )

    def _migrate(self, migrations: Sequence[Migration]) -> None:
        # BEGIN IMMEDIATE takes the write lock before reading the version, so two processes
        # opening the same old file cannot both run the same migration.
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            version = _user_version(self._conn)
            self._check_version(version, len(migrations))
            if version != len(migrations):
                # Only now: an up-to-date file (every restart) never loads sqlite-utils.
                import sqlite_utils

                db = sqlite_utils.Database(self._conn, recursive_triggers=False, execute_plugins=False)
                for migration in migrations[version:]:
                    migration(db)
                self._conn.execute(f"PRAGMA user_version = {len(migrations)}")
            self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise

    def load(self, *, live_only: bool = False) -> Snapshot:
        """Every row (``live_only``: of unfinished workflows), read in one transaction so the snapshot is consistent."""
        select = _SELECT_LIVE if live_only else _SELECT
        with self._read_lock:
            conn = self._reader
            conn.execute("BEGIN")
            try:
                snapshot = Snapshot(
                    workflows=[codec.decode_workflow(r) for r in conn.execute(select["workflows"])],
                    tasks=[codec.decode_task(r) for r in conn.execute(select["tasks"])],
                    attempts=[codec.decode_attempt(r) for r in conn.execute(select["attempts"])],
                    agents=[codec.decode_agent(r) for r in conn.execute(_SELECT["agents"])],
                    meta=dict(conn.execute("SELECT key, value FROM meta")),
                    access=self._load_access(conn),
                    last_event_seq=self._last_event_seq_stored(conn),
                    durations=durations_codec.decode_all(conn.execute(_SELECT_DURATIONS)),
                    checkpoints=[Checkpoint(*row) for row in conn.execute(_SELECT_CHECKPOINTS)],
                    runs=[runs_codec.decode_run(r) for r in conn.execute(select["runs"])],
                    cache_entries=[cache_codec.decode_entry(r) for r in conn.execute(_SELECT_CACHE)],
                )
                self._load_schedules(conn, snapshot)
                if live_only:
                    snapshot.evicted_keys = [tuple(row) for row in conn.execute(live.EVICTED_KEYS)]
            finally:
                conn.execute("COMMIT")
        return snapshot

    def commit(self, batch: ChangeBatch) -> None:
        """Write the whole batch in one ``BEGIN IMMEDIATE`` transaction, or nothing of it."""
        if not batch:
            return
        # Rows are encoded as they are written (executemany takes an iterator), so a 20k-task
        # batch never holds all its rows at once; a value that cannot be stored fails inside the
        # transaction, which is then rolled back whole.
        plain = [t for t in batch.tasks.values() if t._rare is None]
        rare = [t for t in batch.tasks.values() if t._rare is not None] if len(plain) < len(batch.tasks) else []
        rows: dict[str, Iterable[Sequence[Any]]] = {
            "workflows": map(codec.encode_workflow, batch.workflows.values()),
            "tasks": map(codec.encode_task, rare),
            "attempts": map(codec.encode_attempt, batch.attempts.values()),
            "agents": map(codec.encode_agent, batch.agents.values()),
        }
        counts = {
            "workflows": len(batch.workflows),
            "tasks": len(rare),
            "attempts": len(batch.attempts),
            "agents": len(batch.agents),
        }
        logs = log_codec.merge_log_chunks(batch.logs)
        event_rows = self._event_rows(batch.events)
        meta = [(str(k), str(v)) for k, v in batch.meta.items()]
        access = batch.access
        # Few rows (flushed every few seconds): encoded up front, so a bad one fails before BEGIN.
        groups = batch.durations.groups
        duration_rows = [durations_codec.encode_group(g, entries) for g, entries in groups.items() if entries]
        duration_deletes = [durations_codec.encode_group_key(g) for g, entries in groups.items() if not entries]
        cache_rows = [cache_codec.encode_entry(e) for e in batch.cache.upserts.values()]
        with self._write_lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                for table, table_rows in rows.items():
                    if counts[table]:
                        conn.executemany(_UPSERT[table], table_rows)
                    if table == "tasks" and plain:
                        conn.executemany(_UPSERT_PLAIN_TASK, map(codec.encode_plain_task, plain))
                if batch.moved_tasks:
                    conn.executemany(_UPDATE_PROGRESS, map(codec.encode_task_progress, batch.moved_tasks.values()))
                if logs:
                    self._append_logs(logs)
                if meta:
                    conn.executemany(_UPSERT_META, meta)
                if access:
                    self._commit_access(access)
                if batch.deleted_agents:
                    conn.executemany(_DELETE_AGENT, [(agent_id,) for agent_id in batch.deleted_agents])
                if duration_deletes:
                    conn.executemany(_DELETE_DURATIONS, duration_deletes)
                if duration_rows:
                    conn.executemany(_UPSERT_DURATIONS, duration_rows)
                if batch.checkpoints:
                    self._commit_checkpoints(batch.checkpoints)
                if batch.runs:
                    conn.executemany(runs_codec.RUN_UPSERT, [runs_codec.encode_run(r) for r in batch.runs])
                if batch.cache:
                    conn.executemany(_DELETE_CACHE, [(key,) for key in batch.cache.deletes])
                    conn.executemany(_UPSERT_CACHE, cache_rows)
                if batch.schedules:
                    self._commit_schedules(batch)
                if batch.forgotten_workflows:
                    retention_sql.delete_workflows(conn, batch.forgotten_workflows)
                if event_rows:
                    stored = self._stored_event_seq
                    if stored is None:
                        stored = self._last_event_seq_stored(conn)
                    if batch.events[0].seq <= stored:
                        raise ValueError(f"event seq {batch.events[0].seq} is not above the last stored {stored}")
                    conn.executemany(_EVENT_BATCH_INSERT, event_rows)
                conn.execute("COMMIT")
                if batch.events:
                    # Only this connection writes events: no query per commit to know the last seq.
                    self._stored_event_seq = batch.events[-1].seq
            except BaseException:
                # A failed COMMIT may leave the transaction open; a constraint error inside
                # executemany always does. Either way nothing of this batch may remain.
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def _commit_checkpoints(self, changes: CheckpointChanges) -> None:
        conn = self._conn
        conn.executemany(_DELETE_CHECKPOINT, [(task_id,) for task_id, record in changes.items() if record is None])
        conn.executemany(
            _UPSERT_CHECKPOINT,
            [(r.task_id, r.workflow_id, r.attempt_id, r.at, r.data) for r in changes.values() if r is not None],
        )

    @staticmethod
    def _load_schedules(conn: sqlite3.Connection, snapshot: Snapshot) -> None:
        snapshot.schedules = [
            schedules_codec.decode_schedule(r) for r in conn.execute(schedules_codec.SELECT_SCHEDULES)
        ]
        for schedule in snapshot.schedules:
            rows = conn.execute(schedules_codec.RECENT_FIRES, (schedule.id,)).fetchall()
            snapshot.schedule_fires.extend(schedules_codec.decode_fire(r) for r in reversed(rows))  # oldest first

    def _commit_schedules(self, batch: ChangeBatch) -> None:
        changes, conn = batch.schedules, self._conn
        for schedule_id in changes.deleted:
            conn.execute(schedules_codec.DELETE_SCHEDULE, (schedule_id,))
            conn.execute(schedules_codec.DELETE_FIRES, (schedule_id,))
        conn.executemany(
            schedules_codec.UPSERT_SCHEDULE, map(schedules_codec.encode_schedule, changes.schedules.values())
        )
        if changes.fires:
            conn.executemany(schedules_codec.INSERT_FIRE, map(schedules_codec.encode_fire, changes.fires))
            for schedule_id in {fire.schedule_id for fire in changes.fires}:
                conn.execute(schedules_codec.PRUNE_FIRES, (schedule_id,))

    @staticmethod
    def _load_access(conn: sqlite3.Connection) -> AccessSnapshot:
        return AccessSnapshot(
            namespaces=[access_codec.decode_namespace(r) for r in conn.execute(_ACCESS_SELECT["namespaces"])],
            tokens=[access_codec.decode_token(r) for r in conn.execute(_ACCESS_SELECT["tokens"])],
            secrets=[access_codec.decode_secret(r) for r in conn.execute(_ACCESS_SELECT["secrets"])],
            revoked_certs=[access_codec.decode_revoked(r) for r in conn.execute(_ACCESS_SELECT["revoked_certs"])],
        )

    def _commit_access(self, access: AccessChanges) -> None:
        conn = self._conn
        upserts: list[tuple[str, list[tuple[Any, ...]]]] = [
            ("namespaces", [access_codec.encode_namespace(n) for n in access.namespaces.values()]),
            ("tokens", [access_codec.encode_token(t) for t in access.tokens.values()]),
            ("secrets", [access_codec.encode_secret(s) for s in access.secrets.values()]),
            ("revoked_certs", [access_codec.encode_revoked(c) for c in access.revoked_certs.values()]),
        ]
        for table, table_rows in upserts:
            if table_rows:
                conn.executemany(_ACCESS_UPSERT[table], table_rows)
        if access.deleted_secrets:
            conn.executemany("DELETE FROM secrets WHERE namespace = ? AND name = ?", sorted(access.deleted_secrets))
        if access.audit:
            conn.executemany(_AUDIT_INSERT, [access_codec.encode_audit(a) for a in access.audit])
        if access.audit_prune_before is not None:
            conn.execute("DELETE FROM audit WHERE at < ?", (access.audit_prune_before,))

    def read_audit(self, since: float, principal: str = "", limit: int = 100) -> list[AuditEntry]:
        """The newest ``limit`` audit entries at or after ``since``, returned oldest first."""
        with self._read_lock:
            rows = self._reader.execute(_AUDIT_READ, (since, principal, principal, limit)).fetchall()
        return [access_codec.decode_audit(r) for r in reversed(rows)]

    def workflow_events(
        self, workflow_id: str, after_seq: int = 0, limit: int = 1000, task_id: str | None = None
    ) -> list[WorkflowEvent]:
        """Event-log entries of a workflow after ``after_seq``, oldest first (one indexed range scan)."""
        found: list[WorkflowEvent] = []
        if limit <= 0:
            return found
        needle = None if task_id is None else json.dumps(task_id, ensure_ascii=False)
        with self._read_lock:
            cursor = self._reader.execute(_EVENT_BATCHES_OF_WORKFLOW, (workflow_id, after_seq))
            try:
                for (data,) in cursor:
                    # A batch without the task's id in its text holds none of its events.
                    if needle is not None and needle not in data:
                        continue
                    for event in event_codec.decode_event_batch(workflow_id, data):
                        if event.seq > after_seq and (task_id is None or event.task_id == task_id):
                            found.append(event)
                            if len(found) == limit:
                                return found
            finally:
                cursor.close()
        return found

    @staticmethod
    def _last_event_seq_stored(conn: sqlite3.Connection) -> int:
        # The rowid's maximum: one lookup at the right edge of the table's B-tree.
        return int(conn.execute("SELECT COALESCE(MAX(last_seq), 0) FROM event_batches").fetchone()[0])

    @staticmethod
    def _event_rows(events: Sequence[WorkflowEvent]) -> list[codec.Row]:
        """The batch's event rows; a seq out of order is refused before anything is written."""
        for before, after in itertools.pairwise(events):
            if after.seq <= before.seq:
                raise ValueError(f"event seq {after.seq} follows {before.seq}: seqs must increase")
        return event_codec.encode_event_batches(events)

    def _append_logs(self, logs: dict[str, tuple[bytes, bytes, bool]]) -> None:
        conn = self._conn
        for attempt_id, (out, err, truncated) in logs.items():
            for stream, data in ((_STDOUT, out), (_STDERR, err)):
                if not data:
                    continue
                row = conn.execute(_LOG_SIZE, (attempt_id, stream)).fetchone()
                stored = row[0] if row else 0
                kept, cut = log_codec.fit_log(data, stored)
                truncated = truncated or cut
                if kept:
                    conn.execute(_LOG_INSERT, (attempt_id, stream, stored, kept))
            if truncated:
                conn.execute(_LOG_MARK_TRUNCATED, (attempt_id,))

    def read_logs(self, attempt_id: str, stdout_offset: int = 0, stderr_offset: int = 0) -> LogChunk:
        """Output of an attempt after the given byte offsets; empty for an unknown attempt."""
        if stdout_offset < 0 or stderr_offset < 0:
            raise ValueError("log offsets must not be negative")
        with self._read_lock:
            conn = self._reader
            conn.execute("BEGIN")
            try:
                stdout = self._read_stream(attempt_id, _STDOUT, stdout_offset)
                stderr = self._read_stream(attempt_id, _STDERR, stderr_offset)
                truncated = conn.execute(_LOG_IS_TRUNCATED, (attempt_id,)).fetchone() is not None
            finally:
                conn.execute("COMMIT")
        return LogChunk(attempt_id, stdout, stderr, truncated)

    def _read_stream(self, attempt_id: str, stream: int, offset: int) -> bytes:
        rows = self._reader.execute(_LOG_READ, (attempt_id, stream, offset)).fetchall()
        if not rows:
            return b""
        # Chunks are contiguous, so the first one returned starts at or before ``offset``.
        data = b"".join(chunk for _, chunk in rows)
        return data[offset - rows[0][0] :]

    def load_workflow(self, workflow_id: str) -> WorkflowRecord | None:
        """One stored workflow with its tasks, attempts, runs and checkpoints (committed rows)."""
        with self._read_lock:
            return retention_sql.load_workflow(self._reader, workflow_id)

    def list_workflows(self, query: WorkflowQuery) -> list[Workflow]:
        """The stored workflows ``query`` selects, newest first."""
        with self._read_lock:
            return retention_sql.list_workflows(self._reader, query)

    def task_counts(self, workflow_ids: Sequence[str]) -> dict[str, dict[TaskState, int]]:
        """Tasks per state of each given stored workflow."""
        with self._read_lock:
            return retention_sql.task_counts(self._reader, workflow_ids)

    def task_attempts(self, task_id: str) -> list[Attempt]:
        """Every stored attempt of one task, by number."""
        with self._read_lock:
            return retention_sql.task_attempts(self._reader, task_id)

    def incremental_vacuum(self, pages: int) -> int:
        """Give up to ``pages`` free pages back to the file system (after retention deleted rows).

        A no-op on a file created before auto_vacuum=INCREMENTAL (its free pages are reused by
        new rows instead). Returns the free pages left.
        """
        with self._write_lock:
            self._conn.execute(f"PRAGMA incremental_vacuum({max(0, int(pages))})").fetchall()
            return int(self._conn.execute("PRAGMA freelist_count").fetchone()[0])

    def close(self) -> None:
        """Close the connections; further calls fail. Closing twice is harmless."""
        with self._write_lock:
            self._conn.close()
        if self._reader is not self._conn:
            with self._read_lock:
                self._reader.close()
