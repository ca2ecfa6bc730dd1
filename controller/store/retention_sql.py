"""SQL of issue 12 for the SQLite store: one workflow's rows, listings of stored workflows, and the
deletion of forgotten workflows with everything that belongs to them.

Kept out of :mod:`sqlite` so that module stays one job (the commit path); both take the same
connection discipline: reads on the reader connection, deletes inside the writer's transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any, Final

from corral.controller.core.checkpoints import Checkpoint
from corral.controller.core.model import Attempt, TaskState, Workflow, WorkflowState
from corral.controller.store import codec, runs_codec
from corral.controller.store.base import WorkflowQuery, WorkflowRecord
from corral.controller.store.sqlite_schema import quote_name

__all__ = ["delete_workflows", "list_workflows", "load_workflow", "task_counts"]

_TERMINAL: Final = tuple(str(s) for s in WorkflowState if s.terminal)


def _columns(table: str) -> str:
    return ", ".join(quote_name(c) for c in codec.COLUMNS[table])


_WORKFLOW: Final = f"SELECT {_columns('workflows')} FROM workflows WHERE id = ?"
_TASKS: Final = f'SELECT {_columns("tasks")} FROM tasks WHERE workflow_id = ? ORDER BY "index"'
_ATTEMPTS: Final = f"SELECT {_columns('attempts')} FROM attempts WHERE workflow_id = ? ORDER BY task_id, number, id"
_RUNS: Final = f"SELECT {', '.join(runs_codec.RUN_COLUMNS)} FROM runs WHERE workflow_id = ? ORDER BY number"
_CHECKPOINTS: Final = "SELECT task_id, workflow_id, attempt_id, at, data FROM checkpoints WHERE workflow_id = ?"
# Deletion, children first. Logs are keyed by attempt: their ids come from the attempts rows.
_DELETES: Final = (
    "DELETE FROM logs WHERE attempt_id IN (SELECT id FROM attempts WHERE workflow_id = ?)",
    "DELETE FROM attempts WHERE workflow_id = ?",
    "DELETE FROM tasks WHERE workflow_id = ?",
    "DELETE FROM event_batches WHERE workflow_id = ?",
    "DELETE FROM checkpoints WHERE workflow_id = ?",
    "DELETE FROM runs WHERE workflow_id = ?",
    "DELETE FROM workflows WHERE id = ?",
)


def load_workflow(conn: sqlite3.Connection, workflow_id: str) -> WorkflowRecord | None:
    """The workflow's rows, read in one transaction (a consistent record)."""
    conn.execute("BEGIN")
    try:
        row = conn.execute(_WORKFLOW, (workflow_id,)).fetchone()
        if row is None:
            return None
        return WorkflowRecord(
            codec.decode_workflow(row),
            [codec.decode_task(r) for r in conn.execute(_TASKS, (workflow_id,))],
            [codec.decode_attempt(r) for r in conn.execute(_ATTEMPTS, (workflow_id,))],
            [runs_codec.decode_run(r) for r in conn.execute(_RUNS, (workflow_id,))],
            [Checkpoint(*r) for r in conn.execute(_CHECKPOINTS, (workflow_id,))],
        )
    finally:
        conn.execute("COMMIT")


_TASK_ATTEMPTS: Final = f"SELECT {_columns('attempts')} FROM attempts WHERE task_id = ? ORDER BY number, id"


def task_attempts(conn: sqlite3.Connection, task_id: str) -> list[Attempt]:
    """One task's attempts, by number (the attempts_by_task index)."""
    return [codec.decode_attempt(r) for r in conn.execute(_TASK_ATTEMPTS, (task_id,))]


def _in(column: str, values: Iterable[str], negate: bool = False) -> tuple[str, list[Any]]:
    chosen = list(values)
    marks = ", ".join("?" for _ in chosen)
    return f"{column} {'NOT IN' if negate else 'IN'} ({marks})", chosen


def _prefix(column: str, prefix: str) -> tuple[str, list[Any]]:
    # A range, not LIKE: LIKE is case-insensitive and treats % and _ as wildcards.
    return f"{column} >= ? AND {column} < ?", [prefix, prefix + "\U0010ffff"]


def query_sql(query: WorkflowQuery) -> tuple[str, list[Any]]:
    """The WHERE clause and parameters of a listing (shared by the tests of the SQL)."""
    clauses: list[str] = []
    params: list[Any] = []

    def add(clause: tuple[str, list[Any]]) -> None:
        clauses.append(clause[0])
        params.extend(clause[1])

    if query.namespaces:
        add(_in("namespace", query.namespaces))
    if query.exclude_namespaces:
        add(_in("namespace", query.exclude_namespaces, negate=True))
    if query.states:
        add(_in("state", sorted(str(s) for s in query.states)))
    if query.name_prefix:
        add(_prefix("name", query.name_prefix))
    if query.id_prefix:
        add(_prefix("id", query.id_prefix))
    if query.task_id:
        add(("id = (SELECT workflow_id FROM tasks WHERE id = ?)", [query.task_id]))
    if query.finished_before is not None:
        add(_in("state", _TERMINAL))
        add(("finished_at < ?", [query.finished_before]))
    where = " AND ".join(clauses) if clauses else "1"
    return where, params


def list_workflows(conn: sqlite3.Connection, query: WorkflowQuery) -> list[Workflow]:
    """The selected workflows, newest first."""
    if query.limit <= 0:
        return []
    where, params = query_sql(query)
    sql = f"SELECT {_columns('workflows')} FROM workflows WHERE {where} ORDER BY created_at DESC, id LIMIT ? OFFSET ?"
    return [codec.decode_workflow(r) for r in conn.execute(sql, (*params, query.limit, query.offset))]


def task_counts(conn: sqlite3.Connection, workflow_ids: Sequence[str]) -> dict[str, dict[TaskState, int]]:
    """Tasks per state of each workflow; compensation records (``compensates``) are not counted."""
    counts: dict[str, dict[TaskState, int]] = {workflow_id: {} for workflow_id in workflow_ids}
    for workflow_id in workflow_ids:
        rows = conn.execute(
            "SELECT state, count(*) FROM tasks WHERE workflow_id = ? AND compensates = '' GROUP BY state",
            (workflow_id,),
        )
        counts[workflow_id] = {TaskState(state): n for state, n in rows}
    return counts


def delete_workflows(conn: sqlite3.Connection, workflow_ids: Iterable[str]) -> None:
    """Delete the workflows and every row of theirs (inside the caller's transaction)."""
    keys = [(workflow_id,) for workflow_id in workflow_ids]
    for statement in _DELETES:
        conn.executemany(statement, keys)
