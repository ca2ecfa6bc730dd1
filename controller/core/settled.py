"""Attempts of completed tasks leave memory once committed (issue 12); the store keeps them.

A 200,000-task workflow's finished attempts held ~60 MiB of the controller's peak: an ``Attempt``
of 22 slots, its id, its times and its entry in ``attempts``, for every task that ever ran. What
live reads still need of them stays here, per workflow and compact:

- the usage its final attempt measured (peak RSS, CPU seconds), by task index, for status;
- per run, how many attempts were made and the names of the first tasks that ran, for ``corral runs``.

When a task becomes COMPLETED (:meth:`Settled.queue`), its final attempt's row is in that tick's
batch. :meth:`Settled.drop_queued` runs once the batch is taken, and the runtime commits it before
the next tick reads anything, so an attempt is never in neither place. Reads that want the attempts
themselves (ListAttempts, the dashboard's task panel, logs of one attempt) go to the store when
:meth:`Settled.away` says some of the workflow's attempts are there only.

Kept in memory: pulled attempts (``Scheduler.GetNextTask``: their worker may repeat its report and
is answered from memory), and the earlier attempts of a task that needed retries (rare). Pure.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass, field

from corral.controller.core.model import Attempt, AttemptState, Task, TaskState

__all__ = ["NAMES_KEPT", "RunTally", "Settled"]

#: Task names kept per run for ``corral runs`` (as many as a ListRuns answer shows).
NAMES_KEPT = 100


@dataclass(slots=True)
class RunTally:
    """Attempts of one run that left memory: how many, and the first task names that ran."""

    made: int = 0
    names: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Away:
    """One workflow's settled attempts: usage by task index, tallies by run."""

    peak_rss: array[int] = field(default_factory=lambda: array("q"))
    cpu_s: array[float] = field(default_factory=lambda: array("d"))
    runs: dict[int, RunTally] = field(default_factory=dict)

    def record(self, task: Task, attempt: Attempt) -> None:
        index = task.index
        if attempt.peak_rss_bytes or attempt.cpu_s:
            missing = index + 1 - len(self.peak_rss)
            if missing > 0:  # grown to the highest index seen (spawned tasks come last)
                self.peak_rss.extend(array("q", bytes(8 * missing)))
                self.cpu_s.extend(array("d", bytes(8 * missing)))
            self.peak_rss[index] = attempt.peak_rss_bytes
            self.cpu_s[index] = attempt.cpu_s
        tally = self.runs.get(attempt.run)
        if tally is None:
            tally = self.runs[attempt.run] = RunTally()
        tally.made += 1
        if len(tally.names) < NAMES_KEPT and task.name not in tally.names:
            tally.names.append(task.name)


class Settled:
    """Which completed tasks' attempts leave memory next, and what stays of those that left."""

    __slots__ = ("_away", "_queued")

    def __init__(self) -> None:
        self._queued: list[Task] = []
        self._away: dict[str, _Away] = {}

    def queue(self, task: Task) -> None:
        """``task`` became COMPLETED: its final attempt leaves memory after this tick's batch."""
        self._queued.append(task)

    def drop_queued(self, attempts: MutableMapping[str, Attempt], tasks: MutableMapping[str, Task]) -> None:
        """Remove the queued tasks' final attempts from ``attempts`` (their rows are taken)."""
        queued, self._queued = self._queued, []
        self.settle_all(queued, attempts, tasks)

    def settle_all(
        self, settling: Iterable[Task], attempts: MutableMapping[str, Attempt], tasks: MutableMapping[str, Task]
    ) -> None:
        """:meth:`settle` each task (the queued ones, or all those a restore or readmission loaded)."""
        for task in settling:
            self.settle(task, attempts, tasks)

    def settle(self, task: Task, attempts: MutableMapping[str, Attempt], tasks: MutableMapping[str, Task]) -> None:
        """Drop ``task``'s final attempt from memory if it completed it (restore calls this too)."""
        if task.state is not TaskState.COMPLETED or tasks.get(task.id) is not task:
            return  # run again since (a rerun in the same tick), or its workflow left memory
        attempt = attempts.get(task.current_attempt_id or "")
        if attempt is None or attempt.pulled or attempt.state is not AttemptState.SUCCEEDED:
            return
        away = self._away.get(task.workflow_id)
        if away is None:
            away = self._away[task.workflow_id] = _Away()
        away.record(task, attempt)
        del attempts[attempt.id]

    def away(self, workflow_id: str) -> bool:
        """Whether some of the workflow's attempts are in the store only."""
        return workflow_id in self._away

    def usage(self, task: Task) -> tuple[int, float]:
        """The usage the task's settled final attempt measured: (peak RSS bytes, CPU s); zeros if none."""
        away = self._away.get(task.workflow_id)
        if away is None or task.index >= len(away.peak_rss):
            return 0, 0.0
        return away.peak_rss[task.index], away.cpu_s[task.index]

    def runs(self, workflow_id: str) -> dict[int, RunTally]:
        """Per run, the attempts of the workflow that left memory."""
        away = self._away.get(workflow_id)
        return away.runs if away is not None else {}

    def forget(self, workflow_id: str) -> None:
        """The workflow left memory (eviction, retention): nothing of it stays here."""
        self._away.pop(workflow_id, None)
