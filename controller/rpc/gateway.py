"""AgentGateway.Connect: one bidirectional stream per agent, batched both ways.

The first message must be a Hello; the answer is a Welcome. After that the agent sends heartbeats
and batches of task events, and the controller sends batches of assignments, cancels, drains and
acks. Reports are applied through the runtime like any other command; an Ack for finished reports
goes out only after the tick that applied them committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from corral.controller.core import events as ev
from corral.controller.core.machine import Machine
from corral.controller.core.model import AgentState, AttemptState
from corral.controller.errors import InvalidArgument
from corral.controller.rpc import wire
from corral.controller.rpc.join import join
from corral.controller.runtime import AgentSession, Runtime
from corral.controller.spec import Limits
from corral.controller.store.base import LogChunk
from corral.v1 import agent_pb2 as pb
from corral.v1 import agent_pb2_grpc

__all__ = ["AgentGatewayService", "deliver"]

log = logging.getLogger("corral.controller.gateway")
_MAX_AGENT_ID = 128
_MAX_EVENTS = 10_000
DRAINING = AgentState.DRAINING


def deliver(runtime: Runtime, actions: list[ev.Action]) -> None:
    """Send a tick's agent actions, merged into one message per agent and kind."""
    assigns: dict[str, list[Any]] = {}
    acks: dict[str, list[str]] = {}
    for action in actions:
        session = runtime.sessions.get(getattr(action, "agent_id", ""))
        if session is None:
            continue  # not connected: the lease or the reconnect handshake settles it
        if isinstance(action, ev.Assign):
            assigns.setdefault(action.agent_id, []).extend(wire.assignment_to_proto(a) for a in action.assignments)
        elif isinstance(action, ev.CancelAttempts):
            session.send(
                pb.ControllerMessage(
                    cancel=pb.Cancel(attempt_ids=action.attempt_ids, force=action.force, grace_s=action.grace_s)
                )
            )
        elif isinstance(action, ev.Ack):
            if session.epoch == action.session_epoch:
                acks.setdefault(action.agent_id, []).extend(action.attempt_ids)
        elif isinstance(action, ev.Disconnect):
            if session.epoch == action.session_epoch:
                session.close()
        elif isinstance(action, ev.DrainOrder):
            session.send(pb.ControllerMessage(drain=pb.Drain(grace_s=action.grace_s)))
    for agent_id, ids in acks.items():
        runtime.sessions[agent_id].send(pb.ControllerMessage(ack=pb.Ack(attempt_ids=ids)))
    for agent_id, assignments in assigns.items():
        runtime.sessions[agent_id].send(pb.ControllerMessage(assign=pb.Assign(assignments=assignments)))


def _check_hello(message: pb.AgentMessage) -> pb.Hello:
    if message.WhichOneof("kind") != "hello":
        raise InvalidArgument.field("hello", "the first message on the stream must be a Hello")
    hello = message.hello
    agent_id = hello.agent_id or hello.name
    if not agent_id or len(agent_id) > _MAX_AGENT_ID:
        raise InvalidArgument.field("hello.agent_id", f"required, at most {_MAX_AGENT_ID} characters")
    if hello.inventory.slots < 0 or hello.inventory.cpu_cores < 0 or hello.inventory.memory_mb < 0:
        raise InvalidArgument.field("hello.inventory", "negative capacity")
    return hello


