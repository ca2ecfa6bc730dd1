"""Attempts on this agent: a FIFO of assignments, at most ``slots`` running, timeouts and stops.

The executor starts each attempt with the runner of its agent type (:mod:`corral.agent.runner` for
shell, :mod:`corral.agent.pypool` for python), streams its output every second and reports
Started / Output / Finished to an :class:`EventSink` (the session's outbox).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

import structlog

from corral.agent import adopt
from corral.agent.attempt import AttemptResult, Run, StopReason
from corral.agent.policy import ExecPolicy, PolicyError
from corral.agent.pypool import WorkerPool
from corral.agent.runas import RunAs
from corral.agent.runner import ShellContext, start_shell
from corral.v1 import types_pb2

__all__ = ["EventSink", "Executor"]

log = structlog.get_logger("corral.agent.executor")

OUTPUT_INTERVAL_S = 1.0
# An attempt's folder goes when the controller acknowledges its report, and at the latest this long
# after it ended (a controller that never answers must not make the agent leak disk).
ATTEMPT_DIR_KEEP_S = 300.0


class EventSink(Protocol):
    """Where the executor reports what happens to attempts."""

    def accepted(self, attempt_id: str) -> None: ...

    def released(self, attempt_id: str) -> None: ...

    def started(self, attempt_id: str, pid: int) -> None: ...

    def output(self, attempt_id: str, stdout: bytes, stderr: bytes, truncated: bool) -> None: ...

    def finished(self, attempt_id: str, result: AttemptResult) -> None: ...


class _State(enum.Enum):
    QUEUED = 1
    RUNNING = 2
    DONE = 3  # reported, waiting for the controller's Ack


class _Attempt:
    __slots__ = ("assignment", "id", "run", "silent", "state", "stop", "task", "timer")

    def __init__(self, assignment: types_pb2.TaskAssignment) -> None:
        self.assignment = assignment
        self.id = assignment.attempt_id
        self.state = _State.QUEUED
        self.run: Run | None = None
        self.task: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        # A stop requested before the runner existed, applied as soon as it does.
        self.stop: tuple[StopReason, bool, float] | None = None
        self.silent = False


class Executor:
    """Runs assigned attempts with at most ``slots`` at once; extra ones wait in FIFO order."""

    def __init__(
        self,
        *,
        slots: int,
        agent_types: Iterable[str],
        work_dir: Path,
        sink: EventSink,
        pool: WorkerPool | None = None,
        kill_grace_s: float = 10.0,
        output_cap: int = 1 << 20,
        has_gpus: bool = False,
        policy: ExecPolicy | None = None,
        passed_env: dict[str, str] | None = None,
        run_as: RunAs | None = None,
        dir_keep_s: float = ATTEMPT_DIR_KEEP_S,
    ) -> None:
        self.slots = slots
        self.agent_types = frozenset(agent_types)
        self.kill_grace_s = kill_grace_s
        self.accepting = True
        self._sink = sink
        self._pool = pool
        self._has_gpus = has_gpus
        self.policy = policy if policy is not None else ExecPolicy()
        self._shell = ShellContext(
            work_dir=work_dir,
            output_cap=output_cap,
            has_gpus=has_gpus,
            policy=self.policy,
            passed_env=passed_env or {},
            run_as=run_as,
        )
        self._dir_keep_s = dir_keep_s
        # (monotonic end time, attempt id) of ended attempts whose folder may still exist.
        self._ended: deque[tuple[float, str]] = deque()
        self._attempts: dict[str, _Attempt] = {}
        self._queue: deque[_Attempt] = deque()
        self._running: set[_Attempt] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._flusher: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start streaming output of running attempts."""
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_output())

    async def close(self) -> None:
        """Stop the output streamer (attempts must have ended or been killed before)."""
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None

    # -- what the session asks ---------------------------------------------------------------------

    @property
    def running_count(self) -> int:
        """Attempts currently running."""
        return len(self._running)

    def queued(self) -> int:
        """Attempts waiting here for a free slot."""
        return len(self._queue)

    def active_ids(self) -> list[str]:
        """Attempts assigned here and not finished yet (running, then queued)."""
        return [a.id for a in self._running] + [a.id for a in self._queue]

    def submit(self, assignments: Iterable[types_pb2.TaskAssignment]) -> None:
        """Queue new attempts and start as many as slots allow; known attempt ids are ignored."""
        attempts = self._attempts
        for assignment in assignments:
            if assignment.attempt_id in attempts:
                continue
            attempt = _Attempt(assignment)
            attempts[attempt.id] = attempt
            if not self.accepting:
                # Draining: give it back at once, the controller requeues it elsewhere.
                attempt.state = _State.DONE
                self._sink.finished(attempt.id, AttemptResult.stopped(StopReason.DRAINED, "not started"))
                continue
            # Acknowledged at once (the controller takes back assignments it hears nothing of).
            self._sink.accepted(attempt.id)
            self._queue.append(attempt)
        self._pump()

    def cancel(self, attempt_ids: Iterable[str], *, force: bool, grace_s: float, release_only: bool = False) -> None:
        """Cancel attempts: queued ones are dropped and reported Released (never started, safe to
        run elsewhere); running ones are stopped and report CANCELLED, unless ``release_only`` (a
        move of queued work), which leaves them running."""
        for attempt_id in attempt_ids:
            attempt = self._attempts.get(attempt_id)
            if attempt is not None and attempt.state is _State.QUEUED and not attempt.silent:
                self._queue.remove(attempt)
                self._forget(attempt)
                self._sink.released(attempt_id)
            elif not release_only:
                self._stop(attempt_id, StopReason.CANCELLED, force=force, grace_s=grace_s)

    def kill_silently(self, attempt_ids: Iterable[str]) -> None:
        """Kill attempts reassigned elsewhere and forget them without reporting anything."""
        for attempt_id in attempt_ids:
            attempt = self._attempts.get(attempt_id)
            if attempt is None:
                continue
            attempt.silent = True
            if attempt.state is _State.RUNNING:
                self._stop(attempt_id, StopReason.KILLED, force=False, grace_s=self.kill_grace_s)
            else:
                if attempt.state is _State.QUEUED:
                    self._queue.remove(attempt)
                self._forget(attempt)

    def forget(self, attempt_ids: Iterable[str]) -> None:
        """The controller acknowledged these reports: drop them and their files."""
        for attempt_id in attempt_ids:
            attempt = self._attempts.get(attempt_id)
            if attempt is not None and attempt.state is _State.DONE:
                self._forget(attempt)

    async def drain(self, grace_s: float) -> None:
        """Take nothing new, give queued attempts back, let running ones finish up to ``grace_s``,
        then stop the rest (SIGTERM, kill grace, SIGKILL) and wait until all are over."""
        self.accepting = False
        while self._queue:
            attempt = self._queue.popleft()
            attempt.state = _State.DONE
            self._sink.finished(attempt.id, AttemptResult.stopped(StopReason.DRAINED, "not started"))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), grace_s)
        for attempt in list(self._running):
            self._stop(attempt.id, StopReason.DRAINED, force=False, grace_s=self.kill_grace_s)
        await self._idle.wait()

    async def kill_all(self) -> None:
        """SIGKILL every running attempt now and drop the queue (the agent is going away)."""
        self.accepting = False
        while self._queue:
            attempt = self._queue.popleft()
            attempt.state = _State.DONE
            self._sink.finished(attempt.id, AttemptResult.stopped(StopReason.DRAINED, "not started"))
        for attempt in list(self._running):
            self._stop(attempt.id, StopReason.DRAINED, force=True, grace_s=0)
        await self._idle.wait()

    async def wait_idle(self) -> None:
        """Return once no attempt is running."""
        await self._idle.wait()

    # -- internals -----------------------------------------------------------------------------------

    def _stop(self, attempt_id: str, reason: StopReason, *, force: bool, grace_s: float) -> None:
        attempt = self._attempts.get(attempt_id)
        if attempt is None or attempt.state is _State.DONE:
            return
        if attempt.state is _State.QUEUED:
            self._queue.remove(attempt)
            attempt.state = _State.DONE
            if attempt.silent:
                self._forget(attempt)
            else:
                self._sink.finished(attempt_id, AttemptResult.stopped(reason))
            return
        if attempt.run is not None:
            attempt.run.request_stop(reason, force=force, grace_s=grace_s)
        elif attempt.stop is None or force:
            attempt.stop = (reason, force, grace_s)

    def _forget(self, attempt: _Attempt) -> None:
        self._attempts.pop(attempt.id, None)
        attempt.state = _State.DONE
        if attempt.assignment.agent_type == "shell":
            # Python attempts have no folder of their own (they run in their worker's).
            self._remove_folder(attempt.id)

    def _remove_folder(self, attempt_id: str) -> None:
        # The task folder and the supervisor's control folder (spec, logs, status).
        adopt.remove(self._shell.work_dir, attempt_id)

    def _expire_folders(self) -> None:
        """Remove the folders of attempts that ended more than ``dir_keep_s`` ago, acked or not."""
        ended = self._ended
        if not ended:
            return
        limit = asyncio.get_running_loop().time() - self._dir_keep_s
        while ended and ended[0][0] <= limit:
            self._remove_folder(ended.popleft()[1])

    def _pump(self) -> None:
        queue, running = self._queue, self._running
        while queue and len(running) < self.slots:
            attempt = queue.popleft()
            attempt.state = _State.RUNNING
            running.add(attempt)
            self._idle.clear()
            attempt.task = asyncio.create_task(self._execute(attempt))

    def _on_timeout(self, attempt: _Attempt) -> None:
        if attempt.run is not None:
            attempt.run.request_stop(StopReason.TIMED_OUT, force=False, grace_s=self.kill_grace_s)

    async def _start(self, assignment: types_pb2.TaskAssignment) -> Run | AttemptResult:
        agent_type = assignment.agent_type
        if agent_type == "shell" and not self.policy.allow_shell:
            # Before the offered-types check: the operator's flag is the reason, say so.
            return AttemptResult.failed(
                str(PolicyError("shell tasks are disabled on this agent (--no-shell)")), retryable=False
            )
        if agent_type not in self.agent_types:
            return AttemptResult.failed(f"agent type {agent_type!r} is not offered here", retryable=False)
        if agent_type == "python":
            if self._pool is None or self._pool.size == 0:
                return AttemptResult.failed("this agent runs no python workers", retryable=False)
            return await self._pool.start_task(assignment, self._has_gpus)
        if agent_type == "shell":
            return await start_shell(assignment, self._shell)
        return AttemptResult.failed(f"agent type {agent_type!r} has no runner", retryable=False)

    async def _execute(self, attempt: _Attempt) -> None:
        assignment = attempt.assignment
        sink = self._sink
        try:
            started = await self._start(assignment)
            if isinstance(started, AttemptResult):
                result = started
            else:
                attempt.run = started
                if not attempt.silent:
                    sink.started(attempt.id, started.pid)
                if attempt.stop is not None:
                    reason, force, grace_s = attempt.stop
                    started.request_stop(reason, force=force, grace_s=grace_s)
                elif assignment.timeout_s > 0:
                    loop = asyncio.get_running_loop()
                    attempt.timer = loop.call_later(assignment.timeout_s, self._on_timeout, attempt)
                result = await started.finish()
                if attempt.timer is not None:
                    attempt.timer.cancel()
                if result.outcome == types_pb2.ATTEMPT_OUTCOME_TIMED_OUT:
                    result = dataclasses.replace(result, error=f"timed out after {assignment.timeout_s:g} s")
                stdout, stderr, truncated = started.take_output()
                if (stdout or stderr) and not attempt.silent:
                    sink.output(attempt.id, stdout, stderr, truncated)
        except Exception as exc:
            log.exception("attempt failed inside the agent", attempt_id=attempt.id)
            result = AttemptResult.failed(f"agent error: {exc}", retryable=True)
        finally:
            attempt.run = None
            attempt.state = _State.DONE
            self._running.discard(attempt)
            if assignment.agent_type == "shell":
                self._ended.append((asyncio.get_running_loop().time(), attempt.id))
        if attempt.silent:
            self._forget(attempt)
        else:
            sink.finished(attempt.id, result)
        self._pump()
        if not self._running:
            self._idle.set()

    async def _flush_output(self) -> None:
        while True:
            await asyncio.sleep(OUTPUT_INTERVAL_S)
            self._expire_folders()
            for attempt in list(self._running):
                run = attempt.run
                if run is None or attempt.silent:
                    continue
                try:
                    stdout, stderr, truncated = run.take_output()
                except OSError:
                    continue
                if stdout or stderr:
                    self._sink.output(attempt.id, stdout, stderr, truncated)
