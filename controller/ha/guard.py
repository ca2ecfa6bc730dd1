"""The leader's store: every commit is gated by the lease, and a fenced commit deposes the leader.

:class:`GuardedStore` wraps the term's store. Before each commit it checks, on the monotonic clock,
that the term still holds its lease with margin (a flag and a clock read per tick, nothing per
task); after a commit the store refused with :class:`~corral.controller.store.errors.Fenced` or
:class:`~corral.controller.store.errors.CommitUnknown` it records why, so the controller steps
down. Either way the runtime sees :class:`NotLeader`, an ``OSError``: the state loop's degraded
mode then refuses writes with UNAVAILABLE while reads go on, until the step-down (a few tens of
milliseconds later) closes everything. The database's fence (``PostgresStore.fence_epoch``) is
the guarantee; this gate only makes a leader that knows its lease is ending stop first.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from corral.controller.store.base import ChangeBatch, Snapshot, Store
from corral.controller.store.errors import CommitUnknown, Fenced

__all__ = ["GuardedStore", "NotLeader"]


class NotLeader(OSError):
    """A write refused because this controller is not (or no longer surely) the leader.

    An OSError on purpose: the runtime treats it as a store failure no command caused (degraded
    mode: writers get UNAVAILABLE, nothing in memory changes), which is exactly what it is.
    """


class GuardedStore:
    """A store whose commits happen only while ``may_write()`` holds; records a fence or unknown commit.

    ``deposed`` is the error that ended the term (None while it lasts); ``on_deposed`` is called
    once, on the thread of the failed commit, so the owner can step down at once.
    """

    def __init__(
        self, inner: Store, may_write: Callable[[], bool], *, on_deposed: Callable[[], None] | None = None
    ) -> None:
        self.inner = inner
        self._may_write = may_write
        self._on_deposed = on_deposed
        self._lock = threading.Lock()
        self.deposed: BaseException | None = None

    def load(self, *, live_only: bool = False) -> Snapshot:
        """Load the state, only while the term lasts.

        The runtime reloads after a refused commit (degraded mode rebuilds from the store). A term
        that is ending would only throw the result away, and on a large database the reload would
        hold up the answers to the requests in flight until the server cancels them: refusing it
        makes the runtime refuse those requests at once (UNAVAILABLE, so clients go elsewhere).
        """
        if self.deposed is not None or not self._may_write():
            raise NotLeader("not the leader: the state is not reloaded for a term that is ending")
        return self.inner.load(live_only=live_only)

    def commit(self, batch: ChangeBatch) -> None:
        """Commit under the lease, or raise NotLeader having written nothing we know of."""
        if self.deposed is not None:
            raise NotLeader(f"not the leader: {self.deposed}")
        if not self._may_write():
            raise NotLeader("not the leader: the leadership lease is ending or lost")
        try:
            self.inner.commit(batch)
        except (Fenced, CommitUnknown) as exc:  # a lost database (StoreUnavailable) is degraded mode's
            self._depose(exc)
            raise NotLeader(f"not the leader: {exc}") from exc

    def _depose(self, error: BaseException) -> None:
        with self._lock:
            first = self.deposed is None
            if first:
                self.deposed = error
        if first and self._on_deposed is not None:
            self._on_deposed()

    def close(self) -> None:
        """Close the inner store."""
        self.inner.close()

    def __getattr__(self, name: str) -> Any:
        # Reads (logs, audit, events, evicted workflows) go straight to the inner store.
        return getattr(self.inner, name)
