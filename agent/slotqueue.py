"""The attempts an agent holds for a slot, in the controller's order.

The controller sends work ahead of free slots: short tasks (prefetch) and long tasks whose slot is
about to free (lookahead). Each assignment carries the controller's queue order when it was placed
(``TaskAssignment.queue_order``: priority band, latest start, minus the graph score). Started in
the order they arrived, a long task sent ahead of its slot held back a more critical short task
that became ready after it (on the cycles trace: the critical chain waited a second more). So a
free slot takes the lowest order first, then the earliest received; attempts without an order
(an older controller) keep the order they arrived in.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator
from typing import Any, Generic, Protocol, TypeVar

__all__ = ["SlotQueue"]


class _Queued(Protocol):
    @property
    def id(self) -> str: ...


Q = TypeVar("Q", bound=_Queued)


# A heap entry: [order, arrival, item]. A list, so the heap compares entries in C (order, then the
# unique arrival: the item is never compared), and the item can be cleared in place (None once
# removed, dropped when it reaches the top).
_ORDER, _ARRIVAL, _ITEM = 0, 1, 2


class SlotQueue(Generic[Q]):
    """A priority queue of attempts keyed by ``(order, arrival)``, with removal by identity."""

    def __init__(self) -> None:
        self._heap: list[list[Any]] = []
        self._entries: dict[str, list[Any]] = {}  # attempt id -> its live heap entry
        self._arrivals = itertools.count()

    def __len__(self) -> int:
        return len(self._entries)

    def __bool__(self) -> bool:
        return bool(self._entries)

    def __iter__(self) -> Iterator[Q]:
        """The queued attempts in the order they will start."""
        for entry in sorted(self._entries.values(), key=lambda e: (e[_ORDER], e[_ARRIVAL])):
            yield entry[_ITEM]

    def push(self, item: Q, order: tuple[float, ...]) -> None:
        """Queue ``item`` (an attempt id already queued is replaced)."""
        self.remove(item)
        entry = [order, next(self._arrivals), item]
        self._entries[item.id] = entry
        heapq.heappush(self._heap, entry)

    def pop(self) -> Q:
        """The attempt to start next (IndexError when empty)."""
        heap = self._heap
        while heap:
            item: Q | None = heapq.heappop(heap)[_ITEM]
            if item is not None:
                del self._entries[item.id]
                return item
        raise IndexError("pop from an empty slot queue")

    def peek(self) -> Q:
        """The attempt :meth:`pop` would return, left queued (IndexError when empty)."""
        heap = self._heap
        while heap:
            item: Q | None = heap[0][_ITEM]
            if item is not None:
                return item
            heapq.heappop(heap)
        raise IndexError("peek into an empty slot queue")

    def remove(self, item: Q) -> None:
        """Drop ``item`` if queued (cancelled, released, killed)."""
        entry = self._entries.pop(item.id, None)
        if entry is not None:
            entry[_ITEM] = None
            if len(self._heap) > 2 * len(self._entries) + 64:  # removed entries never pile up
                self._heap = [e for e in self._heap if e[_ITEM] is not None]
                heapq.heapify(self._heap)
