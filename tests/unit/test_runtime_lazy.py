"""Lazy events (audit records) ride on the next tick instead of paying a commit of their own."""

from __future__ import annotations

import asyncio

from corral.controller.core.access import AuditEntry
from corral.controller.core.requests import RecordAudit
from corral.controller.runtime import LAZY_FLUSH_S, Runtime
from corral.controller.store.memory import MemoryStore


class CountingStore(MemoryStore):
    """The memory store, counting commits and the audit rows each one carried."""

    def __init__(self) -> None:
        super().__init__()
        self.audit_per_commit: list[int] = []

    def commit(self, changes):  # type: ignore[no-untyped-def]
        self.audit_per_commit.append(len(changes.access.audit))
        super().commit(changes)


def _entry(method: str) -> AuditEntry:
    return AuditEntry(at=0.0, principal="user:a", role="admin", method=method)


async def test_lazy_audit_joins_the_next_tick_and_is_committed() -> None:
    store = CountingStore()
    runtime = Runtime(store)
    await runtime.start()
    try:
        await runtime.call(lambda m, now: None)  # the boot tick is behind us
        before = len(store.audit_per_commit)
        first = runtime.post_lazy(RecordAudit(_entry("/a")))
        second = runtime.post_lazy(RecordAudit(_entry("/b")))
        # Both are committed, together, with no other request waking the loop ...
        await asyncio.wait_for(asyncio.gather(first, second), 3 * LAZY_FLUSH_S + 2)
        assert store.audit_per_commit[before:] == [2]
        # ... and a lazy record posted before a request shares that request's commit.
        lazy = runtime.post_lazy(RecordAudit(_entry("/c")))
        await runtime.handle(RecordAudit(_entry("/d")))
        assert lazy.done()
        assert store.audit_per_commit[-1] == 2
    finally:
        await runtime.stop()


async def test_stop_commits_pending_lazy_events() -> None:
    store = CountingStore()
    runtime = Runtime(store)
    await runtime.start()
    pending = runtime.post_lazy(RecordAudit(_entry("/late")))
    await runtime.stop()
    assert pending.done() and pending.exception() is None
    assert sum(store.audit_per_commit) == 1
