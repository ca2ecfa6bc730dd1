"""Fallbacks, partial results and approvals (issue 10 §5 and §6): the machine's hooks for ``Task.rules``.

Everything here is reached only through a test of ``task.rules`` (None for almost every task) or
of ``Fallbacks.enabled`` (set once any task with rules is tracked), so workflows that use none of
it pay one attribute test per hook.

- **fallback**: when the last retry of the primary payload failed, the task goes READY again with
  ``fallback_used`` set and its retries counted anew; its attempts then run the fallback payload.
- **allow_failure**: a task that FAILED for good counts as finished for its dependents, which run
  and receive ``null`` for it plus its error under the reserved input ``_errors``.
- **min_success: N**: a fan-in runs once every dependency ended with at least N COMPLETED; it is
  SKIPPED as soon as N can no longer be reached. Failures it absorbed (and allowed failures) do not
  fail the workflow.
- **approval**: a task with nothing to run; READY means "waiting for approval" (never queued);
  ``approve`` completes it, ``reject`` fails it (``rejected``), its timeout fails it
  (``approval_timeout``).
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from corral.controller.core.model import FallbackRules, Task, TaskState, Workflow, WorkflowState
from corral.controller.errors import FailedPrecondition, InvalidArgument

if TYPE_CHECKING:
    from corral.controller.core.requests import Caller
    from corral.controller.core.state import MachineState
    from corral.controller.core.workflow_ops import WorkflowOps

__all__ = [
    "ERRORS_INPUT",
    "Fallbacks",
    "ResolveApproval",
    "absorbed_failures",
    "add_error_inputs",
    "approval_explanation",
    "awaits_approval",
    "dependency_done",
    "expire_approvals",
    "resolve_approval",
    "skip_tolerant",
    "track_rules",
    "try_fallback",
    "unfinished_of",
]

T = TaskState
W = WorkflowState
#: The input key under which a task receives the errors of dependencies that did not complete.
#: Task names start with a letter or digit, so it can never be a task's name.
ERRORS_INPUT = "_errors"
_ENDED_BADLY = frozenset({T.FAILED, T.SKIPPED, T.CANCELLED})


@dataclass(slots=True)
class Fallbacks:
    """The machine's memory for this module (rebuilt from task states on restore)."""

    enabled: bool = False  # some tracked task has rules: the slower, rule-aware paths apply
    approvals: dict[str, float] = field(default_factory=dict)  # waiting approval task id -> timeout
    failed_deps: dict[str, int] = field(default_factory=dict)  # min_success fan-in -> deps ended badly


@dataclass(frozen=True, slots=True)
class ResolveApproval:
    """``corral approve`` / ``corral reject``: answer a waiting approval task. Answers the task."""

    workflow: str
    task: str  # name or id
    caller: Caller
    approve: bool
    reason: str = ""


# --- graph rules ------------------------------------------------------------------------------------


def dependency_done(dep: Task, child: Task) -> bool:
    """Whether ``dep`` no longer holds ``child`` back (COMPLETED, or ended in a way the rules accept)."""
    state = dep.state
    if state is T.COMPLETED:
        return True
    if state not in _ENDED_BADLY:
        return False
    rules = child.rules
    if rules is not None and rules.min_success is not None:
        return True
    return state is T.FAILED and dep.rules is not None and dep.rules.allow_failure


def unfinished_of(m: MachineState, task: Task) -> int:
    """Dependencies of ``task`` still holding it back (the rule-aware ``unfinished_deps``)."""
    tasks = m.tasks
    return sum(1 for d in task.dependencies if not dependency_done(tasks[d], task))


def track_rules(m: MachineState, task: Task) -> None:
    """Index a task with rules (submit or restore): switch the rule-aware paths on, arm its timeout."""
    m.fallbacks.enabled = True
    rules = task.rules
    if rules is not None and rules.approval and task.state is T.READY:
        _arm(m, task, rules)


def _arm(m: MachineState, task: Task, rules: FallbackRules) -> None:
    if rules.approval_timeout_s is not None:
        m.fallbacks.approvals[task.id] = (task.ready_at or 0.0) + rules.approval_timeout_s


def _fan_in_failures(m: WorkflowOps, child: Task) -> int:
    """Dependencies of a min_success fan-in that ended without completing (counted once, then kept)."""
    known = m.fallbacks.failed_deps.get(child.id)
    if known is None:
        tasks = m.tasks
        known = sum(1 for d in child.dependencies if tasks[d].state in _ENDED_BADLY)
    else:
        known += 1
    m.fallbacks.failed_deps[child.id] = known
    return known


def skip_tolerant(m: WorkflowOps, task: Task, now: float) -> None:
    """``skip_descendants`` when rules are in use: tolerated edges release, the rest skip as before."""
    pending: deque[tuple[Task, str]] = deque((task, c) for c in m.dependents[task.id])
    workflow = m.workflows[task.workflow_id]
    while pending:
        parent, child_id = pending.popleft()
        child = m.tasks[child_id]
        if dependency_done(parent, child):
            m.unfinished_deps[child_id] -= 1
            if child.state is not T.PENDING:
                continue
            rules = child.rules
            if rules is not None and rules.min_success is not None:
                failed = _fan_in_failures(m, child)
                if len(child.dependencies) - failed < rules.min_success:
                    why = f"only {len(child.dependencies) - failed} of its dependencies can complete"
                    _skip(m, child, f"{why}, min_success is {rules.min_success}", now, pending)
                    continue
            if m.unfinished_deps[child_id] == 0 and workflow.state in (W.RUNNING, W.PAUSED):
                m.make_ready(child, now)
        elif child.state is T.PENDING:
            _skip(m, child, f"upstream task {parent.name!r} failed", now, pending)


