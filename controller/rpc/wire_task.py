"""One task's status message (``TaskStatus``): what status, results and explain answers carry per task.

Apart from :mod:`corral.controller.rpc.wire` because a result carries every task of its workflow:
this is the per-task hot path of every big answer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from google.protobuf.timestamp_pb2 import Timestamp

from corral.controller.core.machine import Machine
from corral.controller.core.model import Task, TaskState
from corral.controller.rpc.cache_wire import cache_status
from corral.controller.rpc.wire_fallbacks import rules_status
from corral.v1 import types_pb2 as pb

if TYPE_CHECKING:
    from google.protobuf.internal.containers import RepeatedCompositeFieldContainer

__all__ = ["TASK_STATE_TO_PB", "set_stamp", "task_status"]

TASK_STATE_TO_PB = {
    TaskState.PENDING: pb.TASK_STATE_PENDING,
    TaskState.READY: pb.TASK_STATE_READY,
    TaskState.ASSIGNED: pb.TASK_STATE_ASSIGNED,
    TaskState.RUNNING: pb.TASK_STATE_RUNNING,
    TaskState.COMPLETED: pb.TASK_STATE_COMPLETED,
    TaskState.FAILED: pb.TASK_STATE_FAILED,
    TaskState.CANCELLED: pb.TASK_STATE_CANCELLED,
    TaskState.SKIPPED: pb.TASK_STATE_SKIPPED,
}


def task_status(
    machine: Machine,
    task: Task,
    reason: str = "",
    unschedulable: bool = False,
    now: float | None = None,
    into: RepeatedCompositeFieldContainer[pb.TaskStatus] | None = None,
) -> pb.TaskStatus:
    """A task's status message; with ``into``, built in place as a new element of that repeated field
    (a workflow's result carries every task: building each apart and copying it in held both)."""
    # Only the fields that differ from their defaults are passed (the same message: none of these
    # fields has explicit presence), and the rare ones only when the task has any: a result carries
    # every task of the workflow, and each field passed costs its lookup and copy.
    fields: dict[str, Any] = {
        "task_id": task.id,
        "name": task.name,
        "state": TASK_STATE_TO_PB[task.state],
        "agent_type": task.agent_type,
        "workflow_id": task.workflow_id,
    }
    if task.priority:
        fields["priority"] = task.priority
    if task.attempts:
        fields["attempts"] = task.attempts
    if task.retries_used:
        fields["retries_used"] = task.retries_used
    if task.current_attempt_id:
        fields["attempt_id"] = task.current_attempt_id
    if task.agent_id:
        fields["agent_id"] = task.agent_id
    if task.result:
        fields["result_json"] = task.result
    if task.error:
        fields["error"] = task.error
    if reason:
        fields["waiting_reason"] = reason
    if task.dependencies:
        tasks = machine.tasks
        fields["dependencies"] = [tasks[d].name for d in task.dependencies]
    if task.exit_code:
        fields["exit_code"] = task.exit_code
    if unschedulable:
        fields["unschedulable"] = True
    rare = task._rare
    if rare is not None:
        if rare.agent_losses:
            fields["agent_losses"] = rare.agent_losses
        if rare.reruns_after_fence:
            fields["reruns_after_fence"] = rare.reruns_after_fence
        if rare.failure_reason:
            fields["failure_reason"] = rare.failure_reason
        if rare.preemptible:  # fields set only when used: a result carries every task of the workflow
            fields["preemptible"] = True
        if rare.preemptions:
            fields["preemptions"] = rare.preemptions
            fields["last_preemption"] = rare.last_preemption
        if rare.gang:
            fields["gang"] = rare.gang
    message = (pb.TaskStatus if into is None else into.add)(**fields)
    attempt = machine.attempts.get(task.current_attempt_id) if task.current_attempt_id else None
    if attempt is not None:
        peak_rss, cpu_s = attempt.peak_rss_bytes, attempt.cpu_s
    elif task.state is TaskState.COMPLETED:
        peak_rss, cpu_s = machine.settled.usage(task)  # its attempt left memory (core/settled.py)
    else:
        peak_rss, cpu_s = 0, 0.0
    if peak_rss or cpu_s:
        message.peak_rss_bytes = peak_rss
        message.cpu_s = cpu_s
    if task.state is TaskState.READY:
        message.plan_reason = machine.plan_reason(task)
    if machine.sagas.of_task:  # issue 10: its compensation, once one was made
        _compensation(machine, task, message)
    if rare is not None:
        if rare.rules is not None or rare.fallback_used:
            rules_status(machine, task, message)
        if rare.cache_source:
            cache_status(task, message)
    ranked = machine.ordering.rank_of(task)
    if ranked is not None:
        message.rank_s = ranked.rank_s
        message.expected_duration_s = ranked.expected_s
        message.duration_source = ranked.source.value
    if not task.state.terminal:
        learned = machine.ordering.book.usage(task.namespace, machine.workflows[task.workflow_id].name, task.name)
        if learned is not None:
            message.expected_peak_rss_bytes = int(learned.peak_rss_bytes)
            message.expected_cpu_s = learned.cpu_s
    if (rare is not None and rare.deadline is not None) or machine.deadline_book.latest_start:  # dict test
        _task_deadline(machine, task, message, now)
    # Set in place: building Timestamp messages and copying them in costs more (3 per task, and a
    # result carries every task).
    set_stamp(message.created_at, task.created_at)
    if task.started_at is not None:
        set_stamp(message.started_at, task.started_at)
    if task.finished_at is not None:
        set_stamp(message.finished_at, task.finished_at)
    if task.ready_at is not None:  # issue 11: queued time apart from run time
        set_stamp(message.ready_at, task.ready_at)
    if task.exit_code is not None:
        message.exit_code_known = True
    if machine.checkpoints:  # issue 10: a truth test while no task has a checkpoint
        checkpoint = machine.checkpoints.records.get(task.id)
        if checkpoint is not None:
            set_stamp(message.checkpointed_at, checkpoint.at)
            message.checkpoint_bytes = len(checkpoint.data)
    return message


def _task_deadline(machine: Machine, task: Task, message: pb.TaskStatus, now: float | None) -> None:
    """Deadline, latest start and slack (``now`` known) of a task; nothing without a deadline."""
    bound = task.deadline
    workflow_deadline = machine.workflows[task.workflow_id].deadline
    if workflow_deadline is not None:
        bound = workflow_deadline if bound is None else min(bound, workflow_deadline)
    if bound is not None:
        set_stamp(message.deadline, bound)
    start = machine.deadline_book.latest_start.get(task.id)
    if start is not None:
        set_stamp(message.latest_start, start)
        if now is not None:
            message.slack_s = start - now


def set_stamp(stamp: Timestamp, value: float) -> None:
    """Set a Timestamp field in place from seconds since the epoch."""
    seconds = int(value)
    stamp.seconds = seconds
    stamp.nanos = int((value - seconds) * 1e9)


def _compensation(machine: Machine, task: Task, message: pb.TaskStatus) -> None:
    record_id = machine.sagas.of_task.get(task.id)
    if record_id is not None:
        record = machine.tasks[record_id]
        message.compensation_state = str(record.state)
        message.compensation_error = record.error
        message.compensation_task_id = record.id
