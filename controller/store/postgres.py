"""The durable store on PostgreSQL: one writer connection, a small pool for reads, one transaction per commit.

Same contract as :class:`~corral.controller.store.sqlite.SqliteStore`, with the same row codecs,
so both stores accept and refuse exactly the same values (PostgreSQL additionally refuses a NUL
character in text, and integers beyond 64 bits, as ``psycopg.DataError``).

Synchronous psycopg 3, deliberately: the :class:`~corral.controller.store.base.Store` protocol is
synchronous and the runtime runs it in a worker thread. ``remote = True`` tells the runtime never
to commit inline on the event loop, so a network round trip never blocks it; the leader lease
(``corral.controller.ha``) runs on its own thread and connection anyway.

Fencing: when :attr:`PostgresStore.fence_epoch` is set, every write transaction first locks the
``corral_lease`` row at that epoch (``FOR SHARE``, alive on the database's clock); without it the
transaction is rolled back and :class:`~corral.controller.store.errors.Fenced` raised. A connection
lost during COMMIT raises :class:`~corral.controller.store.errors.CommitUnknown`; lost before it,
``psycopg.OperationalError`` (the runtime's degraded mode).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Final

import psycopg
from psycopg import pq
from psycopg_pool import ConnectionPool

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
    postgres_retention,
    runs_codec,
    schedules_codec,
)
from corral.controller.store import postgres_sql as sql
from corral.controller.store.base import ChangeBatch, LogChunk, Snapshot, WorkflowQuery, WorkflowRecord
from corral.controller.store.errors import CommitUnknown, Fenced, StoreUnavailable
from corral.controller.store.postgres_schema import MIGRATIONS, SCHEMA_LOCK, VERSION_TABLE, PgMigration
from corral.controller.store.sqlite_schema import SchemaVersionError

__all__ = ["MIGRATIONS", "PostgresStore", "SchemaVersionError"]

_STDOUT: Final = 1
_STDERR: Final = 2
_EVENT_PAGE: Final = 256  # event batches read per query when paging a workflow's history
_IDLE: Final = pq.TransactionStatus.IDLE
_DISK_FULL: Final = "53100"  # SQLSTATE disk_full
_COPY_MIN: Final = 512  # rows of one table from which a commit writes them with COPY
_POOL_WAIT_S: Final = 5.0  # a read waits at most this long for a pool connection (database gone: fail)


@contextlib.contextmanager
def _reachable() -> Iterator[None]:
    """Turn the driver's "the database is gone" errors into :class:`StoreUnavailable` (degraded mode).

    Errors about the data (IntegrityError, DataError) pass unchanged: they are the batch's fault.
    """
    try:
        yield
    except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StoreUnavailable(f"PostgreSQL: {text}", full=exc.sqlstate == _DISK_FULL) from exc


def _connect_kwargs(connect_timeout_s: float, tcp_timeout_s: float) -> dict[str, Any]:
    # Keepalives and tcp_user_timeout bound how long a call waits on a database that vanished
    # behind a partition (the kernel's default is many minutes): it fails as OperationalError.
    return {
        "autocommit": True,  # every transaction is an explicit BEGIN ... COMMIT
        "connect_timeout": max(1, round(connect_timeout_s)),
        "application_name": "corral-controller",
        "keepalives": 1,
        "keepalives_idle": 5,
        "keepalives_interval": 2,
        "keepalives_count": 3,
        "tcp_user_timeout": int(tcp_timeout_s * 1000),
    }


class PostgresStore:
    """The :class:`~corral.controller.store.base.Store` over a PostgreSQL database (``dsn``: a libpq URL).

    Writes are serialised on one connection; reads (``load``, logs, audit, events) use a pool of
    up to ``pool_size`` connections and see committed state only. ``migrations`` exists for tests.
    """

    MAX_LOG_BYTES_PER_STREAM: Final = log_codec.MAX_LOG_BYTES_PER_STREAM
    #: Every call is a network round trip: the runtime never calls ``commit`` on the event loop.
    remote: Final = True

    def __init__(
        self,
        dsn: str,
        *,
        pool_size: int = 4,
        connect_timeout_s: float = 10.0,
        tcp_timeout_s: float = 10.0,
        migrations: Sequence[PgMigration] = MIGRATIONS,
    ) -> None:
        self.dsn = dsn
        #: The leader epoch every write is fenced on (None: no fencing, a single controller).
        self.fence_epoch: int | None = None
        self._kwargs = _connect_kwargs(connect_timeout_s, tcp_timeout_s)
        self._write_lock = threading.Lock()
        # The highest event seq this process committed (None: read it from the database first).
        self._stored_event_seq: int | None = None
        self._conn: psycopg.Connection[Any] = psycopg.connect(dsn, **self._kwargs)
        try:
            self._migrate(migrations)
            self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
                dsn,
                min_size=1,
                max_size=max(1, pool_size),
                kwargs=self._kwargs,
                check=ConnectionPool.check_connection,  # a connection the database dropped is replaced
                name="corral-store-read",
                timeout=min(connect_timeout_s, _POOL_WAIT_S),
                open=True,
            )
        except BaseException:
            self._conn.close()
            raise

    # --- schema ----------------------------------------------------------------------------------

    @property
    def schema_version(self) -> int:
        """How many migrations the database has run."""
        with self._write_lock:
            row = self._conn.execute(f"SELECT version FROM {VERSION_TABLE}").fetchone()
        return int(row[0]) if row else 0

    def _migrate(self, migrations: Sequence[PgMigration]) -> None:
        conn = self._conn
        with conn.transaction():
            # Serialise concurrent boots; DDL is transactional, so a failed migration leaves nothing.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            conn.execute(f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (version integer NOT NULL)")
            row = conn.execute(f"SELECT version FROM {VERSION_TABLE}").fetchone()
            version = int(row[0]) if row else 0
            if version > len(migrations):
                raise SchemaVersionError(
                    f"the database has schema version {version}, newer than the {len(migrations)} this corral "
                    "knows; upgrade corral to open it"
                )
            for migration in migrations[version:]:
                migration(conn)
            if row is None:
                conn.execute(f"INSERT INTO {VERSION_TABLE} (version) VALUES (%s)", (len(migrations),))
            elif version != len(migrations):
                conn.execute(f"UPDATE {VERSION_TABLE} SET version = %s", (len(migrations),))

    # --- the writer --------------------------------------------------------------------------------

    def _writer(self) -> psycopg.Connection[Any]:
        """The write connection, reopened when the last one was lost (raises OperationalError if it cannot be)."""
        conn = self._conn
        if conn.closed or conn.broken:
            conn.close()
            self._conn = conn = psycopg.connect(self.dsn, **self._kwargs)
        return conn

    def recover(self) -> None:
        """Make the write connection usable again after a failure (the degraded mode's probe calls it)."""
        with self._write_lock, _reachable():
            conn = self._writer()
            if conn.info.transaction_status != _IDLE:
                conn.execute("ROLLBACK")

    def commit(self, batch: ChangeBatch) -> None:
        """Write the whole batch in one transaction, or nothing of it."""
        if not batch:
            return
        logs = log_codec.merge_log_chunks(batch.logs)
        event_rows = self._event_rows(batch.events)
        meta = [(str(k), str(v)) for k, v in batch.meta.items()]
        groups = batch.durations.groups
        duration_rows = [durations_codec.encode_group(g, entries) for g, entries in groups.items() if entries]
        duration_deletes = [durations_codec.encode_group_key(g) for g, entries in groups.items() if not entries]
        cache_rows = [cache_codec.encode_entry(e) for e in batch.cache.upserts.values()]
        with self._write_lock, _reachable():
            conn = self._writer()
            epoch = self.fence_epoch
            try:
                # Pipeline mode: BEGIN, the fence and every write go out without waiting for each
                # other's answers; one round trip to the sync, one more for COMMIT.
                # A large table write goes through COPY instead (2-3x faster), which a pipeline cannot carry.
                tasks = len(batch.tasks) + len(batch.moved_tasks)
                piped = max(len(batch.workflows), tasks, len(batch.attempts), len(batch.agents)) < _COPY_MIN
                with conn.pipeline() if piped else contextlib.nullcontext() as pipeline, conn.cursor() as cur:
                    conn.execute("BEGIN")
                    fence = None if epoch is None else conn.execute(sql.FENCE, (epoch,))
                    self._write(cur, batch, logs, meta)
                    if duration_deletes:
                        cur.executemany(sql.DELETE_DURATIONS, duration_deletes)
                    if duration_rows:
                        cur.executemany(sql.UPSERT_DURATIONS, duration_rows)
                    if batch.cache:
                        cur.executemany(sql.DELETE_CACHE, [(key,) for key in batch.cache.deletes])
                        cur.executemany(sql.UPSERT_CACHE, cache_rows)
                    if event_rows:
                        stored = self._stored_event_seq
                        if stored is None:
                            stored = self._last_event_seq_stored(conn)
                        if batch.events[0].seq <= stored:
                            raise ValueError(f"event seq {batch.events[0].seq} is not above the last stored {stored}")
                        cur.executemany(sql.EVENT_BATCH_INSERT, event_rows)
                    if pipeline is not None:
                        pipeline.sync()
                    # Checked before COMMIT: writes queued behind a failed fence are rolled back.
                    if fence is not None and fence.fetchone() is None:
                        raise Fenced(
                            f"the leader lease is not held at epoch {epoch} (taken over or expired): write refused"
                        )
            except BaseException:
                self._abort(conn)
                raise
            self._finish(conn)
            if batch.events:
                # Only this connection writes events: no query per commit to know the last seq.
                self._stored_event_seq = batch.events[-1].seq

    @staticmethod
    def _abort(conn: psycopg.Connection[Any]) -> None:
        """Roll back what the failed transaction wrote; a lost connection rolled back by itself."""
        if conn.closed or conn.broken:
            conn.close()
            return
        if conn.info.transaction_status != _IDLE:
            try:
                conn.execute("ROLLBACK")
            except psycopg.Error:
                conn.close()  # reopened by the next commit; the server drops the transaction with it

    def _finish(self, conn: psycopg.Connection[Any]) -> None:
        """COMMIT; a connection lost while it ran leaves the outcome unknown (CommitUnknown)."""
        try:
            conn.execute("COMMIT")
        except psycopg.Error as exc:
            if conn.closed or conn.broken or isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
                conn.close()
                raise CommitUnknown(f"the database connection was lost during COMMIT: {exc}") from exc
            self._abort(conn)  # the server refused the COMMIT: rolled back, nothing written
            raise

    def _write(
        self,
        cur: psycopg.Cursor[Any],
        batch: ChangeBatch,
        logs: dict[str, tuple[bytes, bytes, bool]],
        meta: list[tuple[str, str]],
    ) -> None:
        # Rows are encoded as they are sent (executemany takes an iterator, and pipelines the
        # statements), so a 20k-task batch never holds all its rows at once; a value that cannot be
        # stored fails inside the transaction, which is then rolled back whole.
        rows: list[tuple[str, int, Iterable[Sequence[Any]]]] = [
            ("workflows", len(batch.workflows), map(codec.encode_workflow, batch.workflows.values())),
            # Moved tasks are written whole (the same row as updating their progress columns):
            # one statement, or one COPY, for every task of the batch.
            (
                "tasks",
                len(batch.tasks) + len(batch.moved_tasks),
                map(codec.encode_task, itertools.chain(batch.tasks.values(), batch.moved_tasks.values())),
            ),
            ("attempts", len(batch.attempts), map(codec.encode_attempt, batch.attempts.values())),
            ("agents", len(batch.agents), map(codec.encode_agent, batch.agents.values())),
        ]
        for table, count, table_rows in rows:
            if count >= _COPY_MIN:
                # COPY into a temporary twin of the table, then one INSERT ... ON CONFLICT from it.
                cur.execute(sql.STAGE[table])
                with cur.copy(sql.COPY_STAGE[table]) as copy:
                    for row in table_rows:
                        copy.write_row(row)
                cur.execute(sql.UPSERT_STAGED[table])
            elif count:
                cur.executemany(sql.UPSERT[table], table_rows)
        if logs:
            self._append_logs(cur, logs)
        if meta:
            cur.executemany(sql.UPSERT_META, meta)
        if batch.access:
            self._commit_access(cur, batch.access)
        if batch.deleted_agents:
            cur.executemany(sql.DELETE_AGENT, [(agent_id,) for agent_id in batch.deleted_agents])
        if batch.checkpoints:
            self._commit_checkpoints(cur, batch.checkpoints)
        if batch.runs:
            cur.executemany(sql.UPSERT_RUN, [runs_codec.encode_run(r) for r in batch.runs])
        if batch.schedules:
            self._commit_schedules(cur, batch)
        if batch.forgotten_workflows:  # retention (issue 12): after the upserts, as SQLite does
            postgres_retention.delete_workflows(cur, batch.forgotten_workflows)

    @staticmethod
    def _commit_checkpoints(cur: psycopg.Cursor[Any], changes: CheckpointChanges) -> None:
        deletes = [(task_id,) for task_id, record in changes.items() if record is None]
        if deletes:
            cur.executemany(sql.DELETE_CHECKPOINT, deletes)
        upserts = [(r.task_id, r.workflow_id, r.attempt_id, r.at, r.data) for r in changes.values() if r is not None]
        if upserts:
            cur.executemany(sql.UPSERT_CHECKPOINT, upserts)

    @staticmethod
    def _commit_schedules(cur: psycopg.Cursor[Any], batch: ChangeBatch) -> None:
        changes = batch.schedules
        for schedule_id in changes.deleted:
            cur.execute(sql.DELETE_SCHEDULE, (schedule_id,))
            cur.execute(sql.DELETE_FIRES, (schedule_id,))
        if changes.schedules:
            cur.executemany(sql.UPSERT_SCHEDULE, map(schedules_codec.encode_schedule, changes.schedules.values()))
        if changes.fires:
            cur.executemany(sql.INSERT_FIRE, map(schedules_codec.encode_fire, changes.fires))
            for schedule_id in {fire.schedule_id for fire in changes.fires}:
                cur.execute(sql.PRUNE_FIRES, {"id": schedule_id})

    @staticmethod
    def _commit_access(cur: psycopg.Cursor[Any], access: AccessChanges) -> None:
        upserts: list[tuple[str, list[tuple[Any, ...]]]] = [
            ("namespaces", [access_codec.encode_namespace(n) for n in access.namespaces.values()]),
            ("tokens", [access_codec.encode_token(t) for t in access.tokens.values()]),
            ("secrets", [access_codec.encode_secret(s) for s in access.secrets.values()]),
            ("revoked_certs", [access_codec.encode_revoked(c) for c in access.revoked_certs.values()]),
        ]
        for table, table_rows in upserts:
            if table_rows:
                cur.executemany(sql.ACCESS_UPSERT[table], table_rows)
        if access.deleted_secrets:
            cur.executemany(sql.DELETE_SECRET, sorted(access.deleted_secrets))
        if access.audit:
            cur.executemany(sql.AUDIT_INSERT, [access_codec.encode_audit(a) for a in access.audit])
        if access.audit_prune_before is not None:
            cur.execute(sql.AUDIT_PRUNE, (access.audit_prune_before,))

    @staticmethod
    def _append_logs(cur: psycopg.Cursor[Any], logs: dict[str, tuple[bytes, bytes, bool]]) -> None:
        sizes = {(a, s): int(n) for a, s, n in cur.execute(sql.LOG_SIZES, (list(logs),)).fetchall()}
        inserts: list[tuple[str, int, int, bytes]] = []
        truncated_ids: list[tuple[str]] = []
        for attempt_id, (out, err, truncated) in logs.items():
            for stream, data in ((_STDOUT, out), (_STDERR, err)):
                if not data:
                    continue
                stored = sizes.get((attempt_id, stream), 0)
                kept, cut = log_codec.fit_log(data, stored)
                truncated = truncated or cut
                if kept:
                    inserts.append((attempt_id, stream, stored, kept))
            if truncated:
                truncated_ids.append((attempt_id,))
        if inserts:
            cur.executemany(sql.LOG_INSERT, inserts)
        if truncated_ids:
            cur.executemany(sql.LOG_MARK_TRUNCATED, truncated_ids)

    @staticmethod
    def _event_rows(events: Sequence[WorkflowEvent]) -> list[codec.Row]:
        """The batch's event rows; a seq out of order is refused before anything is written."""
        for before, after in itertools.pairwise(events):
            if after.seq <= before.seq:
                raise ValueError(f"event seq {after.seq} follows {before.seq}: seqs must increase")
        return event_codec.encode_event_batches(events)

    @staticmethod
    def _last_event_seq_stored(conn: psycopg.Connection[Any]) -> int:
        row = conn.execute(sql.LAST_EVENT_SEQ).fetchone()
        return int(row[0]) if row else 0

    # --- reads -------------------------------------------------------------------------------------

    def load(self, *, live_only: bool = False) -> Snapshot:
        """Every row (``live_only``: of unfinished workflows), in one REPEATABLE READ transaction."""
        select = sql.SELECT_LIVE if live_only else sql.SELECT
        # A connection of its own, not the pool's: a load is rare (boot, rebuild after a failed
        # commit) and must not wait out the pool's reconnect backoff after the database came back.
        with _reachable(), psycopg.connect(self.dsn, **self._kwargs) as conn:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            try:
                # Binary results: bytea and numbers arrive without text parsing (boot reads every row).
                cur = conn.cursor(binary=True)
                snapshot = Snapshot(
                    workflows=[codec.decode_workflow(r) for r in cur.execute(select["workflows"])],
                    tasks=[codec.decode_task(r) for r in cur.execute(select["tasks"])],
                    attempts=[codec.decode_attempt(r) for r in cur.execute(select["attempts"])],
                    agents=[codec.decode_agent(r) for r in cur.execute(sql.SELECT["agents"])],
                    meta={k: v for k, v in cur.execute(sql.SELECT_META)},
                    access=self._load_access(cur),
                    last_event_seq=self._last_event_seq_stored(conn),
                    durations=durations_codec.decode_all(cur.execute(sql.SELECT_DURATIONS)),
                    checkpoints=[Checkpoint(*row) for row in cur.execute(sql.SELECT_CHECKPOINTS)],
                    runs=[runs_codec.decode_run(r) for r in cur.execute(select["runs"])],
                    cache_entries=[cache_codec.decode_entry(r) for r in cur.execute(sql.SELECT_CACHE)],
                    schedules=[schedules_codec.decode_schedule(r) for r in cur.execute(sql.SELECT_SCHEDULES)],
                )
                if live_only:
                    snapshot.evicted_keys = [tuple(row) for row in cur.execute(live.EVICTED_KEYS)]
                for schedule in snapshot.schedules:
                    rows = cur.execute(sql.RECENT_FIRES, (schedule.id,)).fetchall()
                    snapshot.schedule_fires.extend(schedules_codec.decode_fire(r) for r in reversed(rows))
            finally:
                conn.execute("COMMIT")
        # A new leader loads before it writes: what another controller committed since counts.
        with self._write_lock:
            self._stored_event_seq = None
        return snapshot

    @staticmethod
    def _load_access(cur: psycopg.Cursor[Any]) -> AccessSnapshot:
        select = sql.ACCESS_SELECT
        return AccessSnapshot(
            namespaces=[access_codec.decode_namespace(r) for r in cur.execute(select["namespaces"])],
            tokens=[access_codec.decode_token(r) for r in cur.execute(select["tokens"])],
            secrets=[access_codec.decode_secret(r) for r in cur.execute(select["secrets"])],
            revoked_certs=[access_codec.decode_revoked(r) for r in cur.execute(select["revoked_certs"])],
        )

    def read_audit(self, since: float, principal: str = "", limit: int = 100) -> list[AuditEntry]:
        """The newest ``limit`` audit entries at or after ``since``, returned oldest first."""
        with _reachable(), self._pool.connection() as conn:
            rows = conn.execute(sql.AUDIT_READ, (since, principal, principal, limit)).fetchall()
        return [access_codec.decode_audit(r) for r in reversed(rows)]

    def workflow_events(
        self, workflow_id: str, after_seq: int = 0, limit: int = 1000, task_id: str | None = None
    ) -> list[WorkflowEvent]:
        """Event-log entries of a workflow after ``after_seq``, oldest first (pages of one index range)."""
        found: list[WorkflowEvent] = []
        if limit <= 0:
            return found
        needle = None if task_id is None else json.dumps(task_id, ensure_ascii=False)
        cursor_seq = after_seq
        with _reachable(), self._pool.connection() as conn:
            while True:
                rows = conn.execute(sql.EVENT_BATCHES_OF_WORKFLOW, (workflow_id, cursor_seq, _EVENT_PAGE)).fetchall()
                for last_seq, data in rows:
                    cursor_seq = last_seq
                    # A batch without the task's id in its text holds none of its events.
                    if needle is not None and needle not in data:
                        continue
                    for event in event_codec.decode_event_batch(workflow_id, data):
                        if event.seq > after_seq and (task_id is None or event.task_id == task_id):
                            found.append(event)
                            if len(found) == limit:
                                return found
                if len(rows) < _EVENT_PAGE:
                    return found

    def read_logs(self, attempt_id: str, stdout_offset: int = 0, stderr_offset: int = 0) -> LogChunk:
        """Output of an attempt after the given byte offsets; empty for an unknown attempt (one query)."""
        if stdout_offset < 0 or stderr_offset < 0:
            raise ValueError("log offsets must not be negative")
        with _reachable(), self._pool.connection() as conn:
            rows = conn.execute(sql.LOG_READ, (attempt_id, stdout_offset, stderr_offset)).fetchall()
        streams: dict[int, list[tuple[int, bytes]]] = {_STDOUT: [], _STDERR: []}
        truncated = False
        for stream, offset, data in rows:
            if stream == 0:
                truncated = True
            else:
                streams[stream].append((offset, data))
        return LogChunk(
            attempt_id,
            _tail(streams[_STDOUT], stdout_offset),
            _tail(streams[_STDERR], stderr_offset),
            truncated,
        )

    # --- issue 12: workflows out of memory (the lifecycle part's Store methods) ---------------

    def load_workflow(self, workflow_id: str) -> WorkflowRecord | None:
        """One stored workflow with its tasks, attempts, runs and checkpoints, or None."""
        with _reachable(), self._pool.connection() as conn:
            rows = postgres_retention.load_workflow_rows(conn, workflow_id)
        return None if rows is None else WorkflowRecord(*rows)

    def list_workflows(self, query: WorkflowQuery) -> list[Workflow]:
        """The stored workflows a ``WorkflowQuery`` selects, newest first."""
        with _reachable(), self._pool.connection() as conn:
            return postgres_retention.list_workflows(conn, query)

    def task_counts(self, workflow_ids: Sequence[str]) -> dict[str, dict[TaskState, int]]:
        """Tasks per state of each given stored workflow."""
        with _reachable(), self._pool.connection() as conn:
            return postgres_retention.task_counts(conn, workflow_ids)

    def task_attempts(self, task_id: str) -> list[Attempt]:
        """Every stored attempt of one task, by number."""
        with _reachable(), self._pool.connection() as conn:
            return postgres_retention.task_attempts(conn, task_id)

    def close(self) -> None:
        """Close the connections; further calls fail. Closing twice is harmless."""
        with self._write_lock:
            self._conn.close()
        self._pool.close()


def _tail(chunks: list[tuple[int, bytes]], offset: int) -> bytes:
    """The bytes after ``offset`` of contiguous chunks, the first of which starts at or before it."""
    if not chunks:
        return b""
    data = b"".join(chunk for _, chunk in chunks)
    return data[offset - chunks[0][0] :]
