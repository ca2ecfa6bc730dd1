"""SQL of issue 12's retention for the PostgreSQL store: one workflow's rows, listings of stored
workflows, and the deletion of forgotten workflows with everything that belongs to them.

The PostgreSQL twin of the SQLite store's ``retention_sql`` (same selections, same order). The
listing takes the lifecycle part's ``WorkflowQuery`` by its attributes (``namespaces``,
``exclude_namespaces``, ``states``, ``name_prefix``, ``id_prefix``, ``task_id``,
``finished_before``, ``offset``, ``limit``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final

import psycopg

from corral.controller.core.checkpoints import Checkpoint
from corral.controller.core.model import Attempt, Task, TaskState, Workflow, WorkflowState
from corral.controller.core.run_record import Run
from corral.controller.store import codec, runs_codec

__all__ = ["delete_workflows", "list_workflows", "load_workflow_rows", "task_counts"]

_TERMINAL: Final = [str(s) for s in WorkflowState if s.terminal]
_TASK_STATES: Final = {m.value: m for m in TaskState}


def _columns(table: str) -> str:
    return ", ".join(f'"{c}"' for c in codec.COLUMNS[table])


_WORKFLOW: Final = f"SELECT {_columns('workflows')} FROM workflows WHERE id = %s"
_TASKS: Final = f'SELECT {_columns("tasks")} FROM tasks WHERE workflow_id = %s ORDER BY "index"'
_ATTEMPTS: Final = f"SELECT {_columns('attempts')} FROM attempts WHERE workflow_id = %s ORDER BY task_id, number, id"
_RUNS: Final = f"SELECT {', '.join(runs_codec.RUN_COLUMNS)} FROM runs WHERE workflow_id = %s ORDER BY number"
_CHECKPOINTS: Final = (
    "SELECT task_id, workflow_id, attempt_id, at, data FROM checkpoints WHERE workflow_id = %s ORDER BY task_id"
)
_COUNTS: Final = (
    "SELECT workflow_id, state, count(*) FROM tasks WHERE workflow_id = ANY(%s) AND compensates = '' "
    "GROUP BY workflow_id, state"
)
# Deletion, children first, every workflow of the batch at once. Logs are keyed by attempt.
_DELETES: Final = (
    "DELETE FROM logs WHERE attempt_id IN (SELECT id FROM attempts WHERE workflow_id = ANY(%s))",
    "DELETE FROM attempts WHERE workflow_id = ANY(%s)",
    "DELETE FROM tasks WHERE workflow_id = ANY(%s)",
    "DELETE FROM event_batches WHERE workflow_id = ANY(%s)",
    "DELETE FROM checkpoints WHERE workflow_id = ANY(%s)",
    "DELETE FROM runs WHERE workflow_id = ANY(%s)",
    "DELETE FROM workflows WHERE id = ANY(%s)",
)

WorkflowRows = tuple[Workflow, list[Task], list[Attempt], list[Run], list[Checkpoint]]


def load_workflow_rows(conn: psycopg.Connection[Any], workflow_id: str) -> WorkflowRows | None:
    """The workflow's rows, read in one REPEATABLE READ transaction (a consistent record)."""
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    try:
        cur = conn.cursor(binary=True)
        row = cur.execute(_WORKFLOW, (workflow_id,)).fetchone()
        if row is None:
            return None
        return (
            codec.decode_workflow(row),
            [codec.decode_task(r) for r in cur.execute(_TASKS, (workflow_id,))],
            [codec.decode_attempt(r) for r in cur.execute(_ATTEMPTS, (workflow_id,))],
            [runs_codec.decode_run(r) for r in cur.execute(_RUNS, (workflow_id,))],
            [Checkpoint(*r) for r in cur.execute(_CHECKPOINTS, (workflow_id,))],
        )
    finally:
        conn.execute("COMMIT")


_TASK_ATTEMPTS: Final = f"SELECT {_columns('attempts')} FROM attempts WHERE task_id = %s ORDER BY number, id"


def task_attempts(conn: psycopg.Connection[Any], task_id: str) -> list[Attempt]:
    """One task's attempts, by number (the attempts_by_task index)."""
    return [codec.decode_attempt(r) for r in conn.cursor(binary=True).execute(_TASK_ATTEMPTS, (task_id,))]


def _where(query: Any) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if query.namespaces:
        clauses.append("namespace = ANY(%s)")
        params.append(list(query.namespaces))
    if query.exclude_namespaces:
        clauses.append("NOT (namespace = ANY(%s))")
        params.append(list(query.exclude_namespaces))
    if query.states:
        clauses.append("state = ANY(%s)")
        params.append(sorted(str(s) for s in query.states))
    # Ranges, not LIKE: LIKE treats % and _ as wildcards. Text is "C"-collated: code point order.
    for column, prefix in (("name", query.name_prefix), ("id", query.id_prefix)):
        if prefix:
            clauses.append(f"{column} >= %s AND {column} < %s")
            params += [prefix, prefix + "\U0010ffff"]
    if query.task_id:
        clauses.append("id = (SELECT workflow_id FROM tasks WHERE id = %s)")
        params.append(query.task_id)
    if query.finished_before is not None:
        clauses.append("state = ANY(%s) AND finished_at < %s")
        params += [_TERMINAL, query.finished_before]
    return (" AND ".join(clauses) if clauses else "true"), params


def list_workflows(conn: psycopg.Connection[Any], query: Any) -> list[Workflow]:
    """The workflows ``query`` selects, newest first (``created_at`` descending, then id)."""
    if query.limit <= 0:
        return []
    where, params = _where(query)
    statement = (
        f"SELECT {_columns('workflows')} FROM workflows WHERE {where} ORDER BY created_at DESC, id LIMIT %s OFFSET %s"
    )
    rows = conn.cursor(binary=True).execute(statement, (*params, query.limit, query.offset))
    return [codec.decode_workflow(r) for r in rows]


def task_counts(conn: psycopg.Connection[Any], workflow_ids: Sequence[str]) -> dict[str, dict[TaskState, int]]:
    """Tasks per state of each workflow (one query); compensation records are not counted."""
    counts: dict[str, dict[TaskState, int]] = {workflow_id: {} for workflow_id in workflow_ids}
    for workflow_id, state, n in conn.execute(_COUNTS, (list(workflow_ids),)):
        counts[workflow_id][_TASK_STATES[state]] = int(n)
    return counts


def delete_workflows(cur: psycopg.Cursor[Any], workflow_ids: Iterable[str]) -> None:
    """Delete the workflows and every row of theirs (inside the caller's transaction)."""
    ids = sorted(workflow_ids)
    for statement in _DELETES:
        cur.execute(statement, (ids,))
