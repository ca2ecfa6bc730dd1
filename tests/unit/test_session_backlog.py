"""An agent stream that is not read is closed instead of growing the controller's memory."""

from __future__ import annotations

from corral.controller.runtime import AgentSession


async def test_an_unread_session_closes_at_its_backlog_limit() -> None:
    session = AgentSession("a1", 1, max_backlog=3)
    for i in range(3):
        session.send(f"batch {i}")
    assert not session.closed
    session.send("one too many")
    assert session.closed
    session.send("after close")  # ignored
    drained = [session.outbound.get_nowait() for _ in range(session.outbound.qsize())]
    # What was queued is still delivered, then the end-of-stream marker; nothing after it.
    assert drained == ["batch 0", "batch 1", "batch 2", None]


async def test_a_reading_session_stays_open() -> None:
    session = AgentSession("a1", 1, max_backlog=3)
    for i in range(10):
        session.send(i)
        assert session.outbound.get_nowait() == i
    assert not session.closed
