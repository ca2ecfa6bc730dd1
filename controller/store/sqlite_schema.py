"""The SQLite schema: versioned migrations, applied in order by :class:`~corral.controller.store.sqlite.SqliteStore`.

``PRAGMA user_version`` records how many ran. To change the schema, append a function to
:data:`MIGRATIONS` (never edit a released one) and update :data:`corral.controller.store.codec.COLUMNS`
to match.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    # Imported by the store only when a migration runs: an up-to-date file (every restart) never
    # loads sqlite-utils and what only it pulls in (pluggy, its plugins: 1.7 MiB of a booted
    # controller's RSS, measured; see docs/DECISIONS.md, twelfth wave).
    import sqlite_utils

__all__ = ["MIGRATIONS", "Migration", "SchemaVersionError", "quote_name"]

Migration = Callable[["sqlite_utils.Database"], None]


def quote_name(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class SchemaVersionError(RuntimeError):
    """The database was written by a newer corral whose schema this version does not know."""


def _migration_1(db: sqlite_utils.Database) -> None:
    """The initial schema."""
    db.create_table(
        "workflows",
        {
            "id": str,
            "name": str,
            "task_ids": str,  # JSON array
            "state": str,
            "metadata": bytes,  # JSON
            "labels": str,  # JSON object
            "idempotency_key": str,
            "standalone": int,
            "created_at": float,
            "started_at": float,
            "finished_at": float,
            "error": str,
        },
        pk="id",
        not_null=["name", "task_ids", "state", "metadata", "labels", "standalone", "created_at", "error"],
        strict=True,
    )
    db.create_table(
        "tasks",
        {
            "id": str,
            "workflow_id": str,
            "name": str,
            "index": int,
            "agent_type": str,
            "payload": bytes,  # JSON
            "type": str,
            "resources": str,  # JSON object
            "priority": int,
            "timeout_s": float,
            "max_retries": int,
            "retry_backoff_s": float,
            "dependencies": str,  # JSON array of task ids
            "constraints": str,  # JSON object
            "estimated_duration_s": float,
            "state": str,
            "retries_used": int,
            "attempts": int,
            "current_attempt_id": str,
            "agent_id": str,
            "result": bytes,  # JSON
            "error": str,
            "exit_code": int,
            "created_at": float,
            "ready_at": float,
            "not_before": float,
            "started_at": float,
            "finished_at": float,
        },
        pk="id",
        not_null=[
            "workflow_id",
            "name",
            "index",
            "agent_type",
            "payload",
            "type",
            "resources",
            "priority",
            "max_retries",
            "retry_backoff_s",
            "dependencies",
            "constraints",
            "estimated_duration_s",
            "state",
            "retries_used",
            "attempts",
            "error",
            "created_at",
        ],
        strict=True,
    )
    db.table("tasks").create_index(["workflow_id", "index"], index_name="tasks_by_workflow")
    db.create_table(
        "attempts",
        {
            "id": str,
            "task_id": str,
            "workflow_id": str,
            "agent_id": str,
            "number": int,
            "state": str,
            "resources": str,  # JSON object
            "gpu_ids": str,  # JSON array
            "pulled": int,
            "assigned_at": float,
            "started_at": float,
            "finished_at": float,
            "deadline": float,
            "exit_code": int,
            "error": str,
        },
        pk="id",
        not_null=[
            "task_id",
            "workflow_id",
            "agent_id",
            "number",
            "state",
            "resources",
            "gpu_ids",
            "pulled",
            "assigned_at",
            "error",
        ],
        strict=True,
    )
    db.table("attempts").create_index(["task_id", "number"], index_name="attempts_by_task")
    db.create_table(
        "agents",
        {
            "id": str,
            "name": str,
            "hostname": str,
            "agent_types": str,  # JSON array
            "labels": str,  # JSON object
            "inventory": str,  # JSON object
            "state": str,
            "session_epoch": int,
            "connected_at": float,
            "last_seen": float,
            "version": str,
        },
        pk="id",
        not_null=[
            "name",
            "hostname",
            "agent_types",
            "labels",
            "inventory",
            "state",
            "session_epoch",
            "connected_at",
            "last_seen",
            "version",
        ],
        strict=True,
    )
    # Captured output as append-only chunks: appending never rewrites what is already stored.
    db.create_table(
        "logs",
        {"attempt_id": str, "stream": int, "offset": int, "data": bytes},
        pk=("attempt_id", "stream", "offset"),
        not_null=["data"],
        strict=True,
    )
    db.create_table("meta", {"key": str, "value": str}, pk="key", not_null=["value"], strict=True)


def _migration_2(db: sqlite_utils.Database) -> None:
    """Trust on the wire: namespaces of workflows and tasks, tokens, secrets, revoked certificates, audit."""
    db.table("workflows").add_column("namespace", str, not_null_default="default")
    db.table("tasks").add_column("namespace", str, not_null_default="default")
    db.create_table(
        "namespaces",
        {"name": str, "description": str, "created_at": float},
        pk="name",
        not_null=["description", "created_at"],
        strict=True,
    )
    db.create_table(
        "tokens",
        {
            "id": str,
            "hash": str,  # hex SHA-256 of the token: the token itself is never stored
            "kind": str,
            "role": str,
            "namespaces": str,  # JSON array
            "description": str,
            "created_at": float,
            "expires_at": float,
            "revoked_at": float,
            "created_by": str,
            "name_pattern": str,
            "uses": int,
            "used": int,
            "labels": str,  # JSON object
            "agent_types": str,  # JSON array
            "agent_name": str,
            "parent": str,
        },
        pk="id",
        not_null=[
            "hash",
            "kind",
            "role",
            "namespaces",
            "description",
            "created_at",
            "created_by",
            "name_pattern",
            "uses",
            "used",
            "labels",
            "agent_types",
            "agent_name",
            "parent",
        ],
        strict=True,
    )
    db.table("tokens").create_index(["hash"], index_name="tokens_by_hash", unique=True)
    db.create_table(
        "secrets",
        {"namespace": str, "name": str, "ciphertext": bytes, "updated_at": float},
        pk=("namespace", "name"),
        not_null=["ciphertext", "updated_at"],
        strict=True,
    )
    db.create_table(
        "revoked_certs",
        {"name": str, "reason": str, "revoked_at": float},
        pk="name",
        not_null=["reason", "revoked_at"],
        strict=True,
    )
    db.execute(
        "CREATE TABLE audit (seq INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, principal TEXT NOT NULL, "
        "role TEXT NOT NULL, method TEXT NOT NULL, target TEXT NOT NULL, namespace TEXT NOT NULL, "
        "code TEXT NOT NULL, detail TEXT NOT NULL)"
    )
    db.table("audit").create_index(["at"], index_name="audit_by_time")


def _migration_3(db: sqlite_utils.Database) -> None:
    """Issue 8: disconnect policy, poison and fence counts on tasks, agent incarnations, the event log."""
    db.table("workflows").add_column("max_agent_losses", int)
    tasks = db.table("tasks")
    tasks.add_column("on_disconnect", str, not_null_default="stop")
    tasks.add_column("max_disconnect_s", float)
    tasks.add_column("max_agent_losses", int)
    tasks.add_column("agent_losses", int, not_null_default=0)
    tasks.add_column("reruns_after_fence", int, not_null_default=0)
    tasks.add_column("failure_reason", str, not_null_default="")
    db.table("agents").add_column("incarnation", str, not_null_default="")
    # seq is global and increasing (the controller's event counter); readers page through one
    # workflow by (workflow_id, seq), so that is the clustered key: one B-tree insert per row (a
    # rowid table plus an index would be two, on the hot path of every task).
    db.execute(
        "CREATE TABLE events (workflow_id TEXT NOT NULL, seq INTEGER NOT NULL, at REAL NOT NULL, "
        "workflow_state TEXT NOT NULL, task_id TEXT NOT NULL, task_name TEXT NOT NULL, task_state TEXT, "
        "attempt_id TEXT NOT NULL, agent_id TEXT NOT NULL, kind TEXT NOT NULL, reason TEXT NOT NULL, "
        "message TEXT NOT NULL, PRIMARY KEY (workflow_id, seq)) STRICT, WITHOUT ROWID"
    )


def _migration_4(db: sqlite_utils.Database) -> None:
    """The event log in batches: one row per workflow per commit instead of one per event.

    A row per event cost a B-tree insert per placement, start and finish, 15% of a no-op task's
    throughput. ``last_seq`` (global and increasing, so unique) is the rowid: appends, and the
    highest seq stored is one lookup. Readers page a workflow through ``(workflow_id, last_seq)``.
    """
    # Imported here: the codec imports the model, which this module must not need at import time.
    from corral.controller.store import event_codec

    db.execute(
        "CREATE TABLE event_batches (last_seq INTEGER PRIMARY KEY, workflow_id TEXT NOT NULL, "
        "first_seq INTEGER NOT NULL, data TEXT NOT NULL) STRICT"
    )
    db.execute("CREATE INDEX event_batches_of_workflow ON event_batches (workflow_id, last_seq)")
    conn = db.conn
    workflow_ids = [row[0] for row in conn.execute("SELECT DISTINCT workflow_id FROM events")]
    for workflow_id in workflow_ids:
        rows = conn.execute(
            f"SELECT {', '.join(event_codec.EVENT_COLUMNS)} FROM events WHERE workflow_id = ? ORDER BY seq",
            (workflow_id,),
        ).fetchall()
        events = [event_codec.decode_event(row) for row in rows]
        conn.executemany(
            "INSERT INTO event_batches (last_seq, workflow_id, first_seq, data) VALUES (?, ?, ?, ?)",
            event_codec.encode_event_batches(events),
        )
    db.execute("DROP TABLE events")


def _migration_5_placement_preferences(db: sqlite_utils.Database) -> None:
    """Issue 9: label expressions, spread and affinity on tasks (JSON array / label / JSON object)."""
    tasks = db.table("tasks")
    tasks.add_column("constraint_exprs", str, not_null_default="[]")
    tasks.add_column("spread", str, not_null_default="")
    tasks.add_column("affinity", str, not_null_default="{}")


def _migration_7_attempt_usage(db: sqlite_utils.Database) -> None:
    """Issue 9: the usage each attempt's agent measured (peak RSS bytes, CPU seconds; 0: not measured)."""
    attempts = db.table("attempts")
    attempts.add_column("peak_rss_bytes", int, not_null_default=0)
    attempts.add_column("cpu_s", float, not_null_default=0.0)


