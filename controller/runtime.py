"""The thin shell around the state machine: one loop, group commit, then notify.

Every request — a submission, an agent report, even a status read — becomes a command on one
inbox. The loop takes all commands waiting, applies them to the machine, runs its timers and
placement, commits the tick's changes in ONE transaction, and only then delivers what the tick
produced: answers, assignments on agent streams, watch events. So nothing a caller or agent sees
was not durable first, and a burst of work costs one fsync, not one per task.

No command can stop the loop. A command that raises something other than a domain error (a bug),
or a tick whose commit fails because of its data (a value the store cannot encode), is rejected
whole: the tick's uncommitted changes and actions are dropped, the machine is rebuilt from the
store (the last committed state, as after a restart, minus the process exit), and the tick's other
commands run again on it: together first, then one by one, each committed alone, when the culprit
is not known. The error is logged once per distinct cause. Only an operational store failure (the
disk is full, the file is gone) still stops the loop, since then nothing can be recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sqlite3
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from corral.controller.core import events as ev
from corral.controller.core.machine import Machine, MachineConfig
from corral.controller.core.model import WorkflowEvent
from corral.controller.errors import CorralError
from corral.controller.store.base import Store

__all__ = ["AgentSession", "CommandFailed", "Runtime", "new_id"]

log = logging.getLogger("corral.controller")
R = TypeVar("R")
Command = Callable[[Machine, float], Any]
_MAX_BATCH = 10_000
_IDLE_TICK_S = 0.25
_INLINE_COMMIT_RECORDS = 64  # leases and adoption deadlines are checked at least this often
_MAX_ERROR_KINDS = 1_000  # distinct unexpected errors remembered for log-once
# A store failure that no command caused: the loop cannot go on recording anything.
_OPERATIONAL = (sqlite3.OperationalError, OSError, MemoryError)
Batch = list[tuple[Command, "asyncio.Future[Any] | None"]]


class CommandFailed(RuntimeError):
    """A command was rejected whole by an unexpected error in the controller (logged once there).

    The caller sees INTERNAL: its request was well-formed as far as the edge could tell, but the
    controller could not apply it. Nothing of it was stored, and the controller goes on.
    """

    logged = True  # the error interceptor need not log it again


class _Failed(Exception):
    """One attempt at a tick failed; ``culprit`` is the index of the command to blame, if known."""

    def __init__(self, error: BaseException, culprit: int | None = None, pull: _Pull | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.culprit = culprit
        self.pull = pull


def _kind(error: BaseException) -> tuple[str, str, int]:
    """What makes two unexpected errors "the same" for logging: type and where it was raised."""
    frames = traceback.extract_tb(error.__traceback__)
    filename, line = (frames[-1].filename, frames[-1].lineno or 0) if frames else ("", 0)
    return type(error).__name__, filename, line


def new_id(prefix: str = "") -> Callable[[], str]:
    """An id factory: random 80-bit hex ids, short enough to type a prefix of."""

    def make() -> str:
        return prefix + uuid.uuid4().hex[:20]

    return make


@dataclass(eq=False)
class AgentSession:
    """One live agent stream: its epoch and the messages waiting to be written to it."""

    agent_id: str
    epoch: int
    outbound: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    closed: bool = False
    peer: str = ""  # where the stream comes from, for messages about it
    error: Exception | None = None  # why the controller ended the stream (sent to the agent)
    # Messages are batches, so an agent that reads keeps this short. One that stops reading
    # must not grow the controller's memory without bound: its stream is closed instead, and
    # the agent catches up through a fresh Hello.
    max_backlog: int = 1_000

    def send(self, message: Any) -> None:
        if self.closed:
            return
        if self.outbound.qsize() >= self.max_backlog:
            log.warning("agent %s is not reading its stream; closing it", self.agent_id)
            self.close()
            return
        self.outbound.put_nowait(message)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.outbound.put_nowait(None)


@dataclass(eq=False)
class _Pull:
    event: ev.PullTask
    future: asyncio.Future[ev.Assignment | None]
    deadline: float


class Runtime:
    """Owns the machine, the store and the delivery of actions. All machine access goes through :meth:`call`."""

    def __init__(
        self,
        store: Store,
        config: MachineConfig | None = None,
        *,
        clock: Callable[[], float] = time.time,
        encode_actions: Callable[[Runtime, list[ev.Action]], None] | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.machine = Machine(config, new_id=new_id(), rng=random.Random(), boot_time=clock())
        self.sessions: dict[str, AgentSession] = {}
        self.watchers: dict[str, set[asyncio.Queue[WorkflowEvent | None]]] = {}
        self.waiters: dict[str, list[asyncio.Future[None]]] = {}
        self.usage: dict[str, Any] = {}  # agent id -> last Usage message
        self._pulls: list[_Pull] = []
        self._inbox: asyncio.Queue[tuple[Command, asyncio.Future[Any] | None]] = asyncio.Queue()
        self.deliver_to_agents = encode_actions
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.failure: BaseException | None = None
        self.ticks = 0
        self.rebuilds = 0  # times the machine was rebuilt from the store after a rejected command
        self._errors: dict[tuple[str, str, int], int] = {}  # unexpected errors seen, by kind
        # Watchers and waiters registered during the current attempt at a tick, undone if it fails.
        self._undo: list[Callable[[], None]] = []

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load state from the store and start the loop."""
        snapshot = await asyncio.to_thread(self.store.load)
        now = self.clock()
        self.machine.restore(snapshot, now)
        self.machine.set_meta("last_boot", repr(now))
        self._task = asyncio.create_task(self._loop(), name="corral-runtime")

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._inbox.put_nowait((lambda m, now: None, None))
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._task, 5)
        for session in list(self.sessions.values()):
            session.close()
        for queues in self.watchers.values():
            for queue in queues:
                queue.put_nowait(None)
        await asyncio.to_thread(self.store.close)

    # --- commands -------------------------------------------------------------------------------

    async def call(self, command: Callable[[Machine, float], R]) -> R:
        """Run ``command(machine, now)`` in the loop; the answer arrives after the tick is committed."""
        if self.failure is not None:
            raise RuntimeError("the controller's state loop has stopped") from self.failure
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._inbox.put_nowait((command, future))
        return await future

    def post(self, command: Command) -> asyncio.Future[Any]:
        """Queue a command without waiting; the returned future resolves after its commit."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._inbox.put_nowait((command, future))
        return future

    async def handle(self, event: ev.Event) -> Any:
        return await self.call(lambda m, now: m.handle(event, now))

    async def pull(self, event: ev.PullTask, wait_s: float) -> ev.Assignment | None:
        """Long-poll for a task an external worker can run."""
        future: asyncio.Future[ev.Assignment | None] = asyncio.get_running_loop().create_future()
        deadline = self.clock() + max(0.0, wait_s)

        def register(machine: Machine, now: float) -> None:
            self._pulls.append(_Pull(event, future, deadline))

        await self.call(register)
        # If the caller goes away, its pull is dropped unserved (a done future is skipped); a task
        # handed out in the same instant is recovered through its attempt's deadline.
        return await future

    # --- the loop -------------------------------------------------------------------------------

    async def _loop(self) -> None:
        try:
            while not self._stopping:
                batch = await self._next_batch()
                await self._tick(batch)
        except Exception as exc:  # the store failed: stop rather than run on unrecorded state
            self.failure = exc
            log.exception("state loop stopped")
            while not self._inbox.empty():
                _, future = self._inbox.get_nowait()
                if future is not None and not future.done():
                    future.set_exception(RuntimeError("the controller's state loop has stopped"))
            raise

    async def _next_batch(self) -> list[tuple[Command, asyncio.Future[Any] | None]]:
        wake = self.machine.next_timer()
        timeout = _IDLE_TICK_S
        if wake is not None:
            timeout = min(timeout, max(0.0, wake - self.clock()))
        if self._pulls:
            timeout = min(timeout, max(0.0, min(p.deadline for p in self._pulls) - self.clock()))
        batch: list[tuple[Command, asyncio.Future[Any] | None]] = []
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
        except _Failed as failed:
            failure = failed
        # Recovery: rare (a bug, or data the store refuses), so it may be slow, but it must be
        # exact: no partial command survives and every other command of the tick gets its answer.
        pending = list(batch)
        one_by_one = False
        logged: set[tuple[str, str, int]] = set()
        while True:
            kind = _kind(failure.error)
            if kind not in logged:  # isolating the culprit meets the same error again: count it once
                logged.add(kind)
                self._log_once(failure.error)
            await self._rebuild()
            if failure.pull is not None:
                self._reject(failure.pull.future)
            elif failure.culprit is not None:
                _, future = pending.pop(failure.culprit)
                self._reject(future)
            elif not one_by_one:
                # A failure in the tick itself or the commit: no command to blame yet. If an empty
                # tick fails too, no command is the cause and nothing can go on safely.
                try:
                    await self._attempt([], self.clock())
                except _Failed as empty:
                    self._log_once(empty.error)
                    raise empty.error from None
                one_by_one = True
            else:
                _, future = pending.pop(0)  # alone in its tick and that tick failed: it is the cause
                self._reject(future)
            try:
                if one_by_one:
                    while pending:
                        await self._attempt(pending[:1], self.clock())
                        pending.pop(0)
                else:
                    await self._attempt(pending, self.clock())
                return
            except _Failed as again:
                failure = again

    async def _attempt(self, batch: Batch, now: float) -> None:
        """Run commands, timers and placement, commit, then deliver; raise _Failed having delivered nothing."""
        machine = self.machine
        pulls = list(self._pulls)
        self._undo = []
        answers: list[tuple[asyncio.Future[Any], Any, bool]] = []
        try:
            for index, (command, future) in enumerate(batch):
                try:
                    result = command(machine, now)
                    ok = True
                except CorralError as exc:
                    result, ok = exc, False
                except Exception as exc:  # a bug in one command must not take the controller down
                    raise _Failed(exc, index) from exc
                if future is not None:
                    answers.append((future, result, ok))
            pulled = self._serve_pulls(now)
            try:
                machine.tick(now)
            except Exception as exc:
                raise _Failed(exc) from exc
            changes = machine.take_changes()
            actions = machine.take_actions()
            if changes:
                try:
                    if changes.size() <= _INLINE_COMMIT_RECORDS:
                        # A small commit is one fsync: cheaper inline than two thread switches.
                        self.store.commit(changes)
                    else:
                        await asyncio.to_thread(self.store.commit, changes)
                except _OPERATIONAL:
                    raise  # the disk, not the data: stop (see _loop)
                except Exception as exc:  # a value the store cannot encode
                    raise _Failed(exc) from exc
        except _Failed:
            for undo in reversed(self._undo):
                undo()
            self._undo = []
            self._pulls = pulls
            raise
        self._undo = []
        self.ticks += 1
        # Everything below happens only after the commit.
        try:
            self._apply(actions)
        except Exception as exc:  # the tick is durable; a delivery bug must not stop the loop
            self._log_once(exc)
            # Agents resynchronise through a fresh Hello; attempts one never received are then
            # unreported, and requeued after the reconnect grace.
            for session in list(self.sessions.values()):
                session.close()
        for future, result, ok in answers:
            if future.done():
                continue
            if ok:
                future.set_result(result)
            else:
                future.set_exception(result)
        for future, assignment in pulled:
            if not future.done():
                future.set_result(assignment)

    def _reject(self, future: asyncio.Future[Any] | None) -> None:
        if future is not None and not future.done():
            future.set_exception(CommandFailed("the controller could not apply this request; see its log"))
            # Posted commands (agent reports) have nobody awaiting them: mark the error as seen
            # so asyncio does not log it again when the future is collected.
            future.add_done_callback(lambda done: done.exception())

    def _log_once(self, error: BaseException) -> None:
        """Log an unexpected error with its traceback the first time its kind is seen, then count it."""
        kind = _kind(error)
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

        Like a restart in-process: agent streams are closed (agents say Hello again and re-adopt
        their running attempts, whose deadlines get the adoption grace), while watchers, waiters
        and pending pulls stay. Records of submissions the thrown-away tick applied are rewound,
        so those submissions can run again.
        """
        old = self.machine
        for event in old.submitted:
            event.rewind()
        old.take_changes()
        old.take_actions()
        snapshot = await asyncio.to_thread(self.store.load)
        now = self.clock()
        machine = Machine(old.config, new_id=old.new_id, rng=old.rng, boot_time=now)
        machine.restore(snapshot, now)
        machine.event_seq = old.event_seq  # watchers resume by sequence number: never go back
        machine.watched = set(self.watchers)
        self.machine = machine
        self.rebuilds += 1
        for session in list(self.sessions.values()):
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
                raise _Failed(exc, pull=pending) from exc
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
                    if not waiter.done():
                        waiter.set_result(None)
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

    def waiter(self, workflow_id: str) -> asyncio.Future[None]:
        """A future resolved when the workflow ends (register inside a command)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiting = self.waiters.setdefault(workflow_id, [])
        waiting.append(future)
        self._undo.append(lambda: waiting.remove(future) if future in waiting else None)
        return future
