"""AgentGateway.Connect: one bidirectional stream per agent, batched both ways.

The first message must be a Hello; the answer is a Welcome. After that the agent sends heartbeats
and batches of task events, and the controller sends batches of assignments, cancels, drains,
acks and heartbeat echoes. The gateway only decodes, checks and posts: every message becomes an
event for ``Machine.handle`` (AgentHello, AgentHeartbeat, AgentReports, AgentGone), and what the
tick decides (an Ack for finished reports, a HeartbeatAck for a heartbeat) goes out only after
the tick that applied it committed.

Every message is checked at the edge first (:mod:`agent_input`): a bad Hello, Heartbeat or event
batch ends the stream with INVALID_ARGUMENT and stores nothing. The Hello is bound to the stream's
credential (:mod:`agent_binding`), and a live session is never replaced by a second connection of
the same identity: that one gets ALREADY_EXISTS until the live session's lease has expired.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator
from typing import Any

from corral.controller.core import events as ev
from corral.controller.core.machine import Machine
from corral.controller.core.model import AttemptState
from corral.controller.errors import AlreadyExists, CorralError, InvalidArgument
from corral.controller.rpc import agent_input, beats, identity, protocol_gate, wire
from corral.controller.rpc.agent_binding import bind_hello
from corral.controller.rpc.cluster import note_drained
from corral.controller.rpc.join import join
from corral.controller.rpc.spawn_input import spawn_report
from corral.controller.runtime import AgentSession, Runtime
from corral.controller.store.base import LogChunk
from corral.v1 import agent_pb2 as pb
from corral.v1 import agent_pb2_grpc

__all__ = ["HELLO_TIMEOUT_S", "AgentGatewayService", "deliver"]

log = logging.getLogger("corral.controller.gateway")
HELLO_TIMEOUT_S = 30.0
#: How long heartbeats are gathered before they go to the state loop as one event. An echo comes
#: that much later, against a lease of tens of seconds; a tick per heartbeat would cost more than
#: everything else 1,000 idle agents make the controller do (10 ms until issue 13; at 200
#: heartbeats a second, 50 ms is ~18 ticks a second instead of ~67).
HEARTBEAT_GATHER_S = 0.05


def deliver(runtime: Runtime, actions: list[ev.Action]) -> None:
    """Send a tick's agent actions, merged into one message per agent and kind."""
    assigns: dict[str, list[Any]] = {}
    acks: dict[str, list[str]] = {}
    ended: dict[str, list[str]] = {}  # agent id -> ended workflows it ran python attempts of
    interval = 0.0  # the heartbeat interval told in echoes, computed at the first one
    for action in actions:
        session = runtime.sessions.get(getattr(action, "agent_id", ""))
        if session is None:
            continue  # not connected: the lease or the reconnect handshake settles it
        if isinstance(action, ev.Assign):
            assigns.setdefault(action.agent_id, []).extend(wire.assignment_to_proto(a) for a in action.assignments)
        elif isinstance(action, ev.CancelAttempts):
            cancel = pb.Cancel(
                attempt_ids=action.attempt_ids,
                force=action.force,
                grace_s=action.grace_s,
                release_only=action.release_only,
            )
            session.send(pb.ControllerMessage(cancel=cancel))
        elif isinstance(action, ev.Ack):
            if session.epoch == action.session_epoch:
                acks.setdefault(action.agent_id, []).extend(action.attempt_ids)
                if action.ended_workflows:
                    ended.setdefault(action.agent_id, []).extend(action.ended_workflows)
        elif isinstance(action, ev.HeartbeatAck):
            # Only an echo renews the agent's supervisors' lease, and only on the stream it came on.
            # It also tells the fleet's current heartbeat interval (issue 13: paced by fleet size).
            if session.epoch == action.session_epoch:
                if not interval:
                    interval = runtime.machine.config.beat_interval_s(len(runtime.sessions))
                echo = pb.HeartbeatAck(seq=action.seq, heartbeat_interval_s=interval)
                session.send(pb.ControllerMessage(heartbeat_ack=echo))
        elif isinstance(action, ev.Disconnect):
            if session.epoch == action.session_epoch:
                session.close()
        elif isinstance(action, ev.DrainOrder):
            session.send(pb.ControllerMessage(drain=pb.Drain(grace_s=action.grace_s)))
    # Assignments before acknowledgements: a stream sends one message at a time, and the next
    # one leaves only once the loop has seen the last one's write complete, which under load is
    # after the next tick. The agent waits for its work; its acknowledgements only free memory
    # (and let go of ended workflows' python children, which no task waits for either).
    for agent_id, assignments in assigns.items():
        runtime.sessions[agent_id].send(pb.ControllerMessage(assign=pb.Assign(assignments=assignments)))
    for agent_id, ids in acks.items():
        ack = pb.Ack(attempt_ids=ids, ended_workflows=ended.get(agent_id, ()))
        runtime.sessions[agent_id].send(pb.ControllerMessage(ack=ack))


