"""The execution ledger: what really ran, written by the task bodies themselves.

Every chaos task wraps its work in two appends to one shared file, one line per event::

    <CLOCK_BOOTTIME seconds> start|end <workflow id> <task name> <attempt id> <shell pid>

The time comes from ``/proc/uptime`` (CLOCK_BOOTTIME, the clock the harness reads with
``time.clock_gettime(time.CLOCK_BOOTTIME)``), so ledger lines and fault times compare directly. An
append of one short line with ``>>`` is a single O_APPEND write: lines of concurrent tasks never mix.
A "completed body" is an ``end`` line: the work ran to its end, whatever the controller believes.

:func:`analyse` turns the lines plus what the process scanner saw (when each attempt's processes
were last alive) into the counts the invariants need: overlapping executions of one task, and
completed bodies run more than once.
"""

from __future__ import annotations

import shlex
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "AttemptRun",
    "LedgerReport",
    "Overlap",
    "analyse",
    "ledger_body",
    "read_ledger",
]

#: Overlaps shorter than this are sampling noise (the scanner's period), not two live copies.
OVERLAP_TOLERANCE_S = 0.05


def _stamp(event: str, ledger: Path) -> str:
    line = f'"$_up {event} $CORRAL_WORKFLOW_ID $CORRAL_TASK_NAME $CORRAL_ATTEMPT_ID $$"'
    return f"read _up _rest < /proc/uptime; echo {line} >> {shlex.quote(str(ledger))}"


def ledger_body(ledger: Path, work: str) -> str:
    """A shell script running ``work`` between a ``start`` and an ``end`` ledger line.

    ``work`` must not ``exit``: the end line is what marks the body complete. A body that is
    killed (timeout, fencing, a dead agent) leaves a start line without an end line.
    """
    return f"{_stamp('start', ledger)}\n{work}\n{_stamp('end', ledger)}\n"


@dataclass
class AttemptRun:
    """One attempt as the ledger saw it."""

    attempt_id: str
    workflow_id: str
    task: str
    pid: int
    start: float
    end: float | None = None
    last_alive: float | None = None  # last time the scanner saw a process of this attempt

    @property
    def key(self) -> tuple[str, str]:
        return (self.workflow_id, self.task)

    @property
    def stop(self) -> float:
        """When this copy stopped running: its end line, else the last time it was seen alive."""
        candidates = [t for t in (self.end, self.last_alive) if t is not None]
        return max(candidates) if candidates else self.start


@dataclass(frozen=True)
class Overlap:
    """Two attempts of one task alive at the same time."""

    workflow_id: str
    task: str
    first: str
    second: str
    seconds: float


@dataclass
class LedgerReport:
    """What :func:`analyse` found."""

    runs: dict[str, AttemptRun] = field(default_factory=dict)
    overlaps: list[Overlap] = field(default_factory=list)
    completions: dict[tuple[str, str], int] = field(default_factory=dict)
    starts: dict[tuple[str, str], int] = field(default_factory=dict)

    def reruns(self) -> dict[tuple[str, str], int]:
        """Task -> completed bodies beyond the first (0 for tasks that completed once)."""
        return {key: n - 1 for key, n in self.completions.items() if n > 1}

    def by_task(self, task: str) -> list[AttemptRun]:
        """The attempts of every task named ``task`` (any workflow), in start order."""
        return sorted((r for r in self.runs.values() if r.task == task), key=lambda r: r.start)


def read_ledger(path: Path) -> dict[str, AttemptRun]:
    """Attempt id -> its run. Torn or foreign lines are ignored (a killed ``echo`` can leave one)."""
    runs: dict[str, AttemptRun] = {}
    if not path.exists():
        return runs
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        words = line.split()
        if len(words) != 6 or words[1] not in ("start", "end"):
            continue
        try:
            at, pid = float(words[0]), int(words[5])
        except ValueError:
            continue
        _, event, workflow_id, task, attempt_id, _ = words
        run = runs.get(attempt_id)
        if run is None:
            run = runs[attempt_id] = AttemptRun(attempt_id, workflow_id, task, pid, start=at)
        if event == "start":
            run.start = min(run.start, at)
        else:
            run.end = at
    return runs


def analyse(runs: Mapping[str, AttemptRun], last_alive: Mapping[str, float]) -> LedgerReport:
    """Overlaps and completion counts from the ledger and the scanner's last sightings."""
    report = LedgerReport(runs=dict(runs))
    for attempt_id, seen in last_alive.items():
        if attempt_id in report.runs:
            report.runs[attempt_id].last_alive = seen
    per_task: dict[tuple[str, str], list[AttemptRun]] = defaultdict(list)
    for run in report.runs.values():
        per_task[run.key].append(run)
    for key, attempts in per_task.items():
        report.starts[key] = len(attempts)
        report.completions[key] = sum(1 for r in attempts if r.end is not None)
        report.overlaps.extend(_overlaps(attempts))
    return report


def _overlaps(attempts: Iterable[AttemptRun]) -> list[Overlap]:
    ordered = sorted(attempts, key=lambda r: r.start)
    found = []
    for i, first in enumerate(ordered):
        for second in ordered[i + 1 :]:
            shared = min(first.stop, second.stop) - max(first.start, second.start)
            if shared > OVERLAP_TOLERANCE_S:
                found.append(Overlap(first.workflow_id, first.task, first.attempt_id, second.attempt_id, shared))
    return found
