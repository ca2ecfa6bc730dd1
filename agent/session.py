"""The agent's end of ``AgentGateway.Connect``: Hello/Welcome, heartbeats, batched events, reconnects.

One stream at a time. A single writer coroutine owns ``call.write`` (heartbeats and event batches
never interleave mid-message); the reading side dispatches controller messages to the executor.
When the stream breaks, attempts keep running and events keep queuing in the outbox; the session
reconnects with full-jitter exponential backoff and re-sends every unacknowledged Finished report
after the next Welcome.

The lease: every Heartbeat carries a ``seq`` (increasing for the life of the agent process), and the
CLOCK_BOOTTIME time it was sent is remembered for the current stream. Only a HeartbeatAck echoing
one of those renews the supervisors' lease file, to that send time plus the Welcome's
``fence_after_s``: a backlog of old controller messages, or an ack meant for a previous stream,
renews nothing, and the lease never moves backwards.

Leaders (issue 12): ``target`` may be a comma-separated list of controllers. A standby refuses the
stream UNAVAILABLE with the leader's address in the ``corral-leader`` trailer: the next attempt goes
there at once. Any other failure to connect moves on to the next address of the list, with the
usual backoff; a Welcome keeps the session on its controller until that stream ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from typing import Any

import grpc
import grpc.aio
import structlog

from corral.agent.auth import AgentAuth, AuthError
from corral.agent.executor import Executor
from corral.agent.lease import LeaseFile, boottime
from corral.agent.outbox import ACCEPTED_DELAY_S, Outbox
from corral.protocol import PROTOCOL_METADATA, PROTOCOL_VERSION, leader_hint, parse_addresses
from corral.v1 import agent_pb2, agent_pb2_grpc, types_pb2

__all__ = [
    "BACKOFF_INITIAL_S",
    "BACKOFF_MAX_S",
    "CHANNEL_OPTIONS",
    "DEFAULT_FENCE_AFTER_S",
    "EndedAtHello",
    "Session",
]

log = structlog.get_logger("corral.agent.session")

BACKOFF_INITIAL_S = 0.1
BACKOFF_MAX_S = 5.0
# A refusal (bad credential, identity in use) will not change in milliseconds: wait at least this.
REFUSED_BACKOFF_S = 1.0
DEFAULT_HEARTBEAT_S = 2.0
MAX_HEARTBEAT_S = 60.0  # an echo's interval above this is ignored (a lease is far shorter anyway)
# A controller whose Welcome says nothing of fencing (fence_after_s 0: older than fencing) echoes
# no heartbeat either: the lease is then renewed at every heartbeat sent, this far ahead.
DEFAULT_FENCE_AFTER_S = 30.0
# Heartbeats of the current stream awaiting their echo: a bound, the oldest are forgotten first.
MAX_UNECHOED = 256
MAX_MESSAGE_BYTES = 64 << 20
# One event batch stays well below the message limit (big Output events are split across batches).
BATCH_BYTES = 16 << 20

CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.keepalive_time_ms", 5000),
    ("grpc.keepalive_timeout_ms", 5000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
]


_PROTOCOL = (PROTOCOL_METADATA, str(PROTOCOL_VERSION))

# Typed through a variable so the check holds whether or not the generated stubs carry annotations.
_make_stub: Callable[[grpc.aio.Channel], Any] = agent_pb2_grpc.AgentGatewayStub


def _batches(events: list[agent_pb2.TaskEvent]) -> list[list[agent_pb2.TaskEvent]]:
    # Small batches cannot get near the limit unless they carry output: measure only then.
    if len(events) < 64 and all(not e.HasField("output") for e in events):
        return [events]
    batches: list[list[agent_pb2.TaskEvent]] = [[]]
    size = 0
    for event in events:
        event_size = event.ByteSize()
        if batches[-1] and size + event_size > BATCH_BYTES:
            batches.append([])
            size = 0
        batches[-1].append(event)
        size += event_size
    return batches


REPORT_LINGER_S = 0.005


class EndedAtHello(ConnectionError):
    """The controller ended the stream at once, and gRPC lost its status.

    A Hello written while the controller refuses the stream (it aborts before reading anything)
    sometimes fails with INTERNAL "Internal error from Core" and no trace of the real status; it
    is backed off like a refusal, since it most likely is one.
    """


class Session:
    """Keeps one live stream to the controller and moves messages between it and the executor."""

    def __init__(
        self,
        *,
        target: str,
        hello: Callable[[], agent_pb2.Hello],
        usage: Callable[[], types_pb2.Usage],
        executor: Executor,
        outbox: Outbox,
        on_drain: Callable[[float], None],
        kill_grace_s: float = 10.0,
        name: str = "",
        auth: AgentAuth | None = None,
        lease: LeaseFile | None = None,
    ) -> None:
        #: Every controller this agent may connect to, and the one it connects to now.
        self.targets = parse_addresses(target)
        self.target = self.targets[0]
        self._next_index = 1
        self.draining = False
        self.connected = asyncio.Event()
        self.session_epoch = 0
        self._hello = hello
        self._usage = usage
        self._executor = executor
        self._outbox = outbox
        self._on_drain = on_drain
        self._kill_grace_s = kill_grace_s
        self._name = name
        self._auth = auth
        self._lease = lease
        #: The deadline last written to the lease file by this process (0: none yet).
        self.lease_until = 0.0
        self.fence_after_s = DEFAULT_FENCE_AFTER_S
        # True while the controller echoes heartbeats (its Welcome named fence_after_s).
        self._echoes = False
        self._seq = 0
        # seq -> CLOCK_BOOTTIME send time, for heartbeats sent on the current stream only.
        self._sent: dict[int, float] = {}
        self._heartbeat_now = False
        #: The controller's heartbeat interval: the Welcome's, then the latest echo's (issue 13).
        self.heartbeat_interval_s = DEFAULT_HEARTBEAT_S
        self._closing = False
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def heartbeat_now(self) -> None:
        """Send a heartbeat at once (e.g. to announce draining)."""
        self._heartbeat_now = True
        self._outbox.poke()

    def start(self) -> None:
        """Start connecting (in the background)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def close(self, timeout: float = 2.0) -> None:
        """End the stream cleanly: send what is pending, half-close, let the controller close its side."""
        self._closing = True
        self._wakeup.set()
        self._outbox.poke()
        task, self._task = self._task, None
        if task is None:
            return
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if not done:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def _refusal(self, exc: grpc.aio.AioRpcError) -> str | None:
        """One line for the operator when the controller refused this agent, else None."""
        code = exc.code()
        details = exc.details() or ""
        if code == grpc.StatusCode.ALREADY_EXISTS:
            return (
                f"the controller refused this agent (ALREADY_EXISTS: {details}); another live agent is "
                f"connected as {self._name!r}: is a second agent running with the same name or certificate? "
                "retrying with backoff"
            )
        if code in (
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            grpc.StatusCode.FAILED_PRECONDITION,  # issue 12: a protocol this controller no longer accepts
        ):
            # Its Hello was refused (a bad inventory, a name the controller will not take, the
            # agent table is full): a retry at the usual pace would not change that.
            return f"the controller refused this agent ({code.name}: {details}); retrying with backoff"
        if code not in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            return None
        auth = self._auth
        if auth is not None and auth.certificate_name is not None:
            hint = "check --cert/--key and that the certificate is not revoked"
        elif auth is not None and auth.join_token is not None and auth.needs_join:
            hint = "check --join-token (its scope, name pattern, expiry and uses)"
        elif auth is not None and auth.join_token is not None:
            hint = f"the stored credential was refused; remove {auth.credential_path} to join again"
        else:
            hint = "the controller requires credentials: give --ca/--cert/--key or --join-token"
        return f"the controller refused this agent ({code.name}: {details}); {hint}; retrying with backoff"

    def _move_on(self, hint: str | None, hops: int) -> bool:
        """Pick the controller of the next attempt: the leader a standby named, else the next address.

        True when the next attempt may go at once (a fresh hint, not one of a chain of hints)."""
        if hint and hint != self.target:
            log.info("following the leader", standby=self.target, leader=hint)
            self.target = hint
            # Standbys naming each other (a stale lease) must not spin: only a short chain goes at once.
            return hops <= len(self.targets)
        if len(self.targets) > 1:
            self.target = self.targets[self._next_index % len(self.targets)]
            self._next_index += 1
        return False

    async def _run(self) -> None:
        delay = BACKOFF_INITIAL_S
        failures = 0
        hops = 0  # leader hints followed since the last Welcome
        last_refusal: str | None = None
        while not self._closing:
            refused = False
            hint: str | None = None
            moved = True  # a failure to reach this controller: try the next one
            try:
                try:
                    welcomed = await self._serve_one()
                finally:
                    if self.connected.is_set():
                        # A stream that was welcomed worked, however it ended: the next failure is
                        # a first one again (logged as a warning, retried after the initial delay).
                        delay = BACKOFF_INITIAL_S
                        failures = 0
                        hops = 0
                        last_refusal = None
                if welcomed and not self._closing:
                    log.warning("controller closed the stream", controller=self.target)
            except grpc.aio.AioRpcError as exc:
                failures += 1
                refusal = self._refusal(exc)
                refused = refusal is not None
                moved = exc.code() == grpc.StatusCode.UNAVAILABLE
                hint = leader_hint(exc.trailing_metadata()) if moved else None
                if refusal is not None:
                    # One line per distinct refusal, not one per retry.
                    if refusal != last_refusal:
                        log.error(refusal, controller=self.target)
                    last_refusal = refusal
                    delay = max(delay, REFUSED_BACKOFF_S)
                else:
                    level = log.warning if failures == 1 and hint is None else log.debug
                    tls_hint = (
                        {"hint": "TLS handshake or address? check --ca/--cert/--key"}
                        if moved and hint is None and self._auth is not None and self._auth.tls
                        else {}
                    )
                    level(
                        "controller stream failed",
                        controller=self.target,
                        code=exc.code().name,
                        details=exc.details(),
                        **tls_hint,
                    )
            except AuthError as exc:
                failures += 1
                refused = True
                moved = False
                if str(exc) != last_refusal:
                    log.error(str(exc), controller=self.target)
                last_refusal = str(exc)
                delay = max(delay, REFUSED_BACKOFF_S)
            except (ConnectionError, OSError, grpc.aio.UsageError) as exc:
                failures += 1
                if isinstance(exc, EndedAtHello):
                    refused = True
                    moved = False
                    delay = max(delay, REFUSED_BACKOFF_S)
                level = log.warning if failures == 1 else log.debug
                level("controller stream failed", controller=self.target, error=str(exc))
            except Exception as exc:
                # Anything else (grpc.aio raising another type on a stream that broke under it, a
                # bug in handling one message) ends this stream, never the session: an agent whose
                # session task died stayed up, connected to nothing (seen once in `make chaos`).
                failures += 1
                log.exception("controller stream failed", controller=self.target, error=f"{type(exc).__name__}: {exc}")
            finally:
                self.connected.clear()
            if self._closing:
                break
            if moved and self._move_on(hint, hops):
                hops += 1
                continue  # a standby named the leader: go there now
            # Full jitter: many agents losing the same controller do not come back in lockstep. After
            # a refusal, at least half the delay: a refusal never clears up in a few milliseconds.
            pause = random.uniform(delay / 2 if refused else 0.0, delay)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause):
                    await self._wakeup.wait()
            delay = min(delay * 2, BACKOFF_MAX_S)

    def _channel(self) -> grpc.aio.Channel:
        if self._auth is None:
            return grpc.aio.insecure_channel(self.target, options=CHANNEL_OPTIONS)
        return self._auth.channel(self.target, CHANNEL_OPTIONS)

    async def _serve_one(self) -> bool:
        async with self._channel() as channel:
            auth = self._auth
            if auth is not None and auth.needs_join:
                joined = await auth.join(channel)
                log.info(
                    "joined the controller",
                    agent_id=joined.agent_id,
                    labels=dict(joined.labels),
                    agent_types=list(joined.agent_types),
                    namespaces=list(joined.namespaces),
                    credential_file=str(auth.credential_path),
                )
            stub = _make_stub(channel)
            call = stub.Connect(metadata=(*(auth.metadata() if auth is not None else ()), _PROTOCOL))
            try:
                # A new stream: no echo of a heartbeat sent on an earlier one may renew the lease.
                self._sent = {}
                hello = self._hello()
                hello.draining = self.draining
                hello.running_attempt_ids.extend(self._executor.active_ids())
                hello.finished_attempt_ids.extend(self._outbox.unacked_ids)
                try:
                    await call.write(agent_pb2.AgentMessage(hello=hello))
                    first = await call.read()
                except grpc.aio.AioRpcError as exc:
                    if exc.code() == grpc.StatusCode.INTERNAL:
                        raise EndedAtHello("the controller ended the stream at Hello (no status)") from None
                    raise
                # Anything but a message (grpc.aio.EOF) means the controller ended the stream.
                if not isinstance(first, agent_pb2.ControllerMessage):
                    raise ConnectionError("the controller closed the stream before Welcome")
                if first.WhichOneof("kind") != "welcome":
                    raise ConnectionError(f"expected Welcome, got {first.WhichOneof('kind')}")
                welcome = first.welcome
                self.session_epoch = welcome.session_epoch
                if welcome.assignment_lease_s > 0:
                    # Acknowledge well within the controller's assignment lease.
                    self._outbox.accepted_delay_s = min(ACCEPTED_DELAY_S, welcome.assignment_lease_s / 8)
                self._echoes = welcome.fence_after_s > 0
                self.fence_after_s = welcome.fence_after_s if self._echoes else DEFAULT_FENCE_AFTER_S
                if welcome.kill_grace_s > 0:
                    # The controller's fence deadline counts this grace: the agent's stops use it too.
                    self._kill_grace_s = welcome.kill_grace_s
                    self._executor.kill_grace_s = welcome.kill_grace_s
                self._executor.kill_silently(welcome.kill_attempt_ids)
                self._outbox.on_welcome(welcome.kill_attempt_ids)
                self.connected.set()
                log.info(
                    "agent connected",
                    name=self._name,
                    controller=self.target,
                    session_epoch=welcome.session_epoch,
                    assignment_lease_s=welcome.assignment_lease_s,
                    fence_after_s=welcome.fence_after_s,
                    kill_grace_s=welcome.kill_grace_s,
                )
                interval = welcome.heartbeat_interval_s if welcome.heartbeat_interval_s > 0 else DEFAULT_HEARTBEAT_S
                self.heartbeat_interval_s = interval
                writer = asyncio.create_task(self._write_loop(call))
                try:
                    await self._read_loop(call, writer)
                finally:
                    writer.cancel()
                    with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError, grpc.aio.UsageError):
                        await writer
                return True
            finally:
                call.cancel()

    def silence_limit_s(self) -> float | None:
        """How long the stream may stay silent before the agent opens a new one (None: no limit).

        A controller that fences echoes a heartbeat at least every sixth of ``fence_after_s``, so
        half of it without any message means the controller is gone or the transport is stuck
        (seen once: a stream that stayed open for a minute after its controller's kill -9, although
        the keepalive should have ended it). A controller that echoes nothing has only the keepalive.
        """
        if not self._echoes:
            return None
        return max(self.fence_after_s / 2, 3 * self.heartbeat_interval_s)

    async def _read_loop(self, call: Any, writer: asyncio.Task[None]) -> None:
        limit = self.silence_limit_s()
        while True:
            try:
                async with asyncio.timeout(limit):
                    message = await call.read()
            except TimeoutError:
                raise ConnectionError(f"no message from the controller for {limit:g} s") from None
            if not isinstance(message, agent_pb2.ControllerMessage):
                return
            self._dispatch(message)
            if writer.done() and writer.exception() is not None:
                writer.result()  # surfaces the write failure

    def _dispatch(self, message: agent_pb2.ControllerMessage) -> None:
        kind = message.WhichOneof("kind")
        if kind == "assign":
            self._executor.submit(message.assign.assignments)
        elif kind == "ack":
            ack = message.ack
            ids = list(ack.attempt_ids)
            self._outbox.ack(ids)
            self._executor.forget(ids)
            if ack.ended_workflows:
                self._executor.workflows_ended(frozenset(ack.ended_workflows))
        elif kind == "cancel":
            cancel = message.cancel
            grace = cancel.grace_s if cancel.grace_s > 0 else self._kill_grace_s
            self._executor.cancel(
                cancel.attempt_ids, force=cancel.force, grace_s=grace, release_only=cancel.release_only
            )
        elif kind == "heartbeat_ack":
            self._on_heartbeat_ack(message.heartbeat_ack.seq)
            if 0 < message.heartbeat_ack.heartbeat_interval_s <= MAX_HEARTBEAT_S:  # issue 13: paced by fleet size
                self.heartbeat_interval_s = message.heartbeat_ack.heartbeat_interval_s
        elif kind == "drain":
            self._on_drain(message.drain.grace_s)
        # A second Welcome, or a kind this version does not know: nothing to do.

    def _next_seq(self) -> int:
        """The next heartbeat's seq; its send time is remembered (taken just before the write)."""
        self._seq += 1
        sent = boottime()
        if self._echoes:
            unechoed = self._sent
            unechoed[self._seq] = sent
            if len(unechoed) > MAX_UNECHOED:
                del unechoed[next(iter(unechoed))]
        else:
            # A controller that echoes nothing and fences nothing: keep the supervisors alive while
            # the stream is up (it breaks within the keepalive when the controller goes away).
            self._renew(sent + DEFAULT_FENCE_AFTER_S)
        return self._seq

    def _on_heartbeat_ack(self, seq: int) -> None:
        """The controller applied heartbeat ``seq``: renew the lease to its send time + fence_after."""
        unechoed = self._sent
        sent = unechoed.get(seq)
        if sent is None:
            return  # not sent on this stream (or echoed already): it proves nothing about now
        # Seqs grow: this one and every older one are settled (an older echo renews less).
        while unechoed:
            first = next(iter(unechoed))
            if first > seq:
                break
            del unechoed[first]
        self._renew(sent + self.fence_after_s)

    def _renew(self, until: float) -> None:
        if self._lease is None or until <= self.lease_until:
            return  # never backwards
        try:
            self._lease.renew(until)
        except OSError as exc:
            # The supervisors fence themselves if this goes on: say why.
            log.warning("cannot renew the lease file", path=str(self._lease.path), error=str(exc))
            return
        self.lease_until = until

    async def _write_loop(self, call: Any) -> None:
        loop = asyncio.get_running_loop()
        outbox = self._outbox
        next_heartbeat = loop.time()
        while True:
            events = outbox.take(hold=not self._closing)
            if events:
                for batch in _batches(events):
                    await call.write(agent_pb2.AgentMessage(events=agent_pb2.TaskEvents(events=batch)))
            now = loop.time()
            if self._heartbeat_now or now >= next_heartbeat:
                self._heartbeat_now = False
                heartbeat = agent_pb2.Heartbeat(usage=self._usage(), draining=self.draining, seq=self._next_seq())
                await call.write(agent_pb2.AgentMessage(heartbeat=heartbeat))
                next_heartbeat = now + self.heartbeat_interval_s
            if self._closing:
                if not outbox.pending_count:
                    await call.done_writing()
                    return
                continue
            await outbox.wait(max(0.0, next_heartbeat - loop.time()))
            if self._executor.queued() and not self._closing:
                # Work is queued here, so the controller is not what this agent waits for: linger
                # a moment so more reports share one message (each message costs both ends far
                # more than an event in it). With nothing queued, report at once: the controller
                # needs the news to send more work.
                await asyncio.sleep(REPORT_LINGER_S)