class AgentGatewayService(agent_pb2_grpc.AgentGatewayServicer):
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    async def Connect(self, request_iterator: AsyncIterator[pb.AgentMessage], context: Any) -> AsyncIterator[Any]:
        rt = self.rt
        try:
            first = await anext(aiter(request_iterator))
        except StopAsyncIteration:
            return
        hello = _check_hello(first)
        event = wire.hello_from_proto(hello)

        def open_session(machine: Machine, now: float) -> tuple[ev.Welcome, AgentSession]:
            welcome = machine.hello(event, now)
            session = AgentSession(welcome.agent_id, welcome.session_epoch)
            previous = rt.sessions.get(welcome.agent_id)
            if previous is not None:
                previous.close()  # a newer stream of the same agent replaces the old one
            rt.sessions[welcome.agent_id] = session
            return welcome, session

        welcome, session = await rt.call(open_session)
        config = rt.machine.config
        log.info("agent %s connected (epoch %d)", welcome.agent_id, welcome.session_epoch)
        yield pb.ControllerMessage(
            welcome=pb.Welcome(
                agent_id=welcome.agent_id,
                session_epoch=welcome.session_epoch,
                heartbeat_interval_s=config.heartbeat_interval_s,
                lease_s=config.lease_s,
                kill_attempt_ids=welcome.kill_attempt_ids,
            )
        )
        reader = asyncio.create_task(self._read(request_iterator, session))
        try:
            while True:
                message = await session.outbound.get()
                if message is None:
                    break
                yield message
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            session.closed = True
            if rt.sessions.get(session.agent_id) is session:
                del rt.sessions[session.agent_id]
                gone = ev.AgentGone(session.agent_id, session.epoch)
                rt.post(lambda m, now: m.gone(gone, now))
            log.info("agent %s stream closed (epoch %d)", session.agent_id, session.epoch)

    async def Join(self, request: pb.JoinRequest, context: Any) -> pb.JoinResponse:
        """Exchange a join token for this agent's own credential (see :mod:`join`)."""
        return await join(self.rt, request)

    async def _read(self, requests: AsyncIterator[pb.AgentMessage], session: AgentSession) -> None:
        try:
            async for message in requests:
                kind = message.WhichOneof("kind")
                if kind == "heartbeat":
                    self._heartbeat(session, message.heartbeat)
                elif kind == "events":
                    self._events(session, message.events)
                else:
                    log.warning("agent %s sent an unexpected %s; ignored", session.agent_id, kind)
        except Exception as exc:  # a broken stream is normal life for agents
            log.info("agent %s stream ended: %s", session.agent_id, exc)
        finally:
            session.close()

    def _heartbeat(self, session: AgentSession, beat: pb.Heartbeat) -> None:
        rt = self.rt
        rt.usage[session.agent_id] = beat.usage
        agent = rt.machine.agents.get(session.agent_id)
        plain = not beat.HasField("inventory") and agent is not None and beat.draining == (agent.state is DRAINING)
        if plain:
            # The common heartbeat only refreshes the lease, which is memory-only state: apply it
            # here instead of as a tick of its own (1,000 agents send 500 of these a second).
            if not rt.machine.seen(session.agent_id, session.epoch, rt.clock()):
                session.close()  # a session the controller no longer accepts must reconnect
            return
        inventory = wire.inventory_from_proto(beat.inventory) if beat.HasField("inventory") else None
        event = ev.AgentHeartbeat(session.agent_id, session.epoch, beat.draining, inventory)
        accepted = rt.post(lambda m, now: m.heartbeat(event, now))

        def close_if_stale(done: asyncio.Future[Any]) -> None:
            # A session the controller no longer accepts (lost, or replaced) must reconnect.
            if not done.cancelled() and done.exception() is None and done.result() is False:
                session.close()

        accepted.add_done_callback(close_if_stale)

    def _events(self, session: AgentSession, batch: pb.TaskEvents) -> None:
        events = list(batch.events[:_MAX_EVENTS])
        agent_id, epoch = session.agent_id, session.epoch

        def apply(machine: Machine, now: float) -> None:
            agent = machine.current(agent_id, epoch)
            if agent is None:
                return  # a stale session: its reports wait for the agent's next connection
            agent.last_seen = now
            finished: list[str] = []
            for message in events:
                kind = message.WhichOneof("kind")
                if kind == "output":
                    attempt = machine.attempts.get(message.attempt_id)
                    if attempt is not None and attempt.agent_id == agent_id:
                        out = message.output
                        machine.add_logs(LogChunk(attempt.id, out.stdout, out.stderr, out.truncated))
                    continue
                report = wire.task_event_from_proto(agent_id, epoch, message)
                if report is None:
                    continue
                if isinstance(report, ev.AttemptFinished):
                    finished.append(report.attempt_id)
                    report = _enforce_result_limit(report)
                    if not machine.finished(report, now):
                        log.info("rejected a stale report for attempt %s from %s", report.attempt_id, agent_id)
                else:
                    machine.started(report, now)
            if finished:
                # Acked after this tick commits, merged with the tick's other acks for this agent.
                machine.emit(ev.Ack(agent_id, epoch, finished))

        self.rt.post(apply)


def _enforce_result_limit(report: ev.AttemptFinished) -> ev.AttemptFinished:
    if report.result is not None and len(report.result) > Limits.max_result_bytes:
        return ev.AttemptFinished(
            report.reporter,
            report.attempt_id,
            AttemptState.FAILED,
            report.exit_code,
            None,
            f"result is {len(report.result)} bytes, over the max_result_bytes={Limits.max_result_bytes} limit",
            False,
            report.session_epoch,
        )
    return report
