"""Errors a store raises that are about the store itself, not about the data of a batch.

A value the store cannot encode raises ``ValueError``/``TypeError`` (the command's fault); a lost
disk or database raises something in :data:`corral.controller.recovery.OPERATIONAL` (degraded
mode). These two mean something else again, and only a networked store with leadership raises them.
"""

from __future__ import annotations

__all__ = ["CommitUnknown", "Fenced", "StoreError", "StoreUnavailable"]


class StoreError(Exception):
    """Base of the store's own errors."""


class Fenced(StoreError):
    """The write was refused because this controller no longer holds the leader lease at its epoch.

    Raised before anything of the batch was written (the transaction is rolled back): a deposed
    or partitioned leader can never write. The controller must step down.
    """


class CommitUnknown(StoreError):
    """The connection died during COMMIT: the batch may or may not be durable.

    Neither answering the writers nor retrying is safe; the controller must rebuild its memory from
    the store (which then holds the truth) before it serves writes again.
    """


class StoreUnavailable(StoreError):
    """The database could not be reached or refused service (connection lost, disk full, shutting down).

    Raised before COMMIT, so nothing of the batch was written. ``full`` is True when the database
    reported its disk full. A member of :data:`corral.controller.recovery.OPERATIONAL` (degraded
    mode), so the driver's own exception classes need not be imported by every controller.
    """

    def __init__(self, message: str, *, full: bool = False) -> None:
        super().__init__(message)
        self.full = full
