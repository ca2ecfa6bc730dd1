"""Learned durations not yet stored (a workflow ended under a second ago) are stored when the
controller stops: only a crash loses them."""

from __future__ import annotations

from pathlib import Path

from corral.controller.core.machine import Machine
from corral.controller.core.model import Task
from corral.controller.rpc.gateway import deliver
from corral.controller.runtime import Runtime
from corral.controller.store.sqlite import SqliteStore


async def test_a_stopping_controller_stores_what_it_learned_since_the_last_flush(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    runtime = Runtime(SqliteStore(db), encode_actions=deliver)
    await runtime.start()

    await runtime.call(lambda m, now: None)  # the first tick's flush (the timer starts due)

    def learn(m: Machine, now: float) -> None:
        m.ordering.learn(Task("t-1", "wf-1", "train", 0, "python", b'{"function": "m:f"}'), "nightly", 12.0, now)
        m.ordering.flush_soon(now)

    await runtime.call(learn)
    store = SqliteStore(db)
    try:
        assert [d for g, d in store.load().durations if g[0] == "task"] == []  # not in the learning tick
    finally:
        store.close()
    await runtime.stop()
    store = SqliteStore(db)
    try:
        stored = {(*g, d.name): d.seconds for g, d in store.load().durations if g[0] == "task"}
    finally:
        store.close()
    assert stored == {("task", "default", "nightly", "train"): 12.0}
