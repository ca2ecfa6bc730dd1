"""The context of a running python task: who it is, its last checkpoint, and how to save one.

A task function receives it as its ``ctx`` parameter when it declares one, or calls
:func:`current`::

    def count(to: int, ctx: TaskContext) -> int:
        start = (ctx.checkpoint_state or {}).get("n", 0)
        for n in range(start, to):
            work(n)
            if n % 10 == 0:
                ctx.checkpoint({"n": n})
        return to

``ctx.checkpoint(state)`` saves a JSON value (at most 1 MiB) to the attempt's checkpoint file,
written whole and then renamed over the old one, so a kill at any moment leaves either the old
state or the new one. The agent reports the file when it changes (at most once a second, and once
more when the attempt ends); the controller keeps the last one and hands it to the task's next
attempt (retry, preemption, timeout, agent loss, controller restart) as ``ctx.checkpoint_state``.

Shell tasks do the same with files: write ``$CORRAL_CHECKPOINT_FILE`` (write a temporary file,
then ``mv`` it), read ``$CORRAL_CHECKPOINT_IN`` (set only when there is a checkpoint).

``ctx.spawn(name, "module:function", kwargs={...})`` adds a task to the running workflow, named
``<this task>/<name>``; ``dependencies`` name this task (its result becomes an input), siblings by
their short name, or any task of the workflow. It is validated like a submitted task; a bad spawn
fails this task. Spawning is idempotent on the name, so a retried task does not add its children
twice. A task that depends on ``<this task>/*`` waits for this task and all it spawned.

Standard library only: the warm python workers import it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

__all__ = ["MAX_CHECKPOINT_BYTES", "MAX_SPAWN_BYTES", "TaskContext", "checkpoint_path", "current", "spawn_path"]

#: The largest checkpoint (its JSON text), as the controller enforces it.
MAX_CHECKPOINT_BYTES = 1 << 20
#: The largest single spawn (one call's tasks, as JSON).
MAX_SPAWN_BYTES = 4 << 20

_UNREAD: Any = object()


class TaskContext:
    """What a running task knows about itself (read from its ``CORRAL_*`` environment)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.task_id = env.get("CORRAL_TASK_ID", "")
        self.task_name = env.get("CORRAL_TASK_NAME", "")
        self.workflow_id = env.get("CORRAL_WORKFLOW_ID", "")
        self.attempt_id = env.get("CORRAL_ATTEMPT_ID", "")
        # Shell tasks get the paths; a python task's are in its worker's folder (HOME), named after
        # the attempt: no variables to set for every task that never checkpoints.
        home, attempt = env.get("HOME", ""), self.attempt_id
        self._file = env.get("CORRAL_CHECKPOINT_FILE") or (checkpoint_path(home, attempt) if home and attempt else "")
        self._spawn_file = env.get("CORRAL_SPAWN_FILE") or (spawn_path(home, attempt) if home and attempt else "")
        self._in = env.get("CORRAL_CHECKPOINT_IN", "")
        self._state: Any = _UNREAD

    @property
    def checkpoint_state(self) -> Any:
        """The last checkpoint an earlier attempt of this task saved, or None (first attempt)."""
        if self._state is _UNREAD:
            self._state = None
            if self._in:
                with open(self._in, "rb") as file:
                    self._state = json.loads(file.read())
        return self._state

    def checkpoint(self, state: Any) -> None:
        """Save ``state`` (any JSON value, at most 1 MiB) for the next attempt to resume from.

        Cheap enough to call often: the file is rewritten each time, the agent reports only the
        latest state at most once a second. Raises ValueError for a state that is not JSON or too big.
        """
        try:
            data = json.dumps(state, allow_nan=False, separators=(",", ":")).encode()
        except (TypeError, ValueError) as exc:
            raise ValueError(f"a checkpoint must be a JSON value: {exc}") from None
        if len(data) > MAX_CHECKPOINT_BYTES:
            raise ValueError(f"checkpoint of {len(data)} bytes, over the {MAX_CHECKPOINT_BYTES}-byte limit")
        if not self._file:
            raise RuntimeError("this task cannot checkpoint (no CORRAL_CHECKPOINT_FILE: not run by a corral agent)")
        temporary = f"{self._file}.tmp"
        with open(temporary, "wb") as file:
            file.write(data)
        os.replace(temporary, self._file)  # atomic: the agent never reads half a checkpoint
        _mark_touched()

    def spawn(
        self,
        name: str,
        function: str | None = None,
        *,
        args: list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        dependencies: list[str] | tuple[str, ...] = (),
        **fields: Any,
    ) -> str:
        """Add a task to this workflow; returns its full name (``<this task>/<name>``).

        ``function`` makes a python task (``module:function`` with ``args``/``kwargs``); otherwise
        pass ``payload=`` and ``agent_type=`` yourself. ``fields`` are any other task fields of the
        workflow file (``retries``, ``resources``, ``timeout``, ...).
        """
        task: dict[str, Any] = {"name": name, **fields}
        if function is not None:
            payload: dict[str, Any] = {"function": function}
            if args:
                payload["args"] = list(args)
            if kwargs:
                payload["kwargs"] = kwargs
            task.setdefault("agent_type", "python")
            task["payload"] = payload
        if dependencies:
            task["dependencies"] = list(dependencies)
        self.spawn_many([task])
        return f"{self.task_name}/{name}"

    def spawn_many(self, tasks: list[dict[str, Any]]) -> list[str]:
        """Add several tasks (workflow-file mappings) at once: one report for all of them."""
        if not self._spawn_file:
            raise RuntimeError("this task cannot spawn (no CORRAL_SPAWN_FILE: not run by a corral agent)")
        try:
            line = json.dumps(list(tasks), allow_nan=False, separators=(",", ":")).encode() + b"\n"
        except (TypeError, ValueError) as exc:
            raise ValueError(f"spawned tasks must be JSON: {exc}") from None
        if len(line) > MAX_SPAWN_BYTES:
            raise ValueError(f"a spawn of {len(line)} bytes, over the {MAX_SPAWN_BYTES}-byte limit: split it")
        # One write with O_APPEND: the agent reads whole lines only, so it never sees half of one.
        fd = os.open(self._spawn_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        _mark_touched()
        return [f"{self.task_name}/{t.get('name')}" for t in tasks]


def checkpoint_path(home: str, attempt_id: str) -> str:
    """A python attempt's checkpoint file in its worker's folder (the agent watches the same path)."""
    return f"{home}/.corral-checkpoint-{attempt_id}.json"


def spawn_path(home: str, attempt_id: str) -> str:
    """A python attempt's spawn file in its worker's folder."""
    return f"{home}/.corral-spawn-{attempt_id}.jsonl"


# The worker's state for the task it runs: inside one (begun), the context (made on first use, so
# tasks that never ask cost nothing), and whether the task wrote a checkpoint or spawned.
_active = False
_current: TaskContext | None = None
_environ: Mapping[str, str] | None = None
_touched = False


def _mark_touched() -> None:
    global _touched
    _touched = True


def current() -> TaskContext:
    """The context of the task running in this process; RuntimeError outside a task."""
    global _current
    if not _active:
        raise RuntimeError("corral.task.current() is only available inside a running corral task")
    if _current is None:
        _current = TaskContext(_environ)
    return _current


def _begin(environ: Mapping[str, str] | None = None) -> None:
    """Called by the worker before each task (tests pass an environment)."""
    global _active, _current, _environ, _touched
    _active, _current, _environ, _touched = True, None, environ, False


def _end() -> bool:
    """Called by the worker after each task: whether it checkpointed or spawned."""
    global _active, _current, _environ
    _active, _current, _environ = False, None, None
    return _touched
