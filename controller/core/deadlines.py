"""Deadlines: parsing, latest finish / latest start per task, slack, admission verdicts, at-risk timers.

A workflow ``deadline`` bounds every task's finish; a task's own deadline tightens it. The latest
finish of a task is ``min(own deadline, min over children c of (latest_finish(c) - expected(c)))``
(one backward pass over the DAG, O(V + E)); its **latest start** is ``latest_finish - expected``,
an absolute time, so it is a static heap key (the queue orders by it within a priority band:
least slack first, since ``slack(now) = latest_start - now`` and ``now`` is common to all).

Admission at submit estimates the workflow's finish as ``now + expected wait + critical path``,
where the expected wait is the expected work queued ahead of it (at equal or higher priority)
divided by the fleet's slots: a deliberately simple, documented estimate (docs/DECISIONS.md).

Pure: no clock; ``now`` is always passed in.
"""

from __future__ import annotations

import heapq
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

__all__ = [
    "AT_RISK_FRACTION",
    "MAX_HORIZON_S",
    "POLICIES",
    "Admission",
    "RiskTimers",
    "Verdict",
    "admit",
    "critical_path",
    "latest_finishes",
    "parse_deadline",
]

POLICIES = ("reject", "warn", "best_effort")
MAX_HORIZON_S = 366 * 86400.0  # a deadline further than a year out is almost surely a typo
AT_RISK_FRACTION = 0.1  # at risk: slack under this share of the deadline's horizon (submit -> deadline)

_RELATIVE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


class Verdict(StrEnum):
    """The admission verdict of a workflow with a deadline ("" when it has none)."""

    NONE = ""
    FEASIBLE = "feasible"
    AT_RISK = "at_risk"
    INFEASIBLE = "infeasible"


def parse_deadline(value: object) -> tuple[float, bool]:
    """``(seconds, relative)`` from a deadline as written.

    Relative: a number of seconds or a duration string (``"90"``, ``"10m"``, ``"1.5h"``), counted
    from the submit. Absolute: an RFC 3339 time **with** a zone (``2026-01-02T03:04:05Z``), as epoch
    seconds. Raises ValueError (naming the accepted forms) for anything else, NaN, infinities,
    a zero or negative relative deadline, one without a zone, or one beyond :data:`MAX_HORIZON_S`.
    Whether an absolute deadline is already past is checked at submit, against the controller's clock.
    """
    if isinstance(value, bool):
        raise ValueError("a deadline is seconds from submit, a duration like '10m', or an RFC 3339 time with a zone")
    if isinstance(value, int | float):
        return _relative(float(value)), True
    if not isinstance(value, str):
        raise ValueError("a deadline is seconds from submit, a duration like '10m', or an RFC 3339 time with a zone")
    match = _RELATIVE.fullmatch(value)
    if match:
        return _relative(float(match.group(1)) * _UNIT_SECONDS[match.group(2)]), True
    text = value.strip()
    try:
        when = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in ("Z", "z") else text)
    except ValueError:
        raise ValueError(
            f"{value[:64]!r} is not a deadline: give seconds, a duration like '10m', "
            "or an RFC 3339 time with a zone like '2026-01-02T03:04:05Z'"
        ) from None
    if when.tzinfo is None:
        raise ValueError(f"{value[:64]!r} has no zone: add 'Z' or an offset like '+02:00'")
    return when.timestamp(), False


def _relative(seconds: float) -> float:
    if not math.isfinite(seconds):
        raise ValueError("a deadline must be finite")
    if seconds <= 0:
        raise ValueError("a relative deadline must be more than 0 seconds")
    if seconds > MAX_HORIZON_S:
        raise ValueError(f"a deadline may be at most {MAX_HORIZON_S:.0f} seconds away")
    return seconds


def resolve(seconds: float, relative: bool, now: float) -> float:
    """The absolute deadline (epoch seconds) of a parsed one, at submit time ``now``.

    Raises ValueError when an absolute deadline is not in the future or is too far out.
    """
    if relative:
        return now + seconds
    if seconds <= now:
        raise ValueError("the deadline is already past")
    if seconds - now > MAX_HORIZON_S:
        raise ValueError(f"a deadline may be at most {MAX_HORIZON_S:.0f} seconds away")
    return seconds


