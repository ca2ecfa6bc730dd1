"""The outbox's held Accepted reports: one report less per prefetched attempt that starts soon."""

from __future__ import annotations

import asyncio

from corral.agent.attempt import AttemptResult
from corral.agent.outbox import Outbox
from corral.v1 import agent_pb2, types_pb2


def _kinds(events: list[agent_pb2.TaskEvent]) -> list[tuple[str, str | None]]:
    return [(e.attempt_id, e.WhichOneof("kind")) for e in events]


async def test_an_accepted_report_waits_even_when_other_messages_go() -> None:
    outbox = Outbox()
    outbox.accepted("queued")
    outbox.finished("other", AttemptResult(types_pb2.ATTEMPT_OUTCOME_SUCCEEDED, result_json=b"null"))
    # The Finished report of another attempt goes now; the Accepted is held, not carried along.
    assert _kinds(outbox.take()) == [("other", "finished")]
    assert outbox.pending_count == 1


async def test_an_attempt_that_starts_within_the_delay_sends_no_accepted() -> None:
    outbox = Outbox()
    outbox.accepted("a")
    outbox.take()
    outbox.started("a", 123)
    assert _kinds(outbox.take()) == [("a", "started")]
    assert outbox.pending_count == 0


async def test_an_attempt_still_queued_after_the_delay_is_reported_accepted() -> None:
    outbox = Outbox()
    outbox.accepted_delay_s = 0.05
    outbox.accepted("queued")
    assert outbox.take() == []
    # The sender's wait ends when the held report is due (no other event wakes it).
    await asyncio.wait_for(outbox.wait(None), 5.0)
    assert _kinds(outbox.take()) == [("queued", "accepted")]
    assert outbox.pending_count == 0


async def test_a_closing_stream_sends_held_accepted_reports_at_once() -> None:
    outbox = Outbox()
    outbox.accepted("queued")
    assert _kinds(outbox.take(hold=False)) == [("queued", "accepted")]


async def test_discarded_attempts_lose_their_held_accepted() -> None:
    outbox = Outbox()
    outbox.accepted("killed")
    outbox.discard(["killed"])
    assert outbox.pending_count == 0
    assert outbox.take(hold=False) == []


async def test_a_sender_asleep_until_its_heartbeat_still_sends_accepted_when_due() -> None:
    outbox = Outbox()
    outbox.accepted_delay_s = 0.05
    sender = asyncio.create_task(outbox.wait(60.0))  # asleep until the next heartbeat
    await asyncio.sleep(0)
    outbox.accepted("queued")
    await asyncio.wait_for(sender, 5.0)  # woken to recompute its deadline
    assert outbox.take() == []  # not due yet
    await asyncio.wait_for(outbox.wait(60.0), 5.0)
    assert _kinds(outbox.take()) == [("queued", "accepted")]