def _migration_10_preemption(db: sqlite_utils.Database) -> None:
    """Issue 9: preemptible tasks, their cap, how often they were preempted and the last reason."""
    tasks = db.table("tasks")
    tasks.add_column("preemptible", int, not_null_default=0)
    tasks.add_column("max_preemptions", int)
    tasks.add_column("preemptions", int, not_null_default=0)
    tasks.add_column("last_preemption", str, not_null_default="")


def _migration_6_learned_durations(db: sqlite_utils.Database) -> None:
    """Issue 9: learned task durations (EWMA per task of a workflow name, and per payload fingerprint).

    One row per group (a workflow name's tasks, or a namespace's fingerprints) holding its entries
    as JSON: learning a 20k-task workflow is one row write. Bounded by the controller's
    ``max_learned_durations`` (a group emptied by eviction is deleted in the same commit).
    """
    db.execute(
        "CREATE TABLE durations (kind TEXT NOT NULL, namespace TEXT NOT NULL, workflow TEXT NOT NULL, "
        "data TEXT NOT NULL, updated_at REAL NOT NULL, PRIMARY KEY (kind, namespace, workflow)) STRICT"
    )


def _migration_11_gangs(db: sqlite_utils.Database) -> None:
    """Issue 9: a task's gang (placed all at once with the rest) and a workflow's max_parallel."""
    db.table("tasks").add_column("gang", str, not_null_default="")
    db.table("workflows").add_column("max_parallel", int)


