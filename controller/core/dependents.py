"""Task id -> the ids of the tasks that depend on it, kept small for wide workflows."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["Dependents"]


class Dependents(dict[str, Sequence[str]]):
    """Task id -> the ids of the tasks that depend on it.

    A task nobody depends on has no entry (reading it gives an empty tuple, not stored): most
    tasks of wide workflows are leaves, and an empty list each cost ~90 B per task. Add with
    :meth:`add`, which appends to a list; :meth:`seal` (after each batch of tracked tasks) turns
    the lists added to into tuples, which cost 32-48 B less each (no spare capacity, no second
    block): ~6 MiB for a 200k-task workflow. A later :meth:`add` (a spawned task) reopens one.
    """

    __slots__ = ("_open",)

    def __init__(self) -> None:
        super().__init__()
        self._open: list[str] = []  # ids whose value is a list since the last seal

    def __missing__(self, key: str) -> Sequence[str]:
        return ()

    def add(self, task_id: str, dependent_id: str) -> None:
        """Record that ``dependent_id`` depends on ``task_id``."""
        found = self.get(task_id)
        if type(found) is list:
            found.append(dependent_id)
            return
        self[task_id] = [dependent_id] if found is None else [*found, dependent_id]
        self._open.append(task_id)

    def seal(self) -> None:
        """Turn the lists added to since the last seal into tuples."""
        for task_id in self._open:
            found = self.get(task_id)
            if type(found) is list:
                self[task_id] = tuple(found)
        self._open.clear()
