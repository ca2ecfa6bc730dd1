"""The leader's store gate: commits only under the lease; a fenced or unknown commit deposes."""

from __future__ import annotations

import pytest

from corral.controller.ha.guard import GuardedStore, NotLeader
from corral.controller.recovery import OPERATIONAL
from corral.controller.store.base import ChangeBatch
from corral.controller.store.errors import CommitUnknown, Fenced
from corral.controller.store.memory import MemoryStore


class RefusingStore(MemoryStore):
    """A real memory store whose commits fail with a given store error (the fence's seam)."""

    def __init__(self, error: Exception | None) -> None:
        super().__init__()
        self.error = error
        self.commits = 0

    def commit(self, batch: ChangeBatch) -> None:
        if self.error is not None:
            raise self.error
        self.commits += 1
        super().commit(batch)


def test_not_leader_is_operational_so_the_loop_degrades_instead_of_rebuilding() -> None:
    assert isinstance(NotLeader("x"), OPERATIONAL)


def test_commits_pass_while_the_lease_holds_and_stop_when_it_ends() -> None:
    inner = RefusingStore(None)
    holds = [True]
    store = GuardedStore(inner, lambda: holds[0])
    store.commit(ChangeBatch(meta={"k": "1"}))
    holds[0] = False
    with pytest.raises(NotLeader, match="lease"):
        store.commit(ChangeBatch(meta={"k": "2"}))
    assert inner.commits == 1 and store.deposed is None
    with pytest.raises(NotLeader):
        store.load()  # an ending term reloads nothing (its requests are refused at once instead)
    holds[0] = True
    assert store.load().meta["k"] == "1"


@pytest.mark.parametrize("error", [Fenced("epoch 3 is not ours"), CommitUnknown("connection lost in COMMIT")])
def test_a_fenced_or_unknown_commit_deposes_once(error: Exception) -> None:
    calls: list[int] = []
    inner = RefusingStore(error)
    store = GuardedStore(inner, lambda: True, on_deposed=lambda: calls.append(1))
    for _ in range(2):
        with pytest.raises(NotLeader, match="not the leader"):
            store.commit(ChangeBatch(meta={"k": "1"}))
    assert store.deposed is error and calls == [1]
    inner.error = None  # even once the store would take it: a deposed term never writes again
    with pytest.raises(NotLeader):
        store.commit(ChangeBatch(meta={"k": "1"}))
    assert inner.commits == 0
