"""The client's channel: opened lazily, checked for readiness, and moved to the leader (issue 12).

A :class:`~corral.controller.sdk.client.Client` takes one address or a comma-separated list. With
one address and no failure, a call costs what it always did: the channel is opened once and every
call goes straight out. Only a call that fails UNAVAILABLE (or a controller that cannot be reached)
enters :meth:`Following._failover`, which re-resolves and tries again:

- a standby's answer carries the ``corral-leader`` trailer: go to the address it names, else (it
  knows no leader yet, an election is on) to the next address of the list;
- no answer at all: the next address; once every known address stayed silent in a row, give up
  with the usual "cannot reach the controller" (a single dead address fails as fast as before);
- bounded exponential backoff with jitter between tries (0.05 s doubling to 1 s; a fresh leader
  hint is followed at once), and an overall ``follow_timeout`` (15 s by default).

Only calls that are safe to send twice are retried after the request may have reached a leader
that then went away: reads, ExecuteWorkflow (starting is idempotent, and waiting on an ended
workflow returns its result), and SubmitWorkflow/ScheduleTask with an idempotency key (the
controller deduplicates them). A standby's refusal and a failure to connect did nothing, so every
call may follow those.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
from google.protobuf.message import Message

from corral.controller.sdk.credentials import Credentials
from corral.controller.sdk.errors import CorralError, UnavailableError, error_from_rpc, unreachable
from corral.controller.spec import Limits
from corral.protocol import leader_hint
from corral.v1 import (
    admin_pb2_grpc,
    agent_pb2_grpc,
    orchestrator_pb2_grpc,
    scheduler_pb2_grpc,
    schedules_pb2_grpc,
)

__all__ = ["CHANNEL_OPTIONS", "DEFAULT_FOLLOW_TIMEOUT_S", "RETRY_SAFE", "Following", "retry_safe"]

# Results of large workflows (every task's status) exceed gRPC's default 4 MiB receive limit: take
# what the controller sends.
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", Limits.max_message_bytes),
    ("grpc.max_send_message_length", Limits.max_message_bytes),
]

DEFAULT_FOLLOW_TIMEOUT_S = 15.0
_BACKOFF_FIRST_S = 0.05
_BACKOFF_MAX_S = 1.0

#: Methods that may be sent again when the first try's outcome is unknown.
RETRY_SAFE = frozenset(
    {
        "GetWorkflowStatus",
        "ListWorkflows",
        "WatchWorkflow",
        "GetExecutionPlan",
        "GetTaskLogs",
        "GetWorkflowEvents",
        "ListRuns",
        "ListAttempts",
        "AnalyzeDependencies",
        "ExplainTask",
        "ListAgents",
        "GetAgent",
        "WhoAmI",
        "ListTokens",
        "ListNamespaces",
        "ListSecrets",
        "ListRevokedCertificates",
        "ListAudit",
        "ListQuotas",
        "ListSchedules",
        "ExecuteWorkflow",
        "AppendTasks",  # issue 13: a chunk sent twice is accepted once; a sealed upload answers its workflow
    }
)
_KEYED = frozenset({"SubmitWorkflow", "ScheduleTask"})

# gRPC core's text for a call that found no connected subchannel: it never left this process.
_NOT_SENT = "failed to connect to all addresses"

_STUBS: dict[str, Any] = {
    "orchestrator": orchestrator_pb2_grpc.OrchestratorStub,
    "scheduler": scheduler_pb2_grpc.SchedulerStub,
    "cluster": agent_pb2_grpc.ClusterStub,
    "admin": admin_pb2_grpc.AdminStub,
    "schedules": schedules_pb2_grpc.SchedulesStub,
}


def retry_safe(method: str, request: Message | None) -> bool:
    """Whether ``method`` may be sent twice: a read, an idempotent start, or a write with a key."""
    if method in RETRY_SAFE:
        return True
    return method in _KEYED and bool(getattr(request, "idempotency_key", ""))


def _nothing_done(failure: grpc.aio.AioRpcError | UnavailableError) -> bool:
    """True when the failed call cannot have changed anything: not sent, or refused by a standby."""
    if isinstance(failure, UnavailableError):
        return True
    return leader_hint(failure.trailing_metadata()) is not None or (failure.details() or "").startswith(_NOT_SENT)


@dataclass(slots=True)
class _Pursuit:
    """The state of one hunt for the leader (one failed call, or one broken stream)."""

    give_up_at: float
    delay: float = _BACKOFF_FIRST_S
    silent: int = 0  # addresses in a row that did not answer at all
    hops: int = 0  # leader hints followed
    known: set[str] = field(default_factory=set)
    standby: str = ""  # the last controller that answered as a standby


class Following:
    """The channel half of the client (a mixin): connect, stubs, and following the leader."""

    address: str
    addresses: tuple[str, ...]
    timeout: float
    connect_timeout: float
    follow_timeout: float
    credentials: Credentials
    _metadata: tuple[tuple[str, str], ...]
    _channel: grpc.aio.Channel | None
    _owns_channel: bool
    _ready: bool
    _stubs: dict[str, Any]
    _next_index: int

    async def connect(self) -> None:
        """Open the channel and wait (up to ``connect_timeout``) until a controller answers.

        With a list of addresses, the first one that answers. Called by every method; call it
        yourself to fail early. Raises :class:`UnavailableError`.
        """
        if self._ready:
            return
        if len(self.addresses) == 1 or not self._owns_channel:
            await self._connect_current()
            return
        for _ in self.addresses:
            try:
                await self._connect_current()
                return
            except UnavailableError:
                await self._switch(self._next_address())
        raise self._unreachable(self.addresses)

    async def _connect_current(self) -> None:
        if self._channel is None:
            tls = self.credentials.channel_credentials()
            if tls is None:
                self._channel = grpc.aio.insecure_channel(self.address, options=CHANNEL_OPTIONS)
            else:
                self._channel = grpc.aio.secure_channel(self.address, tls, options=CHANNEL_OPTIONS)
        if self._ready:
            return
        channel = self._channel
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.connect_timeout
        state = channel.get_state(try_to_connect=True)
        while state != grpc.ChannelConnectivity.READY:
            # A refused connection shows as TRANSIENT_FAILURE at once: report it without waiting
            # out the deadline, which is only there for hosts that never answer.
            if state in (grpc.ChannelConnectivity.TRANSIENT_FAILURE, grpc.ChannelConnectivity.SHUTDOWN):
                raise unreachable(self.address, tls=self.credentials.tls)
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise unreachable(self.address, tls=self.credentials.tls)
            try:
                await asyncio.wait_for(channel.wait_for_state_change(state), remaining)
            except TimeoutError:
                raise unreachable(self.address, tls=self.credentials.tls) from None
            state = channel.get_state(try_to_connect=True)
        self._ready = True

    async def _stub(self, name: str, *, one: bool = False) -> Any:
        # ``one``: only the current address (the failover loop moves on itself).
        await (self._connect_current() if one else self.connect())
        stub = self._stubs.get(name)
        if stub is None:
            stub = self._stubs[name] = _STUBS[name](self._channel)
        return stub

    async def _call(self, service: str, method: str, request: Message, *, timeout: float | bool | None = True) -> Any:
        deadline = self.timeout if timeout is True else (None if timeout is False else timeout)
        # Not reachable at all (every address of a list tried once): nothing to follow.
        stub = await self._stub(service)
        try:
            return await getattr(stub, method)(request, timeout=deadline, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE:
                raise error_from_rpc(exc, self.address) from exc
            return await self._failover(exc, service, method, request, deadline)

    # -- following the leader -----------------------------------------------------------------

    def _pursuit(self) -> _Pursuit:
        loop = asyncio.get_running_loop()
        return _Pursuit(give_up_at=loop.time() + self.follow_timeout, known=set(self.addresses))

    async def _failover(
        self,
        failure: grpc.aio.AioRpcError | UnavailableError,
        service: str,
        method: str,
        request: Message,
        deadline: float | None,
    ) -> Any:
        """Re-resolve the leader and send the call again until it is answered (see the module doc)."""
        pursuit = self._pursuit()
        while True:
            if not (_nothing_done(failure) or retry_safe(method, request)):
                raise self._give_up(failure, pursuit, searched=False)
            await self._reresolve(failure, pursuit)
            try:
                stub = await self._stub(service, one=True)
                return await getattr(stub, method)(request, timeout=deadline, metadata=self._metadata)
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    raise error_from_rpc(exc, self.address) from exc
                failure = exc
            except UnavailableError as exc:
                failure = exc

    async def _reresolve(self, failure: grpc.aio.AioRpcError | UnavailableError, pursuit: _Pursuit) -> None:
        """Move the channel to the next controller to try, after the backoff; raises when giving up."""
        if not self._owns_channel:
            raise self._give_up(failure, pursuit, searched=False)  # a channel we were given stays put
        hint = leader_hint(failure.trailing_metadata()) if isinstance(failure, grpc.aio.AioRpcError) else None
        answered = hint is not None or not _nothing_done(failure)
        pursuit.silent = 0 if answered else pursuit.silent + 1
        if hint is not None:
            pursuit.standby = self.address
        loop = asyncio.get_running_loop()
        if pursuit.silent >= len(pursuit.known) or loop.time() >= pursuit.give_up_at:
            raise self._give_up(failure, pursuit, searched=True)
        quick = False
        if hint and hint != self.address:
            pursuit.known.add(hint)
            # A fresh hint is followed at once; standbys naming each other (a stale lease) are not.
            quick = pursuit.hops < len(self.addresses)
            pursuit.hops += 1
            await self._switch(hint)
        else:
            await self._switch(self._next_address())
        if not quick:
            pause = random.uniform(pursuit.delay / 2, pursuit.delay)
            await asyncio.sleep(max(0.0, min(pause, pursuit.give_up_at - loop.time())))
            pursuit.delay = min(pursuit.delay * 2, _BACKOFF_MAX_S)

    def _next_address(self) -> str:
        """The next address of the list, round robin (the same one when there is only one)."""
        address = self.addresses[self._next_index % len(self.addresses)]
        self._next_index += 1
        return address

    async def _switch(self, address: str) -> None:
        """Point the client at ``address``: a new channel, opened on the next call."""
        channel, self._channel = self._channel, None
        self.address = address
        self._ready = False
        self._stubs.clear()
        if channel is not None:
            await channel.close(None)

    def _give_up(
        self, failure: grpc.aio.AioRpcError | UnavailableError, pursuit: _Pursuit, *, searched: bool
    ) -> CorralError:
        if searched and pursuit.standby and pursuit.silent < len(pursuit.known):
            return UnavailableError(
                f"no leader: the controller at {pursuit.standby} is a standby and named no reachable leader "
                f"within {self.follow_timeout:g} s — is a controller holding the lease?"
            )
        if searched and len(pursuit.known) > 1:
            return self._unreachable(tuple(sorted(pursuit.known)))
        if isinstance(failure, UnavailableError):
            return failure
        return error_from_rpc(failure, self.address)

    def _unreachable(self, addresses: tuple[str, ...]) -> UnavailableError:
        if len(addresses) == 1:
            return unreachable(addresses[0], tls=self.credentials.tls)
        return UnavailableError(
            f"cannot reach any controller at {', '.join(addresses)} — are they running?"
            + (" (and is the TLS handshake right: --ca, client certificate?)" if self.credentials.tls else "")
        )
