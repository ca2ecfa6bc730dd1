"""Store errors a caller must tell apart from a bad request (see the plan of issue 12).

``Fenced``: the store refused a write because this controller no longer holds the leadership epoch
it writes under. ``CommitUnknown``: the connection died during COMMIT, so whether the transaction
landed is unknown. Both make a controller step down and rebuild from the store.
"""

from __future__ import annotations

__all__ = ["CommitUnknown", "Fenced", "StoreError"]


class StoreError(Exception):
    """A store failure that is neither bad data nor a transient connection error."""


class Fenced(StoreError):
    """The write was refused: the leadership epoch it was fenced by is no longer ours."""


class CommitUnknown(StoreError):
    """The connection died during COMMIT: the outcome of the transaction is unknown."""
