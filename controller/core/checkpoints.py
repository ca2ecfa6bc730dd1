"""Task checkpoints (issue 10 §1): the last state a running attempt saved, handed to the next one.

An attempt's agent reports a checkpoint (JSON, at most :data:`MAX_CHECKPOINT_BYTES`) at most once a
second. Only the attempt that currently owns its task may checkpoint; the record is keyed by task
id, so every way a task runs again (retry, preemption, timeout, agent loss, a controller restart,
an operator's retry of its workflow) hands the next attempt the same state with no special case.
A completed task drops its checkpoint: nothing runs it again from there.

Records are written by the tick's change batch like every other record (the store's
``checkpoints`` table), so a checkpoint is durable before anything is told about it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from corral.controller.core.attempt_ops import AttemptOps
    from corral.controller.core.events import AttemptCheckpoint
    from corral.controller.core.state import MachineState

__all__ = [
    "MAX_CHECKPOINT_BYTES",
    "MAX_TOTAL_BYTES",
    "MIN_INTERVAL_S",
    "Checkpoint",
    "CheckpointBook",
    "CheckpointChanges",
    "checkpoint_note",
    "checkpointed",
]

#: The largest checkpoint accepted (its JSON text).
MAX_CHECKPOINT_BYTES = 1 << 20
#: Agents send at most one checkpoint per attempt a second. The controller refuses one that comes
#: sooner than this after the last accepted (less than a second: reports of one agent arrive
#: batched, so two sent a second apart may arrive closer).
MIN_INTERVAL_S = 0.5
#: All checkpoints held at once (they live in memory like results): past it a new one is refused
#: (its attempt goes on; the task keeps its previous checkpoint). Completed tasks free theirs.
MAX_TOTAL_BYTES = 1 << 30


@dataclass(slots=True)
class Checkpoint:
    """The last checkpoint of a task: which attempt saved it, when (controller clock), the JSON."""

    task_id: str
    workflow_id: str
    attempt_id: str
    at: float
    data: bytes


#: task id -> the record to upsert, or None to delete it.
CheckpointChanges = dict[str, "Checkpoint | None"]


class CheckpointBook:
    """Every task's last checkpoint, and the changes of the current tick.

    Falsy while no task has a checkpoint, so the hot paths (dispatch, completion) pay one truth
    test when the feature is unused.
    """

    __slots__ = ("_changes", "_last", "records", "total_bytes")

    def __init__(self) -> None:
        self.records: dict[str, Checkpoint] = {}
        self.total_bytes = 0
        self._changes: CheckpointChanges = {}
        self._last: dict[str, float] = {}  # attempt id -> when its last checkpoint was accepted (memory)

    def __bool__(self) -> bool:
        return bool(self.records)

    def get(self, task_id: str) -> bytes | None:
        """The checkpoint to hand the task's next attempt, or None."""
        record = self.records.get(task_id)
        return record.data if record is not None else None

    def put(self, record: Checkpoint) -> None:
        previous = self.records.get(record.task_id)
        if previous is not None:
            self.total_bytes -= len(previous.data)
            if previous.attempt_id != record.attempt_id:
                self._last.pop(previous.attempt_id, None)
        self.total_bytes += len(record.data)
        self.records[record.task_id] = record
        self._last[record.attempt_id] = record.at
        self._changes[record.task_id] = record

    def drop(self, task_ids: Iterable[str]) -> None:
        """Discard the checkpoints of these tasks (completed, or an operator's rerun / ``--fresh``)."""
        for task_id in task_ids:
            record = self.records.pop(task_id, None)
            if record is not None:
                self.total_bytes -= len(record.data)
                self._last.pop(record.attempt_id, None)
                self._changes[task_id] = None

    def too_soon(self, attempt_id: str, now: float) -> bool:
        last = self._last.get(attempt_id)
        return last is not None and now - last < MIN_INTERVAL_S

    def room_for(self, task_id: str, size: int) -> bool:
        """Whether a checkpoint of ``size`` bytes replacing the task's keeps the total in bounds."""
        previous = self.records.get(task_id)
        return self.total_bytes - (len(previous.data) if previous else 0) + size <= MAX_TOTAL_BYTES

    def restore(self, records: Iterable[Checkpoint]) -> None:
        for record in records:
            self.records[record.task_id] = record
            self.total_bytes += len(record.data)

    def take_changes(self) -> CheckpointChanges | None:
        if not self._changes:
            return None
        changes, self._changes = self._changes, {}
        return changes


def checkpointed(machine: AttemptOps, report: AttemptCheckpoint, now: float) -> bool:
    """Apply an agent's checkpoint report; False (nothing changed) when it is refused.

    Refused: an attempt that does not own its task now (stale, fenced, another agent's), one that
    checkpoints more often than once a second, a state over the size limit (also checked at the
    edge), one that would take the checkpoints held over :data:`MAX_TOTAL_BYTES`. A refused
    checkpoint is only dropped: the attempt goes on.
    """
    attempt = machine.owned_active(report.reporter, report.attempt_id)
    if attempt is None or len(report.data) > MAX_CHECKPOINT_BYTES:
        return False
    book = machine.checkpoints
    task = machine.tasks[attempt.task_id]
    if book.too_soon(attempt.id, now) or not book.room_for(task.id, len(report.data)):
        return False
    book.put(Checkpoint(task.id, task.workflow_id, attempt.id, now, report.data))
    machine.record(
        machine.workflows[task.workflow_id],
        now,
        "checkpointed",
        task,
        message=f"attempt {attempt.number} saved a checkpoint of {len(report.data)} bytes",
        attempt_id=attempt.id,
        agent_id=attempt.agent_id,
    )
    return True


def checkpoint_note(machine: MachineState, task_id: str) -> str:
    """For explain: what the task's next (or current) attempt resumes from, or ""."""
    record = machine.checkpoints.records.get(task_id) if machine.checkpoints else None
    if record is None:
        return ""
    attempt = machine.attempts.get(record.attempt_id)
    by = f"attempt {attempt.number}" if attempt is not None else "an earlier attempt"
    at = datetime.fromtimestamp(record.at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"resumes from the checkpoint {by} saved at {at} ({len(record.data)} bytes)"
