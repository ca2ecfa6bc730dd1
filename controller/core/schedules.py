"""Cron schedules (issue 10 §7): the records and the pure time arithmetic behind them.

A schedule holds a workflow template (the submitted spec, bytes) and a cron expression evaluated
in an IANA timezone with :mod:`zoneinfo`. Times the user sees and the store keeps are UTC epoch
seconds. The machine asks :func:`due_fires` on its tick which nominal times have come, and writes
one :class:`Fire` per nominal time in the same commit as the workflow it created; the store keeps
fires unique on ``(schedule id, nominal)``, which makes a double fire impossible even if memory
were wrong.

DST, in the schedule's zone (croniter matches wall-clock times):

- **Spring forward**: a time inside the skipped hour (``30 2 * * *`` on the night clocks jump
  02:00 -> 03:00) fires once, at the first instant after the gap (03:00 local).
- **Fall back**: a wall-clock time that occurs twice fires only at its first occurrence (the
  second, ``fold=1``, is skipped), so ``30 2 * * *`` runs once that night. Every-minute or
  every-hour schedules therefore do not run again during the repeated hour.

Cron expressions have 5 fields (minute hour day month weekday) or 6 with **seconds first**
(``*/10 * * * * *``: every 10 seconds), as in Quartz and Spring.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from corral.controller.core.deadlines import parse_deadline

if TYPE_CHECKING:
    from croniter import croniter

__all__ = [
    "LATE_AFTER_S",
    "MAX_CATCHUP",
    "MAX_CRON_CHARS",
    "OVERLAP_POLICIES",
    "Fire",
    "Schedule",
    "ScheduleChanges",
    "check_cron",
    "check_start",
    "check_timezone",
    "due_fires",
    "next_fire",
    "parse_start",
    "scheduled_fields",
]

OVERLAP_POLICIES: Final = ("skip", "allow", "cancel_previous")
MAX_CATCHUP: Final = 1000  # missed fires run on return, at most
MAX_CRON_CHARS: Final = 256
# A fire made this long after its nominal time is flagged late (the controller was down, or its
# loop was stalled): user-facing, and what the acceptance test's "within 1 s" is about.
LATE_AFTER_S: Final = 1.0


@dataclass(slots=True)
class Schedule:
    """A cron schedule and where it stands. ``last_nominal``: the newest nominal time handled
    (fired, skipped or dropped); the next fire is the first cron time after it."""

    id: str
    name: str
    namespace: str
    cron: str
    timezone: str
    spec: bytes  # the workflow template: a serialized corral.v1.WorkflowSpec
    overlap: str = "skip"
    catchup: int = 1
    paused: bool = False
    created_at: float = 0.0
    last_nominal: float | None = None
    last_workflow_id: str = ""  # the workflow of the newest fire ("" before any)
    fired: int = 0
    skipped: int = 0
    missed: int = 0  # nominal times dropped because they were past the catch-up window
    next_nominal: float | None = field(default=None, compare=False)  # memory only (derived)


@dataclass(frozen=True, slots=True)
class Fire:
    """One nominal time of a schedule, handled. ``outcome``: fired, skipped (overlap) or failed
    (the workflow could not be created, e.g. its namespace is gone; ``error`` says why)."""

    schedule_id: str
    nominal: float
    fired_at: float
    workflow_id: str = ""
    late: bool = False
    outcome: str = "fired"
    error: str = ""


@dataclass(slots=True)
class ScheduleChanges:
    """A tick's schedule writes: upserted schedules, deleted ones (with their fires), new fires."""

    schedules: dict[str, Schedule] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)
    fires: list[Fire] = field(default_factory=list)

    def size(self) -> int:
        return len(self.schedules) + len(self.deleted) + len(self.fires)

    def __bool__(self) -> bool:
        return bool(self.schedules or self.deleted or self.fires)


def parse_start(value: object) -> tuple[float, bool]:
    """``(seconds, relative)`` of a ``scheduled_at`` as written: the forms of a deadline (seconds
    or a duration after submit, or an RFC 3339 time with a zone). A past absolute time is allowed
    (the workflow starts at once)."""
    try:
        return parse_deadline(value)
    except ValueError as exc:
        raise ValueError(str(exc).replace("a deadline", "a start time").replace("relative deadline", "delay")) from None


def check_start(value: Any) -> Any:
    """Validate a ``scheduled_at`` as written (the spec's validator); numbers become their text."""
    if value is None:
        return None
    parse_start(value)
    return value if isinstance(value, str) else repr(float(value))