def _migration_8_namespace_fair_share(db: sqlite_utils.Database) -> None:
    """Issue 9: each namespace's fair-share weight and quotas on running work (0: no limit)."""
    namespaces = db.table("namespaces")
    namespaces.add_column("weight", float, not_null_default=1.0)
    namespaces.add_column("max_cpu", float, not_null_default=0.0)
    namespaces.add_column("max_memory_mb", int, not_null_default=0)
    namespaces.add_column("max_gpu", int, not_null_default=0)
    namespaces.add_column("max_running", int, not_null_default=0)


def _migration_14_fallbacks(db: sqlite_utils.Database) -> None:
    """Issue 10: a task's fallback / allow_failure / min_success / approval rules and whether its
    fallback replaced the payload, as one JSON text (NULL for the tasks without any: nearly all)."""
    db.table("tasks").add_column("rules", str)
    # Cascade prevention: a cordoned agent takes no new work until then, and why.
    db.table("agents").add_column("cordoned_until", float)
    db.table("agents").add_column("cordon_reason", str, not_null_default="")


#: Every schema version so far, oldest first; ``PRAGMA user_version`` is the count applied.
def _migration_9_deadlines(db: sqlite_utils.Database) -> None:
    """Issue 9: deadlines (absolute epoch seconds) of workflows and tasks, the policy and verdict at submit."""
    workflows = db.table("workflows")
    workflows.add_column("deadline", float)
    workflows.add_column("deadline_policy", str, not_null_default="warn")
    workflows.add_column("deadline_verdict", str, not_null_default="")
    db.table("tasks").add_column("deadline", float)


