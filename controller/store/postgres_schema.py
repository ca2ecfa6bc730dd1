"""The PostgreSQL schema: versioned migrations, applied in order by ``postgres.PostgresStore``.

The list is the PostgreSQL store's own, starting at 1 (it does not replay SQLite's history:
migration 1 is SQLite's schema version 17 in one step, plus the leader lease). The one row of
``corral_schema_version`` records how many ran. To change the schema, append a function to
:data:`MIGRATIONS` (never edit a released one), and the matching SQLite migration.

Types mirror SQLite's STRICT columns: ``text`` for TEXT (JSON stays text, so a row's bytes come
back exactly as the shared codec wrote them), ``bytea`` for BLOB, ``bigint`` for INTEGER and
``double precision`` for REAL. Text columns use the "C" collation: ``ORDER BY id`` sorts by
code point as SQLite does, whatever locale the cluster was created with.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import psycopg

__all__ = ["MIGRATIONS", "SCHEMA_LOCK", "VERSION_TABLE", "PgMigration"]

PgMigration = Callable[[psycopg.Connection[Any]], None]

#: The table holding the schema version (one row).
VERSION_TABLE: Final = "corral_schema_version"
#: ``pg_advisory_xact_lock`` key taken while migrating, so two controllers booting at once on one
#: old database cannot both run a migration ("corral" in ASCII).
SCHEMA_LOCK: Final = 0x636F7272616C

_T: Final = 'text COLLATE "C" NOT NULL'
_TN: Final = 'text COLLATE "C"'  # nullable
_I: Final = "bigint NOT NULL"
_F: Final = "double precision NOT NULL"
_B: Final = "bytea NOT NULL"


def _table(name: str, columns: list[tuple[str, str]], key: str) -> str:
    body = ", ".join(f'"{column}" {kind}' for column, kind in columns)
    return f"CREATE TABLE {name} ({body}, PRIMARY KEY ({key}))"


_WORKFLOWS: Final = [
    ("id", _T),
    ("name", _T),
    ("task_ids", _T),  # JSON array
    ("state", _T),
    ("metadata", _B),  # JSON
    ("labels", _T),  # JSON object
    ("idempotency_key", _TN),
    ("standalone", _I),
    ("created_at", _F),
    ("started_at", "double precision"),
    ("finished_at", "double precision"),
    ("error", _T),
    ("namespace", _T),
    ("max_agent_losses", "bigint"),
    ("deadline", "double precision"),
    ("deadline_policy", _T),
    ("deadline_verdict", _T),
    ("max_parallel", "bigint"),
    ("on_failure", _T),
    ("run", _I),
    ("compensation", _T),
    ("params", _B),
    ("no_cache", _I),
    ("scheduled_at", "double precision"),
]
_TASKS: Final = [
    ("id", _T),
    ("workflow_id", _T),
    ("name", _T),
    ("index", _I),
    ("agent_type", _T),
    ("payload", _B),
    ("type", _T),
    ("resources", _T),
    ("priority", _I),
    ("timeout_s", "double precision"),
    ("max_retries", _I),
    ("retry_backoff_s", _F),
    ("dependencies", _T),
    ("constraints", _T),
    ("estimated_duration_s", _F),
    ("state", _T),
    ("retries_used", _I),
    ("attempts", _I),
    ("current_attempt_id", _TN),
    ("agent_id", _TN),
    ("result", "bytea"),
    ("error", _T),
    ("exit_code", "bigint"),
    ("created_at", _F),
    ("ready_at", "double precision"),
    ("not_before", "double precision"),
    ("started_at", "double precision"),
    ("finished_at", "double precision"),
    ("namespace", _T),
    ("on_disconnect", _T),
    ("max_disconnect_s", "double precision"),
    ("max_agent_losses", "bigint"),
    ("agent_losses", _I),
    ("reruns_after_fence", _I),
    ("failure_reason", _T),
    ("constraint_exprs", _T),
    ("spread", _T),
    ("affinity", _T),
    ("deadline", "double precision"),
    ("preemptible", _I),
    ("max_preemptions", "bigint"),
    ("preemptions", _I),
    ("last_preemption", _T),
    ("gang", _T),
    ("dynamic", _T),
    ("compensate", _B),
    ("compensates", _T),
    ("rules", _TN),
    ("cache", _T),
    ("cache_source", _T),
]
_ATTEMPTS: Final = [
    ("id", _T),
    ("task_id", _T),
    ("workflow_id", _T),
    ("agent_id", _T),
    ("number", _I),
    ("state", _T),
    ("resources", _T),
    ("gpu_ids", _T),
    ("pulled", _I),
    ("assigned_at", _F),
    ("started_at", "double precision"),
    ("finished_at", "double precision"),
    ("deadline", "double precision"),
    ("exit_code", "bigint"),
    ("error", _T),
    ("peak_rss_bytes", _I),
    ("cpu_s", _F),
    ("run", _I),
]
_AGENTS: Final = [
    ("id", _T),
    ("name", _T),
    ("hostname", _T),
    ("agent_types", _T),
    ("labels", _T),
    ("inventory", _T),
    ("state", _T),
    ("session_epoch", _I),
    ("connected_at", _F),
    ("last_seen", _F),
    ("version", _T),
    ("incarnation", _T),
    ("cordoned_until", "double precision"),
    ("cordon_reason", _T),
    ("cordoned_by", _T),
]
_TOKENS: Final = [
    ("id", _T),
    ("hash", _T),  # hex SHA-256 of the token: the token itself is never stored
    ("kind", _T),
    ("role", _T),
    ("namespaces", _T),
    ("description", _T),
    ("created_at", _F),
    ("expires_at", "double precision"),
    ("revoked_at", "double precision"),
    ("created_by", _T),
    ("name_pattern", _T),
    ("uses", _I),
    ("used", _I),
    ("labels", _T),
    ("agent_types", _T),
    ("agent_name", _T),
    ("parent", _T),
]

#: The whole schema of migration 1, one statement each.
_SCHEMA_1: Final = (
    _table("workflows", _WORKFLOWS, "id"),
    _table("tasks", _TASKS, "id"),
    'CREATE INDEX tasks_by_workflow ON tasks (workflow_id, "index")',
    _table("attempts", _ATTEMPTS, "id"),
    "CREATE INDEX attempts_by_task ON attempts (task_id, number)",
    _table("agents", _AGENTS, "id"),
    # Captured output as append-only chunks; stream 0 (empty data) marks the output truncated.
    _table("logs", [("attempt_id", _T), ("stream", _I), ("offset", _I), ("data", _B)], 'attempt_id, stream, "offset"'),
    _table("meta", [("key", _T), ("value", _T)], "key"),
    _table(
        "namespaces",
        [
            ("name", _T),
            ("description", _T),
            ("created_at", _F),
            ("weight", _F),
            ("max_cpu", _F),
            ("max_memory_mb", _I),
            ("max_gpu", _I),
            ("max_running", _I),
        ],
        "name",
    ),
    _table("tokens", _TOKENS, "id"),
    "CREATE UNIQUE INDEX tokens_by_hash ON tokens (hash)",
    _table("secrets", [("namespace", _T), ("name", _T), ("ciphertext", _B), ("updated_at", _F)], "namespace, name"),
    _table("revoked_certs", [("name", _T), ("reason", _T), ("revoked_at", _F)], "name"),
    # seq from an identity: never reused, as SQLite's AUTOINCREMENT.
    "CREATE TABLE audit (seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, at double precision NOT NULL, "
    f"principal {_T}, role {_T}, method {_T}, target {_T}, namespace {_T}, code {_T}, detail {_T})",
    "CREATE INDEX audit_by_time ON audit (at)",
    # The event log in batches: one row per workflow per commit (see SQLite migration 4).
    f"CREATE TABLE event_batches (last_seq bigint PRIMARY KEY, workflow_id {_T}, first_seq {_I}, data {_T})",
    "CREATE INDEX event_batches_of_workflow ON event_batches (workflow_id, last_seq)",
    _table(
        "durations",
        [("kind", _T), ("namespace", _T), ("workflow", _T), ("data", _T), ("updated_at", _F)],
        "kind, namespace, workflow",
    ),
    _table(
        "checkpoints",
        [("task_id", _T), ("workflow_id", _T), ("attempt_id", _T), ("at", _F), ("data", _B)],
        "task_id",
    ),
    _table(
        "runs",
        [
            ("workflow_id", _T),
            ("number", _I),
            ("kind", _T),
            ("from_task", _T),
            ("fresh", _I),
            ("started_at", "double precision"),
            ("finished_at", "double precision"),
            ("state", _T),
            ("error", _T),
        ],
        "workflow_id, number",
    ),
    _table(
        "cache_entries",
        [
            ("key", _T),
            ("namespace", _T),
            ("result", _B),
            ("source", _T),
            ("created_at", _F),
            ("expires_at", "double precision"),
            ("last_used", _F),
        ],
        "key",
    ),
    _table(
        "schedules",
        [
            ("id", _T),
            ("name", _T),
            ("namespace", _T),
            ("cron", _T),
            ("timezone", _T),
            ("spec", _B),
            ("overlap", _T),
            ("catchup", _I),
            ("paused", _I),
            ("created_at", _F),
            ("last_nominal", "double precision"),
            ("last_workflow_id", _T),
            ("fired", _I),
            ("skipped", _I),
            ("missed", _I),
        ],
        "id",
    ),
    _table(
        "schedule_fires",
        [
            ("schedule_id", _T),
            ("nominal", _F),
            ("fired_at", _F),
            ("workflow_id", _T),
            ("late", _I),
            ("outcome", _T),
            ("error", _T),
        ],
        "schedule_id, nominal",
    ),
    # Leadership (issue 12): one row, 'leader'. Its expiry is on the DATABASE's clock, so no
    # controller's clock decides who leads; every fenced write locks it FOR SHARE at its epoch.
    """CREATE TABLE IF NOT EXISTS corral_lease (
    name text PRIMARY KEY,            -- 'leader'
    epoch bigint NOT NULL,
    holder text NOT NULL,             -- the controller instance id
    address text NOT NULL,            -- its advertised gRPC address (host:port)
    expires_at timestamptz NOT NULL   -- on the DATABASE's clock (now())
  )""",
)


def _migration_1(conn: psycopg.Connection[Any]) -> None:
    """The schema of SQLite version 17 (issues 1 to 11) and the leader lease (issue 12)."""
    conn.execute(";\n".join(_SCHEMA_1))  # one round trip (no parameters: a multi-statement query is allowed)


def _migration_2_retention(conn: psycopg.Connection[Any]) -> None:
    """Issue 12 (as SQLite's 18): indexes for retention and for reading one evicted workflow, and
    a namespace's own retention (NULL: the controller's ``--retain``). Deleted rows are reclaimed
    by PostgreSQL's autovacuum: no vacuum of our own."""
    conn.execute(
        "CREATE INDEX IF NOT EXISTS workflows_by_finish ON workflows (finished_at);\n"
        "CREATE INDEX IF NOT EXISTS workflows_by_created ON workflows (created_at);\n"
        "CREATE INDEX IF NOT EXISTS attempts_by_workflow ON attempts (workflow_id);\n"
        "CREATE INDEX IF NOT EXISTS checkpoints_by_workflow ON checkpoints (workflow_id);\n"
        "ALTER TABLE namespaces ADD COLUMN IF NOT EXISTS retain_s double precision"
    )


#: Every schema version so far, oldest first; ``corral_schema_version.version`` is the count applied.
MIGRATIONS: Final[tuple[PgMigration, ...]] = (_migration_1, _migration_2_retention)
