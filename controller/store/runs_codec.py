"""Rows of the ``runs`` table (issue 10): one per run of a retried or rerun workflow."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from corral.controller.core.run_record import Run

__all__ = ["RUN_COLUMNS", "RUN_SELECT", "RUN_UPSERT", "decode_run", "encode_run"]

RUN_COLUMNS: Final = (
    "workflow_id",
    "number",
    "kind",
    "from_task",
    "fresh",
    "started_at",
    "finished_at",
    "state",
    "error",
)
RUN_UPSERT: Final = (
    f"INSERT INTO runs ({', '.join(RUN_COLUMNS)}) VALUES ({', '.join('?' * len(RUN_COLUMNS))}) "
    "ON CONFLICT(workflow_id, number) DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in RUN_COLUMNS[2:])
)
RUN_SELECT: Final = f"SELECT {', '.join(RUN_COLUMNS)} FROM runs ORDER BY workflow_id, number"


def encode_run(run: Run) -> tuple[Any, ...]:
    return (
        run.workflow_id,
        run.number,
        run.kind,
        run.from_task,
        int(run.fresh),
        run.started_at,
        run.finished_at,
        run.state,
        run.error,
    )


def decode_run(row: Sequence[Any]) -> Run:
    return Run(row[0], row[1], row[2], row[3], bool(row[4]), row[5], row[6], row[7], row[8])