def _skip(m: WorkflowOps, child: Task, message: str, now: float, pending: deque[tuple[Task, str]]) -> None:
    m.set_task_state(child, T.SKIPPED, now, message)
    child.finished_at = now
    child.error = message
    pending.extend((child, c) for c in m.dependents[child.id])


def absorbed_failures(m: WorkflowOps, workflow: Workflow) -> bool:
    """Whether every task of an ended workflow that did not complete is a failure its rules accept:
    an allowed failure, or one whose dependents are all min_success fan-ins that completed."""
    tasks = m.tasks
    for task_id in workflow.task_ids:
        task = tasks[task_id]
        if task.state is T.COMPLETED:
            continue
        if task.state is T.CANCELLED:
            return False
        if task.state is T.FAILED and task.rules is not None and task.rules.allow_failure:
            continue
        children = m.dependents[task_id]
        if not children:
            return False
        for child_id in children:
            child = tasks[child_id]
            if child.state is not T.COMPLETED or child.rules is None or child.rules.min_success is None:
                return False
    return True


def add_error_inputs(m: WorkflowOps, task: Task, inputs: dict[str, bytes]) -> None:
    """Dependencies that did not complete reach a task as ``null``; their errors go under ``_errors``."""
    tasks = m.tasks
    errors = {}
    for d in task.dependencies:
        dep = tasks[d]
        if dep.state is not T.COMPLETED:
            errors[dep.name] = {"state": dep.state.value, "error": dep.error, "reason": dep.failure_reason}
    if errors:
        inputs[ERRORS_INPUT] = json.dumps(errors, separators=(",", ":")).encode()


# --- fallback -----------------------------------------------------------------------------------------


def try_fallback(m: WorkflowOps, task: Task, now: float) -> bool:
    """The primary payload failed for good: switch to the fallback (retries counted anew), if any."""
    rules = task.rules
    if rules is None or rules.fallback is None or task.fallback_used:
        return False
    task.fallback_used = True
    error = task.error
    task.retries_used = 0
    m.make_ready(task, now, kind="fallback", reason=f"running its fallback after: {error}")
    return True


# --- approvals ------------------------------------------------------------------------------------------


def awaits_approval(task: Task) -> bool:
    """A READY approval task: it waits for an answer, never in the ready queue."""
    rules = task.rules
    return rules is not None and rules.approval and task.state is T.READY


def ready_approval(m: WorkflowOps, task: Task) -> bool:
    """``make_ready``'s hook: an approval task starts waiting (its timeout armed) instead of queueing."""
    rules = task.rules
    if rules is None or not rules.approval:
        return False
    _arm(m, task, rules)
    return True


def approval_explanation(m: WorkflowOps, task: Task, now: float) -> str:
    """explain's words for a waiting approval task ("" for any other task)."""
    if not awaits_approval(task):
        return ""
    assert task.rules is not None
    due = m.fallbacks.approvals.get(task.id)
    left = f"; fails as approval_timeout in {max(0.0, due - now):.0f}s" if due is not None else ""
    note = f": {task.rules.approval_message}" if task.rules.approval_message else ""
    return f"waiting for approval{note} (corral approve / corral reject){left}"


def resolve_approval(m: WorkflowOps, event: ResolveApproval, now: float) -> Task:
    """Approve (COMPLETED, result says who and when) or reject (FAILED, ``rejected``) a waiting task."""
    from corral.controller.core.queries import resolve, visible_workflow  # queries imports the machine

    workflow = visible_workflow(m, event.workflow, event.caller)  # type: ignore[arg-type]
    names = {m.tasks[t].name: t for t in workflow.task_ids}
    task_id = names.get(event.task) or resolve(workflow.task_ids, event.task, "task", "task")
    task = m.tasks[task_id]
    if task.rules is None or not task.rules.approval:
        raise InvalidArgument.field("task", f"task {task.name!r} is not an approval task")
    if task.state is T.PENDING:
        raise FailedPrecondition(f"task {task.name!r} is not waiting for approval yet (its dependencies run)")
    if task.state is not T.READY:
        raise FailedPrecondition(f"task {task.name!r} was already answered: {task.state} {task.error}".rstrip())
    m.fallbacks.approvals.pop(task.id, None)
    task.finished_at = now
    who = event.caller.name
    if event.approve:
        task.result = json.dumps(
            {"approved_by": who, "approved_at": now, "reason": event.reason}, separators=(",", ":")
        ).encode()
        m.set_task_state(task, T.COMPLETED, now, f"approved by {who}", kind="approved")
        m.release_dependents(task, now)
    else:
        _fail(m, task, f"rejected by {who}" + (f": {event.reason}" if event.reason else ""), "rejected", now)
    m.finish_if_done(workflow, now)
    return task


def _fail(m: WorkflowOps, task: Task, error: str, reason: str, now: float) -> None:
    task.error = error
    task.failure_reason = reason
    task.finished_at = now
    m.set_task_state(task, T.FAILED, now, error, kind=reason, reason=error)
    m.skip_descendants(task, now)


def expire_approvals(m: WorkflowOps, now: float) -> None:
    """Fail approval tasks whose timeout passed without an answer."""
    approvals = m.fallbacks.approvals
    for task_id, due in list(approvals.items()):
        if due > now:
            continue
        del approvals[task_id]
        task = m.tasks[task_id]
        if task.state is not T.READY:
            continue
        assert task.rules is not None
        timeout = task.rules.approval_timeout_s or 0.0
        _fail(m, task, f"no answer within the approval timeout ({timeout:g}s)", "approval_timeout", now)
        m.finish_if_done(m.workflows[task.workflow_id], now)
