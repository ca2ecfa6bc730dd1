"""The thin shell around :mod:`corral.agent.lifecycle`: it carries out the machine's instructions.

The machine decides (slots, FIFO queue, every attempt's state); the executor does: it starts runs
with the runner of their agent type (:mod:`corral.agent.registry`), awaits their end, streams their
output every second, and feeds what happened back to the machine as events. Reports go to an
:class:`EventSink` (the session's outbox).

Timeouts: a runner that times its attempts itself (the shell supervisor, which keeps doing so while
the agent is away) gets only a backstop timer here, at timeout + kill grace + :data:`BACKSTOP_SLACK_S`,
that force-stops an attempt its runner failed to end: one timer handle per attempt, the cost of
making sure a wedged runner cannot hold a slot forever. A runner that does not (warm python
workers) is stopped by the agent's timer at the timeout, with the kill grace.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

import structlog
from structlog.contextvars import bind_contextvars

from corral.agent import adopt
from corral.agent.attempt import AttemptResult, Run
from corral.agent.checkpoints import CheckpointWatch
from corral.agent.lifecycle import (
    Acked,
    Adopted,
    Assigned,
    AttemptMachine,
    Cancel,
    Drain,
    Ended,
    Event,
    Forget,
    GotOutput,
    KillAll,
    KillSilently,
    ReportAccepted,
    ReportFinished,
    ReportOutput,
    ReportReleased,
    ReportStarted,
    Start,
    Started,
    StartFailed,
    Stop,
    TimedOut,
)
from corral.agent.lifecycle_events import Stage, StageRefused, Unstaged, Withdraw
from corral.agent.metrics import FINISHED
from corral.agent.policy import ExecPolicy, safe_component
from corral.agent.pypool import WorkerPool
from corral.agent.pyrun import PythonRun
from corral.agent.registry import Launch, RunnerRegistry
from corral.agent.runas import RunAs
from corral.agent.runner import ShellContext
from corral.task import checkpoint_path, spawn_path
from corral.v1 import types_pb2

__all__ = ["ATTEMPT_DIR_KEEP_S", "BACKSTOP_SLACK_S", "EventSink", "Executor"]

log = structlog.get_logger("corral.agent.executor")

OUTPUT_INTERVAL_S = 1.0
# An attempt's folder goes when the controller acknowledges its report, and at the latest this long
# after it ended (a controller that never answers must not make the agent leak disk).
ATTEMPT_DIR_KEEP_S = 300.0
# How long past timeout + kill grace a self-timed runner may take before the agent force-stops it.
BACKSTOP_SLACK_S = 2.0


class EventSink(Protocol):
    """Where the executor reports what happens to attempts."""

    def accepted(self, attempt_id: str) -> None: ...

    def released(self, attempt_id: str) -> None: ...

    def started(self, attempt_id: str, pid: int) -> None: ...

    def output(self, attempt_id: str, stdout: bytes, stderr: bytes, truncated: bool) -> None: ...

    def finished(self, attempt_id: str, result: AttemptResult) -> None: ...

    def checkpoint(self, attempt_id: str, data: bytes) -> None: ...

    def spawn(self, attempt_id: str, tasks_json: bytes) -> None: ...


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
        declared_types: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.work_dir = work_dir
        self.policy = policy if policy is not None else ExecPolicy()
        shell = ShellContext(
            work_dir=work_dir,
            output_cap=output_cap,
            has_gpus=has_gpus,
            policy=self.policy,
            passed_env=passed_env or {},
            run_as=run_as,
        )
        self.registry = RunnerRegistry(offered=agent_types, shell=shell, pool=pool, declared=declared_types)
        self.machine = AttemptMachine(slots, kill_grace_s, stage_type=self.registry.stage_type)
        # Python attempts staged in a running one's worker (lifecycle: STAGED), by attempt id.
        self._staged: dict[str, PythonRun] = {}
        self.lease_path = work_dir / "lease"
        self._sink = sink
        self._dir_keep_s = dir_keep_s
        # (monotonic end time, attempt id) of ended attempts whose folder may still exist.
        self._ended: deque[tuple[float, str]] = deque()
        self._runs: dict[str, Run] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self._flusher: asyncio.Task[None] | None = None
        self._checkpoints = CheckpointWatch(sink.checkpoint, spawn=sink.spawn)
        self._do = {
            Start: self._start,
            Stage: self._stage,
            Withdraw: self._withdraw,
            Stop: self._stop,
            ReportAccepted: self._report_accepted,
            ReportReleased: self._report_released,
            ReportStarted: self._report_started,
            ReportOutput: self._report_output,
            ReportFinished: self._report_finished,
            Forget: self._forget,
        }

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
    def kill_grace_s(self) -> float:
        """SIGTERM -> SIGKILL grace of the agent's own stops (the controller's Welcome sets it)."""
        return self.machine.kill_grace_s

    @kill_grace_s.setter
    def kill_grace_s(self, value: float) -> None:
        self.machine.kill_grace_s = value

    @property
    def accepting(self) -> bool:
        """False once draining: new assignments are given back at once."""
        return self.machine.accepting

    @property
    def running_count(self) -> int:
        """Attempts currently holding a slot (starting, running or stopping)."""
        return self.machine.active_count

    def queued(self) -> int:
        """Attempts waiting here for a free slot."""
        return self.machine.queued_count

    def active_ids(self) -> list[str]:
        """Attempts assigned here and not finished yet (running, then queued)."""
        return self.machine.active_ids()

    def submit(self, assignments: Iterable[types_pb2.TaskAssignment]) -> None:
        """Queue new attempts and start as many as slots allow; known attempt ids are ignored."""
        for assignment in assignments:
            self._apply(Assigned(assignment))

    def cancel(self, attempt_ids: Iterable[str], *, force: bool, grace_s: float, release_only: bool = False) -> None:
        """Cancel attempts: queued ones are dropped and reported Released (never started, safe to
        run elsewhere); running ones are stopped and report CANCELLED, unless ``release_only`` (a
        move of queued work), which leaves them running."""
        for attempt_id in attempt_ids:
            self._apply(Cancel(attempt_id, force, grace_s, release_only))

    def kill_silently(self, attempt_ids: Iterable[str]) -> None:
        """Kill attempts reassigned elsewhere and forget them without reporting anything."""
        for attempt_id in attempt_ids:
            self._apply(KillSilently(attempt_id))

    def forget(self, attempt_ids: Iterable[str]) -> None:
        """The controller acknowledged these reports: drop them and their files."""
        for attempt_id in attempt_ids:
            self._apply(Acked(attempt_id))

    def workflows_ended(self, workflow_ids: Collection[str]) -> None:
        """These workflows ended: their python workers' children go now (:meth:`WorkerPool.workflows_ended`)."""
        self.registry.workflows_ended(workflow_ids)

    def adopt(self, found: Iterable[adopt.Adopted]) -> list[str]:
        """Take over attempts found after a restart: running ones are awaited like any other, finished
        ones reported; those that died with the previous agent are left out. Returns the adopted ids."""
        adopted = []
        for item in found:
            if item.run is not None:
                run = item.run
                self._apply(Adopted(item.attempt_id, pid=run.pid))
                self._runs[item.attempt_id] = run
                self._checkpoints.watch(
                    item.attempt_id, self.work_dir / "attempts" / item.attempt_id / "checkpoint.json"
                )
                self._tasks[item.attempt_id] = asyncio.create_task(self._await_run(item.attempt_id, run, True))
            elif item.result is not None:
                self._apply(Adopted(item.attempt_id, result=item.result))
            else:
                # Not listed in Hello: the controller counts it as lost with the agent.
                log.warning("attempt died with the previous agent process", attempt_id=item.attempt_id)
                continue
            adopted.append(item.attempt_id)
        return adopted

    async def drain(self, grace_s: float) -> None:
        """Take nothing new, give queued attempts back, let running ones finish up to ``grace_s``,
        then stop the rest (SIGTERM, kill grace, SIGKILL, through their supervisors) and wait until
        all are over."""
        self._apply(Drain())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), grace_s)
        self._apply(KillAll(force=False, grace_s=self.kill_grace_s))
        await self._idle.wait()

    async def kill_all(self) -> None:
        """SIGKILL every running attempt now and drop the queue (the agent is going away)."""
        self._apply(KillAll(force=True, grace_s=0.0))
        await self._idle.wait()

    async def wait_idle(self) -> None:
        """Return once no attempt is running."""
        await self._idle.wait()

    # -- the shell ----------------------------------------------------------------------------------

    def _apply(self, event: Event) -> None:
        for instruction in self.machine.handle(event):
            self._do[type(instruction)](instruction)  # type: ignore[operator]
        if self.machine.active_count:
            self._idle.clear()
        else:
            self._idle.set()

    def _start(self, instruction: Start) -> None:
        assignment = instruction.assignment
        staged = self._staged.pop(instruction.attempt_id, None)
        early: Run | AttemptResult | None = staged
        if staged is not None and staged.lost_before_start:
            staged.release()  # its worker died before it: it starts in another, as if never staged
            staged = early = None
        if staged is not None:
            staged.leader = None  # it runs in its leader's worker already (or is about to)
        else:
            # A python attempt goes to an idle worker here, in the callback that freed its slot (most
            # often the end of the attempt before it on that worker), not a pass of the event loop
            # later: under load that pass waits behind every stream read and write queued meanwhile.
            try:
                early = self.registry.start_now(assignment, self._launch())
            except Exception:  # the attempt's own task starts it again and reports what fails
                log.exception("attempt could not start at once", attempt_id=instruction.attempt_id)
                early = None
        self._tasks[instruction.attempt_id] = asyncio.create_task(self._execute(assignment, early))

    def _stage(self, instruction: Stage) -> None:
        leader = self._runs.get(instruction.leader_id)
        run = None
        if leader is not None:
            try:
                run = self.registry.stage(instruction.assignment, leader, self._launch())
            except Exception:  # it starts when a slot frees, as it would have without staging
                log.exception("attempt could not be staged", attempt_id=instruction.attempt_id)
        if isinstance(run, PythonRun):
            self._staged[instruction.attempt_id] = run
        else:
            self._apply(StageRefused(instruction.attempt_id))

    def _withdraw(self, instruction: Withdraw) -> None:
        run = self._staged.get(instruction.attempt_id)
        # Failed: it has started (its leader answered) and starts here when that one's end is applied.
        if run is not None and run.withdraw():
            del self._staged[instruction.attempt_id]
            self._apply(Unstaged(instruction.attempt_id))

    def _stop(self, instruction: Stop) -> None:
        run = self._runs.get(instruction.attempt_id)
        # No run: the machine holds the stop until the attempt has started.
        if run is not None:
            run.request_stop(instruction.reason, force=instruction.force, grace_s=instruction.grace_s)

    def _report_accepted(self, instruction: ReportAccepted) -> None:
        self._sink.accepted(instruction.attempt_id)

    def _report_released(self, instruction: ReportReleased) -> None:
        self._sink.released(instruction.attempt_id)

    def _report_started(self, instruction: ReportStarted) -> None:
        self._sink.started(instruction.attempt_id, instruction.pid)

    def _report_output(self, instruction: ReportOutput) -> None:
        self._sink.output(instruction.attempt_id, instruction.stdout, instruction.stderr, instruction.truncated)

    def _report_finished(self, instruction: ReportFinished) -> None:
        self._sink.finished(instruction.attempt_id, instruction.result)

    def _forget(self, instruction: Forget) -> None:
        attempt_id = instruction.attempt_id
        if instruction.adopted or self.registry.has_folders(instruction.agent_type):
            # Python attempts of this agent process have no folder of their own (they run in their
            # worker's): nothing to remove, no syscall on the hot path.
            self._remove_folder(attempt_id)

    def _remove_folder(self, attempt_id: str) -> None:
        # The task folder and the supervisor's control folder (spec with secrets, logs, status).
        adopt.remove(self.work_dir, attempt_id)

    def _expire_folders(self) -> None:
        """Remove the folders of attempts that ended more than ``dir_keep_s`` ago, acked or not."""
        ended = self._ended
        if not ended:
            return
        limit = asyncio.get_running_loop().time() - self._dir_keep_s
        while ended and ended[0][0] <= limit:
            self._remove_folder(ended.popleft()[1])

    def _launch(self) -> Launch:
        return Launch(kill_grace_s=self.kill_grace_s, lease_path=self.lease_path)

    async def _execute(self, assignment: types_pb2.TaskAssignment, early: Run | AttemptResult | None = None) -> None:
        attempt_id = assignment.attempt_id
        # This coroutine is the attempt's own asyncio task, with its own context: every line
        # logged while it runs (here, in the runners) carries the attempt's ids.
        bind_contextvars(workflow_id=assignment.workflow_id, task_id=assignment.task_id, attempt_id=attempt_id)
        log.debug("attempt starting", task=assignment.task_name, agent_type=assignment.agent_type)
        try:
            started = early if early is not None else await self.registry.start(assignment, self._launch())
        except Exception as exc:
            log.exception("attempt failed to start inside the agent", attempt_id=attempt_id)
            started = AttemptResult.failed(f"agent error: {exc}", retryable=True)
        if isinstance(started, AttemptResult):
            self._tasks.pop(attempt_id, None)
            self._apply(StartFailed(attempt_id, started))
            return
        self._runs[attempt_id] = started
        if not isinstance(started, PythonRun) and self.registry.has_folders(assignment.agent_type):
            self._watch_folder(attempt_id)
        self._apply(Started(attempt_id, started.pid))
        timeout_s = assignment.timeout_s
        if timeout_s > 0:
            loop = asyncio.get_running_loop()
            grace = self.kill_grace_s
            if self.registry.self_timed(assignment.agent_type):
                event = TimedOut(attempt_id, force=True, grace_s=0.0)
                delay = timeout_s + grace + BACKSTOP_SLACK_S
            else:
                event = TimedOut(attempt_id, force=False, grace_s=grace)
                delay = timeout_s
            self._timers[attempt_id] = loop.call_later(delay, self._apply, event)
        await self._await_run(attempt_id, started, self.registry.has_folders(assignment.agent_type))

    def _watch_folder(self, attempt_id: str) -> None:
        """Watch a shell attempt's checkpoint and spawn files (issue 10), in its folder."""
        folder = self.work_dir / "attempts" / attempt_id
        self._checkpoints.watch(attempt_id, folder / "checkpoint.json", spawn_path=folder / "spawn.jsonl")

    def _watch_python(self, attempt_id: str, run: PythonRun) -> None:
        """Watch a python attempt's files, in its worker's folder: only once it has run a second,
        or ended having written some (its worker said so, or died): a short task costs nothing."""
        if not self._checkpoints.watching(attempt_id) and safe_component(attempt_id):
            home = run.home
            self._checkpoints.watch(
                attempt_id,
                checkpoint_path(home, attempt_id),
                remove=True,
                extra=run.checkpoint_in,
                spawn_path=spawn_path(home, attempt_id),
            )

    async def _await_run(self, attempt_id: str, run: Run, folders: bool) -> None:
        """Wait for a started (or adopted) run to end, then report its last output and its result."""
        try:
            result = await run.finish()
        except Exception as exc:
            log.exception("attempt failed inside the agent", attempt_id=attempt_id)
            result = AttemptResult.failed(f"agent error: {exc}", retryable=True)
        FINISHED[result.outcome] += 1  # the agent's /metrics (one dict increment per attempt)
        log.debug("attempt ended", attempt_id=attempt_id, outcome=result.outcome, exit_code=result.exit_code)
        # Read now, before anything else runs: a python worker's folder is wiped at the next await.
        if isinstance(run, PythonRun):
            if run.touched is False and run.checkpoint_in is None:
                self._checkpoints.forget(attempt_id)  # the common case: nothing to read or remove
            else:
                self._watch_python(attempt_id, run)
        checkpoint = self._checkpoints.take_final(attempt_id)
        timer = self._timers.pop(attempt_id, None)
        if timer is not None:
            timer.cancel()
        self._runs.pop(attempt_id, None)
        self._tasks.pop(attempt_id, None)
        try:
            stdout, stderr, truncated = run.take_output()
        except OSError:
            stdout, stderr, truncated = b"", b"", False
        if stdout or stderr:
            self._apply(GotOutput(attempt_id, stdout, stderr, truncated))
        if folders:
            self._ended.append((asyncio.get_running_loop().time(), attempt_id))
        if checkpoint is not None and result.outcome != types_pb2.ATTEMPT_OUTCOME_SUCCEEDED:
            # Before the Finished report; a success drops its checkpoint, so it need not wait.
            await self._checkpoints.send_final(attempt_id, checkpoint)
        self._apply(Ended(attempt_id, result))

    async def _flush_output(self) -> None:
        while True:
            await asyncio.sleep(OUTPUT_INTERVAL_S)
            self._expire_folders()
            for attempt_id, run in self._runs.items():
                if isinstance(run, PythonRun):
                    self._watch_python(attempt_id, run)
            self._checkpoints.poll()
            for attempt_id, run in list(self._runs.items()):
                try:
                    stdout, stderr, truncated = run.take_output()
                except OSError:
                    continue
                if stdout or stderr:
                    self._apply(GotOutput(attempt_id, stdout, stderr, truncated))
