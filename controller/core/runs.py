"""Runs of a workflow (issue 10): retry from failure, rerun, the list of runs, ``on_failure: pause``.

A workflow keeps its id across runs (Temporal's workflow id with a new run id). ``retry`` runs the
FAILED, SKIPPED and CANCELLED tasks again (or ``from_task`` and its descendants), keeping the
COMPLETED ones and their results; ``rerun`` resets every task. Both start run ``n + 1``: the
workflow moves back to RUNNING and the reset tasks to PENDING, then READY as their dependencies
allow, all through the transition tables like any other change.

The current run lives on the workflow (``Workflow.run``); earlier runs, and the kind of the current
one when it is not the first, are :class:`Run` rows (the ``runs`` table). A workflow never retried
has no row at all, so the feature costs nothing to workflows that do not use it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from corral.controller.core.model import AttemptState, Task, TaskState, Workflow, WorkflowState
from corral.controller.core.run_record import Run
from corral.controller.core.sagas import compensation_of, failed_compensations, retry_compensations
from corral.controller.core.settled import NAMES_KEPT
from corral.controller.errors import FailedPrecondition

if TYPE_CHECKING:
    from corral.controller.core.machine import Machine
    from corral.controller.core.requests import Caller
    from corral.controller.core.state import MachineState
    from corral.controller.core.workflow_ops import WorkflowOps

__all__ = [
    "ON_FAILURE",
    "ListRunsQuery",
    "RerunRequest",
    "RetryRequest",
    "Run",
    "RunBook",
    "RunView",
    "pause_on_failure",
    "paused_on_failure",
    "run_handlers",
    "skip_held_failures",
]

T = TaskState
W = WorkflowState

ON_FAILURE = ("fail", "compensate", "pause")
MAX_TASKS_SHOWN = NAMES_KEPT  # names of the tasks that ran, per run, in a ListRuns answer

_RETRYABLE = frozenset({T.FAILED, T.SKIPPED, T.CANCELLED})
_RETRY_FROM = frozenset({W.FAILED, W.CANCELLED})
_RERUN_FROM = frozenset({W.FAILED, W.CANCELLED, W.COMPLETED})


@dataclass(frozen=True, slots=True)
class RunView:
    """A run with what its attempts did, for ``corral runs``."""

    run: Run
    state: WorkflowState
    attempts: int
    failed_attempts: int
    tasks_run: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RetryRequest:
    """RetryWorkflow: ``from_task`` a task name or id ("" for the failed ones)."""

    workflow: str
    caller: Caller
    from_task: str = ""
    fresh: bool = False


@dataclass(frozen=True, slots=True)
class RerunRequest:
    """RerunWorkflow."""

    workflow: str
    caller: Caller


@dataclass(frozen=True, slots=True)
class ListRunsQuery:
    """ListRuns: answers ``(workflow, [RunView, ...])``, oldest run first."""

    READ: ClassVar[bool] = True
    workflow: str
    caller: Caller


class RunBook:
    """The stored runs of retried workflows (memory), and the rows changed in this tick."""

    def __init__(self) -> None:
        self.runs: dict[str, list[Run]] = {}  # workflow id -> its runs, by number
        self.dirty: list[Run] = []

    def restore(self, runs: Iterable[Run]) -> None:
        for run in sorted(runs, key=lambda r: (r.workflow_id, r.number)):
            self.runs.setdefault(run.workflow_id, []).append(run)

    def take(self) -> list[Run]:
        dirty, self.dirty = self.dirty, []
        return dirty

    def current(self, workflow: Workflow) -> Run:
        """The current run's row (made for run 1 of a workflow never retried, not stored)."""
        runs = self.runs.get(workflow.id)
        if runs and runs[-1].number == workflow.run:
            return runs[-1]
        return Run(workflow.id, workflow.run, "submit", started_at=workflow.started_at)

    def begin(self, workflow: Workflow, kind: str, from_task: str, fresh: bool, now: float) -> Run:
        """Close the current run with the workflow's outcome and open the next one."""
        ended = self.current(workflow)
        ended.finished_at = workflow.finished_at
        ended.state = str(workflow.state)
        ended.error = workflow.error
        runs = self.runs.setdefault(workflow.id, [])
        if not runs or runs[-1] is not ended:
            runs.append(ended)
        new = Run(workflow.id, workflow.run + 1, kind, from_task, fresh, started_at=now)
        runs.append(new)
        self.dirty.extend((ended, new))
        return new


def paused_on_failure(machine: MachineState, workflow: Workflow) -> bool:
    """Whether the workflow is PAUSED because a task failed (``on_failure: pause``)."""
    return workflow.state is W.PAUSED and workflow.on_failure == "pause" and machine.counts[workflow.id][T.FAILED] > 0


