"""The indexed ready queue: one heap per agent type, priority ageing in steps, rank, no full scans.

The order (smaller key first) is ``(aged-priority band, latest start, -score, push sequence)``:

* **Aged-priority band.** Effective priority is ``priority + ageing_per_s * waited``, raised in
  whole steps of ``ageing_step`` points. Comparing two tasks at the same ``now`` the ``now`` terms
  cancel, so the band is the static ``priority - ageing_step * floor(ageing_per_s * ready_at /
  ageing_step)``: heaps built once stay correct as time passes. Tasks of one priority that became
  ready within the same ``ageing_step / ageing_per_s`` seconds share a band; a task from an older
  window is ahead of any newer one of its priority, and ``ageing_step`` points ahead per window
  of a lower priority (a priority-0 task overtakes fresh priority-100 work after about
  ``100 / ageing_per_s`` seconds, as with continuous ageing, just quantised). ``ageing_step`` 0
  is continuous ageing: the band is then exact and the score only breaks exact ties.
* **Score** (higher first): the task's graph score from :mod:`rank` (upward rank plus lookahead),
  so within a band the critical path goes first. Before it, the least-slack term (below).
* **Latest start** (earlier first): a deadline task's latest finish minus its expected duration
  (:mod:`deadlines`), an absolute time, so static; tasks without a deadline have ``inf`` and sort
  after those with one in their band (EDF / least slack within a priority band).
* **Push sequence**: FIFO among equals.

Starvation: later arrivals of a priority fall into lower bands once a window passes, so a task
waits at most for the finitely many tasks of its own and older windows (and of higher bands,
which it catches up with at ``ageing_per_s``), whatever their scores.

Removal is lazy: ``discard`` drops the index entry and the heap item becomes stale, skipped when
met and swept when stale items outnumber live ones. Every operation is O(log n) amortised.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Collection, Iterator
from dataclasses import dataclass

__all__ = ["OrderKey", "QueueEntry", "ReadyQueue"]

#: The sort key of a queued task, smaller first: (band, latest start, -score, sequence). See the module docstring.
OrderKey = tuple[float, float, float, int]
# A heap item: (band, latest start, -score, sequence, task id). The sequence number is unique per push, so it
# identifies the live version of an entry and gives FIFO among equals.
_Item = tuple[float, float, float, int, str]
# A delayed item: (not_before, sequence, task id).
_Delayed = tuple[float, int, str]

_SWEEP_MIN = 64  # never sweep tiny heaps: the rebuild would cost more than the stale items


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """One queued task as the queue sees it."""

    task_id: str
    agent_type: str
    priority: int
    ready_at: float
    not_before: float | None
    seq: int
    delayed: bool  # still waiting for its backoff to pass
    score: float = 0.0  # graph score (upward rank + lookahead): higher goes first within a band
    latest_start: float = math.inf  # deadlines: least slack first within a band (inf: no deadline)
    partition: str = ""  # its namespace: fair share walks each namespace's tasks apart (fairshare.py)

    def effective_priority(self, now: float, ageing_per_s: float) -> float:
        """Priority raised by ageing: ``priority + ageing_per_s * (now - ready_at)``."""
        return self.priority + ageing_per_s * (now - self.ready_at)


class ReadyQueue:
    """Ready tasks indexed by agent type, ordered by aged-priority band, latest start, score, then FIFO.

    Tasks pushed with a ``not_before`` wait in a backoff heap until :meth:`promote` (or
    :meth:`candidates`, which promotes first) moves them to their agent type's ready heap.
    Do not push or discard while iterating :meth:`candidates`.
    """

    def __init__(self, ageing_per_s: float = 0.5, ageing_step: float = 0.0) -> None:
        if not ageing_per_s >= 0 or ageing_per_s == float("inf"):
            raise ValueError("ageing_per_s must be a finite number >= 0")
        if not ageing_step >= 0 or ageing_step == float("inf"):
            raise ValueError("ageing_step must be a finite number >= 0")
        self.ageing_per_s = ageing_per_s
        self.ageing_step = ageing_step
        self._entries: dict[str, QueueEntry] = {}
        # One heap per (agent type, partition); the partitions of each type, in creation order.
        self._heaps: dict[tuple[str, str], list[_Item]] = {}
        self._heap_live: dict[tuple[str, str], int] = {}
        self._partitions: dict[str, list[str]] = {}
        self._ready_counts: dict[str, int] = {}  # live, not delayed entries per agent type
        self._counts: dict[str, int] = {}  # all live entries per agent type
        self._delayed: list[_Delayed] = []
        self._delayed_count = 0
        self._seq = 0

    # -- contents -------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._entries

    def entry(self, task_id: str) -> QueueEntry | None:
        """The queued entry of ``task_id``, or None."""
        return self._entries.get(task_id)

    def delayed(self, task_id: str) -> float | None:
        """The ``not_before`` of a task still waiting for its backoff, else None."""
        entry = self._entries.get(task_id)
        return entry.not_before if entry is not None and entry.delayed else None

    def agent_types(self) -> set[str]:
        """Agent types with at least one queued task (delayed ones included)."""
        return {agent_type for agent_type, count in self._counts.items() if count}

    def ready_count(self, agent_type: str) -> int:
        """How many tasks of ``agent_type`` are ready (not delayed)."""
        return self._ready_counts.get(agent_type, 0)

    def entries(self) -> Iterator[QueueEntry]:
        """Every queued entry (delayed ones included), in no particular order."""
        return iter(self._entries.values())

    def order_key(self, task_id: str) -> OrderKey:
        """The sort key of a queued task: smaller goes first. Raises KeyError when absent."""
        entry = self._entries[task_id]
        return (self._band(entry.priority, entry.ready_at), entry.latest_start, -entry.score, entry.seq)

    # -- changes --------------------------------------------------------------------------------

    def push(
        self,
        task_id: str,
        agent_type: str,
        priority: int,
        ready_at: float,
        not_before: float | None = None,
        score: float = 0.0,
        latest_start: float = math.inf,
        partition: str = "",
    ) -> None:
        """Queue a task; pushing an id already present replaces its entry.

        ``latest_start`` orders tasks within a band before the score, earliest first (least slack:
        :mod:`deadlines`); ``score`` then orders, higher first (the graph score from :mod:`rank`).
        ``partition`` (the namespace) lets :meth:`candidates` walk one partition's tasks alone.
        """
        self.discard(task_id)
        self._seq += 1
        seq = self._seq
        delayed = not_before is not None
        entry = QueueEntry(
            task_id, agent_type, priority, ready_at, not_before, seq, delayed, score, latest_start, partition
        )
        self._entries[task_id] = entry
        self._counts[agent_type] = self._counts.get(agent_type, 0) + 1
        if not_before is not None:
            heapq.heappush(self._delayed, (not_before, seq, task_id))
            self._delayed_count += 1
        else:
            self._enqueue(entry)

    def discard(self, task_id: str) -> None:
        """Remove a task if present (its heap item goes stale and is swept later)."""
        entry = self._entries.pop(task_id, None)
        if entry is None:
            return
        self._counts[entry.agent_type] -= 1
        # A heap with no live item left is emptied at once, not swept later: its stale items
        # (tuples holding task ids) would otherwise outlive their workflow, each pinning one of
        # the allocator's 1 MiB arenas after the workflow leaves memory (issue 12's idle RSS).
        if entry.delayed:
            self._delayed_count -= 1
            if not self._delayed_count:
                self._delayed.clear()
            elif len(self._delayed) > _SWEEP_MIN and len(self._delayed) > 2 * self._delayed_count:
                self._delayed = [item for item in self._delayed if self._live_delayed(item)]
                heapq.heapify(self._delayed)
        else:
            self._ready_counts[entry.agent_type] -= 1
            key = (entry.agent_type, entry.partition)
            heap = self._heaps[key]
            live = self._heap_live[key] = self._heap_live[key] - 1
            if not live:
                heap.clear()
            elif len(heap) > _SWEEP_MIN and len(heap) > 2 * live:
                heap[:] = [item for item in heap if self._live(item)]
                heapq.heapify(heap)

    def promote(self, now: float) -> None:
        """Move tasks whose backoff has passed (``not_before <= now``) into the ready heaps."""
        delayed = self._delayed
        while delayed and delayed[0][0] <= now:
            item = heapq.heappop(delayed)
            if not self._live_delayed(item):
                continue
            old = self._entries[item[2]]
            entry = QueueEntry(
                old.task_id,
                old.agent_type,
                old.priority,
                old.ready_at,
                old.not_before,
                old.seq,
                False,
                old.score,
                old.latest_start,
                old.partition,
            )
            self._entries[entry.task_id] = entry
            self._delayed_count -= 1
            self._enqueue(entry)
        if not self._delayed_count:
            delayed.clear()  # only stale items left (see discard)

    def next_wakeup(self) -> float | None:
        """The earliest ``not_before`` among tasks still in backoff, or None."""
        delayed = self._delayed
        while delayed and not self._live_delayed(delayed[0]):
            heapq.heappop(delayed)
        return delayed[0][0] if delayed else None

    # -- reading in order -----------------------------------------------------------------------

    def partitions(self, agent_type: str) -> list[str]:
        """The partitions (namespaces) that ever had a ready task of ``agent_type``."""
        return self._partitions.get(agent_type, [])

    def candidates(self, agent_types: Collection[str], now: float, partition: str | None = None) -> Iterator[str]:
        """Ready task ids of ``agent_types`` in queue order (band, latest start, score, FIFO).

        With ``partition``, only that partition's tasks (fair share walks each namespace apart).

        Nothing is removed: the caller discards what it places. Tasks whose backoff has passed by
        ``now`` are promoted first; tasks still in backoff are not yielded. The walk is lazy, so
        taking k ids costs O(k log n) whatever the queue's length.
        """
        self.promote(now)
        # A frontier over the heap arrays: the heap property means a node's children never sort
        # before it, so expanding from the roots visits items in order without popping anything.
        frontier: list[tuple[_Item, int, int]] = []  # (item, heap number, index in that heap)
        heaps: list[list[_Item]] = []
        for agent_type in dict.fromkeys(agent_types):
            for part in self._partitions.get(agent_type, ()) if partition is None else (partition,):
                heap = self._heaps.get((agent_type, part))
                if not heap:
                    continue
                # Stale items at the top are the common case (placed tasks are discarded): drop them
                # so every walk does not step over them again.
                while heap and not self._live(heap[0]):
                    heapq.heappop(heap)
                if heap:
                    heaps.append(heap)
                    frontier.append((heap[0], len(heaps) - 1, 0))
        heapq.heapify(frontier)
        while frontier:
            item, number, position = heapq.heappop(frontier)
            heap = heaps[number]
            for child in (2 * position + 1, 2 * position + 2):
                if child < len(heap):
                    heapq.heappush(frontier, (heap[child], number, child))
            if self._live(item):
                yield item[4]

    # -- internals ------------------------------------------------------------------------------

    def _band(self, priority: int, ready_at: float) -> float:
        # Negated so a min-heap yields the highest band first.
        aged = self.ageing_per_s * ready_at
        step = self.ageing_step
        if step > 0:
            aged = step * math.floor(aged / step)
        return aged - priority

    def _enqueue(self, entry: QueueEntry) -> None:
        key = (entry.agent_type, entry.partition)
        heap = self._heaps.get(key)
        if heap is None:
            heap = self._heaps[key] = []
            self._partitions.setdefault(entry.agent_type, []).append(entry.partition)
        band = self._band(entry.priority, entry.ready_at)
        heapq.heappush(heap, (band, entry.latest_start, -entry.score, entry.seq, entry.task_id))
        self._ready_counts[entry.agent_type] = self._ready_counts.get(entry.agent_type, 0) + 1
        self._heap_live[key] = self._heap_live.get(key, 0) + 1

    def _live(self, item: _Item) -> bool:
        entry = self._entries.get(item[4])
        return entry is not None and entry.seq == item[3] and not entry.delayed

    def _live_delayed(self, item: _Delayed) -> bool:
        entry = self._entries.get(item[2])
        return entry is not None and entry.seq == item[1] and entry.delayed
