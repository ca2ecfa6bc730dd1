"""The machine's ordering component: learned durations, per-task ranks, and their flushes.

Pure like the rest of the core. :class:`~corral.controller.core.state.MachineState` owns one
``Ordering`` and calls it at four points: a workflow starts (or is restored) -> :meth:`rank_workflow`;
a task is queued -> :meth:`score`; an attempt completes -> :meth:`learn`; a tick commits ->
:meth:`take_changes` (only when a flush is due: learned durations are hints, written every
``durations_flush_s`` and when a workflow ends rather than with every completion).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from corral.controller.core.durations import (
    DurationBook,
    DurationChanges,
    DurationSource,
    fast_fingerprint,
    fingerprint,
)
from corral.controller.core.model import Task, Workflow
from corral.controller.core.rank import dag_of, ranks_by_position, structural_by_position

__all__ = ["Ordering", "TaskRank"]

_FINGERPRINT_CACHE = 65_536  # payloads whose fingerprint is remembered (tasks hold the bytes anyway)


class TaskRank(NamedTuple):
    """How a task is ordered: upward rank and expected duration (seconds), their source, queue score.

    A named tuple: one is made per task when its workflow starts (cheaper than a frozen dataclass).
    """

    rank_s: float
    expected_s: float
    source: DurationSource
    score: float


#: How soon after a workflow ends the durations it taught are stored (see Ordering.flush_soon).
END_FLUSH_S = 1.0


class Ordering:
    """Durations learned from completed attempts, and the ranks of started workflows' tasks."""

    def __init__(self, max_learned: int, flush_every_s: float) -> None:
        self.book = DurationBook(max_learned)
        self.ranking: dict[str, TaskRank] = {}  # task id -> rank (tasks of started workflows)
        self.flush_every_s = flush_every_s
        self._fingerprints: dict[tuple[str, bytes], str] = {}  # payload -> fingerprint (bounded)
        self._next_flush = 0.0
        self._soon: float | None = None  # a workflow ended: flush by then (see flush_soon)
        self._flush = False

    def score(self, task_id: str) -> float:
        """The queue score of a task (0 before its workflow was ranked)."""
        ranked = self.ranking.get(task_id)
        return ranked.score if ranked is not None else 0.0

    def fingerprint_of(self, task: Task) -> str:
        """The task's payload fingerprint, cached (payloads repeat across runs and tasks)."""
        # Most payloads start with their key: a prefix match, no parse. Not cached, because their
        # bytes usually differ per task (the arguments), so a cache would only churn.
        fast = fast_fingerprint(task.agent_type, task.payload)
        if fast is not None:
            return fast
        key = (task.agent_type, task.payload)
        found = self._fingerprints.get(key)
        if found is None:
            if len(self._fingerprints) >= _FINGERPRINT_CACHE:
                self._fingerprints.clear()  # crude but bounded; refilled from the next tasks
            found = self._fingerprints[key] = fingerprint(task.agent_type, task.payload)
        return found

    def rank_workflow(self, workflow: Workflow, tasks: Sequence[Task]) -> None:
        """Rank every task of a workflow (O(V + E)): expected durations, upward ranks, scores.

        Durations come from the estimate, else history (task, then fingerprint). When none is
        known for any task the ranks are structural (:func:`structural_ranks`: tasks below);
        tasks without a duration in a partly known workflow count as the mean of the known ones.
        """
        # Lists by position, not dicts by task id: a 200k-task workflow starts in one tick, and
        # its transients come on top of its records (see core/dag.py).
        seconds_of: list[float] = []
        sources: list[DurationSource] = []
        known = 0
        total = 0.0
        book = self.book
        # A fingerprint costs a look at the payload: only worth it when the namespace has some.
        prints = book.knows_fingerprints(workflow.namespace)
        for task in tasks:
            seconds, source = book.expected(task.namespace, workflow.name, task.name, task.estimated_duration_s, "")
            if prints and source is DurationSource.STRUCTURAL:
                seconds, source = book.expected(
                    task.namespace, workflow.name, task.name, 0.0, self.fingerprint_of(task)
                )
            seconds_of.append(seconds)
            sources.append(source)
            if source is not DurationSource.STRUCTURAL:
                known += 1
                total += seconds
        dag = dag_of(workflow.task_ids, [task.dependencies for task in tasks])
        if known:
            fill = total / known
            weights = [
                seconds if source is not DurationSource.STRUCTURAL else fill
                for seconds, source in zip(seconds_of, sources, strict=True)
            ]
            rank, score = ranks_by_position(dag, weights)
        else:
            rank, score = structural_by_position(dag)
        del dag
        ranking = self.ranking
        for i, task in enumerate(tasks):
            ranking[task.id] = TaskRank(rank[i], seconds_of[i], sources[i], score[i])

    def learn(
        self,
        task: Task,
        workflow_name: str,
        seconds: float,
        now: float,
        peak_rss_bytes: int = 0,
        cpu_s: float = 0.0,
        workflow_tasks: int = 0,
    ) -> None:
        """A completed attempt ran ``seconds`` (and used this much): feed the task's and its
        fingerprint's averages.

        A workflow of more tasks than the book holds (``workflow_tasks`` > ``max_entries``) feeds
        only the fingerprint's: its per-task entries could not all stay (each run would evict its own
        first tasks, least recently used), and at ~250 B each they were the largest per-task cost
        of a finished 200k-task workflow, pinning allocator arenas after its eviction.
        """
        name = task.name if workflow_tasks <= self.book.max_entries else ""
        self.book.learn(
            task.namespace, workflow_name, name, self.fingerprint_of(task), seconds, now, peak_rss_bytes, cpu_s
        )

    def flush_soon(self, now: float) -> None:
        """A workflow ended: have what it taught stored within :data:`END_FLUSH_S`.

        Not in the tick that ends it: every workflow that ends meanwhile shares one write (one-task
        workflows back to back wrote their durations with every end, a table more per commit).
        Learning itself is immediate; only the copy that survives a restart waits.
        """
        due = now + END_FLUSH_S
        if self._soon is None or due < self._soon:
            self._soon = due

    def flush_if_due(self, now: float, *, force: bool = False) -> None:
        """Have the next commit carry the learned durations when ``flush_every_s`` passed, a
        :meth:`flush_soon` came due, or ``force`` (the controller stops)."""
        if force or now >= self._next_flush or (self._soon is not None and now >= self._soon):
            self._flush = True
            self._next_flush = now + self.flush_every_s
            self._soon = None

    def take_changes(self) -> DurationChanges | None:
        """The durations to commit now, or None when no flush is due."""
        if not self._flush:
            return None
        self._flush = False
        return self.book.take_changes()