def _migration_12_checkpoints(db: sqlite_utils.Database) -> None:
    """Issue 10: each task's last checkpoint (JSON as saved by its attempt), kept until it completes;
    a task's part in dynamic tasks (spawned by, map, "X/*" fan-in: JSON, "" for most tasks)."""
    db.execute(
        "CREATE TABLE checkpoints (task_id TEXT PRIMARY KEY, workflow_id TEXT NOT NULL, "
        "attempt_id TEXT NOT NULL, at REAL NOT NULL, data BLOB NOT NULL) STRICT"
    )
    db.table("tasks").add_column("dynamic", str, not_null_default="")


def _migration_13_runs(db: sqlite_utils.Database) -> None:
    """Issue 10: numbered runs (retry, rerun), a workflow's on_failure, the run of each attempt, and
    sagas: a task's compensation spec, a compensation record's task, a workflow's compensation target."""
    db.execute(
        "CREATE TABLE runs (workflow_id TEXT NOT NULL, number INTEGER NOT NULL, kind TEXT NOT NULL, "
        "from_task TEXT NOT NULL, fresh INTEGER NOT NULL, started_at REAL, finished_at REAL, "
        "state TEXT NOT NULL, error TEXT NOT NULL, PRIMARY KEY (workflow_id, number)) STRICT"
    )
    workflows = db.table("workflows")
    workflows.add_column("on_failure", str, not_null_default="fail")
    workflows.add_column("run", int, not_null_default=1)
    workflows.add_column("compensation", str, not_null_default="")
    tasks = db.table("tasks")
    tasks.add_column("compensate", bytes, not_null_default=b"")
    tasks.add_column("compensates", str, not_null_default="")
    db.table("attempts").add_column("run", int, not_null_default=1)


