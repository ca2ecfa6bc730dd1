"""Degraded mode of the state loop: the store refuses commits (a full disk, an I/O error).

The tick whose commit failed is refused: its writes get StorageFull (RESOURCE_EXHAUSTED) or
StorageUnavailable (UNAVAILABLE), the machine is rebuilt from the store, and from then on writes are
refused at once while reads, heartbeats and agent streams go on; timers and placement wait. The
loop probes the store with a real write (0.1 s, doubling to 1 s); the first write that succeeds
ends degraded mode, and agents whose reports were refused are asked to reconnect, so they send
them again. A leader whose term ended refuses every request for good (:meth:`DegradedMode.refuse_all`).
A mixin of :class:`~corral.controller.runtime.Runtime`, which owns the state it uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from corral.controller.commands import AgentSession, Batch, Entry
from corral.controller.core import events as ev
from corral.controller.core.machine import Machine
from corral.controller.core.model import AgentState
from corral.controller.errors import CorralError, StorageUnavailable
from corral.controller.recovery import OPERATIONAL, storage_error
from corral.controller.store.base import ChangeBatch, Store

__all__ = ["DegradedMode", "fail_future"]

log = logging.getLogger("corral.controller")
# The store is probed with a real write this often while degraded: from 0.1 s, doubling to 1 s, so
# writes resume within about a second of space returning.
_PROBE_FIRST_S = 0.1
_PROBE_MAX_S = 1.0
_PROBE_KEY = "storage_probe"
_LIVE = (AgentState.CONNECTED, AgentState.DRAINING)


class DegradedMode:
    """Refusing writes, serving reads and probing the store after a commit failed for the store's sake."""

    # Owned by the Runtime (set in its __init__).
    machine: Machine
    store: Store
    clock: Callable[[], float]
    sessions: dict[str, AgentSession]
    _undo: list[Any]
    _pulls: list[Any]
    degraded: StorageUnavailable | None
    degraded_periods: int
    last_resume_s: float | None
    failed_probes: int
    _degraded_since: float
    _probe_at: float
    _probe_delay: float
    _stale: bool
    _reopen: set[str]
    _reopen_all: bool
    _inbox: asyncio.Queue[Entry]
    _lazy: list[Entry]
    _refusal: CorralError | None

    def _init_degraded(self) -> None:
        self.degraded = None  # the error writers get while the store refuses commits
        self.degraded_periods = 0  # times the controller entered degraded mode
        self.last_resume_s = None  # how long the last degraded period lasted
        self.failed_probes = 0  # probe writes the store refused
        self._degraded_since = 0.0
        self._probe_at = 0.0
        self._probe_delay = _PROBE_FIRST_S
        self._stale = False  # the rebuild failed too: memory may hold refused changes, serve no reads
        self._reopen = set()  # agents whose writes were refused: reconnect them at resume
        self._reopen_all = False  # a refused write of unknown origin: reconnect every agent
        # Set when this controller's term as leader ended (see refuse_all): every request gets it.
        self._refusal = None

    # The Runtime's own steps, used here.
    async def _tick(self, batch: Batch) -> None:
        raise NotImplementedError

    async def _rebuild(self) -> None:
        raise NotImplementedError

    def _deliver(self, actions: list[ev.Action]) -> None:
        raise NotImplementedError

    @staticmethod
    def _answer(answers: list[tuple[asyncio.Future[Any], Any, bool]]) -> None:
        raise NotImplementedError

    def _reject(self, future: asyncio.Future[Any] | None) -> None:
        raise NotImplementedError

    def _log_once(self, error: BaseException) -> None:
        raise NotImplementedError

    def post_event(self, event: Any, then: Any = None) -> asyncio.Future[Any]:
        raise NotImplementedError

    def probe_timeout(self, now: float) -> float:
        """Seconds until the next probe (the loop waits at most this long while degraded)."""
        return max(0.0, self._probe_at - now)

    async def _storage_failed(self, error: BaseException, pending: Batch) -> None:
        """A commit failed for the store's sake: refuse the writes, rebuild, serve the reads, probe."""
        storage = storage_error(error)
        now = self.clock()
        if self.degraded is None:
            log.error(
                "the store refused a commit (%s): refusing writes, serving reads; retrying every <= %.0f s",
                storage.message,
                _PROBE_MAX_S,
            )
            self._degraded_since = now
            self._probe_delay = _PROBE_FIRST_S
            self.degraded_periods += 1
        self.degraded = storage
        self._probe_at = now + self._probe_delay
        # The writes are refused before the rebuild, not after it: a rebuild can take long (a big
        # database, a store that answers slowly), and a leader whose term ends stops its server
        # within a second, which would cancel them instead (CANCELLED tells a client nothing).
        reads = [entry for entry in pending if entry.read]
        for entry in pending:
            if not entry.read:
                self._refuse(entry)
        for waiting in self._pulls:
            if not waiting.future.done():
                waiting.future.set_exception(storage)
        self._pulls = []
        try:
            await self._rebuild()
        except OPERATIONAL:
            self._stale = True  # cannot even read the store: memory may hold the refused tick
        if self._stale:
            for entry in reads:
                self._refuse(entry)
        elif reads:
            await self._degraded_tick(reads, probe=False)

    def refuse_all(self, error: CorralError) -> None:
        """Answer every queued request with ``error`` now, and every later one at once.

        For a leader whose term ended: its server stops within a second, and a request still
        queued then (behind a rebuild from the store, say) would be cancelled, which tells a client
        nothing; ``error`` (UNAVAILABLE) says to retry, with the next leader.
        """
        self._refusal = error
        queued = [self._inbox.get_nowait() for _ in range(self._inbox.qsize())]
        queued.extend(self._lazy)
        self._lazy = []
        for entry in queued:
            if entry.future is None:
                self._inbox.put_nowait(entry)  # internal work (the stop's last flush): kept
            else:
                fail_future(entry.future, error)

    def _admit(self, entry: Entry, *, lazy: bool = False) -> None:
        """Queue a request (``lazy``: for the next tick, see ``Runtime.post_lazy``), unless this
        controller refuses all (then its future fails at once)."""
        if self._refusal is not None and entry.future is not None:
            fail_future(entry.future, self._refusal)
        elif lazy:
            self._lazy.append(entry)
        else:
            self._inbox.put_nowait(entry)

    def _refuse(self, entry: Entry) -> None:
        """Answer a write with the storage error; remember whose stream to reopen at resume."""
        assert self.degraded is not None
        if entry.agent is None:
            self._reopen_all = True
        elif entry.agent:
            self._reopen.add(entry.agent)
        if entry.future is not None:
            fail_future(entry.future, self.degraded)

    async def _degraded_tick(self, batch: Batch, *, probe: bool = True) -> None:
        """Probe the store when due; refuse writes; run reads (no timers, no placement)."""
        now = self.clock()
        if probe and now >= self._probe_at:
            await self._probe(now)
            if self.degraded is None:
                if batch:
                    await self._tick(batch)
                return
        reads: Batch = []
        for entry in batch:
            if entry.read and not self._stale:
                reads.append(entry)
            else:
                self._refuse(entry)
        if not reads:
            return
        machine = self.machine
        self._undo = []
        answers: list[tuple[asyncio.Future[Any], Any, bool]] = []
        broken = False
        for entry in reads:
            try:
                result, ok = entry.command(machine, now), True
            except CorralError as exc:
                result, ok = exc, False
            except Exception as exc:  # a bug in a read: reject it alone, and drop what it touched
                self._log_once(exc)
                self._reject(entry.future)
                broken = True
                continue
            if entry.future is not None:
                answers.append((entry.future, result, ok))
        self._undo = []
        changes = machine.take_changes()
        actions = machine.take_actions()
        if changes:
            # A read that changed a stored record (a heartbeat with a new inventory): committing it
            # is a real write, so it doubles as a probe.
            try:
                await asyncio.to_thread(self.store.commit, changes)
            except Exception as exc:
                if isinstance(exc, OPERATIONAL):
                    self.degraded = storage_error(exc)
                else:
                    self._log_once(exc)
                self._reopen.update(_entry.agent for _entry in reads if _entry.agent)
                broken, actions = True, []
            else:
                self._resumed(now)
        if broken:
            with contextlib.suppress(*OPERATIONAL):
                await self._rebuild()
        self._deliver(actions)
        self._answer(answers)

    async def _probe(self, now: float) -> None:
        """One real write to the store; success ends degraded mode, failure backs off (<= 1 s)."""
        try:
            await asyncio.to_thread(self._probe_write, now)
            if self._stale:
                await self._rebuild()
                self._stale = False
        except Exception as exc:
            self.degraded = storage_error(exc) if isinstance(exc, OPERATIONAL) else self.degraded
            if not isinstance(exc, OPERATIONAL):
                self._log_once(exc)
            self.failed_probes += 1
            self._probe_delay = min(_PROBE_MAX_S, self._probe_delay * 2)
            self._probe_at = self.clock() + self._probe_delay
            return
        self._resumed(now)

    def _probe_write(self, now: float) -> None:
        recover = getattr(self.store, "recover", None)
        if callable(recover):
            recover()  # a connection a failed commit left unusable: roll back or reopen
        self.store.commit(ChangeBatch(meta={_PROBE_KEY: repr(now)}))

    def _resumed(self, now: float) -> None:
        """The store took a write again: leave degraded mode, reconnect agents whose reports were refused."""
        if self.degraded is None:
            return
        self.last_resume_s = now - self._degraded_since
        log.warning("the store takes writes again after %.1f s: writes resume", self.last_resume_s)
        self.degraded = None
        self._probe_delay = _PROBE_FIRST_S
        # In the loop, before the next tick's timers: acks refused while degraded must not make
        # the assignment lease take back attempts the agents hold.
        self.machine.handle(ev.StorageResumed(), now)
        for agent_id, session in list(self.sessions.items()):
            if self._reopen_all or agent_id in self._reopen:
                session.close()  # its unacknowledged reports come again with its next Hello
        self._reopen.clear()
        self._reopen_all = False
        # Streams that closed while their AgentGone was refused: the machine still thinks them live.
        for agent in self.machine.agents.values():
            stream = self.sessions.get(agent.id)
            if agent.state in _LIVE and (stream is None or stream.closed or stream.epoch != agent.session_epoch):
                gone = ev.AgentGone(agent.id, agent.session_epoch)
                self.post_event(gone).add_done_callback(lambda done: done.exception())


def fail_future(future: asyncio.Future[Any], error: BaseException) -> None:
    """Fail a request's future (if still pending) with ``error``."""
    if not future.done():
        future.set_exception(error)
        # Posted commands (agent reports) have nobody awaiting them: mark the error as seen so
        # asyncio does not log it again when the future is collected.
        future.add_done_callback(lambda done: done.exception())
