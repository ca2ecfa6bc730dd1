"""Rows of the ``schedules`` and ``schedule_fires`` tables (issue 10), for both stores."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from corral.controller.core.schedules import Fire, Schedule

__all__ = [
    "DELETE_FIRES",
    "DELETE_SCHEDULE",
    "FIRE_COLUMNS",
    "INSERT_FIRE",
    "PRUNE_FIRES",
    "RECENT_FIRES",
    "SCHEDULE_COLUMNS",
    "SELECT_SCHEDULES",
    "UPSERT_SCHEDULE",
    "decode_fire",
    "decode_schedule",
    "encode_fire",
    "encode_schedule",
]

SCHEDULE_COLUMNS: Final = (
    "id",
    "name",
    "namespace",
    "cron",
    "timezone",
    "spec",
    "overlap",
    "catchup",
    "paused",
    "created_at",
    "last_nominal",
    "last_workflow_id",
    "fired",
    "skipped",
    "missed",
)
FIRE_COLUMNS: Final = ("schedule_id", "nominal", "fired_at", "workflow_id", "late", "outcome", "error")
KEEP_FIRES: Final = 1000  # fire rows kept per schedule (the newest); older ones are pruned

UPSERT_SCHEDULE: Final = (
    f"INSERT OR REPLACE INTO schedules ({', '.join(SCHEDULE_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(SCHEDULE_COLUMNS))})"
)
DELETE_SCHEDULE: Final = "DELETE FROM schedules WHERE id = ?"
DELETE_FIRES: Final = "DELETE FROM schedule_fires WHERE schedule_id = ?"
SELECT_SCHEDULES: Final = f"SELECT {', '.join(SCHEDULE_COLUMNS)} FROM schedules ORDER BY id"
# A plain INSERT: a second row for one (schedule, nominal) raises and fails the whole commit.
INSERT_FIRE: Final = (
    f"INSERT INTO schedule_fires ({', '.join(FIRE_COLUMNS)}) VALUES ({', '.join('?' * len(FIRE_COLUMNS))})"
)
PRUNE_FIRES: Final = (
    "DELETE FROM schedule_fires WHERE schedule_id = ?1 AND nominal < "
    f"(SELECT nominal FROM schedule_fires WHERE schedule_id = ?1 ORDER BY nominal DESC LIMIT 1 OFFSET {KEEP_FIRES - 1})"
)
RECENT_FIRES: Final = (
    f"SELECT {', '.join(FIRE_COLUMNS)} FROM schedule_fires WHERE schedule_id = ? ORDER BY nominal DESC LIMIT 20"
)


def encode_schedule(s: Schedule) -> tuple[Any, ...]:
    return (
        s.id,
        s.name,
        s.namespace,
        s.cron,
        s.timezone,
        bytes(s.spec),
        s.overlap,
        s.catchup,
        int(s.paused),
        s.created_at,
        s.last_nominal,
        s.last_workflow_id,
        s.fired,
        s.skipped,
        s.missed,
    )


def decode_schedule(row: Sequence[Any]) -> Schedule:
    return Schedule(
        id=row[0],
        name=row[1],
        namespace=row[2],
        cron=row[3],
        timezone=row[4],
        spec=bytes(row[5]),
        overlap=row[6],
        catchup=row[7],
        paused=bool(row[8]),
        created_at=row[9],
        last_nominal=row[10],
        last_workflow_id=row[11],
        fired=row[12],
        skipped=row[13],
        missed=row[14],
    )


def encode_fire(f: Fire) -> tuple[Any, ...]:
    return (f.schedule_id, f.nominal, f.fired_at, f.workflow_id, int(f.late), f.outcome, f.error)


def decode_fire(row: Sequence[Any]) -> Fire:
    return Fire(row[0], row[1], row[2], row[3], bool(row[4]), row[5], row[6])