def scheduled_fields(text: str | None) -> dict[str, Any]:
    """The Workflow fields of a validated ``scheduled_at`` (a relative one is made absolute at submit)."""
    if text is None:
        return {}
    seconds, relative = parse_start(text)
    return {"scheduled_at": seconds, "scheduled_relative": relative}


def check_timezone(name: str) -> ZoneInfo:
    """The zone named ``name`` (IANA, e.g. ``Europe/Berlin``); ValueError if unknown."""
    if not name or len(name) > 64 or name.startswith(("/", ".")) or ".." in name:
        raise ValueError(f"{name[:64]!r} is not an IANA timezone name like 'UTC' or 'Europe/Berlin'")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown timezone {name[:64]!r}: give an IANA name like 'UTC' or 'Europe/Berlin'") from None


def check_cron(expr: str) -> None:
    """ValueError unless ``expr`` is a 5-field cron expression, or 6 fields with seconds first."""
    fields = expr.split()
    if len(expr) > MAX_CRON_CHARS:
        raise ValueError(f"a cron expression is at most {MAX_CRON_CHARS} characters")
    if len(fields) not in (5, 6):
        raise ValueError(
            f"{expr[:64]!r} has {len(fields)} fields: give 5 (minute hour day month weekday) or 6 with seconds first"
        )
    from croniter import croniter  # see _iterator

    try:
        croniter(expr, 0.0, second_at_beginning=True).get_next(float)
    except Exception as exc:  # croniter raises several types (CroniterBadCronError, ValueError, ...)
        raise ValueError(f"cannot parse cron {expr[:64]!r}: {str(exc)[:128]}") from None


def _iterator(schedule: Schedule, start: float, *, backwards: bool = False) -> croniter:
    # Imported on first use: croniter and dateutil are ~2 MiB of a controller's RSS that one
    # without cron schedules never needs (docs/DECISIONS.md, "Fifteenth wave").
    from croniter import croniter

    zone = check_timezone(schedule.timezone)
    at = datetime.fromtimestamp(start, zone)
    return croniter(schedule.cron, at, is_prev=backwards, second_at_beginning=True)


def _second_occurrence(when: float, zone: ZoneInfo) -> bool:
    """Whether ``when`` is the second occurrence of its wall-clock time (the fall-back hour)."""
    return datetime.fromtimestamp(when, zone).fold == 1 and _ambiguous(when, zone)


def _ambiguous(when: float, zone: ZoneInfo) -> bool:
    local = datetime.fromtimestamp(when, zone).replace(tzinfo=None)
    first = local.replace(tzinfo=zone, fold=0).utcoffset()
    second = local.replace(tzinfo=zone, fold=1).utcoffset()
    return first != second and first is not None and second is not None and first > second


def next_fire(schedule: Schedule, after: float) -> float:
    """The first nominal time strictly after ``after`` (UTC epoch seconds), DST rules applied."""
    zone = check_timezone(schedule.timezone)
    it = _iterator(schedule, after)
    for _ in range(10_000):  # a fall-back hour holds at most 3,600 skipped seconds
        when = float(it.get_next(float))
        if not _second_occurrence(when, zone):
            return when
    return math.inf  # unreachable for a valid expression; never fire rather than spin


def due_fires(schedule: Schedule, now: float) -> tuple[list[float], int]:
    """``(nominal times to handle now, oldest first; count of missed ones dropped)``.

    Due are the times after ``last_nominal`` (or the creation) up to ``now``. A time more than
    :data:`LATE_AFTER_S` old was missed (the controller was down or stalled): only the newest
    ``catchup`` missed ones are returned, flagged late by the caller, the older ones dropped.
    Walks backwards from ``now``, so a long downtime costs ``catchup`` steps, not one per missed
    time; the dropped count is exact up to 1,000 and a lower bound beyond.
    """
    if schedule.next_nominal is not None and schedule.next_nominal > now:
        return [], 0
    since = schedule.last_nominal if schedule.last_nominal is not None else schedule.created_at
    zone = check_timezone(schedule.timezone)
    found: list[float] = []
    late = 0
    dropped = 0
    it = _iterator(schedule, now + 1e-6, backwards=True)
    while dropped < 1_000:  # counting what is dropped costs a croniter step each: a bound
        when = float(it.get_prev(float))
        if when <= since:
            break
        if _second_occurrence(when, zone):
            continue
        if now - when <= LATE_AFTER_S:
            found.append(when)
        elif late < schedule.catchup:
            found.append(when)
            late += 1
        else:
            dropped += 1
    found.reverse()
    return found, dropped