def latest_finishes(
    task_ids: Sequence[str],
    parents: Mapping[str, Sequence[str]],
    own: Mapping[str, float | None],
    expected: Mapping[str, float],
    workflow_deadline: float | None,
) -> dict[str, float]:
    """Latest finish per task (``inf`` when nothing bounds it), one backward pass, O(V + E).

    ``latest_finish(t) = min(own(t), workflow_deadline, min over children c of
    latest_finish(c) - expected(c))``.
    """
    task_ids = _topological(task_ids, parents)
    bound = math.inf if workflow_deadline is None else workflow_deadline
    latest: dict[str, float] = {}
    for task_id in task_ids:
        mine = own.get(task_id)
        latest[task_id] = bound if mine is None else min(bound, mine)
    for task_id in reversed(task_ids):
        start = latest[task_id] - expected.get(task_id, 0.0)
        for parent in parents.get(task_id, ()):
            if start < latest[parent]:
                latest[parent] = start
    return latest


def critical_path(
    task_ids: Sequence[str], parents: Mapping[str, Sequence[str]], expected: Mapping[str, float]
) -> float:
    """The longest expected path through the DAG, seconds."""
    finish: dict[str, float] = {}
    for task_id in _topological(task_ids, parents):
        ready = max((finish[p] for p in parents.get(task_id, ())), default=0.0)
        finish[task_id] = ready + expected.get(task_id, 0.0)
    return max(finish.values(), default=0.0)


def _topological(task_ids: Sequence[str], parents: Mapping[str, Sequence[str]]) -> list[str]:
    # Kahn's algorithm, O(V + E); parents outside ``task_ids`` are ignored.
    known = set(task_ids)
    waiting = {t: sum(1 for p in parents.get(t, ()) if p in known) for t in task_ids}
    children: dict[str, list[str]] = {}
    for t in task_ids:
        for p in parents.get(t, ()):
            if p in known:
                children.setdefault(p, []).append(t)
    order = [t for t in task_ids if waiting[t] == 0]
    for t in order:  # grows while iterating
        for c in children.get(t, ()):
            waiting[c] -= 1
            if waiting[c] == 0:
                order.append(c)
    if len(order) != len(task_ids):
        raise ValueError("the dependencies have a cycle")
    return order


@dataclass(frozen=True, slots=True)
class Admission:
    """The verdict on a workflow's deadline at submit, with the numbers it came from."""

    verdict: Verdict
    deadline: float  # absolute, epoch seconds
    estimated_finish: float  # now + wait + critical path
    wait_s: float  # expected queueing before it starts
    critical_path_s: float
    slack_s: float  # deadline - estimated finish (negative: expected late)

    def message(self) -> str:
        """One line for the response, the event log and the rejection."""
        return (
            f"deadline {_iso(self.deadline)}: {self.verdict} (estimated finish {_iso(self.estimated_finish)}"
            f" = wait {self.wait_s:.1f}s + critical path {self.critical_path_s:.1f}s; slack {self.slack_s:.1f}s)"
        )


def admit(
    now: float,
    deadline: float,
    critical_path_s: float,
    work_ahead_s: float,
    slots: int,
    at_risk_fraction: float = AT_RISK_FRACTION,
) -> Admission:
    """Judge a deadline: infeasible if the estimate misses it, at risk if the slack is thin.

    The wait is ``work_ahead_s / slots`` (expected work queued ahead, spread over the fleet's
    slots); with no slots at all nothing can be promised, so the wait is infinite.
    """
    wait = work_ahead_s / slots if slots > 0 else (0.0 if work_ahead_s <= 0 and critical_path_s <= 0 else math.inf)
    finish = now + wait + critical_path_s
    slack = deadline - finish
    if slack < 0:
        verdict = Verdict.INFEASIBLE
    elif slack < at_risk_fraction * max(deadline - now, 0.0):
        verdict = Verdict.AT_RISK
    else:
        verdict = Verdict.FEASIBLE
    return Admission(verdict, deadline, finish, wait, critical_path_s, slack)


def _iso(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "never"
    return datetime.fromtimestamp(seconds, tz=UTC).isoformat(timespec="seconds")


class RiskTimers:
    """When each queued task with a deadline becomes at risk: a heap of ``(at, task id)``.

    A task is at risk once ``now >= latest_start - threshold``; it is then re-pushed onto the
    queue one band higher (:meth:`due`). Each task is pushed here at most once per enqueue, and
    popped once, so the boost costs O(log n) per task; stale entries (tasks placed meanwhile)
    are skipped when popped.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, at: float, task_id: str) -> None:
        """Wake ``task_id`` at ``at``."""
        heapq.heappush(self._heap, (at, task_id))

    def due(self, now: float) -> list[str]:
        """Task ids whose timer passed by ``now`` (removed from the heap)."""
        out: list[str] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            out.append(heapq.heappop(heap)[1])
        return out

    def next_wakeup(self) -> float | None:
        """The earliest pending timer, or None."""
        return self._heap[0][0] if self._heap else None
