"""Encoding of the workflow event log: one row per event (the version-3 table, the memory store)
and one row per workflow per commit (the ``event_batches`` table, migration 4)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final

from corral.controller.core.model import TaskState, WorkflowEvent, WorkflowState
from corral.controller.store.codec import _TASK_STATES, _WORKFLOW_STATES, Row, _enum_value

__all__ = ["EVENT_COLUMNS", "decode_event", "decode_event_batch", "encode_event", "encode_event_batches"]

#: Columns of the append-only version-3 ``events`` table (one row per event), in row order.
EVENT_COLUMNS: Final = (
    "seq",
    "workflow_id",
    "at",
    "workflow_state",
    "task_id",
    "task_name",
    "task_state",
    "attempt_id",
    "agent_id",
    "kind",
    "reason",
    "message",
)


def _event_fields(e: WorkflowEvent) -> list[Any]:
    """An event's fields but its workflow id, in the stored order (its batch row names the workflow)."""
    return [
        e.seq,
        e.at,
        _enum_value(e.workflow_state, WorkflowState, _WORKFLOW_STATES),
        e.task_id,
        e.task_name,
        None if e.task_state is None else _enum_value(e.task_state, TaskState, _TASK_STATES),
        e.attempt_id,
        e.agent_id,
        e.kind,
        e.reason,
        e.message,
    ]


def _event_of(workflow_id: str, f: Sequence[Any]) -> WorkflowEvent:
    """Inverse of :func:`_event_fields`."""
    return WorkflowEvent(
        seq=f[0],
        at=f[1],
        workflow_id=workflow_id,
        workflow_state=_WORKFLOW_STATES[f[2]],
        task_id=f[3],
        task_name=f[4],
        task_state=None if f[5] is None else _TASK_STATES[f[5]],
        attempt_id=f[6],
        agent_id=f[7],
        kind=f[8],
        reason=f[9],
        message=f[10],
    )


def encode_event(e: WorkflowEvent) -> Row:
    """Row of the version-3 ``events`` table (one per event; the memory store keeps these)."""
    seq, *rest = _event_fields(e)
    return (seq, e.workflow_id, *rest)


def decode_event(row: Sequence[Any]) -> WorkflowEvent:
    """Inverse of :func:`encode_event`."""
    return _event_of(row[1], (row[0], *row[2:]))


def encode_event_batches(events: Sequence[WorkflowEvent]) -> list[Row]:
    """Rows of the ``event_batches`` table: one per workflow of a commit, its events in seq order.

    A row is ``(last_seq, workflow_id, first_seq, data)``, ``data`` a JSON array of event arrays.
    One row per workflow per commit, not per event: a tick placing or finishing hundreds of tasks
    writes one B-tree entry per workflow (history in batches, as Temporal stores it).
    """
    grouped: dict[str, list[list[Any]]] = {}
    for e in events:
        batch = grouped.get(e.workflow_id)
        if batch is None:
            grouped[e.workflow_id] = [_event_fields(e)]
        else:
            batch.append(_event_fields(e))
    return [
        (batch[-1][0], workflow_id, batch[0][0], json.dumps(batch, ensure_ascii=False, separators=(",", ":")))
        for workflow_id, batch in grouped.items()
    ]


def decode_event_batch(workflow_id: str, data: str) -> list[WorkflowEvent]:
    """Inverse of one row of :func:`encode_event_batches`: its events, oldest first."""
    return [_event_of(workflow_id, f) for f in json.loads(data)]
