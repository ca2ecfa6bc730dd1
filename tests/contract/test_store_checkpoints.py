"""Task checkpoints in both stores: upserted, replaced, deleted, reloaded (issue 10)."""

from __future__ import annotations

from corral.controller.core.checkpoints import Checkpoint
from corral.controller.store.base import ChangeBatch, Store

from .conftest import Backend


def test_upsert_replace_delete_and_reload(store: Store, backend: Backend) -> None:
    first = Checkpoint("t-1", "wf-1", "att-1", 10.0, b'{"n": 10}')
    other = Checkpoint("t-2", "wf-1", "att-2", 11.0, b"[1, 2]")
    store.commit(ChangeBatch(checkpoints={"t-1": first, "t-2": other}))
    first.data = b"mutated after commit"  # the store keeps what was committed
    store.commit(ChangeBatch(checkpoints={"t-1": Checkpoint("t-1", "wf-1", "att-3", 12.0, b'{"n": 50}')}))
    store.commit(ChangeBatch(checkpoints={"t-2": None}))
    loaded = store.load().checkpoints
    assert loaded == [Checkpoint("t-1", "wf-1", "att-3", 12.0, b'{"n": 50}')]
    assert backend.reopen().load().checkpoints == loaded
