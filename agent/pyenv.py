"""A python worker's environment per task: its clean base plus the task's variables.

Apart from :mod:`corral.agent.pyworker`, which imports it: standard library only, cheap to import.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["TaskEnv", "restore_env"]


def restore_env(environ: Any, wanted: dict[str, str]) -> None:
    """Make ``os.environ`` exactly ``wanted`` (the slow path: a task changed the environment)."""
    current = dict(environ)
    for name in current.keys() - wanted.keys():
        del environ[name]
    for name, value in wanted.items():
        if current.get(name) != value:
            environ[name] = value


class TaskEnv:
    """Puts each task's environment in place: the worker's clean base plus the task's variables.

    The fast path compares the encoded mapping behind ``os.environ`` with a snapshot taken when the
    previous task started (one C-level dict comparison) and only sets the new task's variables; a
    task that changed anything gets the whole environment rebuilt.
    """

    def __init__(self) -> None:
        self.environ = os.environ
        self.base = dict(os.environ)
        self.previous: dict[str, str] = {}
        # The base as it is now: a child forked from the template finds the environment unchanged
        # and takes the fast path for its first task too (~50 us less per workflow switch).
        data = self._data()
        self.snapshot: Any = dict(data) if data is not None else None

    def _data(self) -> Any:
        return getattr(self.environ, "_data", None)

    def apply(self, task_env: dict[str, str]) -> None:
        environ = self.environ
        data = self._data()
        if data is None or self.snapshot is None or data != self.snapshot:
            restore_env(environ, self.base | task_env)
        else:
            for name in self.previous.keys() - task_env.keys():
                if name in self.base:
                    environ[name] = self.base[name]
                else:
                    del environ[name]
            previous = self.previous
            for name, value in task_env.items():
                if previous.get(name) != value:
                    environ[name] = value
        self.previous = task_env
        data = self._data()
        self.snapshot = dict(data) if data is not None else None
