"""The record of one run of a workflow (issue 10), apart so the store can import it alone."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Run"]


@dataclass(slots=True)
class Run:
    """One run of a workflow, as the ``runs`` table stores it (keyed by workflow id and number).

    ``state``/``finished_at``/``error`` are filled when the run is superseded by the next one; for
    the current run they are the workflow's own.
    """

    workflow_id: str
    number: int
    kind: str  # submit | retry | rerun
    from_task: str = ""  # retry --from: the task's name
    fresh: bool = False  # retry --fresh: checkpoints discarded
    started_at: float | None = None
    finished_at: float | None = None
    state: str = ""  # a WorkflowState value once ended, "" for the current run
    error: str = ""