def pause_on_failure(machine: MachineState, task: Task, now: float) -> bool:
    """A task of an ``on_failure: pause`` workflow failed for good: pause the workflow instead of
    skipping the task's descendants (they stay PENDING for a retry). False: fail as usual."""
    workflow = machine.workflows[task.workflow_id]
    if workflow.state is W.RUNNING:
        machine.set_workflow_state(workflow, W.PAUSED, now, f"paused on failure of task {task.name!r}")
        for task_id in workflow.task_ids:
            if machine.tasks[task_id].state is T.READY:
                machine.queue.discard(task_id)
        return True
    return workflow.state is W.PAUSED


def skip_held_failures(machine: WorkflowOps, workflow: Workflow, now: float) -> None:
    """A workflow paused on failure is resumed rather than retried: fail as ``on_failure: fail``
    would have (the failed tasks' descendants are skipped)."""
    for task_id in workflow.task_ids:
        task = machine.tasks[task_id]
        if task.state is T.FAILED:
            machine.skip_descendants(task, now, hold=False)


def explain_note(machine: Machine, task: Task) -> str:
    """What the workflow's ``on_failure`` handling means for this task, for ``corral explain``."""
    workflow = machine.workflows[task.workflow_id]
    if task.compensates:
        undone = machine.tasks[task.compensates].name
        return f"compensation of task {undone!r} ({task.state})"
    if paused_on_failure(machine, workflow):
        return f"workflow paused on a failure (on_failure: pause): fix the cause, then `corral retry {workflow.id}`"
    record = compensation_of(machine, task) if machine.sagas.of_task else None
    if workflow.state is W.COMPENSATING:
        return f"compensating: its compensation is {record.state}" if record else "workflow compensating"
    return f"compensation {record.state}" if record else ""


def run_handlers(machine: Machine) -> dict[type, Callable[[Any, float], Any]]:
    """The handlers of this module's requests, for the machine's handler table."""
    from corral.controller.core.queries import visible_task, visible_workflow

    def retry(event: RetryRequest, now: float) -> Workflow:
        workflow = visible_workflow(machine, event.workflow, event.caller)
        _check_state(machine, workflow, _RETRY_FROM, "retry")
        if workflow.compensation and failed_compensations(machine, workflow):
            if event.from_task:
                raise FailedPrecondition("its compensations failed: `corral retry` without --from runs them again")
            retry_compensations(machine, workflow, now)
            return workflow
        if event.from_task:
            start = _task_of(machine, workflow, event.from_task, visible_task, event.caller)
            chosen = _descendants(machine, start)
            busy = [machine.tasks[t].name for t in chosen if not machine.tasks[t].state.terminal]
            if busy:
                raise FailedPrecondition(f"task {busy[0]!r} is {machine.tasks[chosen[0]].state}; wait for it to end")
            from_name = start.name
        else:
            chosen = [t for t in workflow.task_ids if _retryable(machine, machine.tasks[t])]
            from_name = ""
        if not chosen:
            raise FailedPrecondition(f"workflow {workflow.id} has no failed, skipped or cancelled task to retry")
        _new_run(machine, workflow, chosen, "retry", from_name, event.fresh, now)
        return workflow

    def rerun(event: RerunRequest, now: float) -> Workflow:
        workflow = visible_workflow(machine, event.workflow, event.caller)
        _check_state(machine, workflow, _RERUN_FROM, "rerun")
        if workflow.compensation and failed_compensations(machine, workflow):
            raise FailedPrecondition("its compensations failed: `corral retry` runs them again before a rerun")
        busy = [t for t in workflow.task_ids if not machine.tasks[t].state.terminal]
        if busy:
            raise FailedPrecondition(f"task {machine.tasks[busy[0]].name!r} still runs; wait for it to end")
        _new_run(machine, workflow, list(workflow.task_ids), "rerun", "", True, now)
        return workflow

    def runs(event: ListRunsQuery, now: float) -> tuple[Workflow, list[RunView]]:
        workflow = visible_workflow(machine, event.workflow, event.caller)
        return workflow, _views(machine, workflow)

    return {RetryRequest: retry, RerunRequest: rerun, ListRunsQuery: runs}


def _retryable(machine: Machine, task: Task) -> bool:
    """Failed, skipped or cancelled; or completed and then compensated (its effects were undone)."""
    if task.state in _RETRYABLE:
        return True
    if task.state is T.COMPLETED and task.compensate:
        record = compensation_of(machine, task)
        return record is not None and record.state is T.COMPLETED
    return False


def _check_state(machine: Machine, workflow: Workflow, allowed: frozenset[WorkflowState], verb: str) -> None:
    if workflow.state in allowed or paused_on_failure(machine, workflow):
        return
    ended = ", ".join(sorted(str(s) for s in allowed))
    raise FailedPrecondition(
        f"workflow {workflow.id} is {workflow.state}; only a workflow that ended ({ended}) "
        f"or is paused on a failure can {verb}"
    )


