"""The agent against a scripted fake controller: the AgentGateway.Connect protocol end to end."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from pathlib import Path

import pytest
import structlog.testing

from corral.agent.lease import LeaseFile, boottime
from corral.agent.session import DEFAULT_FENCE_AFTER_S
from corral.v1 import agent_pb2, types_pb2

from .conftest import DEADLINE_S, AgentFactory, FakeConnection, FakeGateway, eventually, python_task, shell_task

SUCCEEDED = types_pb2.ATTEMPT_OUTCOME_SUCCEEDED
CANCELLED = types_pb2.ATTEMPT_OUTCOME_CANCELLED
LOST = types_pb2.ATTEMPT_OUTCOME_LOST


async def test_hello_welcome_and_heartbeats(make_agent: AgentFactory, gateway: FakeGateway) -> None:
    await make_agent(labels={"zone": "a"}, gpus=2, slots=3)
    conn = await gateway.connection()
    hello = conn.hello
    assert hello.agent_id == hello.name == "agent-1"
    assert hello.hostname
    assert list(hello.agent_types) == ["shell", "python"]
    assert dict(hello.labels) == {"zone": "a"}
    assert hello.inventory.gpu_count == 2 and hello.inventory.slots == 3
    assert hello.inventory.cpu_cores > 0 and hello.inventory.memory_mb > 0
    assert not hello.draining and not hello.running_attempt_ids and not hello.finished_attempt_ids
    assert re.fullmatch(r"[0-9a-f]{16}", hello.incarnation)
    heartbeats = await eventually(lambda: len(conn.heartbeats()) >= 3 and conn.heartbeats(), what="heartbeats")
    assert heartbeats[-1].usage.memory_used_mb > 0
    assert not heartbeats[-1].draining
    # Every heartbeat has its own seq, increasing.
    seqs = [h.seq for h in heartbeats]
    assert seqs[0] >= 1 and all(b > a for a, b in itertools.pairwise(seqs))


async def test_assign_batched_events_and_ack(make_agent: AgentFactory, gateway: FakeGateway) -> None:
    agent, _ = await make_agent(slots=1)
    conn = await gateway.connection()
    conn.assign(*(python_task(f"p{i}", "add", i, 1) for i in range(50)))
    await eventually(lambda: len(conn.events(kind="finished")) == 50, what="50 Finished events")
    for i in range(50):
        finished = conn.events(f"p{i}", "finished")[0].finished
        assert finished.outcome == SUCCEEDED and json.loads(finished.result_json) == i + 1
    assert conn.events("p0", "started")[0].started.pid > 0
    assert len(agent.outbox.unacked_ids) == 50
    conn.ack(*(f"p{i}" for i in range(50)))
    await eventually(lambda: not agent.outbox.unacked_ids, what="acks to be applied")


async def test_events_pending_together_go_in_one_batch(make_agent: AgentFactory, gateway: FakeGateway) -> None:
    await make_agent(slots=1)
    conn = await gateway.connection()
    conn.assign(shell_task("busy", "sleep 1000"), *(shell_task(f"q{i}", "true") for i in range(20)))
    await conn.wait_event("busy", "started")
    # One Cancel of the 20 queued (never started) attempts gives them all back at once: 20
    # Released reports in one message.
    conn.cancel(*(f"q{i}" for i in range(20)))
    await eventually(lambda: len(conn.events(kind="released")) == 20, what="20 Released events")
    batch = next(b for b in conn.batches() if any(e.HasField("released") for e in b))
    assert sorted(e.attempt_id for e in batch) == sorted(f"q{i}" for i in range(20))
    assert all(e.HasField("released") for e in batch)
    assert not conn.events(kind="finished")


async def test_assignments_are_accepted_unless_started_in_the_same_message(
    make_agent: AgentFactory, gateway: FakeGateway
) -> None:
    await make_agent(slots=1)
    conn = await gateway.connection()
    conn.assign(shell_task("runs", "sleep 1000"), shell_task("waits", "true"))
    # The queued one is acknowledged (Accepted) promptly, well within any assignment lease.
    accepted = await conn.wait_event("waits", "accepted", timeout=2.0)
    assert accepted.attempt_id == "waits"
    await conn.wait_event("runs", "started")
    # Each attempt is acknowledged exactly once: by Accepted, or by its Started when both were
    # pending together (then the Accepted is left out).
    for attempt_id in ("runs", "waits"):
        assert len(conn.events(attempt_id, "accepted")) <= 1
    for batch in conn.batches():
        started = {e.attempt_id for e in batch if e.HasField("started")}
        assert not any(e.HasField("accepted") and e.attempt_id in started for e in batch)


async def test_release_only_gives_back_queued_work_and_keeps_running_work(
    make_agent: AgentFactory, gateway: FakeGateway
) -> None:
    agent, _ = await make_agent(slots=1)
    conn = await gateway.connection()
    conn.assign(shell_task("running", "sleep 1000"), shell_task("queued", "echo never"))
    await conn.wait_event("running", "started")
    conn.send(
        agent_pb2.ControllerMessage(cancel=agent_pb2.Cancel(attempt_ids=["running", "queued"], release_only=True))
    )
    await conn.wait_event("queued", "released")
    assert agent.executor is not None
    await eventually(lambda: agent.executor.active_ids() == ["running"], what="only the running attempt left")  # type: ignore[union-attr]
    assert not conn.events("running", "finished") and not conn.events("queued", "started")


async def test_unacked_finished_is_resent_after_reconnect(make_agent: AgentFactory, gateway: FakeGateway) -> None:
    agent, _ = await make_agent()
    first = await gateway.connection(0)
    first.assign(shell_task("s1", "echo 1"), shell_task("s2", "echo 2"), shell_task("long", "sleep 1000"))
    await first.wait_event("s1", "finished")
    await first.wait_event("s2", "finished")
    await first.wait_event("long", "started")
    first.ack("s1")
    await eventually(lambda: agent.outbox.unacked_ids == ["s2"], what="the ack of s1")
    first.end()  # the stream breaks
    second = await gateway.connection(1)
    assert list(second.hello.running_attempt_ids) == ["long"]
    # Everything it holds: running, and finished but not acknowledged.
    assert list(second.hello.finished_attempt_ids) == ["s2"]
    # The same process: the same incarnation (the controller counts no loss).
    assert second.hello.incarnation == first.hello.incarnation
    resent = await second.wait_event("s2", "finished")
    assert resent.finished.outcome == SUCCEEDED
    assert not second.events("s1")  # acked: never re-sent
    # The long attempt kept running across the reconnect.
    assert agent.executor is not None and agent.executor.active_ids() == ["long"]


async def test_events_while_disconnected_are_sent_after_welcome(make_agent: AgentFactory, gateway: FakeGateway) -> None:
    await make_agent()
    first = await gateway.connection(0)
    first.assign(shell_task("late", "sleep 0.3; echo 5"))
    await first.wait_event("late", "started")
    first.end()
    second = await gateway.connection(1)
    finished = await second.wait_event("late", "finished")
    assert finished.finished.result_json == b"5"


async def test_welcome_kill_ids_are_killed_and_forgotten(make_agent: AgentFactory, gateway: FakeGateway) -> None:
    agent, _ = await make_agent()
    first = await gateway.connection(0)
    first.assign(shell_task("old", "sleep 1000"), shell_task("done", "true"))
    await first.wait_event("old", "started")
    await first.wait_event("done", "finished")
    gateway.kill_next = ["old", "done"]
    first.end()
    second = await gateway.connection(1)
    assert set(second.hello.running_attempt_ids) == {"old"}
    assert agent.executor is not None
    await eventually(lambda: not agent.executor.active_ids(), what="the killed attempt to stop")  # type: ignore[union-attr]
    await asyncio.sleep(0.3)
    assert not second.events("old") and not second.events("done")
    assert not agent.outbox.unacked_ids


async def test_cancel_over_the_stream(make_agent: AgentFactory, gateway: FakeGateway) -> None:
    await make_agent(slots=1)
    conn = await gateway.connection()
    conn.assign(shell_task("c1", "sleep 1000"), shell_task("c2", "sleep 1000"))
    await conn.wait_event("c1", "started")
    conn.cancel("c1", "c2", force=True)
    assert (await conn.wait_event("c1", "finished")).finished.outcome == CANCELLED
    # c2 never started: it is given back (Released), not reported finished.
    await conn.wait_event("c2", "released")
    assert not conn.events("c2", "started") and not conn.events("c2", "finished")


async def test_drain(make_agent: AgentFactory, gateway: FakeGateway) -> None:
    _agent, task = await make_agent(slots=1)
    conn = await gateway.connection()
    conn.assign(shell_task("d1", "sleep 0.3; echo 1"), shell_task("d2", "echo never"))
    await conn.wait_event("d1", "started")
    conn.drain(grace_s=10.0)
    await eventually(lambda: any(h.draining for h in conn.heartbeats()), what="a draining heartbeat")
    # The queued attempt is given back, the running one finishes within the grace.
    given_back = (await conn.wait_event("d2", "finished")).finished
    assert given_back.outcome == LOST and given_back.retryable
    assert (await conn.wait_event("d1", "finished")).finished.outcome == SUCCEEDED
    conn.assign(shell_task("d3", "echo late"))
    assert (await conn.wait_event("d3", "finished")).finished.outcome == LOST
    assert not task.done()  # waiting for the acks
    conn.ack("d1", "d2", "d3")
    assert await asyncio.wait_for(task, 10) == 0
    await asyncio.wait_for(conn.agent_closed.wait(), 10)  # the stream was closed cleanly


async def test_drain_grace_expires(make_agent: AgentFactory, gateway: FakeGateway) -> None:
    _agent, task = await make_agent(slots=1)
    conn = await gateway.connection()
    conn.assign(shell_task("stuck", "sleep 1000"))
    await conn.wait_event("stuck", "started")
    conn.drain(grace_s=0.2)
    finished = (await conn.wait_event("stuck", "finished")).finished
    assert finished.outcome == LOST and finished.retryable
    conn.ack("stuck")
    assert await asyncio.wait_for(task, 10) == 0


async def test_reconnects_while_the_controller_is_down(make_agent: AgentFactory, gateway: FakeGateway) -> None:
    # Point the agent at a port nobody listens on first: it keeps retrying without crashing.
    agent, task = await make_agent(controller="127.0.0.1:1")
    await asyncio.sleep(0.5)
    assert not task.done() and not gateway.connections
    assert agent.session is not None and not agent.session.connected.is_set()


async def test_a_silent_controller_stream_is_replaced(make_agent: AgentFactory, gateway: FakeGateway) -> None:
    # A controller that fences echoes heartbeats: a stream with no message for half of fence_after
    # (at least 3 heartbeats) is dead, even if the transport says nothing (this gateway never answers).
    gateway.fence_after_s = 2.0
    agent, _ = await make_agent()
    first = await gateway.connection(0)
    assert agent.session is not None and agent.session.silence_limit_s() == 1.0
    opened = time.monotonic()
    await gateway.connection(1, timeout=3 * 1.0 + 1.0)
    assert time.monotonic() - opened >= 0.5  # not at once: the limit counts from the Welcome
    await asyncio.wait_for(first.agent_closed.wait(), DEADLINE_S)  # the old stream is given up


async def test_every_welcomed_stream_that_fails_is_logged_as_a_warning(
    make_agent: AgentFactory, gateway: FakeGateway
) -> None:
    # Failures in a row after the first are logged at debug (a controller down for a while is one
    # warning); a stream that had its Welcome starts the count again, however it ended.
    gateway.fence_after_s = 2.0
    with structlog.testing.capture_logs() as logs:
        await make_agent()
        for index in range(3):  # each silent stream ends in a ConnectionError after 1 s
            await gateway.connection(index, timeout=DEADLINE_S)
        await gateway.connection(3, timeout=DEADLINE_S)
    failed = [entry for entry in logs if entry["event"] == "controller stream failed"]
    assert len(failed) >= 3
    assert all(entry["log_level"] == "warning" for entry in failed)


async def test_an_unexpected_error_on_a_stream_ends_the_stream_not_the_session(
    make_agent: AgentFactory, gateway: FakeGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Seen once in `make chaos`: after its controller's kill -9 an agent logged nothing and never
    # came back; its task dump showed no session task at all. An error of a type the session did
    # not name ended the session's loop, silently.
    agent, task = await make_agent()
    first = await gateway.connection(0)
    session = agent.session
    assert session is not None
    real = session._dispatch
    raised: list[str] = []

    def dispatch(message: agent_pb2.ControllerMessage) -> None:
        if not raised:
            raised.append(message.WhichOneof("kind") or "")
            raise RuntimeError("a message the session could not handle")
        real(message)

    monkeypatch.setattr(session, "_dispatch", dispatch)
    with structlog.testing.capture_logs() as logs:
        first.ack("nothing")
        await gateway.connection(1, timeout=DEADLINE_S)  # a new stream
    assert raised == ["ack"] and not task.done()
    failed = [entry for entry in logs if entry["event"] == "controller stream failed"]
    assert failed and "RuntimeError: a message the session could not handle" in failed[0]["error"]
    await asyncio.wait_for(first.agent_closed.wait(), DEADLINE_S)  # the broken stream is given up


# -- the lease: renewed only by echoes of this stream's heartbeats ---------------------------------------


def heartbeat_ack(seq: int) -> agent_pb2.ControllerMessage:
    return agent_pb2.ControllerMessage(heartbeat_ack=agent_pb2.HeartbeatAck(seq=seq))


async def settled(conn: FakeConnection, attempt_id: str) -> None:
    """Send an assignment and wait for its Finished: the agent has handled everything sent before it."""
    conn.assign(shell_task(attempt_id, "true"))
    await conn.wait_event(attempt_id, "finished")


async def test_heartbeat_echoes_renew_the_lease(make_agent: AgentFactory, gateway: FakeGateway, tmp_path: Path) -> None:
    gateway.fence_after_s = 30.0
    gateway.kill_grace_s = 3.0
    before = boottime()
    agent, _ = await make_agent()
    lease = LeaseFile(tmp_path / "work" / "lease")
    conn = await gateway.connection()
    heartbeats = await eventually(lambda: len(conn.heartbeats()) >= 3 and conn.heartbeats(), what="heartbeats")
    seen = boottime()
    assert agent.session is not None and agent.executor is not None
    # The kill grace of the controller's Welcome is what the agent's stops use.
    assert agent.executor.kill_grace_s == 3.0
    # Heartbeats alone renew nothing: only an echo does.
    await settled(conn, "sync0")
    assert lease.read() is None
    # An echo of a seq never sent proves nothing.
    conn.send(heartbeat_ack(heartbeats[-1].seq + 1000))
    await settled(conn, "sync1")
    assert lease.read() is None
    # The echo of the second heartbeat: renewed to its send time + fence_after.
    conn.send(heartbeat_ack(heartbeats[1].seq))
    until = await eventually(lease.read, what="the lease file")
    # (The file holds milliseconds.)
    assert before + 30.0 - 0.001 <= until <= seen + 30.0 + 0.001
    assert agent.session.lease_until == pytest.approx(until, abs=0.001)
    # An older heartbeat's echo, arriving late, never moves it back (nor forward: it is settled).
    conn.send(heartbeat_ack(heartbeats[0].seq))
    conn.send(heartbeat_ack(heartbeats[1].seq))  # and a repeated echo is no news either
    await settled(conn, "sync2")
    assert lease.read() == until
    # A newer one moves it forward.
    conn.send(heartbeat_ack(heartbeats[2].seq))
    later = await eventually(lambda: (lease.read() or 0) > until and lease.read(), what="a renewal")
    assert later <= seen + 30.0 + 0.001


async def test_echoes_of_a_previous_stream_renew_nothing(
    make_agent: AgentFactory, gateway: FakeGateway, tmp_path: Path
) -> None:
    gateway.fence_after_s = 30.0
    await make_agent()
    lease = LeaseFile(tmp_path / "work" / "lease")
    first = await gateway.connection(0)
    old = await eventually(lambda: first.heartbeats(), what="a heartbeat on the first stream")
    first.end()
    second = await gateway.connection(1)
    # A backlog of the old stream's echoes, delivered on the new stream: no renewal.
    for heartbeat in old:
        second.send(heartbeat_ack(heartbeat.seq))
    await settled(second, "sync")
    assert lease.read() is None
    new = await eventually(
        lambda: [h for h in second.heartbeats() if h.seq > old[-1].seq], what="a heartbeat on the new stream"
    )
    resumed = boottime()
    second.send(heartbeat_ack(new[0].seq))
    until = await eventually(lease.read, what="the lease file")
    assert until <= resumed + 30.0 + 0.001


async def test_a_controller_without_fencing_keeps_the_lease_alive(
    make_agent: AgentFactory, gateway: FakeGateway, tmp_path: Path
) -> None:
    # fence_after_s 0 in the Welcome: an older controller, which echoes nothing.
    before = boottime()
    await make_agent()
    lease = LeaseFile(tmp_path / "work" / "lease")
    await gateway.connection()
    first = await eventually(lease.read, what="the lease file")
    assert before + DEFAULT_FENCE_AFTER_S - 0.001 <= first <= boottime() + DEFAULT_FENCE_AFTER_S + 0.001
    await eventually(lambda: (lease.read() or 0) > first, what="a renewal at the next heartbeat")
