"""The thin shell around the state machine: one loop, group commit, then notify.

Every request — a submission, an agent report, even a status read — becomes an event (or a
command) on one inbox. The loop takes all commands waiting, applies them to the machine, runs its
timers and placement, commits the tick's changes in ONE transaction, and only then delivers what
the tick produced: answers, assignments on agent streams, watch events. So nothing a caller or
agent sees was not durable first, and a burst of work costs one fsync, not one per task.

No fault stops the loop:

- A command that raises something other than a domain error (a bug), or a tick whose commit fails
  because of its data (a value the store cannot encode), is rejected whole: the tick's uncommitted
  changes and actions are dropped, the machine is rebuilt from the store (the last committed state),
  and the tick's other commands run again on it: together first, then one by one, each committed
  alone, when the culprit is not known. The error is logged once per distinct cause.
- A commit that fails because of the store itself (the disk is full, an I/O error) refuses the
  tick's writes with StorageFull (RESOURCE_EXHAUSTED) or StorageUnavailable (UNAVAILABLE), rebuilds
  the machine from the store and enters *degraded* mode: writes are refused at once, reads,
  heartbeats and agent streams go on, timers and placement wait, and the loop probes the store with
  a real write (backoff up to 1 s). The first write that succeeds ends degraded mode; agents whose
  reports were refused are asked to reconnect, so they send them again (:mod:`degraded`).

Which events are reads is declared, not guessed: a request event's class attribute ``READ``, or
its type name in :data:`READ_EVENTS`. Raw commands (``call``/``post`` of a function) are writes
unless the caller says ``read=True``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from corral.controller.commands import (
    READ_EVENTS,
    AgentSession,
    Batch,
    Command,
    CommandFailed,
    Entry,
    Failed,
    agent_of,
    error_kind,
    is_read,
    new_id,
)
from corral.controller.core import events as ev
from corral.controller.core.machine import Machine, MachineConfig
from corral.controller.core.model import WorkflowEvent
from corral.controller.degraded import DegradedMode, fail_future
from corral.controller.errors import CorralError, NotFound
from corral.controller.recovery import OPERATIONAL, anchored_clock, carry_sessions
from corral.controller.store.base import Snapshot, Store

if TYPE_CHECKING:
    from corral.controller.lifecycle import Lifecycle

__all__ = ["READ_EVENTS", "AgentSession", "CommandFailed", "Runtime", "new_id"]

log = logging.getLogger("corral.controller")
R = TypeVar("R")
_MAX_BATCH = 10_000
_IDLE_TICK_S = 0.25
_INLINE_COMMIT_RECORDS = 64  # leases and adoption deadlines are checked at least this often
_MAX_ERROR_KINDS = 1_000  # distinct unexpected errors remembered for log-once
# Lazy events (audit records) ride on the next tick: the loop never sleeps longer than the idle
# tick, so that tick comes this soon at the latest.
LAZY_FLUSH_S = _IDLE_TICK_S


@dataclass(eq=False)
class _Pull:
    event: ev.PullTask
    future: asyncio.Future[ev.Assignment | None]
    deadline: float


class Runtime(DegradedMode):
    """Owns the machine, the store and the delivery of actions. All machine access goes through :meth:`handle`.

    ``clock`` is the time every timer runs on; the default is :func:`anchored_clock` (monotonic,
    reading like wall seconds). ``degraded`` is the storage error writers get while the store
    refuses commits (None when healthy).
    """

    def __init__(
        self,
        store: Store,
        config: MachineConfig | None = None,
        *,
        clock: Callable[[], float] | None = None,
        encode_actions: Callable[[Runtime, list[ev.Action]], None] | None = None,
    ) -> None:
        self.store = store
        self._remote_store = bool(getattr(store, "remote", False))  # PostgreSQL: always commit in a thread
        self.clock = clock or anchored_clock()
        self.machine = Machine(config, new_id=new_id(), rng=random.Random(), boot_time=self.clock())
        self.sessions: dict[str, AgentSession] = {}
        self.watchers: dict[str, set[asyncio.Queue[WorkflowEvent | None]]] = {}
        self.waiters: dict[str, list[asyncio.Future[bool]]] = {}
        # What a waiter wants rendered at the end, in the tick that ends its workflow (see waiter).
        self._renders: dict[asyncio.Future[bool], Callable[[Machine, float], None]] = {}
        self.usage: dict[str, Any] = {}  # agent id -> last Usage message
        self._pulls: list[_Pull] = []
        self._inbox: asyncio.Queue[Entry] = asyncio.Queue()
        self._lazy: list[Entry] = []  # see post_lazy
        self.deliver_to_agents = encode_actions
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.failure: BaseException | None = None  # kept for callers that check it; the loop never stops
        self.ticks = 0
        self.rebuilds = 0  # times the machine was rebuilt from the store after a rejected command
        self._errors: dict[tuple[str, str, int], int] = {}  # unexpected errors seen, by kind
        # Watchers and waiters registered during the current attempt at a tick, undone if it fails.
        self._undo: list[Callable[[], None]] = []
        # Told of every committed tick (machine, changes, commit seconds): the metrics (metrics.py).
        self.on_commit: Callable[[Machine, Any, float], None] | None = None
        # Issue 12: takes evicted workflows back on demand (controller/lifecycle.py); None: off.
        self.lifecycle: Lifecycle | None = None
        self._init_degraded()

    # --- lifecycle ------------------------------------------------------------------------------

    def _load(self) -> Snapshot:
        # With eviction on, finished workflows stay in the store: a boot does not read the history.
        return self.store.load(live_only=self.machine.config.evict_after_s > 0)

    async def start(self) -> None:
        """Load state from the store and start the loop."""
        snapshot = await asyncio.to_thread(self._load)
        now = self.clock()
        self.machine.restore(snapshot, now)
        self.machine.set_meta("last_boot", repr(now))
        self._task = asyncio.create_task(self._loop(), name="corral-runtime")

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            # The last tick stores the learned durations not yet flushed (Ordering.flush_soon).
            self._inbox.put_nowait(Entry(lambda m, now: m.ordering.flush_if_due(now, force=True), None, True))
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._task, 5)
        for session in list(self.sessions.values()):
            session.close()
        for queues in self.watchers.values():
            for queue in queues:
                queue.put_nowait(None)
        await asyncio.to_thread(self.store.close)

    # --- commands -------------------------------------------------------------------------------

    async def call(self, command: Callable[[Machine, float], R], *, read: bool = False) -> R:
        """Run ``command(machine, now)`` in the loop; the answer arrives after the tick is committed.

        ``read``: the command changes nothing stored, so it runs while the store refuses writes.
        """
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._admit(Entry(command, future, read))
        return await future

    def post(self, command: Command, *, read: bool = False, agent: str | None = None) -> asyncio.Future[Any]:
        """Queue a command without waiting; the returned future resolves after its commit.

        ``agent``: the agent whose report this is ("" for none; None, the default, when unknown):
        if the store refuses it, that agent's stream is reopened once writes resume, so it sends
        its unacknowledged reports again.
        """
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._admit(Entry(command, future, read, agent))
        return future

    def post_event(self, event: Any, then: Callable[[Machine, Any, float], Any] | None = None) -> asyncio.Future[Any]:
        """Queue an event for :meth:`Machine.handle` without waiting (agent reports, audit records).

        ``then(machine, answer, now)``, if given, runs right after the handler in the same tick:
        the place to turn the answer into a message (reading the machine as it stands) and to
        register watchers or waiters, so nothing between the answer and its rendering is missed.
        """
        entry, future = self._event_entry(event, then)
        self._admit(entry)
        return future

    def post_lazy(self, event: Any) -> asyncio.Future[Any]:
        """Queue an event that does not wake the loop: it joins the next tick, which comes within
        the idle tick (LAZY_FLUSH_S) even when nothing else happens.

        For records nobody waits for (audit entries): a call's audit record would otherwise cost a
        commit of its own, an fsync per RPC. It is still committed like any change, only grouped.
        """
        entry, future = self._event_entry(event, None)
        self._admit(entry, lazy=True)
        return future

    @staticmethod
    def _event_entry(
        event: Any, then: Callable[[Machine, Any, float], Any] | None
    ) -> tuple[Entry, asyncio.Future[Any]]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if then is None:

            def command(m: Machine, now: float) -> Any:
                return m.handle(event, now)
        else:
            render = then

            def command(m: Machine, now: float) -> Any:
                return render(m, m.handle(event, now), now)

        return Entry(command, future, is_read(event), agent_of(event)), future

    async def handle(self, event: Any, then: Callable[[Machine, Any, float], R] | None = None) -> Any:
        """Apply one event in the loop (reads and writes alike); its answer arrives after the commit.

        The answer is the handler's, or ``then(machine, answer, now)``'s (see :meth:`post_event`).
        A request naming a workflow that left memory (issue 12) runs again once it is back.
        """
        try:
            return await self.post_event(event, then)
        except NotFound as missing:
            if self.lifecycle is None or not await self.lifecycle.readmit_for(event, missing):
                raise
        return await self.post_event(event, then)

    @property
    def new_id(self) -> Callable[[], str]:
        """The id factory of the machine (pure: usable at the edge, outside the loop)."""
        return self.machine.new_id

    async def pull(self, event: ev.PullTask, wait_s: float) -> ev.Assignment | None:
        """Long-poll for a task an external worker can run."""
        future: asyncio.Future[ev.Assignment | None] = asyncio.get_running_loop().create_future()
        deadline = self.clock() + max(0.0, wait_s)

        def register(machine: Machine, now: float) -> None:
            self._pulls.append(_Pull(event, future, deadline))

        await self.call(register)  # a write: a pull served while the store refuses writes is lost
        # If the caller goes away, its pull is dropped unserved (a done future is skipped); a task
        # handed out in the same instant is recovered through its attempt's deadline.
        return await future

    # --- the loop -------------------------------------------------------------------------------

    async def _loop(self) -> None:
        while not self._stopping:
            batch = await self._next_batch()
            try:
                if self.degraded is not None:
                    await self._degraded_tick(batch)
                else:
                    await self._tick(batch)
            except Exception as exc:  # a bug in the runtime itself: its callers get INTERNAL, the loop goes on
                self._log_once(exc)
                for entry in batch:
                    self._reject(entry.future)
                await asyncio.sleep(0.01)  # never spin on a fault that repeats every tick
            # Let the streams run before the next tick: the tick just delivered assignments and
            # answers, and under load the inbox is never empty, so nothing else would yield the
            # loop until the next commit. The agents' streams would send this tick's assignments
            # only after the next tick's whole computation (measured: 13-24 ms late for batches of
            # 100 assignments, while the agents sat idle), and reports would wait as long to be read.
            await asyncio.sleep(0)
        if self._lazy or not self._inbox.empty():
            # Stopped before their tick came: what is still queued (the stop's own flush of the
            # learned durations, audit records) gets one last tick rather than being dropped.
            with contextlib.suppress(Exception):
                await self._tick(await self._next_batch())

    async def _next_batch(self) -> Batch:
        batch = await self._wait_batch()
        if self._lazy:
            batch = [*self._lazy, *batch]
            self._lazy = []
        return batch

    async def _wait_batch(self) -> Batch:
        now = self.clock()
        timeout = _IDLE_TICK_S
        if self.degraded is not None:
            timeout = min(timeout, self.probe_timeout(now))  # timers wait; the probe does not
        else:
            wake = self.machine.next_timer()
            if wake is not None:
                timeout = min(timeout, max(0.0, wake - now))
            if self._pulls:
                timeout = min(timeout, max(0.0, min(p.deadline for p in self._pulls) - now))
        batch: Batch = []
        inbox = self._inbox
        if inbox.empty():
            if timeout <= 0:
                await asyncio.sleep(0)  # a due timer must never starve the rest of the event loop
                return batch
            try:
                # asyncio.timeout rather than wait_for: no task is created per wake-up.
                async with asyncio.timeout(timeout):
                    batch.append(await inbox.get())
            except TimeoutError:
                return batch
        while len(batch) < _MAX_BATCH:
            try:
                batch.append(self._inbox.get_nowait())
            except asyncio.QueueEmpty:
                break
        return batch

    async def _tick(self, batch: Batch) -> None:
        try:
            await self._attempt(batch, self.clock())
            return
        except Failed as failed:
            failure = failed
        # Recovery: rare (a bug, or data the store refuses), so it may be slow, but it must be
        # exact: no partial command survives and every other command of the tick gets its answer.
        pending = list(batch)
        one_by_one = False
        logged: set[tuple[str, str, int]] = set()
        while True:
            if failure.operational:
                await self._storage_failed(failure.error, pending)
                return
            kind = error_kind(failure.error)
            if kind not in logged:  # isolating the culprit meets the same error again: count it once
                logged.add(kind)
                self._log_once(failure.error)
            try:
                await self._rebuild()
            except OPERATIONAL as exc:
                await self._storage_failed(exc, pending)
                return
            if failure.pull is not None:
                self._reject(failure.pull.future)
            elif failure.culprit is not None:
                self._reject(pending.pop(failure.culprit).future)
            elif not one_by_one:
                # A failure in the tick itself or the commit: no command to blame yet. If an empty
                # tick fails too, no command is the cause: the timers are broken, not the requests.
                try:
                    await self._attempt([], self.clock())
                except Failed as empty:
                    if empty.operational:
                        await self._storage_failed(empty.error, pending)
                        return
                    self._log_once(empty.error)
                    for entry in pending:
                        self._reject(entry.future)
                    await self._rebuild()
                    return
                one_by_one = True
            else:
                self._reject(pending.pop(0).future)  # alone in its tick and that tick failed: it is the cause
            try:
                if one_by_one:
                    while pending:
                        await self._attempt(pending[:1], self.clock())
                        pending.pop(0)
                else:
                    await self._attempt(pending, self.clock())
                return
            except Failed as again:
                failure = again

    async def _attempt(self, batch: Batch, now: float) -> None:
        """Run commands, timers and placement, commit, then deliver; raise Failed having delivered nothing."""
        machine = self.machine
        pulls = list(self._pulls)
        self._undo = []
        answers: list[tuple[asyncio.Future[Any], Any, bool]] = []
        try:
            for index, entry in enumerate(batch):
                try:
                    result = entry.command(machine, now)
                    ok = True
                except CorralError as exc:
                    result, ok = exc, False
                except Exception as exc:  # a bug in one command must not take the controller down
                    raise Failed(exc, index) from exc
                if entry.future is not None:
                    answers.append((entry.future, result, ok))
            pulled = self._serve_pulls(now)
            try:
                machine.tick(now)
            except Exception as exc:
                raise Failed(exc) from exc
            changes = machine.take_changes()
            actions = machine.take_actions()
            commit_s = 0.0
            if changes:
                started = time.perf_counter()
                try:
                    if changes.size() <= _INLINE_COMMIT_RECORDS and not self._remote_store:
                        # A small commit is one fsync: cheaper inline than two thread switches.
                        # Never for a networked store: a round trip must not block the event loop.
                        self.store.commit(changes)
                    else:
                        await asyncio.to_thread(self.store.commit, changes)
                except OPERATIONAL as exc:  # the disk, not the data: degraded mode (see _storage_failed)
                    raise Failed(exc, operational=True) from exc
                except Exception as exc:  # a value the store cannot encode
                    raise Failed(exc) from exc
                commit_s = time.perf_counter() - started
        except Failed:
            for undo in reversed(self._undo):
                undo()
            self._undo = []
            self._pulls = pulls
            raise
        self._undo = []
        self.ticks += 1
        # Everything below happens only after the commit.
        self._deliver(actions)
        self._answer(answers)
        for future, assignment in pulled:
            if not future.done():
                future.set_result(assignment)
        if self.on_commit is not None and changes:
            # After the streams and callers woken above have run (they were scheduled first): the
            # metrics and the event lines in the log (a tenth of a millisecond for a small tick)
            # are never on a round trip's path.
            asyncio.get_running_loop().call_soon(self.on_commit, machine, changes, commit_s)  # never raises

    def _deliver(self, actions: list[ev.Action]) -> None:
        try:
            self._apply(actions)
        except Exception as exc:  # the tick is durable; a delivery bug must not stop the loop
            self._log_once(exc)
            # Agents resynchronise through a fresh Hello; attempts one never received are then
            # unreported, and requeued after the reconnect grace.
            for session in list(self.sessions.values()):
                session.close()

    @staticmethod
    def _answer(answers: list[tuple[asyncio.Future[Any], Any, bool]]) -> None:
        for future, result, ok in answers:
            if future.done():
                continue
            if ok:
                future.set_result(result)
            else:
                future.set_exception(result)

    # --- recovery helpers -----------------------------------------------------------------------

    def _reject(self, future: asyncio.Future[Any] | None) -> None:
        if future is not None:
            fail_future(future, CommandFailed("the controller could not apply this request; see its log"))

    def _log_once(self, error: BaseException) -> None:
        """Log an unexpected error with its traceback the first time its kind is seen, then count it."""
        kind = error_kind(error)
        seen = self._errors.get(kind, 0) + 1
        if seen == 1 and len(self._errors) >= _MAX_ERROR_KINDS:
            self._errors.clear()
        self._errors[kind] = seen
        if seen == 1:
            log.error("state loop: unexpected %s; the command was rejected, the loop goes on", kind[0], exc_info=error)
        elif seen & (seen - 1) == 0:  # 2, 4, 8, ...: repeats stay visible without flooding the log
            log.warning("state loop: unexpected %s at %s:%d again (%d times)", *kind, seen)

    async def _rebuild(self) -> None:
        """Replace the machine by one restored from the store: the last committed state.

        Like a restart in-process, except that agents with open streams stay connected (see
        :func:`~corral.controller.recovery.carry_sessions`; the others' streams are closed and
        they say Hello again), while watchers, waiters and pending pulls stay. Records of
        submissions the thrown-away tick applied are rewound, so those submissions can run again.
        """
        old = self.machine
        for event in old.submitted:
            event.rewind()
        old.take_changes()
        old.take_actions()
        snapshot = await asyncio.to_thread(self._load)
        stored_states = {agent.id: agent.state for agent in snapshot.agents}  # restore changes them
        now = self.clock()
        machine = Machine(old.config, new_id=old.new_id, rng=old.rng, boot_time=now)
        machine.build_workflow = old.build_workflow  # before restore: schedules may fire on its tick
        machine.restore(snapshot, now)
        machine.event_seq = old.event_seq  # watchers resume by sequence number: never go back
        machine.watched = set(self.watchers)
        live = [(s.agent_id, s.epoch) for s in self.sessions.values() if not s.closed]
        kept = carry_sessions(old, machine, live, stored_states)
        self.machine = machine
        self.rebuilds += 1
        for agent_id, session in list(self.sessions.items()):
            if agent_id not in kept:
                session.close()

    def _serve_pulls(self, now: float) -> list[tuple[asyncio.Future[ev.Assignment | None], ev.Assignment | None]]:
        served: list[tuple[asyncio.Future[ev.Assignment | None], ev.Assignment | None]] = []
        waiting: list[_Pull] = []
        for pending in self._pulls:
            if pending.future.done():
                continue  # the caller gave up
            try:
                assignment = self.machine.pull(pending.event, now)
            except CorralError as exc:
                pending.future.set_exception(exc)
                continue
            except Exception as exc:
                raise Failed(exc, pull=pending) from exc
            if assignment is not None or now >= pending.deadline:
                served.append((pending.future, assignment))
            else:
                waiting.append(pending)
        self._pulls = waiting
        return served

    def _apply(self, actions: list[ev.Action]) -> None:
        agent_actions: list[ev.Action] = []
        for action in actions:
            if isinstance(action, ev.Publish):
                for queue in self.watchers.get(action.event.workflow_id, ()):
                    queue.put_nowait(action.event)
            elif isinstance(action, ev.WorkflowDone):
                for waiter in self.waiters.pop(action.workflow_id, []):
                    render = self._renders.pop(waiter, None)
                    if waiter.done():
                        continue
                    if render is not None:
                        try:
                            render(self.machine, self.clock())
                        except Exception as exc:  # the waiter reads the result itself instead
                            self._log_once(exc)
                            waiter.set_result(False)
                            continue
                    waiter.set_result(render is not None)
            else:
                agent_actions.append(action)
        if agent_actions and self.deliver_to_agents is not None:
            self.deliver_to_agents(self, agent_actions)

    # --- watchers and waiters -------------------------------------------------------------------

    def watch(self, workflow_id: str) -> asyncio.Queue[WorkflowEvent | None]:
        """Register a watcher (call inside a command, so no event of the workflow is missed)."""
        queue: asyncio.Queue[WorkflowEvent | None] = asyncio.Queue()
        self.watchers.setdefault(workflow_id, set()).add(queue)
        self.machine.watched.add(workflow_id)
        self._undo.append(lambda: self.unwatch(workflow_id, queue))
        return queue

    def unwatch(self, workflow_id: str, queue: asyncio.Queue[WorkflowEvent | None]) -> None:
        queues = self.watchers.get(workflow_id)
        if queues is None:
            return
        queues.discard(queue)
        if not queues:
            del self.watchers[workflow_id]
            self.machine.watched.discard(workflow_id)

    def waiter(self, workflow_id: str, render: Callable[[Machine, float], None] | None = None) -> asyncio.Future[bool]:
        """A future resolved when the workflow ends (register inside a command).

        ``render(machine, now)``, if given, runs right after the commit of the tick that ends the
        workflow, before any other tick: the answer is written then, without a tick of its own
        (a round trip's third). The future's result is True when it ran and did not fail.
        """
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        waiting = self.waiters.setdefault(workflow_id, [])
        waiting.append(future)
        if render is not None:
            self._renders[future] = render
        self._undo.append(lambda: self.forget_waiter(workflow_id, future))
        return future

    def forget_waiter(self, workflow_id: str, future: asyncio.Future[bool]) -> None:
        """Drop a waiter nobody waits for any more (its call timed out, or its tick failed)."""
        waiting = self.waiters.get(workflow_id)
        if waiting is not None and future in waiting:
            waiting.remove(future)
            if not waiting:
                del self.waiters[workflow_id]
        self._renders.pop(future, None)