def _task_of(machine: Machine, workflow: Workflow, typed: str, visible_task: Any, caller: Caller) -> Task:
    """A task of ``workflow`` by name, else by id or unique id prefix (field ``from_task``)."""
    task_id = machine.by_name.get((workflow.id, typed))
    if task_id is not None:
        return machine.tasks[task_id]
    task: Task = visible_task(machine, typed, caller, "from_task")
    if task.workflow_id != workflow.id:
        raise FailedPrecondition(f"task {typed!r} is not a task of workflow {workflow.id}")
    return task


def _descendants(machine: Machine, start: Task) -> list[str]:
    """``start`` and every task downstream of it, in the workflow's order."""
    seen = {start.id}
    pending = deque([start.id])
    while pending:
        for child in machine.dependents[pending.popleft()]:
            if child not in seen:
                seen.add(child)
                pending.append(child)
    return [t for t in machine.workflows[start.workflow_id].task_ids if t in seen]


def _new_run(
    machine: Machine, workflow: Workflow, task_ids: list[str], kind: str, from_task: str, fresh: bool, now: float
) -> None:
    """Start the next run: reset ``task_ids`` to PENDING, the workflow to RUNNING, queue what can run."""
    from corral.controller.core.group_ops import track_groups

    run = machine.run_book.begin(workflow, kind, from_task, fresh, now)
    workflow.run = run.number
    reason = f"run {run.number} ({kind}{' from ' + from_task if from_task else ''})"
    for task_id in task_ids:
        _reset(machine, machine.tasks[task_id], now, reason)
    if fresh:  # rerun, and retry --fresh: start from scratch, not from the last checkpoint
        machine.checkpoints.drop(task_ids)
    workflow.error = ""
    workflow.finished_at = None
    workflow.compensation = ""
    if workflow.state is not W.PAUSED:
        workflow.started_at = now
    machine.set_workflow_state(workflow, W.RUNNING, now, reason)
    if workflow.max_parallel:
        track_groups(machine, workflow, None)
    machine.count_unfinished(workflow.task_ids)
    machine.rank_workflow(workflow)
    for task_id in workflow.task_ids:
        task = machine.tasks[task_id]
        if task.gang and task_id in task_ids:
            track_groups(machine, None, task)
        if task.state is T.PENDING and machine.unfinished_deps[task_id] == 0:
            machine.make_ready(task, now)
        elif task.state is T.READY:
            machine.enqueue(task)  # held while the workflow was paused on failure
    machine.finish_if_done(workflow, now)


def _reset(machine: Machine, task: Task, now: float, reason: str) -> None:
    """A task runs again: what its earlier run decided is cleared (attempt numbers go on)."""
    task.result = None
    task.error = ""
    task.exit_code = None
    task.failure_reason = ""
    task.retries_used = 0
    task.agent_losses = 0
    task.current_attempt_id = None
    task.agent_id = None
    task.not_before = None
    task.ready_at = None
    task.started_at = None
    task.finished_at = None
    machine.sagas.of_task.pop(task.id, None)  # undone (or never): a later failure compensates it anew
    task.fallback_used = False  # a new run tries the primary payload first
    task.cache_source = ""  # a new run may hit the cache anew
    machine.fallbacks.failed_deps.pop(task.id, None)  # a min_success fan-in counts its deps anew
    machine.set_task_state(task, T.PENDING, now, kind="reset", reason=reason)


def _views(machine: Machine, workflow: Workflow) -> list[RunView]:
    """Every run of the workflow with its attempts' counts (a scan of the workflow's attempts)."""
    runs = list(machine.run_book.runs.get(workflow.id, ()))
    current = machine.run_book.current(workflow)
    if not runs or runs[-1] is not current:
        runs.append(current)
    attempts: dict[int, list[int]] = {}
    names: dict[int, list[str]] = {}
    for attempt in machine.attempts.values():
        if attempt.workflow_id != workflow.id:
            continue
        counts = attempts.setdefault(attempt.run, [0, 0])
        counts[0] += 1
        if attempt.state in (AttemptState.FAILED, AttemptState.TIMED_OUT):
            counts[1] += 1
        shown = names.setdefault(attempt.run, [])
        name = machine.tasks[attempt.task_id].name
        if len(shown) < MAX_TASKS_SHOWN and name not in shown:
            shown.append(name)
    for number, tally in machine.settled.runs(workflow.id).items():  # attempts that left memory
        attempts.setdefault(number, [0, 0])[0] += tally.made
        shown = names.setdefault(number, [])
        for name in tally.names:
            if len(shown) < MAX_TASKS_SHOWN and name not in shown:
                shown.append(name)
    views = []
    for run in runs:
        state = workflow.state if run.number == workflow.run else WorkflowState(run.state)
        made, failed = attempts.get(run.number, [0, 0])
        views.append(RunView(run, state, made, failed, tuple(names.get(run.number, ()))))
    return views
