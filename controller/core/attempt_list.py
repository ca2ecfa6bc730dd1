"""ListAttempts (issue 11): every attempt of one task, for ``corral attempts WF/TASK``.

A read query: it scans the attempts in memory, so nothing is added to the submit/assign/finish
path. Once some of the workflow's attempts left memory (completed tasks', :mod:`core.settled`), the
answer says so and the servicer reads the task's attempts from the store instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from corral.controller.core.model import Attempt, Task, Workflow
from corral.controller.core.requests import Caller
from corral.controller.errors import FailedPrecondition, clip

if TYPE_CHECKING:
    from corral.controller.core.machine import Machine

__all__ = ["AttemptsAnswer", "ListAttemptsQuery", "attempt_handlers"]


@dataclass(frozen=True, slots=True)
class ListAttemptsQuery:
    """ListAttempts: answers an :class:`AttemptsAnswer`."""

    READ: ClassVar[bool] = True
    workflow: str  # id or unique prefix
    task: str  # name, id or unique id prefix
    caller: Caller


@dataclass(frozen=True, slots=True)
class AttemptsAnswer:
    """The task, its workflow, and its attempts oldest first (by number). ``in_store``: some of
    the workflow's attempts are in the store only; read the task's from there."""

    workflow: Workflow
    task: Task
    attempts: tuple[Attempt, ...]
    in_store: bool = False


def attempt_handlers(machine: Machine) -> dict[type, Callable[[Any, float], Any]]:
    """The handler of :class:`ListAttemptsQuery`, for the machine's handler table."""
    from corral.controller.core.queries import visible_task, visible_workflow

    def list_attempts(event: ListAttemptsQuery, now: float) -> AttemptsAnswer:
        workflow = visible_workflow(machine, event.workflow, event.caller)
        task_id = machine.by_name.get((workflow.id, event.task))
        if task_id is not None:
            task = machine.tasks[task_id]
        else:
            task = visible_task(machine, event.task, event.caller, "task")
            if task.workflow_id != workflow.id:
                raise FailedPrecondition(f"task {clip(event.task)!r} is not a task of workflow {workflow.id}")
        found = [a for a in machine.attempts.values() if a.task_id == task.id]
        found.sort(key=lambda a: (a.number, a.assigned_at))
        return AttemptsAnswer(workflow, task, tuple(found), machine.settled.away(workflow.id))

    return {ListAttemptsQuery: list_attempts}
