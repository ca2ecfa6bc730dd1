"""The SQL text of the PostgreSQL store, built once from the shared column lists.

The statements mirror :mod:`corral.controller.store.sqlite` one for one (upserts are
``INSERT ... ON CONFLICT DO UPDATE``), with psycopg's ``%s`` placeholders.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from corral.controller.store import access_codec, cache_codec, codec, runs_codec, schedules_codec
from corral.controller.store.durations_codec import DURATION_COLUMNS
from corral.controller.store.live import live_select
from corral.controller.store.schedules_codec import KEEP_FIRES

__all__ = [
    "ACCESS_SELECT",
    "ACCESS_UPSERT",
    "AUDIT_INSERT",
    "AUDIT_READ",
    "FENCE",
    "SELECT",
    "UPSERT",
]


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def upsert(table: str, columns: Sequence[str], keys: Sequence[str]) -> str:
    """``INSERT ... ON CONFLICT (keys) DO UPDATE`` of every other column (nothing to update: DO NOTHING)."""
    names = ", ".join(_q(c) for c in columns)
    marks = ", ".join("%s" for _ in columns)
    updates = ", ".join(f"{_q(c)} = excluded.{_q(c)}" for c in columns if c not in keys)
    action = f"DO UPDATE SET {updates}" if updates else "DO NOTHING"
    return f"INSERT INTO {table} ({names}) VALUES ({marks}) ON CONFLICT ({', '.join(_q(k) for k in keys)}) {action}"


def _select(table: str, columns: Sequence[str], order: str) -> str:
    return f"SELECT {', '.join(_q(c) for c in columns)} FROM {table} ORDER BY {order}"


#: The fence of every write transaction when the store has an epoch (see ``PostgresStore.fence_epoch``).
FENCE: Final = "SELECT 1 FROM corral_lease WHERE name = 'leader' AND epoch = %s AND expires_at > now() FOR SHARE"

UPSERT: Final = {table: upsert(table, cols, ["id"]) for table, cols in codec.COLUMNS.items()}
# Large batches: COPY into a temporary twin of the table (emptied at every commit), then upsert from it.
STAGE: Final = {
    table: f"CREATE TEMP TABLE IF NOT EXISTS stage_{table} (LIKE {table}) ON COMMIT DELETE ROWS"
    for table in codec.COLUMNS
}
COPY_STAGE: Final = {
    table: f"COPY stage_{table} ({', '.join(_q(c) for c in cols)}) FROM STDIN" for table, cols in codec.COLUMNS.items()
}
UPSERT_STAGED: Final = {
    table: f"INSERT INTO {table} ({', '.join(_q(c) for c in cols)}) SELECT {', '.join(_q(c) for c in cols)} "
    f"FROM stage_{table} ON CONFLICT (id) DO UPDATE SET " + ", ".join(f"{_q(c)} = excluded.{_q(c)}" for c in cols[1:])
    for table, cols in codec.COLUMNS.items()
}
SELECT: Final = {
    "workflows": _select("workflows", codec.COLUMNS["workflows"], "id"),
    "tasks": _select("tasks", codec.COLUMNS["tasks"], 'workflow_id, "index"'),
    "attempts": _select("attempts", codec.COLUMNS["attempts"], "task_id, number, id"),
    "agents": _select("agents", codec.COLUMNS["agents"], "id"),
}
UPSERT_META: Final = upsert("meta", ["key", "value"], ["key"])
SELECT_META: Final = "SELECT key, value FROM meta"
DELETE_AGENT: Final = "DELETE FROM agents WHERE id = %s"

_ACCESS_KEYS: Final = {
    "namespaces": ["name"],
    "tokens": ["id"],
    "secrets": ["namespace", "name"],
    "revoked_certs": ["name"],
}
ACCESS_UPSERT: Final = {
    table: upsert(table, access_codec.ACCESS_COLUMNS[table], keys) for table, keys in _ACCESS_KEYS.items()
}
ACCESS_SELECT: Final = {
    table: _select(table, access_codec.ACCESS_COLUMNS[table], ", ".join(_q(k) for k in keys))
    for table, keys in _ACCESS_KEYS.items()
}
DELETE_SECRET: Final = "DELETE FROM secrets WHERE namespace = %s AND name = %s"
AUDIT_INSERT: Final = (
    "INSERT INTO audit (at, principal, role, method, target, namespace, code, detail) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
)
AUDIT_READ: Final = (
    "SELECT seq, at, principal, role, method, target, namespace, code, detail FROM audit "
    "WHERE at >= %s AND (%s = '' OR principal = %s) ORDER BY seq DESC LIMIT %s"
)
AUDIT_PRUNE: Final = "DELETE FROM audit WHERE at < %s"

UPSERT_DURATIONS: Final = upsert("durations", DURATION_COLUMNS, ["kind", "namespace", "workflow"])
DELETE_DURATIONS: Final = "DELETE FROM durations WHERE kind = %s AND namespace = %s AND workflow = %s"
SELECT_DURATIONS: Final = _select("durations", DURATION_COLUMNS, "kind, namespace, workflow")

_CHECKPOINT_COLUMNS: Final = ("task_id", "workflow_id", "attempt_id", "at", "data")
UPSERT_CHECKPOINT: Final = upsert("checkpoints", _CHECKPOINT_COLUMNS, ["task_id"])
DELETE_CHECKPOINT: Final = "DELETE FROM checkpoints WHERE task_id = %s"
SELECT_CHECKPOINTS: Final = _select("checkpoints", _CHECKPOINT_COLUMNS, "task_id")

UPSERT_RUN: Final = upsert("runs", runs_codec.RUN_COLUMNS, ["workflow_id", "number"])
SELECT_RUNS: Final = _select("runs", runs_codec.RUN_COLUMNS, "workflow_id, number")
SELECT["runs"] = SELECT_RUNS
#: The same, restricted to unfinished workflows' rows (a live load: see store.live).
SELECT_LIVE: Final = {table: live_select(q, table) if table != "agents" else q for table, q in SELECT.items()}

UPSERT_CACHE: Final = upsert("cache_entries", cache_codec.CACHE_COLUMNS, ["key"])
DELETE_CACHE: Final = "DELETE FROM cache_entries WHERE key = %s"
SELECT_CACHE: Final = _select("cache_entries", cache_codec.CACHE_COLUMNS, "key")

UPSERT_SCHEDULE: Final = upsert("schedules", schedules_codec.SCHEDULE_COLUMNS, ["id"])
DELETE_SCHEDULE: Final = "DELETE FROM schedules WHERE id = %s"
DELETE_FIRES: Final = "DELETE FROM schedule_fires WHERE schedule_id = %s"
SELECT_SCHEDULES: Final = _select("schedules", schedules_codec.SCHEDULE_COLUMNS, "id")
# A plain INSERT: a second row for one (schedule, nominal) violates the key and fails the commit.
INSERT_FIRE: Final = (
    f"INSERT INTO schedule_fires ({', '.join(schedules_codec.FIRE_COLUMNS)}) "
    f"VALUES ({', '.join('%s' for _ in schedules_codec.FIRE_COLUMNS)})"
)
# Keep the newest KEEP_FIRES of a schedule (with fewer, the subquery is NULL and nothing goes).
PRUNE_FIRES: Final = (
    "DELETE FROM schedule_fires WHERE schedule_id = %(id)s AND nominal < "
    "(SELECT nominal FROM schedule_fires WHERE schedule_id = %(id)s ORDER BY nominal DESC LIMIT 1 "
    f"OFFSET {KEEP_FIRES - 1})"
)
RECENT_FIRES: Final = (
    f"SELECT {', '.join(schedules_codec.FIRE_COLUMNS)} FROM schedule_fires WHERE schedule_id = %s "
    "ORDER BY nominal DESC LIMIT 20"
)

EVENT_BATCH_INSERT: Final = "INSERT INTO event_batches (last_seq, workflow_id, first_seq, data) VALUES (%s, %s, %s, %s)"
# A page of the batches holding a seq above ``after``: a range of the (workflow_id, last_seq) index.
EVENT_BATCHES_OF_WORKFLOW: Final = (
    "SELECT last_seq, data FROM event_batches WHERE workflow_id = %s AND last_seq > %s ORDER BY last_seq LIMIT %s"
)
LAST_EVENT_SEQ: Final = "SELECT COALESCE(MAX(last_seq), 0) FROM event_batches"

# The stored size of every stream of a commit's attempts, in one query (chunks are contiguous).
LOG_SIZES: Final = (
    'SELECT attempt_id, stream, MAX("offset" + length(data)) FROM logs '
    "WHERE attempt_id = ANY(%s) AND stream > 0 GROUP BY attempt_id, stream"
)
LOG_INSERT: Final = 'INSERT INTO logs (attempt_id, stream, "offset", data) VALUES (%s, %s, %s, %s)'
LOG_MARK_TRUNCATED: Final = (
    "INSERT INTO logs (attempt_id, stream, \"offset\", data) VALUES (%s, 0, 0, ''::bytea) ON CONFLICT DO NOTHING"
)
LOG_READ: Final = (
    'SELECT stream, "offset", data FROM logs WHERE attempt_id = %s AND '
    '((stream = 1 AND "offset" + length(data) > %s) OR (stream = 2 AND "offset" + length(data) > %s) OR stream = 0) '
    'ORDER BY stream, "offset"'
)
