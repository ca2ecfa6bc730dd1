"""Every legal state transition of tasks, attempts and workflows, in one table each.

The state machine changes a state only through :func:`move_task`, :func:`move_attempt` and
:func:`move_workflow`; a transition missing from these tables is a bug and raises at once.
"""

from __future__ import annotations

from corral.controller.core.model import (
    Attempt,
    AttemptState,
    Task,
    TaskState,
    Workflow,
    WorkflowState,
)

__all__ = [
    "ATTEMPT_TRANSITIONS",
    "TASK_TRANSITIONS",
    "WORKFLOW_TRANSITIONS",
    "IllegalTransition",
    "move_attempt",
    "move_task",
    "move_workflow",
]

T = TaskState
A = AttemptState
W = WorkflowState


class IllegalTransition(RuntimeError):
    """A transition absent from the tables: a bug in the state machine, never a user error."""


TASK_TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    # PENDING -> READY: dependencies done and the workflow runs; SKIPPED: an upstream failed.
    T.PENDING: frozenset({T.READY, T.SKIPPED, T.CANCELLED}),
    # READY -> FAILED: it can never be dispatched (a secret it refers to was deleted).
    # READY -> COMPLETED: a fenced attempt's success arrived before its replacement was placed.
    T.READY: frozenset({T.ASSIGNED, T.CANCELLED, T.FAILED, T.COMPLETED}),
    # -> READY: retry after a failure, or requeue after a lost agent / drained attempt.
    T.ASSIGNED: frozenset({T.RUNNING, T.READY, T.COMPLETED, T.FAILED, T.CANCELLED}),
    T.RUNNING: frozenset({T.READY, T.COMPLETED, T.FAILED, T.CANCELLED}),
    # -> PENDING: a retry or rerun of its workflow (issue 10, core/runs.py) runs it again.
    T.COMPLETED: frozenset({T.PENDING}),
    T.FAILED: frozenset({T.PENDING}),
    T.CANCELLED: frozenset({T.PENDING}),
    T.SKIPPED: frozenset({T.PENDING}),
}

_ATTEMPT_ENDS = frozenset({A.SUCCEEDED, A.FAILED, A.TIMED_OUT, A.CANCELLED, A.LOST})
ATTEMPT_TRANSITIONS: dict[AttemptState, frozenset[AttemptState]] = {
    A.ASSIGNED: _ATTEMPT_ENDS | {A.RUNNING},
    A.RUNNING: _ATTEMPT_ENDS,
    A.SUCCEEDED: frozenset(),
    A.FAILED: frozenset(),
    A.TIMED_OUT: frozenset(),
    A.CANCELLED: frozenset(),
    # A fenced or lost attempt's success, reported before its replacement started, is accepted.
    A.LOST: frozenset({A.SUCCEEDED}),
}

WORKFLOW_TRANSITIONS: dict[WorkflowState, frozenset[WorkflowState]] = {
    W.PENDING: frozenset({W.RUNNING, W.CANCELLED}),
    W.RUNNING: frozenset({W.PAUSED, W.CANCELLING, W.CANCELLED, W.COMPLETED, W.FAILED, W.COMPENSATING}),
    # Attempts already running when a workflow pauses may still finish it.
    W.PAUSED: frozenset({W.RUNNING, W.CANCELLING, W.CANCELLED, W.COMPLETED, W.FAILED, W.COMPENSATING}),
    W.CANCELLING: frozenset({W.CANCELLED, W.COMPENSATING}),
    # Sagas (issue 10, core/sagas.py): compensations run, then the workflow ends as it would have.
    W.COMPENSATING: frozenset({W.FAILED, W.CANCELLED}),
    # -> RUNNING: a new run (retry, rerun; issue 10, core/runs.py); -> COMPENSATING: a retry of
    # failed compensations.
    W.COMPLETED: frozenset({W.RUNNING}),
    W.FAILED: frozenset({W.RUNNING, W.COMPENSATING}),
    W.CANCELLED: frozenset({W.RUNNING, W.COMPENSATING}),
}


def move_task(task: Task, new: TaskState) -> None:
    if new not in TASK_TRANSITIONS[task.state]:
        raise IllegalTransition(f"task {task.id} ({task.name}): {task.state} -> {new}")
    task.state = new


def move_attempt(attempt: Attempt, new: AttemptState) -> None:
    if new not in ATTEMPT_TRANSITIONS[attempt.state]:
        raise IllegalTransition(f"attempt {attempt.id}: {attempt.state} -> {new}")
    attempt.state = new


def move_workflow(workflow: Workflow, new: WorkflowState) -> None:
    if new not in WORKFLOW_TRANSITIONS[workflow.state]:
        raise IllegalTransition(f"workflow {workflow.id}: {workflow.state} -> {new}")
    workflow.state = new
