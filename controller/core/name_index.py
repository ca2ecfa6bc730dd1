"""The (workflow id, task name) -> task id index, stored per workflow.

A flat dict keyed by ``(workflow id, name)`` tuples keeps one 2-tuple alive per task (about
80 bytes with its dict slot): 16 MiB for a 200k-task workflow. :class:`NameIndex` keeps the same
mapping API — ``get``, ``pop``, item access with a tuple key — over one ``{name: task id}`` dict
per workflow, so a tuple exists only for the duration of a lookup.
"""

from __future__ import annotations

from collections.abc import Iterator

__all__ = ["NameIndex"]


class NameIndex:
    """``(workflow id, task name) -> task id``, as a dict of dicts per workflow."""

    __slots__ = ("_count", "_workflows")

    def __init__(self) -> None:
        self._workflows: dict[str, dict[str, str]] = {}
        self._count = 0

    def __setitem__(self, key: tuple[str, str], task_id: str) -> None:
        workflow_id, name = key
        names = self._workflows.get(workflow_id)
        if names is None:
            names = self._workflows[workflow_id] = {}
        if name not in names:
            self._count += 1
        names[name] = task_id

    def __getitem__(self, key: tuple[str, str]) -> str:
        found = self.get(key)
        if found is None:
            raise KeyError(key)
        return found

    def __contains__(self, key: object) -> bool:
        return isinstance(key, tuple) and len(key) == 2 and self.get(key) is not None

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[tuple[str, str]]:
        for workflow_id, names in self._workflows.items():
            for name in names:
                yield workflow_id, name

    def get(self, key: tuple[str, str], default: str | None = None) -> str | None:
        """The task id of ``(workflow id, name)``, or ``default``."""
        names = self._workflows.get(key[0])
        if names is None:
            return default
        return names.get(key[1], default)

    def pop(self, key: tuple[str, str], default: str | None = None) -> str | None:
        """Remove and return the task id of ``(workflow id, name)`` (``default`` when absent)."""
        workflow_id, name = key
        names = self._workflows.get(workflow_id)
        if names is None or name not in names:
            return default
        self._count -= 1
        task_id = names.pop(name)
        if not names:
            del self._workflows[workflow_id]
        return task_id

    def clear(self) -> None:
        self._workflows.clear()
        self._count = 0
