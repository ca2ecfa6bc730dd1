"""The state loop lets what a tick woke run before it starts the next tick.

Under load the inbox is never empty, so without a yield the loop would go from one tick to the
next without giving the event loop back: the streams would send a tick's assignments (and the
callers read their answers) only once the next tick had been computed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from corral.controller.commands import AgentSession
from corral.controller.core import events as ev
from corral.controller.core.machine import Machine
from corral.controller.core.model import Task
from corral.controller.rpc.gateway import deliver
from corral.controller.runtime import Runtime
from corral.controller.store.memory import MemoryStore


async def test_a_ticks_answers_are_read_before_the_next_tick_runs() -> None:
    runtime = Runtime(MemoryStore())
    await runtime.start()
    try:
        await runtime.call(lambda m, now: None)  # the boot tick is behind us
        resumed: list[str] = []
        seen_by_next_tick: list[list[str]] = []
        queued: list[asyncio.Future[Any]] = []

        def second(machine: Machine, now: float) -> None:
            seen_by_next_tick.append(list(resumed))

        def first(machine: Machine, now: float) -> str:
            queued.append(runtime.post(second))  # the inbox is not empty when this tick ends
            return "first"

        async def caller() -> None:
            assert await runtime.call(first) == "first"
            resumed.append("caller")

        await asyncio.wait_for(caller(), 5)
        await asyncio.wait_for(queued[0], 5)
        assert seen_by_next_tick == [["caller"]]
    finally:
        await runtime.stop()


async def test_a_ticks_assignments_go_out_before_its_acknowledgements() -> None:
    # A stream writes one message at a time; whatever is queued second leaves a loop turn later.
    runtime = Runtime(MemoryStore())
    session = AgentSession("agent-1", epoch=1)
    runtime.sessions["agent-1"] = session
    task = Task("t-1", "wf-1", "a", 0, "default", b'{"shell": "true"}')
    deliver(
        runtime,
        [
            ev.Ack("agent-1", 1, ["done-1"]),
            ev.Assign("agent-1", [ev.Assignment("attempt-2", 1, task, {})]),
        ],
    )
    kinds = [session.outbound.get_nowait().WhichOneof("kind") for _ in range(session.outbound.qsize())]
    assert kinds == ["assign", "ack"]