class AgentGatewayService(agent_pb2_grpc.AgentGatewayServicer):
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self._beats: list[tuple[AgentSession, ev.AgentHeartbeat]] = []

    async def Connect(self, request_iterator: AsyncIterator[pb.AgentMessage], context: Any) -> AsyncIterator[Any]:
        rt = self.rt
        principal = identity.current_principal()
        try:
            # A stream that never says Hello must not hold a handler for ever.
            async with asyncio.timeout(HELLO_TIMEOUT_S):
                first = await anext(aiter(request_iterator))
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise InvalidArgument.field("hello", f"no Hello within {HELLO_TIMEOUT_S:g} s") from None
        hello = agent_input.check_hello(first)
        protocol_gate.check_hello(hello)  # issue 12: agents older than N-1 are refused
        event = bind_hello(wire.hello_from_proto(hello), principal)
        peer = str(context.peer()) if context is not None else ""

        def open_session(machine: Machine, now: float) -> tuple[ev.Welcome, AgentSession, pb.Welcome]:
            previous = rt.sessions.get(event.agent_id)
            if previous is not None and not previous.closed:
                live = machine.current(event.agent_id, previous.epoch)
                silent = now - live.last_seen if live is not None else math.inf
                if silent <= machine.config.lease_s:
                    raise AlreadyExists(
                        f"agent {event.agent_id!r} is already connected from {previous.peer or 'an unknown peer'} "
                        f"(session {previous.epoch}, seen {silent:.1f} s ago); "
                        "a session may be replaced only after its lease expires"
                    )
            welcome: ev.Welcome = machine.handle(event, now)
            session = AgentSession(welcome.agent_id, welcome.session_epoch, peer=peer)
            if previous is not None:
                previous.close()  # silent past its lease: the new stream replaces it
            rt.sessions[welcome.agent_id] = session
            agent = machine.agents[welcome.agent_id]
            config = machine.config
            message = pb.Welcome(
                agent_id=welcome.agent_id,
                session_epoch=welcome.session_epoch,
                heartbeat_interval_s=config.beat_interval_s(len(rt.sessions)),
                lease_s=config.lease_s,
                kill_attempt_ids=welcome.kill_attempt_ids,
                assignment_lease_s=config.assignment_lease_s,
                labels=dict(agent.labels),
                agent_types=list(agent.agent_types),
                fence_after_s=config.fence_after_s,
                kill_grace_s=config.kill_grace_s,
            )
            return welcome, session, message

        if rt.failure is not None:
            raise RuntimeError("the controller's state loop has stopped") from rt.failure
        opening = rt.post(open_session)
        try:
            welcome, session, message = await asyncio.shield(opening)
        except asyncio.CancelledError:
            # The caller went away while its Hello was applied: end the session that opened.
            opening.add_done_callback(self._abandoned)
            raise
        if context is not None:
            # However the call ends (even cancelled while this generator is suspended at a yield,
            # never to be resumed), the session ends with it.
            context.add_done_callback(lambda _: self._release(session))
        log.info("agent %s connected from %s (epoch %d)", welcome.agent_id, peer, welcome.session_epoch)
        reader: asyncio.Task[None] | None = None
        try:
            yield pb.ControllerMessage(welcome=message)
            reader = asyncio.create_task(self._read(request_iterator, session))
            while True:
                outbound = await session.outbound.get()
                if outbound is None:
                    break
                yield outbound
        finally:
            if reader is not None:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await reader
            self._release(session)
        if session.error is not None:
            # A hostile or broken message: the agent learns exactly which field, then reconnects.
            raise session.error

    def _abandoned(self, opening: asyncio.Future[Any]) -> None:
        if not opening.cancelled() and opening.exception() is None:
            self._release(opening.result()[1])

    def _release(self, session: AgentSession) -> None:
        """End a session (idempotent): close its stream, and if it is still the agent's current
        one, forget it and tell the machine (the lease decides what happens to its attempts)."""
        rt = self.rt
        session.close()
        if rt.sessions.get(session.agent_id) is not session:
            return
        del rt.sessions[session.agent_id]
        rt.usage.pop(session.agent_id, None)
        gone = ev.AgentGone(session.agent_id, session.epoch)
        rt.post_event(gone, note_drained(session.agent_id))  # issue 11: logs the end of a drain
        log.info("agent %s stream closed (epoch %d)", session.agent_id, session.epoch)

    async def Join(self, request: pb.JoinRequest, context: Any) -> pb.JoinResponse:
        """Exchange a join token for this agent's own credential (see :mod:`join`)."""
        return await join(self.rt, request)

    async def _read(self, requests: AsyncIterator[pb.AgentMessage], session: AgentSession) -> None:
        try:
            async for message in requests:
                kind = message.WhichOneof("kind")
                if kind == "heartbeat":
                    beat = message.heartbeat
                    if not beats.plain_ok(beat):  # the common beat skips the path-naming check
                        agent_input.check_heartbeat(beat)
                    self._heartbeat(session, beat)
                elif kind == "events":
                    agent_input.check_events(message.events)
                    self._events(session, message.events)
                elif kind == "hello":
                    raise InvalidArgument.field("hello", "only the first message on a stream may be a Hello")
                else:
                    log.warning("agent %s sent an unexpected %s; ignored", session.agent_id, kind)
        except CorralError as exc:
            log.warning("agent %s sent a bad message; closing its stream: %s", session.agent_id, exc.message)
            session.error = exc
        except Exception as exc:  # a broken stream is normal life for agents
            log.info("agent %s stream ended: %s", session.agent_id, exc)
        finally:
            session.close()

    def _heartbeat(self, session: AgentSession, beat: pb.Heartbeat) -> None:
        rt = self.rt
        rt.usage[session.agent_id] = beat.usage
        inventory = wire.inventory_from_proto(beat.inventory) if beat.HasField("inventory") else None
        event = ev.AgentHeartbeat(session.agent_id, session.epoch, beat.draining, inventory, beat.seq)
        if not self._beats:
            asyncio.get_running_loop().call_later(HEARTBEAT_GATHER_S, self._post_heartbeats)
        self._beats.append((session, event))

    def _post_heartbeats(self) -> None:
        """Post the gathered heartbeats as one event. A plain heartbeat changes memory only, so
        its tick commits nothing; each echo goes out after that tick. As an event (not a raw
        command): the runtime knows it only reads, so it is served while the store refuses writes."""
        gathered, self._beats = self._beats, []
        accepted = self.rt.post_event(ev.AgentHeartbeats(tuple(event for _, event in gathered)))

        def close_stale(done: asyncio.Future[Any]) -> None:
            # A session the controller no longer accepts (lost, or replaced) must reconnect.
            if done.cancelled() or done.exception() is not None:
                return
            for (session, _), alive in zip(gathered, done.result(), strict=True):
                if alive is False:
                    session.close()

        accepted.add_done_callback(close_stale)

    def _events(self, session: AgentSession, batch: pb.TaskEvents) -> None:
        agent_id, epoch = session.agent_id, session.epoch
        # Decoded and checked here, outside the state loop; the loop only applies them.
        reports: list[ev.Report] = []
        for i, message in enumerate(batch.events):
            kind = message.WhichOneof("kind")
            if kind == "output":
                out = message.output
                reports.append(LogChunk(message.attempt_id, out.stdout, out.stderr, out.truncated))
                continue
            if kind == "spawn":  # issue 10: validated here, off the state loop
                path = f"events.events[{i}].spawn.tasks_json"
                reports.append(spawn_report(agent_id, message.attempt_id, message.spawn.tasks_json, path))
                continue
            report = wire.task_event_from_proto(agent_id, epoch, message)
            if isinstance(report, ev.AttemptFinished):
                report = _checked_result(report, f"events.events[{i}].finished.result_json")
            elif isinstance(report, ev.AttemptCheckpoint):
                problem = agent_input.checkpoint_problem(report.data, i)
                if problem is not None:  # dropped: the attempt goes on, its next checkpoint may do
                    ids = {"attempt_id": report.attempt_id, "agent_id": agent_id}  # fields of JSON log lines
                    log.warning(
                        "agent %s: checkpoint of attempt %s refused: %s",
                        agent_id,
                        report.attempt_id,
                        problem,
                        extra=ids,
                    )
                    report = None
            if report is not None:
                reports.append(report)
        event = ev.AgentReports(agent_id, epoch, tuple(reports))
        self.rt.post_event(event)  # refused while degraded: its agent is asked to resend at resume


def _checked_result(report: ev.AttemptFinished, path: str) -> ev.AttemptFinished:
    """A report whose result cannot be stored fails its attempt with the reason, for good.

    Refusing the message instead would not help: the agent re-sends an unacknowledged Finished
    report after every reconnect, forever.
    """
    problem = agent_input.finished_result_problem(report.result, path)
    if problem is None:
        return report
    return ev.AttemptFinished(
        report.reporter,
        report.attempt_id,
        AttemptState.FAILED,
        report.exit_code,
        None,
        problem,
        False,
        report.session_epoch,
        report.at,
        peak_rss_bytes=report.peak_rss_bytes,
        cpu_s=report.cpu_s,
    )