def _migration_15_cache(db: sqlite_utils.Database) -> None:
    """Issue 10: the task result cache, tasks' cache policies and sources, workflows' parameters.

    ``cache_entries`` is bounded by the controller's ``--cache-max-entries``/``--cache-max-bytes``
    (evictions are deletes in the same commit); each entry holds its own copy of the result.
    """
    db.execute(
        "CREATE TABLE cache_entries (key TEXT PRIMARY KEY, namespace TEXT NOT NULL, result BLOB NOT NULL, "
        "source TEXT NOT NULL, created_at REAL NOT NULL, expires_at REAL, last_used REAL NOT NULL) STRICT"
    )
    tasks = db.table("tasks")
    tasks.add_column("cache", str, not_null_default="")
    tasks.add_column("cache_source", str, not_null_default="")
    db.execute("ALTER TABLE workflows ADD COLUMN params BLOB NOT NULL DEFAULT X'7B7D'")  # b"{}"
    db.table("workflows").add_column("no_cache", int, not_null_default=0)


def _migration_16_schedules(db: sqlite_utils.Database) -> None:
    """Issue 10: delayed starts, cron schedules, and their fires (unique per nominal time).

    A fire row is inserted in the commit that creates its workflow; its primary key makes a
    second fire of one nominal time fail that commit whole.
    """
    db.table("workflows").add_column("scheduled_at", float)
    db.execute(
        "CREATE TABLE schedules (id TEXT PRIMARY KEY, name TEXT NOT NULL, namespace TEXT NOT NULL, "
        "cron TEXT NOT NULL, timezone TEXT NOT NULL, spec BLOB NOT NULL, overlap TEXT NOT NULL, "
        "catchup INTEGER NOT NULL, paused INTEGER NOT NULL, created_at REAL NOT NULL, last_nominal REAL, "
        "last_workflow_id TEXT NOT NULL, fired INTEGER NOT NULL, skipped INTEGER NOT NULL, "
        "missed INTEGER NOT NULL) STRICT"
    )
    db.execute(
        "CREATE TABLE schedule_fires (schedule_id TEXT NOT NULL, nominal REAL NOT NULL, fired_at REAL NOT NULL, "
        "workflow_id TEXT NOT NULL, late INTEGER NOT NULL, outcome TEXT NOT NULL, error TEXT NOT NULL, "
        "PRIMARY KEY (schedule_id, nominal)) STRICT"
    )


def _migration_17_fleet(db: sqlite_utils.Database) -> None:
    """Issue 11: who cordoned an agent by hand ("" for the automatic cordon or none)."""
    db.table("agents").add_column("cordoned_by", str, not_null_default="")


def _migration_18_retention(db: sqlite_utils.Database) -> None:
    """Issue 12: indexes for retention and for reading one evicted workflow.

    Finished workflows are found by ``finished_at``; a workflow's attempts and checkpoints by
    ``workflow_id`` (its tasks and event batches already have such an index); listings page by
    ``created_at``. ``auto_vacuum`` cannot change inside this transaction: a new file gets
    INCREMENTAL before its first table (:class:`SqliteStore`), an existing one keeps its mode.
    """
    db.execute("CREATE INDEX IF NOT EXISTS workflows_by_finish ON workflows (finished_at)")
    db.execute("CREATE INDEX IF NOT EXISTS workflows_by_created ON workflows (created_at)")
    db.execute("CREATE INDEX IF NOT EXISTS attempts_by_workflow ON attempts (workflow_id)")
    db.execute("CREATE INDEX IF NOT EXISTS checkpoints_by_workflow ON checkpoints (workflow_id)")
    db.table("namespaces").add_column("retain_s", float)  # a namespace's own retention (NULL: --retain)


MIGRATIONS: Final[tuple[Migration, ...]] = (
    _migration_1,
    _migration_2,
    _migration_3,
    _migration_4,
    _migration_5_placement_preferences,
    _migration_6_learned_durations,
    _migration_7_attempt_usage,
    _migration_8_namespace_fair_share,
    _migration_9_deadlines,
    _migration_10_preemption,
    _migration_11_gangs,
    _migration_12_checkpoints,
    _migration_13_runs,
    _migration_14_fallbacks,
    _migration_15_cache,
    _migration_16_schedules,
    _migration_17_fleet,
    _migration_18_retention,
)
