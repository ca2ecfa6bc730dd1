"""A leader whose term ended answers every queued and later request UNAVAILABLE at once.

Its server stops within a second; a request still queued then (behind a rebuild from the store)
would otherwise be cancelled, which tells the client nothing (tests/ha/test_fencing.py saw it).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from corral.controller.core.machine import Machine
from corral.controller.errors import StorageUnavailable
from corral.controller.runtime import Runtime
from corral.controller.store.memory import MemoryStore


async def test_queued_and_later_requests_are_refused_and_internal_work_still_runs() -> None:
    runtime = Runtime(MemoryStore())
    await runtime.start()
    ran: list[str] = []
    try:
        await runtime.call(lambda m, now: None)  # the boot tick is behind us

        def command(machine: Machine, now: float) -> str:
            ran.append("command")
            return "applied"

        # Queued in this same step, before the loop can take them.
        waiting = asyncio.ensure_future(runtime.call(command))
        await asyncio.sleep(0)  # call() has queued its entry
        posted = runtime.post(command)
        refusal = StorageUnavailable("no longer the leader (epoch 1 ended: lease lost)")
        runtime.refuse_all(refusal)
        for future in (waiting, posted):
            with pytest.raises(StorageUnavailable, match="no longer the leader"):
                await asyncio.wait_for(future, 5)
        later: Any = runtime.post_event(object())
        assert later.done() and later.exception() is refusal  # at once, never queued
        lazy: Any = runtime.post_lazy(object())
        assert lazy.done() and lazy.exception() is refusal
        with pytest.raises(StorageUnavailable):
            await runtime.call(command)
        assert ran == []  # nothing refused was applied
    finally:
        await runtime.stop()  # its own last flush still runs: the stop returns
