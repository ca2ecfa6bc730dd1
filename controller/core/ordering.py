"""The machine's ordering component: learned durations, per-task ranks, and their flushes.

Pure like the rest of the core. :class:`~corral.controller.core.state.MachineState` owns one
``Ordering`` and calls it at four points: a workflow starts (or is restored) -> :meth:`rank_workflow`;
a task is queued -> :meth:`score`; an attempt completes -> :meth:`learn`; a tick commits ->
:meth:`take_changes` (only when a flush is due: learned durations are hints, written every
``durations_flush_s`` and when a workflow ends rather than with every completion). A workflow that
ends or leaves memory -> :meth:`forget`.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Sequence
from typing import NamedTuple

from corral.controller.core.durations import (
    DurationBook,
    DurationChanges,
    DurationSource,
    fast_fingerprint,
    fingerprint,
)
from corral.controller.core.model import Task, TaskState, Workflow
from corral.controller.core.plan_order import MAX_TASKS, searched_scores
from corral.controller.core.rank import dag_of, ranks_by_position, structural_by_position

__all__ = ["Ordering", "TaskRank", "WorkflowRanks"]

_FINGERPRINT_CACHE = 65_536  # payloads whose fingerprint is remembered (tasks hold the bytes anyway)


class TaskRank(NamedTuple):
    """How a task is ordered: upward rank and expected duration (seconds), their source, queue score.

    Made on demand by :meth:`Ordering.rank_of` for the few readers that want one (a status, an
    admission); the ranks themselves are kept in a :class:`WorkflowRanks`.
    """

    rank_s: float
    expected_s: float
    source: DurationSource
    score: float


#: DurationSource <-> the small code WorkflowRanks.sources keeps (one byte a task).
_SOURCES = tuple(DurationSource)
_CODE = {source: code for code, source in enumerate(_SOURCES)}
_LEARNED = _CODE[DurationSource.LEARNED]
_TERMINAL = frozenset(state for state in TaskState if state.terminal)


class WorkflowRanks:
    """The ranks of one workflow's tasks, by position (``Task.index``): 25 B a task.

    Columns rather than a record per task: a named tuple, its floats and its slot in a dict by task
    id cost 170-200 B a task, the largest cost added while a 200k-task workflow starts (DECISIONS:
    Memory, seventh wave). Built whole by :meth:`Ordering.rank_workflow`; tasks added later
    (spawned ones) lie past its end and are unranked until the workflow is ranked again.
    """

    __slots__ = ("expected_s", "rank_s", "score", "sources")

    def __init__(self, rank_s: array[float], expected_s: array[float], sources: bytearray, score: array[float]) -> None:
        self.rank_s = rank_s
        self.expected_s = expected_s
        self.sources = sources  # codes: _SOURCES[code]
        self.score = score

    def __len__(self) -> int:
        return len(self.score)

    def at(self, index: int) -> TaskRank:
        """The rank of the task at ``index`` (within bounds)."""
        return TaskRank(self.rank_s[index], self.expected_s[index], _SOURCES[self.sources[index]], self.score[index])

    def expected_by_id(self, task_ids: Sequence[str]) -> dict[str, float]:
        """Expected seconds by task id (``task_ids``: the workflow's, in order), finished tasks too."""
        return dict(zip(task_ids, self.expected_s, strict=False))  # spawned since: left out


#: How soon after a workflow ends the durations it taught are stored (see Ordering.flush_soon).
END_FLUSH_S = 1.0


class Ordering:
    """Durations learned from completed attempts, and the ranks of started workflows' tasks."""

    def __init__(self, max_learned: int, flush_every_s: float) -> None:
        self.book = DurationBook(max_learned)
        self.ranks: dict[str, WorkflowRanks] = {}  # workflow id -> its tasks' ranks (started, not ended)
        self.flush_every_s = flush_every_s
        self._fingerprints: dict[tuple[str, bytes], str] = {}  # payload -> fingerprint (bounded)
        self._next_flush = 0.0
        self._soon: float | None = None  # a workflow ended: flush by then (see flush_soon)
        self._flush = False

    def score(self, task: Task) -> float:
        """The queue score of a task being queued: 0 when unranked (see :meth:`rank_of`).

        On the queue's hot path, so it trusts what holds when a task is queued: it is not finished,
        and no compensation record is queued while its workflow has ranks (they are dropped when it
        starts compensating).
        """
        ranks = self.ranks.get(task.workflow_id)
        if ranks is None:
            return 0.0
        try:
            return ranks.score[task.index]
        except IndexError:  # spawned after the workflow was ranked
            return 0.0

    def rank_of(self, task: Task) -> TaskRank | None:
        """How the task is ordered, or None when it is unranked.

        Unranked: its workflow has not started, or ended (or was read back from the store); the task
        finished (a finished task shows its real times, not the guess that ordered it in the queue);
        it was spawned after its workflow was ranked; or it is a compensation record (it shares the
        index of the task it undoes but was never ranked).
        """
        ranks = self.ranks.get(task.workflow_id)
        if ranks is None or task.state in _TERMINAL or task.index >= len(ranks) or task.compensates:
            return None
        return ranks.at(task.index)

    def learned_seconds(self, task: Task) -> float:
        """What earlier runs of the task itself taught of its duration, as its workflow was ranked
        with it (0.0: nothing, an estimate or only a fingerprint's or the structure's guess)."""
        ranks = self.ranks.get(task.workflow_id)
        if ranks is None:
            return 0.0
        index = task.index
        if index < len(ranks.sources) and ranks.sources[index] == _LEARNED:
            return ranks.expected_s[index]
        return 0.0

    def forget(self, workflow_id: str) -> None:
        """Drop a workflow's ranks: it ended or left memory (nothing of it is queued any more)."""
        self.ranks.pop(workflow_id, None)

    def own_seconds(self, task: Task, workflow_name: str) -> float:
        """The task's own expected duration: its estimate, else what its earlier runs taught (0: neither)."""
        return self.book.expected(task.namespace, workflow_name, task.name, task.estimated_duration_s, "")[0]

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

    def rank_workflow(
        self, workflow: Workflow, tasks: Sequence[Task], slots: Callable[[], int] | None = None
    ) -> WorkflowRanks:
        """Rank every task of a workflow (O(V + E)): expected durations, upward ranks, scores.

        ``tasks``: the workflow's, in the order of ``workflow.task_ids`` (position = ``Task.index``,
        how readers find a task's rank). Replaces any earlier ranks of the workflow (a retry or
        rerun ranks it again, with what was learned meanwhile).

        Durations come from the estimate, else history (task, then fingerprint). When none is
        known for any task the ranks are structural (:func:`structural_ranks`: tasks below);
        tasks without a duration in a partly known workflow count as the mean of the known ones.
        With durations and ``slots`` (what the fleet can run of it at once, asked only when a
        search may run) the score may be a searched plan's order instead
        (:mod:`~corral.controller.core.plan_order`).
        """
        # Arrays by position, not dicts by task id: a 200k-task workflow starts in one tick, and
        # its transients come on top of its records (see core/dag.py). Sized once and exactly:
        # appends would leave spare room, and these are kept as long as the workflow runs.
        seconds_of = array("d", (0.0,)) * len(tasks)
        sources = bytearray(len(tasks))
        code = _CODE
        known = 0
        total = 0.0
        book = self.book
        # A fingerprint costs a look at the payload: only worth it when the namespace has some.
        prints = book.knows_fingerprints(workflow.namespace)
        for i, task in enumerate(tasks):
            seconds, source = book.expected(task.namespace, workflow.name, task.name, task.estimated_duration_s, "")
            if prints and source is DurationSource.STRUCTURAL:
                seconds, source = book.expected(
                    task.namespace, workflow.name, task.name, 0.0, self.fingerprint_of(task)
                )
            seconds_of[i] = seconds
            sources[i] = code[source]
            if source is not DurationSource.STRUCTURAL:
                known += 1
                total += seconds
        dag = dag_of(workflow.task_ids, [task.dependencies for task in tasks])
        if known:
            fill = total / known
            structural = code[DurationSource.STRUCTURAL]
            weights = array(
                "d",
                (
                    seconds if source != structural else fill
                    for seconds, source in zip(seconds_of, sources, strict=True)
                ),
            )
            rank, score = ranks_by_position(dag, weights)
            if slots is not None and len(tasks) <= MAX_TASKS:
                searched = searched_scores(dag, weights, rank, score, slots())
                if searched is not None:
                    score = searched
            del weights
        else:
            rank, score = structural_by_position(dag)
        del dag
        ranks = self.ranks[workflow.id] = WorkflowRanks(rank, seconds_of, sources, score)
        return ranks

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
